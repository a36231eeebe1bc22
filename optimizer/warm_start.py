"""``--warm-start FILE``: the initial population seeded with another frontier's schedules.

Any schedule file of the same model family serves (another model of the family, another step count, another
image size; the ECAD paper warm-starts PixArt-Σ from PixArt-α's frontier): each point's mask is mapped onto
the run's step count by relative position (``Mask.resampled``, ``ecad_nodes.schedule.step_mapping``), its first
step computed, and joins the first generation right after FORA's seeds. Its blocks and components must be the
model's: a file of another layout is refused, naming the file.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional

from ecad_nodes.schedule import ScheduleError, ScheduleFile

from .genome import GenomeCodec
from .seeding import Seed
from .spec import InputFileError


def read(path: Path) -> ScheduleFile:
    """The file, parsed; ``InputFileError`` naming it when it is no schedule file."""
    from ecad_nodes.schedule_io import load_schedule
    try:
        return load_schedule(path)
    except ScheduleError as e:
        raise InputFileError(path, e.reason) from None
    except OSError as e:
        raise InputFileError(path, f"cannot be read ({e.strerror or type(e).__name__})") from None


def family_problem(path: Path, family: str) -> Optional[InputFileError]:
    """Why the file cannot seed a run of ``family`` (found before the model is loaded), or None."""
    try:
        schedule = read(path)
    except InputFileError as e:
        return e
    if schedule.family != family:
        return InputFileError(path, f"--warm-start: it holds schedules for model family '{schedule.family}', not "
                                    f"'{family}'")
    return None


def identity(path: Path, run_dir: Optional[Path] = None) -> dict:
    """Part of the run's settings: the file's name and digest (another file would seed another search). A file no
    longer there is the one of that name ``run_dir``'s settings record: a resumed run takes its seeds from there."""
    path = Path(path)
    if not path.exists() and run_dir is not None:
        recorded = _recorded_identity(run_dir / "run.sqlite")
        if recorded is not None and recorded.get("name") == path.name:
            return recorded
    try:
        return {"name": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()[:16]}
    except OSError as e:
        raise InputFileError(path, f"--warm-start: cannot be read ({e.strerror or type(e).__name__})") from None


def _recorded_identity(database: Path) -> Optional[dict]:
    """The warm-start identity in a run database's settings (read only; None where there is none)."""
    import json
    import sqlite3
    if not database.is_file():
        return None
    try:
        connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
        try:
            row = connection.execute("SELECT value FROM run WHERE key = 'settings'").fetchone()
        finally:
            connection.close()
        return json.loads(row[0]).get("warm_start") if row else None
    except (sqlite3.Error, ValueError, AttributeError):  # a damaged run directory is named when it is opened
        return None


def seeds(path: Path, codec: GenomeCodec) -> list[Seed]:
    """The file's points as seeds for ``codec``'s layout and step count; ``InputFileError`` for another layout."""
    schedule = read(path)
    why = schedule.layout.mismatch(codec.layout)
    if why:
        raise InputFileError(path, f"--warm-start: its schedules do not fit the model: {why}")
    found = []
    for point in schedule.points:
        mask = point.mask.resampled(codec.steps).with_first_step_computed()
        moved = f", {schedule.steps} steps mapped to {codec.steps}" if schedule.steps != codec.steps else ""
        found.append(Seed(f"warm start {Path(path).name}: {point.name}{moved}", codec.genome(mask)))
    return found

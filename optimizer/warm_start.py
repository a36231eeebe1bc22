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


def identity(path: Path) -> dict:
    """Part of the run's settings: the file's name and digest (another file would seed another search)."""
    return {"name": Path(path).name, "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]}


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

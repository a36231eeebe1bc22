"""The schedules a user can pick: files in the pack's ``schedules/`` and in ``models/ecad_schedules/``,
plus the built-in heuristics.

Files are listed by their path relative to their folder (sub-folders allowed) and parsed lazily,
cached by modification time. A file that cannot be used is logged once and left out of the
listing; it never stops ComfyUI from starting.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .choice import ScheduleChoice
from .heuristics import HEURISTICS, heuristic
from .schedule import FrontierPoint, PointMetrics, ScheduleError, ScheduleFile
from .schedule_io import load_schedule

log = logging.getLogger("ComfyUI-ECAD")

PACK_SCHEDULES = Path(__file__).resolve().parent.parent / "schedules"
USER_FOLDER_NAME = "ecad_schedules"
HEURISTICS_SOURCE = "heuristics (any model)"
LABEL_SEPARATOR = " · "
METRIC_SHORT_NAMES = {"image_reward": "IR", "psnr": "PSNR", "ssim": "SSIM", "clip_score": "CLIP", "fidelity": "PSNR"}


def register_user_folder() -> None:
    """Make ``models/ecad_schedules`` a ComfyUI model folder (extra_model_paths.yaml may add more)."""
    try:
        import folder_paths
    except ImportError:  # imported outside ComfyUI (pytest imports the pack's root __init__.py)
        return
    default = os.path.join(folder_paths.models_dir, USER_FOLDER_NAME)
    folder_paths.add_model_folder_path(USER_FOLDER_NAME, default, is_default=True)
    folder_paths.folder_names_and_paths[USER_FOLDER_NAME][1].add(".json")


def schedule_folders() -> list[Path]:
    """Where schedule files are looked for, user folders first (a user file shadows a pack file)."""
    folders: list[Path] = []
    try:
        import folder_paths
        if USER_FOLDER_NAME in folder_paths.folder_names_and_paths:
            folders.extend(Path(p) for p in folder_paths.get_folder_paths(USER_FOLDER_NAME))
    except ImportError:  # outside ComfyUI (optimizer, tests): the pack's folder only
        pass
    folders.append(PACK_SCHEDULES)
    return folders


def _is_schedule_file(path: Path) -> bool:
    return path.suffix.lower() == ".json" and not path.name.endswith(".schema.json") and not path.name.startswith(".")


def scan() -> dict[str, Path]:
    """Listed name -> file, for every candidate file (usable or not)."""
    found: dict[str, Path] = {}
    for folder in schedule_folders():
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*.json")):
            if not path.is_file() or not _is_schedule_file(path):
                continue
            name = path.relative_to(folder).as_posix()
            if name in found:
                log.warning("ECAD: schedule %s is shadowed by %s", path, found[name])
                continue
            found[name] = path
    return found


@dataclass
class _Cached:
    stamp: tuple[int, int]
    schedule: Optional[ScheduleFile]
    error: Optional[ScheduleError]


_cache: dict[Path, _Cached] = {}


def _load_cached(path: Path) -> ScheduleFile:
    st = path.stat()
    stamp = (st.st_mtime_ns, st.st_size)
    hit = _cache.get(path)
    if hit is None or hit.stamp != stamp:
        try:
            hit = _Cached(stamp, load_schedule(path), None)
        except ScheduleError as e:
            log.error("ECAD: left out of the schedule list: %s", e)
            hit = _Cached(stamp, None, e)
        _cache[path] = hit
    if hit.error is not None:
        raise hit.error
    return hit.schedule


def usable_files() -> dict[str, ScheduleFile]:
    """Listed name -> parsed schedule, leaving out (and logging once) files that cannot be used."""
    out = {}
    for name, path in scan().items():
        try:
            out[name] = _load_cached(path)
        except (ScheduleError, OSError):
            continue
    return out


def list_sources() -> list[str]:
    return list(usable_files()) + [HEURISTICS_SOURCE]


def load_source(name: str) -> ScheduleFile:
    """A listed schedule file by name; a ScheduleError for anything else (never a path outside the folders)."""
    path = scan().get(name)
    if path is None:
        raise ScheduleError(f"schedule '{name}' is not in the schedule folders ({', '.join(map(str, schedule_folders()))})")
    return _load_cached(path)


def speed_text(metrics: PointMetrics) -> Optional[str]:
    if metrics.speedup is not None:
        return f"{metrics.speedup:.2f}×"
    if metrics.mac_speedup is not None:
        return f"{metrics.mac_speedup:.2f}× MACs"
    return None


def quality_text(metrics: PointMetrics) -> Optional[str]:
    if metrics.quality is None or metrics.quality_metric is None:
        return None
    return f"{METRIC_SHORT_NAMES.get(metrics.quality_metric, metrics.quality_metric)} {metrics.quality:.2f}"


def point_label(point: FrontierPoint) -> str:
    parts = [point.name, speed_text(point.metrics), quality_text(point.metrics)]
    return LABEL_SEPARATOR.join(p for p in parts if p)


def point_name(label: str) -> str:
    """The point name in a dropdown label (labels start with the name; the figures may be stale)."""
    return label.split(LABEL_SEPARATOR, 1)[0].strip()


def labels_for(source: str) -> list[str]:
    if source == HEURISTICS_SOURCE:
        return [h.name for h in HEURISTICS]
    return [point_label(p) for p in load_source(source).points]


def all_point_labels() -> list[str]:
    """Every label of every listed source (the dropdown's options before the web extension narrows them)."""
    seen: dict[str, None] = {}
    for name, schedule in usable_files().items():
        for p in schedule.points:
            seen.setdefault(point_label(p), None)
    for h in HEURISTICS:
        seen.setdefault(h.name, None)
    return list(seen)


def choose(source: str, label: str) -> ScheduleChoice:
    """The ECAD_SCHEDULE for a dropdown pair; a ScheduleError naming the file when it does not exist."""
    name = point_name(label)
    if source == HEURISTICS_SOURCE:
        h = heuristic(name)
        if h is None:
            raise ScheduleError(f"'{name}' is not a built-in heuristic (choose one of: "
                                f"{', '.join(h.name for h in HEURISTICS)})")
        return ScheduleChoice.of_heuristic(h)
    schedule = load_source(source)
    return ScheduleChoice.of_point(source, schedule, schedule.point(name))

"""The schedules a user can pick: files in the pack's ``schedules/`` and in ``models/ecad_schedules/``,
plus the built-in heuristics.

Files are listed by their path relative to their folder (sub-folders allowed). A file is read only
when its real path (symlinks resolved) lies inside a schedule folder and its name can stand in a
dropdown; it is parsed when first needed and cached by its (path, mtime, size) stamp. A file that
cannot be used is logged once and left out of the listing, whatever went wrong with it: the node
always lists the heuristics, and ComfyUI always starts.
"""
from __future__ import annotations

import logging
import os
import re
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from .choice import ScheduleChoice
from .heuristics import HEURISTICS, heuristic
from .schedule import FrontierPoint, PointMetrics, ScheduleError, ScheduleFile
from .schedule_io import parse_schedule_bytes, read_limited

log = logging.getLogger("ComfyUI-ECAD")

PACK_SCHEDULES = Path(__file__).resolve().parent.parent / "schedules"
USER_FOLDER_NAME = "ecad_schedules"
HEURISTICS_SOURCE = "heuristics (any model)"
LABEL_SEPARATOR = " · "
METRIC_SHORT_NAMES = {"image_reward": "IR", "psnr": "PSNR", "ssim": "SSIM", "clip_score": "CLIP", "fidelity": "PSNR",
                      "latent_psnr": "latent PSNR"}
MAX_NAME_LENGTH = 1024
MAX_FILES = 10_000          # listed per folder; a folder with more is cut there (and says so in the log)
OUTSIDE = "leads outside the schedule folders (a symlink?) and is not read"

# What a name still holds after the query string was decoded once: a second layer of encoding is an attempt
# to smuggle a separator or a dot past the checks.
_ENCODED = re.compile(r"%(2f|5c|2e|00)", re.IGNORECASE)
_DRIVE = re.compile(r"^[A-Za-z]:")


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


def name_problem(name: str) -> Optional[str]:
    """Why ``name`` cannot be a listed schedule (a plain relative path that a dropdown and a URL carry); None if it can.

    The same rule refuses names in HTTP requests before any file is touched, and files in the folders
    whose names could not be asked for.
    """
    if not name:
        return "no schedule name given"
    if len(name) > MAX_NAME_LENGTH:
        return "the schedule name is too long"
    if "\x00" in name or "\\" in name:
        return "schedule names use '/' between folders; backslashes and NUL are refused"
    if any(unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in name):
        return "control characters and line breaks in a schedule name are refused"
    if _ENCODED.search(name):
        return "encoded separators or dots in a schedule name are refused"
    if name.startswith("/") or _DRIVE.match(name):
        return "absolute paths are refused; use a name from the schedule list"
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "'.', '..' and empty path segments are refused"
    if any(part != part.strip() for part in parts):
        return "names whose folders or file start or end with white space are refused"
    return None


# ---------------------------------------------------------------- finding files

@dataclass(frozen=True)
class Listed:
    """A candidate file: its name as listed, where it was found, and why it is not read (None: it may be)."""

    name: str
    path: Path
    problem: Optional[str] = None


def _is_schedule_file(name: str) -> bool:
    return name.lower().endswith(".json") and not name.endswith(".schema.json") and not name.startswith(".")


def _inside(real: Path, roots: list[Path]) -> bool:
    return any(real == root or real.is_relative_to(root) for root in roots)


_reported: set[tuple[str, str]] = set()
_reported_lock = threading.Lock()


def _report_once(path: Path, problem: str, level: int = logging.WARNING) -> None:
    key = (str(path), problem)
    with _reported_lock:
        if key in _reported:
            return
        _reported.add(key)
    log.log(level, "ECAD: left out of the schedule list: %s: %s", path, problem)


def _walk(folder: Path, roots: list[Path]) -> Iterator[Listed]:
    """Every schedule-file candidate under ``folder`` (symlinked folders followed only while they stay inside)."""
    seen_dirs: set[Path] = set()
    found: list[Listed] = []
    stack: list[tuple[Path, str]] = [(folder, "")]
    while stack:
        directory, prefix = stack.pop()
        try:
            real_dir = directory.resolve(strict=True)
            if real_dir in seen_dirs:
                continue  # a link back up: already searched
            seen_dirs.add(real_dir)
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            if directory != folder or folder.exists():
                _report_once(directory, f"the folder cannot be searched ({e.strerror or type(e).__name__})")
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            name = prefix + entry.name
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
                real = path.resolve(strict=False)
            except (OSError, RuntimeError) as e:  # RuntimeError: a symlink loop on older Pythons
                if _is_schedule_file(entry.name):
                    found.append(Listed(name, path, f"cannot be read ({getattr(e, 'strerror', None) or type(e).__name__})"))
                continue
            if is_dir:
                if _inside(real, roots):
                    stack.append((path, name + "/"))
                else:
                    _report_once(path, "this folder leads outside the schedule folders (a symlink?) and is not searched")
                continue
            if not _is_schedule_file(entry.name):
                continue
            problem = None
            if not _inside(real, roots):
                problem = OUTSIDE
            else:
                why = name_problem(name)
                if why is not None:
                    problem = f"its name cannot be chosen in a dropdown: {why}"
            found.append(Listed(name, path, problem))
            if len(found) >= MAX_FILES:
                _report_once(folder, f"holds more than {MAX_FILES} schedule files; the rest are not listed")
                stack.clear()
                break
    found.sort(key=lambda c: c.name.split("/"))
    yield from found


def candidates() -> list[Listed]:
    """Every candidate file of every folder, each name once (a user folder's file shadows the pack's)."""
    folders = schedule_folders()
    roots = []
    for folder in folders:
        try:
            roots.append(folder.resolve(strict=False))
        except (OSError, RuntimeError):
            continue
    out: dict[str, Listed] = {}
    for folder in folders:
        for c in _walk(folder, roots):
            if c.name in out:
                _report_once(c.path, f"shadowed by {out[c.name].path}")
                continue
            out[c.name] = c
    for c in out.values():
        if c.problem is not None:
            _report_once(c.path, c.problem)
    return list(out.values())


def scan() -> dict[str, Path]:
    """Listed name -> file, for every file that may be read (usable or not)."""
    return {c.name: c.path for c in candidates() if c.problem is None}


def find(name: str) -> Optional[Listed]:
    """The candidate listed as ``name``, refused or not; None if there is none (nothing is read)."""
    if name_problem(name) is not None:
        return None
    return next((c for c in candidates() if c.name == name), None)


# ---------------------------------------------------------------- reading, cached

@dataclass
class _Cached:
    stamp: tuple[int, ...]
    schedule: Optional[ScheduleFile]
    error: Optional[ScheduleError]


_cache: dict[Path, _Cached] = {}
_cache_lock = threading.Lock()  # one parse per file at a time: the routes read in a thread pool


def _read_bytes(path: Path) -> bytes:
    """A listed file's bytes, read through its real path, checked to be inside a schedule folder; errors name ``path``."""
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError) as e:
        raise ScheduleError(f"cannot be read ({getattr(e, 'strerror', None) or type(e).__name__})", path) from None
    roots = [f.resolve(strict=False) for f in schedule_folders()]
    if not _inside(real, roots):
        raise ScheduleError(OUTSIDE, path)
    try:
        return read_limited(real)
    except ScheduleError as e:
        raise ScheduleError(e.reason, path) from None


def _load_cached(path: Path) -> ScheduleFile:
    """The parsed file, parsed again only when its stamp changes. What its bytes say (a schedule, or why it is
    refused) is cached; a failure to read them is not: permissions and links change without touching the stamp."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise ScheduleError(f"cannot be read ({e.strerror or type(e).__name__})", path) from None
    stamp = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
    with _cache_lock:
        hit = _cache.get(path)
        if hit is None or hit.stamp != stamp:
            try:
                data = _read_bytes(path)
            except ScheduleError as e:
                _cache.pop(path, None)
                _report_once(path, e.reason, logging.ERROR)
                raise
            try:
                schedule = parse_schedule_bytes(data, path)
                schedule.path = path
                hit = _Cached(stamp, schedule, None)
            except ScheduleError as e:
                hit = _Cached(stamp, None, e)
            except Exception as e:  # a file the reader did not foresee: left out like any other, never the whole list
                log.debug("ECAD: unexpected error reading %s", path, exc_info=True)
                hit = _Cached(stamp, None, ScheduleError(
                    f"could not be read ({type(e).__name__}); please report this file to ComfyUI-ECAD", path))
            if hit.error is not None:
                log.error("ECAD: left out of the schedule list: %s", hit.error)
            _cache[path] = hit
    if hit.error is not None:
        raise hit.error
    return hit.schedule


def load_listed(entry: Listed) -> ScheduleFile:
    """The schedule of a candidate; a ScheduleError naming it when it is refused or cannot be used."""
    if entry.problem is not None:
        raise ScheduleError(entry.problem, entry.path)
    return _load_cached(entry.path)


def usable_files() -> dict[str, ScheduleFile]:
    """Listed name -> parsed schedule, leaving out (and logging once) files that cannot be used."""
    out = {}
    try:
        listed = [c for c in candidates() if c.problem is None]
    except Exception:  # never let the folders take the heuristics down with them
        log.exception("ECAD: the schedule folders could not be searched; only the heuristics are listed")
        return out
    with _cache_lock:  # files gone from the folders: their parsed schedules go too
        for path in set(_cache) - {c.path for c in listed}:
            del _cache[path]
    for c in listed:
        try:
            out[c.name] = _load_cached(c.path)
        except ScheduleError:
            continue
        except Exception:
            log.exception("ECAD: left out of the schedule list: %s", c.path)
    return out


def list_sources() -> list[str]:
    return list(usable_files()) + [HEURISTICS_SOURCE]


def load_source(name: str) -> ScheduleFile:
    """A listed schedule file by name; a ScheduleError for anything else (never a path outside the folders)."""
    entry = find(name)
    if entry is None:
        raise ScheduleError(f"schedule '{name}' is not in the schedule folders ({', '.join(map(str, schedule_folders()))})")
    return load_listed(entry)


def stamp(name: str) -> str:
    """What changes when the listed file ``name`` changes on disk (for IS_CHANGED); '' if it is not listed."""
    entry = find(name)
    if entry is None or entry.problem is not None:
        return ""
    try:
        st = os.stat(entry.path)
    except OSError:
        return ""
    return f"{st.st_dev}:{st.st_ino}:{st.st_mtime_ns}:{st.st_size}"


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

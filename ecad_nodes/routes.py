"""HTTP routes for the web extension: the schedule files and one file's frontier, as JSON.

``GET /ecad/schedules``                 every listed file: a short summary, or an error entry
``GET /ecad/schedules/summary?name=N``  one file's frontier and baselines (or the built-in heuristics)

ComfyUI also serves every route under ``/api`` (the frontend's ``api.fetchApi`` uses that prefix).
Only files that the library lists are read, and only when their real path lies inside a schedule
folder: names that try to leave the folders (``..``, absolute paths, backslashes, encoded
separators) and symlinks leading out are refused with 400 and never opened. A file that cannot be
parsed answers with an error entry (name and message, never a value from the file), never a 500.
Files are read and parsed in a worker thread, never on the server's event loop.
"""
from __future__ import annotations

import asyncio
import logging
import math
from pathlib import Path
from typing import Any, Optional

from aiohttp import web

from . import library
from .heuristics import HEURISTICS
from .schedule import FrontierPoint, ScheduleError, ScheduleFile

log = logging.getLogger("ComfyUI-ECAD")

LIST_PATH = "/ecad/schedules"
SUMMARY_PATH = "/ecad/schedules/summary"
MAX_NAME_LENGTH = library.MAX_NAME_LENGTH

routes = web.RouteTableDef()


class RefusedName(ValueError):
    """A schedule name that could point outside the schedule folders."""


def check_name(name: str) -> None:
    """Refuse names that are not plain relative paths inside a schedule folder (before any file is touched)."""
    why = library.name_problem(name)
    if why is not None:
        raise RefusedName(why)


def contained_path(name: str) -> Optional[Path]:
    """The file a listed name stands for, after checking its real path stays in the schedule folders; None if not listed.

    Raises RefusedName for a listed file (e.g. a symlink) whose real path is outside the folders.
    """
    entry = library.find(name)
    if entry is None:
        return None
    if entry.problem is not None:
        raise RefusedName(entry.problem)
    return entry.path


def _number(x: Optional[float]) -> Optional[float]:
    """JSON has no NaN or infinity: report those as unknown."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def point_summary(point: FrontierPoint, selectable: bool) -> dict[str, Any]:
    m = point.metrics
    measured, mac_ratio = _number(m.speedup), _number(m.mac_speedup)
    kind = "measured" if measured is not None else "macs" if mac_ratio is not None else None
    metric = m.quality_metric
    return {
        "name": point.name,
        # Only a file's own points can be chosen in the dropdown; the label is the dropdown's value.
        "label": library.point_label(point) if selectable else None,
        "speedup": measured if measured is not None else mac_ratio,
        "speedup_kind": kind,
        "measured_speedup": measured,
        "mac_speedup": mac_ratio,
        "macs": _number(m.macs),
        "full_macs": _number(m.full_macs),
        "latency_ms": _number(m.latency_ms),
        "quality_metric": metric,
        "quality_short": library.METRIC_SHORT_NAMES.get(metric, metric) if metric else None,
        "quality": _number(m.quality),
        "computed_fraction": round(point.mask.compute_fraction(), 4),
    }


def file_summary(name: str, schedule: ScheduleFile) -> dict[str, Any]:
    provenance = {k: v for k, v in schedule.provenance.items()
                  if isinstance(v, (str, bool, int)) or (isinstance(v, float) and math.isfinite(v))}
    return {
        "name": name,
        "kind": "file",
        "family": schedule.family,
        "variant": schedule.variant,
        "steps": schedule.steps,
        "block_groups": schedule.layout.to_json(),
        "bits_per_step": schedule.layout.bits_per_step,
        "points": [point_summary(p, selectable=True) for p in schedule.points],
        "baselines": [point_summary(b, selectable=False) for b in schedule.baselines],
        "provenance": provenance,
    }


def heuristics_summary() -> dict[str, Any]:
    return {
        "name": library.HEURISTICS_SOURCE,
        "kind": "heuristics",
        "family": None,
        "variant": None,
        "steps": None,
        "block_groups": [],
        "points": [{"name": h.name, "label": h.name, "description": h.description, "speedup": None,
                    "speedup_kind": None, "quality": None, "quality_metric": None} for h in HEURISTICS],
        "baselines": [],
        "note": "Built-in heuristics are laid onto the connected model and the workflow's step count when sampling; "
                "they have no measured quality.",
    }


def error_entry(name: str, message: str) -> dict[str, str]:
    return {"name": name, "error": message}


def _load(name: str, entry: Optional[library.Listed] = None) -> dict[str, Any]:
    """One listed file's summary, or an error entry naming it (never a server path, never a value from the file).
    ``entry``: the file as already listed, which saves searching the folders again for it."""
    try:
        return file_summary(name, library.load_listed(entry) if entry is not None else library.load_source(name))
    except ScheduleError as e:
        return error_entry(name, e.reason)
    except OSError as e:  # vanished or unreadable between listing and reading
        return error_entry(name, f"cannot be read ({e.strerror or type(e).__name__})")
    except Exception as e:  # a file the parser did not foresee must not break the whole list
        log.exception("ECAD: could not summarize schedule %s", name)
        return error_entry(name, f"could not be summarized ({type(e).__name__})")


def _short(summary: dict[str, Any]) -> dict[str, Any]:
    if "error" in summary:
        return summary
    keys = ("name", "kind", "family", "variant", "steps")
    return {**{k: summary[k] for k in keys}, "points": len(summary["points"]), "baselines": len(summary["baselines"])}


def _listing() -> list[dict[str, Any]]:
    entries = []
    for entry in library.candidates():
        if entry.problem is not None:
            entries.append(error_entry(entry.name, entry.problem))
        else:
            entries.append(_short(_load(entry.name, entry)))
    entries.append(_short(heuristics_summary()))
    return entries


def _summary(name: str) -> tuple[dict[str, Any], int]:
    try:
        check_name(name)
        path = contained_path(name)
    except RefusedName as e:
        log.warning("ECAD: refused a schedule request for %r: %s", name[:200], e)
        return error_entry(name[:200], str(e)), 400
    if path is None:
        return error_entry(name, "not in the schedule folders (refresh the node list?)"), 404
    summary = _load(name)
    return summary, 422 if "error" in summary else 200


# Reading and parsing happen in the default thread pool: a large file never blocks the server's event loop.

@routes.get(LIST_PATH)
async def list_schedules(request: web.Request) -> web.Response:
    entries = await asyncio.get_running_loop().run_in_executor(None, _listing)
    return web.json_response({"schedules": entries, "heuristics_source": library.HEURISTICS_SOURCE})


@routes.get(SUMMARY_PATH)
async def schedule_summary(request: web.Request) -> web.Response:
    name = request.query.get("name", "")
    if name == library.HEURISTICS_SOURCE:
        return web.json_response(heuristics_summary())
    body, status = await asyncio.get_running_loop().run_in_executor(None, _summary, name)
    return web.json_response(body, status=status)


def register(table: web.RouteTableDef) -> None:
    """Add the routes to ComfyUI's table (``PromptServer.instance.routes``) before the server adds them to its app."""
    present = {(getattr(r, "method", None), getattr(r, "path", None)) for r in table}
    for route in routes:
        if (route.method, route.path) not in present:  # importing the pack twice must not add them twice
            table.route(route.method, route.path)(route.handler)


def register_with_comfyui() -> bool:
    """Register with the running ComfyUI server; False where there is none (the optimizer, plain imports)."""
    try:
        from server import PromptServer
    except ImportError:
        return False
    instance = getattr(PromptServer, "instance", None)
    if instance is None:
        return False
    register(instance.routes)
    return True

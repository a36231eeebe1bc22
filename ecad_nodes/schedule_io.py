"""Reading and writing schedule files.

Two formats are read: this project's versioned format (``docs/schedule-format.md``) and the JSON
of the official ECAD repository, as it is (``cache_schedule.schedule[step][block][component]``,
true = recompute). Only the project's format is written.

Masks are stored one string per step and block group, blocks separated by spaces and each block
one character per component (``"111 101 000"``): a FLUX frontier point is 20 short lines that a
diff shows block by block.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .costs import fit_full_macs_from_steps
from .schedule import BlockGroup, FrontierPoint, Layout, Mask, PointMetrics, ScheduleError, ScheduleFile

FORMAT_NAME = "ecad-schedule"
FORMAT_VERSION = 1

# The official repository's genome, mapped onto this project's component names.
OFFICIAL_FLUX_DOUBLE = {"full_attn": "attn", "full_ff": "img_mlp", "full_ff_context": "txt_mlp"}
OFFICIAL_FLUX_SINGLE = {"single_attn": "attn", "single_proj_mlp": "mlp_in", "single_proj_out": "out_proj"}
OFFICIAL_PIXART = {"attn1": "self_attn", "attn2": "cross_attn", "ff": "mlp"}


def load_schedule(path: Path | str) -> ScheduleFile:
    """Read a schedule file of either format; every problem is a ScheduleError naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ScheduleError(f"cannot be read ({e.strerror or e})", path) from None
    except UnicodeDecodeError:
        raise ScheduleError("is not UTF-8 text; expected a JSON schedule file", path) from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ScheduleError(f"is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})", path) from None
    schedule = parse_schedule(doc, path)
    schedule.path = path
    return schedule


def parse_schedule(doc: Any, path: Optional[Path | str] = None) -> ScheduleFile:
    if isinstance(doc, dict) and "cache_schedule" in doc:
        return _parse_official(doc, path)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise ScheduleError(
            f"is not a schedule file: expected a JSON object with \"format\": \"{FORMAT_NAME}\" "
            "or an official ECAD schedule with \"cache_schedule\"", path)
    version = doc.get("version")
    if version != FORMAT_VERSION:
        raise ScheduleError(
            f"has format version {version!r}; this version of ComfyUI-ECAD reads version {FORMAT_VERSION}"
            + (" (the file is newer: update ComfyUI-ECAD)" if isinstance(version, int) and version > FORMAT_VERSION else ""),
            path)
    return _parse_v1(doc, path)


def _require(cond: bool, message: str, path) -> None:
    if not cond:
        raise ScheduleError(message, path)


def _parse_v1(doc: dict, path) -> ScheduleFile:
    model = doc.get("model")
    _require(isinstance(model, dict) and isinstance(model.get("family"), str) and model["family"],
             "needs \"model\": {\"family\": ...}", path)
    steps = doc.get("steps")
    _require(isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1,
             f"needs \"steps\" as a positive integer, got {steps!r}", path)
    groups_doc = doc.get("block_groups")
    _require(isinstance(groups_doc, list) and groups_doc, "needs a non-empty \"block_groups\" list", path)
    groups = []
    for i, g in enumerate(groups_doc):
        ok = (isinstance(g, dict) and isinstance(g.get("name"), str) and isinstance(g.get("blocks"), int)
              and not isinstance(g.get("blocks"), bool) and g["blocks"] >= 1
              and isinstance(g.get("components"), list) and g["components"]
              and all(isinstance(c, str) and c for c in g["components"]))
        _require(ok, f"block_groups[{i}] needs \"name\", \"blocks\" (a positive integer) and \"components\" (names)", path)
        _require(len(set(g["components"])) == len(g["components"]), f"block_groups[{i}] repeats a component name", path)
        groups.append(BlockGroup(g["name"], g["blocks"], tuple(g["components"])))
    _require(len({g.name for g in groups}) == len(groups), "block_groups repeats a group name", path)
    layout = Layout(model["family"], tuple(groups))

    points_doc = doc.get("points")
    _require(isinstance(points_doc, list) and points_doc, "needs a non-empty \"points\" list", path)
    points = [_parse_point(p, f"points[{i}]", layout, steps, path) for i, p in enumerate(points_doc)]
    names = [p.name for p in points]
    _require(len(set(names)) == len(names), "has two points with the same name", path)
    baselines_doc = doc.get("baselines", [])
    _require(isinstance(baselines_doc, list), "\"baselines\" must be a list", path)
    baselines = [_parse_point(p, f"baselines[{i}]", layout, steps, path) for i, p in enumerate(baselines_doc)]
    provenance = doc.get("provenance", {})
    _require(isinstance(provenance, dict), "\"provenance\" must be an object", path)
    variant = model.get("variant")
    _require(variant is None or isinstance(variant, str), "\"model.variant\" must be a string", path)
    return ScheduleFile(model["family"], variant, layout, steps, points, provenance, baselines)


def _parse_point(p: Any, where: str, layout: Layout, steps: int, path) -> FrontierPoint:
    _require(isinstance(p, dict) and isinstance(p.get("name"), str) and p["name"].strip(),
             f"{where} needs a \"name\"", path)
    name = p["name"]
    _require(" · " not in name, f"{where} name {name!r} must not contain ' · ' (used in dropdown labels)", path)
    mask_doc = p.get("mask")
    _require(isinstance(mask_doc, dict), f"point '{name}' needs a \"mask\" object with one entry per block group", path)
    extra = set(mask_doc) - {g.name for g in layout.groups}
    _require(not extra, f"point '{name}' mask names unknown block groups {sorted(extra)}", path)
    bits = np.zeros((steps, layout.bits_per_step), dtype=bool)
    offsets = layout.offsets()
    for g in layout.groups:
        rows = mask_doc.get(g.name)
        _require(isinstance(rows, list) and len(rows) == steps,
                 f"point '{name}' mask.{g.name} needs {steps} rows (one per step), got "
                 f"{len(rows) if isinstance(rows, list) else type(rows).__name__}", path)
        for s, row in enumerate(rows):
            _require(isinstance(row, str), f"point '{name}' mask.{g.name}[{s}] must be a string", path)
            blocks = row.split()
            _require(len(blocks) == g.blocks and all(len(b) == len(g.components) for b in blocks)
                     and set("".join(blocks)) <= {"0", "1"},
                     f"point '{name}' mask.{g.name}[{s}] must be {g.blocks} space-separated blocks of "
                     f"{len(g.components)} digits 0/1 ({', '.join(g.components)}), got {row[:60]!r}", path)
            bits[s, offsets[g.name]:offsets[g.name] + g.bits] = [c == "1" for c in "".join(blocks)]
    metrics = _parse_metrics(p.get("metrics", {}), name, path)
    return FrontierPoint(name, Mask(layout, bits), metrics)


def _number(value: Any, what: str, path) -> Optional[float]:
    if value is None:
        return None
    _require(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
             f"{what} must be a finite number, got {value!r}", path)
    return float(value)


def _parse_metrics(m: Any, name: str, path) -> PointMetrics:
    _require(isinstance(m, dict), f"point '{name}' metrics must be an object", path)
    quality = m.get("quality")
    metric = value = None
    if quality is not None:
        _require(isinstance(quality, dict) and isinstance(quality.get("metric"), str),
                 f"point '{name}' metrics.quality needs {{\"metric\": name, \"value\": number}}", path)
        metric = quality["metric"]
        value = _number(quality.get("value"), f"point '{name}' metrics.quality.value", path)
    known = {"quality", "macs", "full_macs", "latency_ms", "speedup"}
    return PointMetrics(
        quality_metric=metric, quality=value,
        macs=_number(m.get("macs"), f"point '{name}' metrics.macs", path),
        full_macs=_number(m.get("full_macs"), f"point '{name}' metrics.full_macs", path),
        latency_ms=_number(m.get("latency_ms"), f"point '{name}' metrics.latency_ms", path),
        speedup=_number(m.get("speedup"), f"point '{name}' metrics.speedup", path),
        extra={k: v for k, v in m.items() if k not in known})


def _parse_official(doc: dict, path) -> ScheduleFile:
    cs = doc["cache_schedule"]
    _require(isinstance(cs, dict) and isinstance(cs.get("schedule"), dict) and cs["schedule"],
             "is an official ECAD schedule without a \"cache_schedule.schedule\" table", path)
    table = cs["schedule"]
    steps = cs.get("num_inference_steps", len(table))
    _require(isinstance(steps, int) and steps >= 1, f"has num_inference_steps {steps!r}", path)
    step_keys = sorted(table, key=lambda k: int(k) if str(k).isdigit() else -1)
    _require([int(k) for k in step_keys if str(k).isdigit()] == list(range(steps)) and len(step_keys) == steps,
             f"official schedule must list steps \"000\"..\"{steps - 1:03d}\"", path)
    first = table[step_keys[0]]
    _require(isinstance(first, dict) and first, "official schedule has an empty step", path)
    if any(str(b).startswith("single_") for b in first):
        double_n = cs.get("num_blocks", sum(1 for b in first if str(b).isdigit()))
        single_n = cs.get("num_single_blocks", sum(1 for b in first if str(b).startswith("single_")))
        layout = Layout("flux", (
            BlockGroup("double_blocks", double_n, tuple(OFFICIAL_FLUX_DOUBLE.values())),
            BlockGroup("single_blocks", single_n, tuple(OFFICIAL_FLUX_SINGLE.values()))))
        plan = [("double_blocks", [str(i) for i in range(double_n)], OFFICIAL_FLUX_DOUBLE),
                ("single_blocks", [f"single_{i}" for i in range(single_n)], OFFICIAL_FLUX_SINGLE)]
    else:
        n = cs.get("num_blocks", len(first))
        layout = Layout("pixart", (BlockGroup("blocks", n, tuple(OFFICIAL_PIXART.values())),))
        plan = [("blocks", [str(i) for i in range(n)], OFFICIAL_PIXART)]

    bits = np.zeros((steps, layout.bits_per_step), dtype=bool)
    for s, key in enumerate(step_keys):
        col = 0
        for group, block_keys, names in plan:
            for b in block_keys:
                entry = table[key].get(b)
                _require(isinstance(entry, dict), f"official schedule step {key} has no block \"{b}\" ({group})", path)
                for official in names:
                    flag = entry.get(official)
                    _require(isinstance(flag, bool), f"official schedule step {key} block \"{b}\" needs "
                             f"\"{official}\": true/false", path)
                    bits[s, col] = flag
                    col += 1
    mask = Mask(layout, bits)

    metrics_doc = doc.get("metrics") or {}
    macs = metrics_doc.get("total_macs")
    full_macs = None
    by_step = metrics_doc.get("by_inference_step")
    if isinstance(by_step, dict) and len(by_step) == steps:
        try:
            step_macs = np.array([by_step[k]["macs"] for k in step_keys], dtype=np.float64)
            full_macs = fit_full_macs_from_steps(mask, step_macs)
        except (KeyError, TypeError, ValueError):
            full_macs = None
    latency = metrics_doc.get("latency") or {}
    metrics = PointMetrics(
        macs=float(macs) if isinstance(macs, (int, float)) else None,
        full_macs=full_macs,
        latency_ms=float(latency["avg"]) if isinstance(latency.get("avg"), (int, float)) else None,
        extra={"mac_convention": "linear layers only (calflops)",
               **({"latency_gpu": latency["gpu"]} if "gpu" in latency else {})})
    name = Path(path).stem if path else str(cs.get("name", "official"))
    provenance = {"source": "official ECAD repository schedule (github.com/AniAggarwal/ecad)",
                  "original_name": cs.get("name"), "config": doc.get("config", {})}
    return ScheduleFile(layout.family, None, layout, steps, [FrontierPoint(name, mask, metrics)], provenance)


# ---------------------------------------------------------------- writing

def mask_to_json(mask: Mask) -> dict[str, list[str]]:
    out = {}
    for g, bits in mask.groups():
        out[g.name] = [" ".join("".join("1" if c else "0" for c in block) for block in step) for step in bits]
    return out


def _metrics_to_json(m: PointMetrics) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if m.quality_metric is not None:
        out["quality"] = {"metric": m.quality_metric, "value": m.quality}
    for key in ("macs", "full_macs", "latency_ms", "speedup"):
        value = getattr(m, key)
        if value is not None:
            out[key] = value
    out.update(m.extra)
    return out


def _point_to_json(p: FrontierPoint) -> dict[str, Any]:
    return {"name": p.name, "metrics": _metrics_to_json(p.metrics), "mask": mask_to_json(p.mask)}


def schedule_to_json(s: ScheduleFile) -> dict[str, Any]:
    doc = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "model": {"family": s.family, **({"variant": s.variant} if s.variant else {})},
        "steps": s.steps,
        "block_groups": s.layout.to_json(),
        "provenance": s.provenance,
        "points": [_point_to_json(p) for p in s.points],
    }
    if s.baselines:
        doc["baselines"] = [_point_to_json(p) for p in s.baselines]
    return doc


def dump_schedule(s: ScheduleFile) -> str:
    return json.dumps(schedule_to_json(s), indent=2, ensure_ascii=False) + "\n"


def _file_mode(path: Path) -> int:
    """The mode a plain ``open(path, "w")`` would give: the old file's, else 0666 less the umask."""
    if path.exists():
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def save_schedule(s: ScheduleFile, path: Path | str) -> Path:
    """Write atomically: a reader never sees half a file, and a failed write leaves the old one."""
    path = Path(path)
    text = dump_schedule(s)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, _file_mode(path))  # mkstemp makes 0600; a ComfyUI run by another user must read it
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path

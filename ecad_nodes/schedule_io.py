"""Reading and writing schedule files.

Two formats are read: this project's versioned format (``docs/schedule-format.md``) and the JSON
of the official ECAD repository, as it is (``cache_schedule.schedule[step][block][component]``,
true = recompute). Only the project's format is written.

Masks are stored one string per step and block group, blocks separated by spaces and each block
one character per component (``"111 101 000"``): a FLUX frontier point is 20 short lines that a
diff shows block by block.

Reading is meant for files nobody checked: every problem is a ``ScheduleError`` that names the file
and the field, never quoting a value from the file. Limits (file size, nesting, number length,
steps, groups, blocks, components, points) are checked before anything that grows with them is
allocated, so a small file cannot make the reader allocate gigabytes or spin for seconds.
"""
from __future__ import annotations

import json
import math
import os
import re
import stat
import tempfile
import unicodedata
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

# ---------------------------------------------------------------- limits (docs/schedule-format.md#limits)

MAX_FILE_BYTES = 8 * 1024 * 1024   # an official FLUX.1 file is 205 KB; an optimizer file of 12 FLUX points 70 KB
MAX_DEPTH = 32                     # nested arrays and objects (the official format needs 5)
MAX_VALUES = 500_000               # JSON values in a file (an official FLUX.1 file holds 5 000): bounds the memory
MAX_INT_DIGITS = 20
MAX_FLOAT_CHARS = 64
MAX_STEPS = 10_000                 # KSampler's limit
MAX_GROUPS = 16
MAX_BLOCKS = 1_024                 # per block group
MAX_COMPONENTS = 16                # per block
MAX_POINTS = 1_000                 # points; baselines likewise
MAX_NAME_CHARS = 100               # point, metric and variant names (they appear in dropdown labels)
MAX_LABEL_NUMBER = 1e9             # speedups, MAC ratios and qualities shown in labels

_IDENTIFIER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}")
_STEP_KEY = re.compile(r"[0-9]{1,5}")
_BLOCK_KEY = re.compile(r"(single_)?([0-9]{1,4})")
_UNPRINTABLE = frozenset({"Cc", "Cs", "Zl", "Zp"})  # controls, lone surrogates, line and paragraph separators
# A string, or an unterminated one to the end of the text: every match attempt succeeds, so ``sub`` never rescans
# (a pattern that fails on an unterminated string rescans from each escaped quote: quadratic time).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.S)
_BRACKETS = b"[]{}"
_NOT_BRACKETS = bytes(b for b in range(256) if b not in _BRACKETS)
# Field names a duplicate-key message may name (anything else in a file is not repeated back).
_KNOWN_KEYS = frozenset({
    "format", "version", "model", "family", "variant", "steps", "block_groups", "name", "blocks", "components",
    "provenance", "points", "baselines", "mask", "metrics", "quality", "metric", "value", "macs", "full_macs",
    "latency_ms", "speedup", "cache_schedule", "schedule", "num_inference_steps", "num_blocks", "num_single_blocks",
    "config", "by_inference_step", "total_macs", "latency", "avg", "gpu",
    *OFFICIAL_FLUX_DOUBLE, *OFFICIAL_FLUX_SINGLE, *OFFICIAL_PIXART})


class _Refused(Exception):
    """Raised inside the JSON decoder's hooks; becomes a ScheduleError naming the file."""


def load_schedule(path: Path | str) -> ScheduleFile:
    """Read a schedule file of either format; every problem is a ScheduleError naming the file."""
    path = Path(path)
    schedule = parse_schedule_bytes(read_limited(path), path)
    schedule.path = path
    return schedule


def read_limited(path: Path) -> bytes:
    """The file's bytes: a regular file of at most MAX_FILE_BYTES (a FIFO or device is refused without blocking)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as e:
        raise ScheduleError(f"cannot be read ({e.strerror or type(e).__name__})", path) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ScheduleError("is not a regular file", path)
        if info.st_size > MAX_FILE_BYTES:
            raise ScheduleError(f"is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB, the limit for schedule files", path)
        chunks, size = [], 0
        while size <= MAX_FILE_BYTES:  # read to the end, but never past the limit (the file may grow meanwhile)
            chunk = os.read(fd, min(1 << 20, MAX_FILE_BYTES + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        raise ScheduleError(f"cannot be read ({e.strerror or type(e).__name__})", path) from None
    finally:
        os.close(fd)
    if size > MAX_FILE_BYTES:
        raise ScheduleError(f"is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB, the limit for schedule files", path)
    return b"".join(chunks)


def json_shape(data: bytes) -> tuple[int, int]:
    """How deeply arrays and objects nest in JSON text, and about how many values it holds (strings skipped, nothing
    decoded): what decoding it would build, known before building it."""
    skeleton = _JSON_STRING.sub(b'""', data)
    values = skeleton.count(b",") + skeleton.count(b":") + 1
    brackets = skeleton.translate(None, _NOT_BRACKETS)
    deepest = depth = 0
    chunk = 1 << 20
    for start in range(0, len(brackets), chunk):  # bounded memory whatever the file holds
        part = np.frombuffer(brackets, np.uint8, count=min(chunk, len(brackets) - start), offset=start)
        steps = (part & 2).astype(np.int32) - 1          # '[' and '{' have bit 1 set: +1; ']' and '}': -1
        running = np.cumsum(steps) + depth
        deepest = max(deepest, int(running.max()))
        depth = int(running[-1])
    return deepest, values + len(brackets) // 2


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        repeated = next(k for k, _ in pairs if k in seen or seen.add(k))
        known = repeated in _KNOWN_KEYS or _BLOCK_KEY.fullmatch(repeated) is not None  # step and block numbers too
        named = f"the key \"{repeated}\"" if known else "a key"
        raise _Refused(f"repeats {named} in one JSON object (keys must be unique; which one counts is undefined)")
    return obj


def _json_int(text: str) -> int:
    if len(text) - text.startswith("-") > MAX_INT_DIGITS:
        raise _Refused(f"holds an integer of more than {MAX_INT_DIGITS} digits")
    return int(text)


def _json_float(text: str) -> float:
    if len(text) > MAX_FLOAT_CHARS:
        raise _Refused(f"holds a number written with more than {MAX_FLOAT_CHARS} characters")
    value = float(text)
    if not math.isfinite(value):
        raise _Refused("holds a number too large for a double")
    return value


def _json_constant(text: str) -> Any:
    raise _Refused("holds NaN or Infinity, which JSON does not allow")


def parse_schedule_bytes(data: bytes, path: Optional[Path | str] = None) -> ScheduleFile:
    """A schedule from a file's bytes (at most MAX_FILE_BYTES), either format."""
    if len(data) > MAX_FILE_BYTES:
        raise ScheduleError(f"is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB, the limit for schedule files", path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ScheduleError("is not UTF-8 text; expected a JSON schedule file", path) from None
    depth, values = json_shape(data)
    if depth > MAX_DEPTH:
        raise ScheduleError(f"nests arrays and objects more than {MAX_DEPTH} levels deep; a schedule file needs "
                            "far fewer", path)
    if values > MAX_VALUES:
        raise ScheduleError(f"holds more than {MAX_VALUES} JSON values; a schedule file needs far fewer", path)
    try:
        doc = json.loads(text, object_pairs_hook=_unique_keys, parse_int=_json_int, parse_float=_json_float,
                         parse_constant=_json_constant)
    except json.JSONDecodeError as e:
        raise ScheduleError(f"is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})", path) from None
    except _Refused as e:
        raise ScheduleError(str(e), path) from None
    return parse_schedule(doc, path)


def parse_schedule(doc: Any, path: Optional[Path | str] = None) -> ScheduleFile:
    """A schedule from a decoded JSON document, either format."""
    if isinstance(doc, dict) and "cache_schedule" in doc:
        return _parse_official(doc, path)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise ScheduleError(
            f"is not a schedule file: expected a JSON object with \"format\": \"{FORMAT_NAME}\" "
            "or an official ECAD schedule with \"cache_schedule\"", path)
    version = doc.get("version")
    if version != FORMAT_VERSION or not _is_int(version):
        newer = _is_int(version) and version > FORMAT_VERSION
        raise ScheduleError(
            f"has a \"version\" this release cannot read: ComfyUI-ECAD reads format version {FORMAT_VERSION}"
            + (" (the file is newer: update ComfyUI-ECAD)" if newer else ""), path)
    return _parse_v1(doc, path)


# ---------------------------------------------------------------- field checks

def _require(cond: bool, message: str, path) -> None:
    if not cond:
        raise ScheduleError(message, path)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _count(value: Any, field: str, low: int, high: int, path) -> int:
    _require(_is_int(value) and low <= value <= high, f"{field} must be an integer from {low} to {high}", path)
    return value


def _identifier(value: Any, field: str, path) -> str:
    _require(isinstance(value, str) and _IDENTIFIER.fullmatch(value) is not None,
             f"{field} must be a name of at most 64 letters, digits, '_', '.' or '-' (not starting with '.' or '-')",
             path)
    return value


def label_text_problem(value: Any) -> Optional[str]:
    """Why ``value`` cannot stand in a dropdown label and be read back from it; None if it can."""
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"
    if len(value) > MAX_NAME_CHARS:
        return f"is longer than {MAX_NAME_CHARS} characters"
    if value != value.strip():
        return "starts or ends with white space, which a dropdown label loses"
    if "·" in value:
        return "contains '·', which separates the parts of a dropdown label"
    if any(unicodedata.category(c) in _UNPRINTABLE for c in value):
        return "contains control characters or line breaks"
    return None


def _label_text(value: Any, field: str, path) -> str:
    why = label_text_problem(value)
    _require(why is None, f"{field} {why}", path)
    return value


def _amount(value: Any, field: str, path, positive: bool = False) -> Optional[float]:
    """An optional figure that cannot be negative (MACs, latency) or must be positive (speedup)."""
    if value is None:
        return None
    ok = _is_number(value) and (value > 0 if positive else value >= 0)
    _require(ok, f"{field} must be a {'positive' if positive else 'non-negative'} finite number", path)
    return float(value)


# ---------------------------------------------------------------- this project's format

_GROUP_KEYS = {"name", "blocks", "components"}


def _parse_v1(doc: dict, path) -> ScheduleFile:
    model = doc.get("model")
    _require(isinstance(model, dict), "needs \"model\": {\"family\": ...}", path)
    family = _identifier(model.get("family"), "model.family", path)
    variant = model.get("variant")
    if variant is not None:
        _label_text(variant, "model.variant", path)
    steps = _count(doc.get("steps"), "\"steps\"", 1, MAX_STEPS, path)

    groups_doc = doc.get("block_groups")
    _require(isinstance(groups_doc, list) and 1 <= len(groups_doc) <= MAX_GROUPS,
             f"needs a \"block_groups\" list of 1 to {MAX_GROUPS} groups", path)
    groups = []
    for i, g in enumerate(groups_doc):
        where = f"block_groups[{i}]"
        _require(isinstance(g, dict) and set(g) == _GROUP_KEYS,
                 f"{where} needs exactly \"name\", \"blocks\" (a positive integer) and \"components\" (names)", path)
        name = _identifier(g["name"], f"{where}.name", path)
        blocks = _count(g["blocks"], f"{where}.blocks", 1, MAX_BLOCKS, path)
        components = g["components"]
        _require(isinstance(components, list) and 1 <= len(components) <= MAX_COMPONENTS,
                 f"{where}.components must list 1 to {MAX_COMPONENTS} component names", path)
        for j, c in enumerate(components):
            _identifier(c, f"{where}.components[{j}]", path)
        _require(len(set(components)) == len(components), f"{where} repeats a component name", path)
        groups.append(BlockGroup(name, blocks, tuple(components)))
    _require(len({g.name for g in groups}) == len(groups), "block_groups repeats a group name", path)
    layout = Layout(family, tuple(groups))

    points = _parse_points(doc.get("points"), "points", layout, steps, path, required=True)
    baselines = _parse_points(doc.get("baselines", []), "baselines", layout, steps, path, required=False)
    provenance = doc.get("provenance", {})
    _require(isinstance(provenance, dict), "\"provenance\" must be an object", path)
    return ScheduleFile(family, variant, layout, steps, points, provenance, baselines)


def _parse_points(items: Any, field: str, layout: Layout, steps: int, path, required: bool) -> list[FrontierPoint]:
    _require(isinstance(items, list) and (not required or items) and len(items) <= MAX_POINTS,
             f"needs a {'non-empty ' if required else ''}\"{field}\" list of at most {MAX_POINTS} points", path)
    points, names = [], set()
    for i, p in enumerate(items):
        where = f"{field}[{i}]"
        _require(isinstance(p, dict), f"{where} must be an object with \"name\", \"mask\" and \"metrics\"", path)
        name = _label_text(p.get("name"), f"{where}.name", path)
        _require(name not in names, f"{where}.name is the name of an earlier point in \"{field}\" (two points "
                                    "with the same name)", path)
        names.add(name)
        bits = _parse_mask(p.get("mask"), f"{where}.mask", layout, steps, path)
        metrics = _parse_metrics(p.get("metrics", {}), f"{where}.metrics", path)
        points.append(FrontierPoint(name, Mask(layout, bits), metrics))
    return points


def _parse_mask(mask_doc: Any, field: str, layout: Layout, steps: int, path) -> np.ndarray:
    names = [g.name for g in layout.groups]
    _require(isinstance(mask_doc, dict) and len(mask_doc) == len(names) and all(n in mask_doc for n in names),
             f"{field} needs exactly one entry per block group ({', '.join(names)})", path)
    parts = []
    for g in layout.groups:
        rows, where = mask_doc[g.name], f"{field}.{g.name}"
        _require(isinstance(rows, list) and len(rows) == steps, f"{where} needs {steps} rows (one per step)", path)
        per_block = len(g.components)
        width = g.blocks * (per_block + 1) - 1
        expected = (f"must be {g.blocks} space-separated blocks of {per_block} digits 0/1 "
                    f"({', '.join(g.components)})")
        for s, row in enumerate(rows):  # lengths first: nothing is joined or allocated for a wrong row
            _require(isinstance(row, str) and len(row) == width and row.isascii(), f"{where}[{s}] {expected}", path)
        chars = np.frombuffer("".join(rows).encode("ascii"), np.uint8).reshape(steps, width)
        columns = np.arange(width)
        is_space = (columns % (per_block + 1)) == per_block
        bad = ~((chars[:, is_space] == ord(" ")).all(axis=1)
                & ((chars[:, ~is_space] == ord("0")) | (chars[:, ~is_space] == ord("1"))).all(axis=1))
        if bad.any():
            raise ScheduleError(f"{where}[{int(np.argmax(bad))}] {expected}", path)
        parts.append(chars[:, ~is_space] == ord("1"))
    return np.concatenate(parts, axis=1)


_KNOWN_METRICS = {"quality", "macs", "full_macs", "latency_ms", "speedup"}


def _parse_metrics(m: Any, where: str, path) -> PointMetrics:
    _require(isinstance(m, dict), f"{where} must be an object", path)
    quality, metric, value = m.get("quality"), None, None
    if quality is not None:
        _require(isinstance(quality, dict) and "metric" in quality and "value" in quality,
                 f"{where}.quality needs {{\"metric\": name, \"value\": number}}", path)
        metric = _label_text(quality["metric"], f"{where}.quality.metric", path)
        value = quality["value"]
        _require(_is_number(value) and abs(value) < MAX_LABEL_NUMBER,
                 f"{where}.quality.value must be a finite number below {MAX_LABEL_NUMBER:.0e} in size", path)
        value = float(value)
    macs = _amount(m.get("macs"), f"{where}.macs", path)
    full_macs = _amount(m.get("full_macs"), f"{where}.full_macs", path)
    speedup = _amount(m.get("speedup"), f"{where}.speedup", path, positive=True)
    _require(speedup is None or speedup < MAX_LABEL_NUMBER, f"{where}.speedup is above {MAX_LABEL_NUMBER:.0e}", path)
    if macs and full_macs:
        _require(full_macs / macs < MAX_LABEL_NUMBER,
                 f"{where}.full_macs / {where}.macs is above {MAX_LABEL_NUMBER:.0e}, which no schedule reaches", path)
    return PointMetrics(
        quality_metric=metric, quality=value, macs=macs, full_macs=full_macs,
        latency_ms=_amount(m.get("latency_ms"), f"{where}.latency_ms", path), speedup=speedup,
        extra={k: v for k, v in m.items() if k not in _KNOWN_METRICS})


# ---------------------------------------------------------------- the official ECAD repository's format

def _official_blocks(keys: list[str], field: str, path) -> tuple[int, int]:
    """Double (plain numbers) and single (``single_N``) block counts of one step's keys, each a full range 0..n-1."""
    double, single = set(), set()
    for key in keys:
        match = _BLOCK_KEY.fullmatch(key)
        _require(match is not None, f"{field} has a block key that is neither \"N\" nor \"single_N\"", path)
        (single if match.group(1) else double).add(int(match.group(2)))
    _require(len(double) + len(single) == len(keys), f"{field} lists a block twice", path)
    for found, kind in ((double, "numbered"), (single, "single_N")):
        _require(found == set(range(len(found))), f"{field}: the {kind} blocks must be numbered 0, 1, 2, … "
                                                   "without gaps", path)
    return len(double), len(single)


def _parse_official(doc: dict, path) -> ScheduleFile:
    cs = doc["cache_schedule"]
    _require(isinstance(cs, dict) and isinstance(cs.get("schedule"), dict) and cs["schedule"],
             "is an official ECAD schedule without a \"cache_schedule.schedule\" table", path)
    table = cs["schedule"]
    _require(len(table) <= MAX_STEPS, f"cache_schedule.schedule has more than {MAX_STEPS} steps", path)
    order: dict[int, str] = {}
    for key in table:
        _require(_STEP_KEY.fullmatch(key) is not None,
                 "cache_schedule.schedule keys must be step numbers of ASCII digits (\"000\", \"001\", …)", path)
        _require(int(key) not in order, "cache_schedule.schedule lists a step twice (e.g. \"1\" and \"001\")", path)
        order[int(key)] = key
    steps = len(table)
    _require(set(order) == set(range(steps)), f"cache_schedule.schedule must list steps 0 to {steps - 1} without gaps",
             path)
    declared = cs.get("num_inference_steps", steps)
    _require(_is_int(declared) and declared == steps,
             f"cache_schedule.num_inference_steps disagrees with the table, which lists {steps} steps", path)
    step_keys = [order[s] for s in range(steps)]

    first = table[step_keys[0]]
    _require(isinstance(first, dict) and first, "cache_schedule.schedule step 0 must be an object of blocks", path)
    block_keys = sorted(first)
    double_n, single_n = _official_blocks(block_keys, "cache_schedule.schedule step 0", path)
    flux = single_n > 0
    _require(double_n >= 1 and double_n <= MAX_BLOCKS and single_n <= MAX_BLOCKS,
             f"cache_schedule.schedule step 0 must hold 1 to {MAX_BLOCKS} numbered blocks"
             + (f" and at most {MAX_BLOCKS} single_N blocks" if flux else ""), path)
    for key, count in (("num_blocks", double_n), ("num_single_blocks", single_n)):
        if key in cs:
            _require(_is_int(cs[key]) and cs[key] == count,
                     f"cache_schedule.{key} disagrees with the table, which holds {count} such blocks per step", path)
    if flux:
        layout = Layout("flux", (
            BlockGroup("double_blocks", double_n, tuple(OFFICIAL_FLUX_DOUBLE.values())),
            BlockGroup("single_blocks", single_n, tuple(OFFICIAL_FLUX_SINGLE.values()))))
        plan = [*((str(i), OFFICIAL_FLUX_DOUBLE) for i in range(double_n)),
                *((f"single_{i}", OFFICIAL_FLUX_SINGLE) for i in range(single_n))]
    else:
        layout = Layout("pixart", (BlockGroup("blocks", double_n, tuple(OFFICIAL_PIXART.values())),))
        plan = [(str(i), OFFICIAL_PIXART) for i in range(double_n)]
    expected_blocks = {key for key, _ in plan}

    bits = np.zeros((steps, layout.bits_per_step), dtype=bool)  # bounded: every bit is a key in the file
    for s, key in enumerate(step_keys):
        entry = table[key]
        if not (isinstance(entry, dict) and entry.keys() == expected_blocks):
            raise ScheduleError(f"cache_schedule.schedule step {s} must hold the same blocks as step 0", path)
        row: Optional[list[bool]] = []
        for block, names in plan:
            flags = entry[block]
            if not isinstance(flags, dict) or flags.keys() != names.keys():
                row = None
                break
            row.extend(flags[n] for n in names)
        if row is None or not all(v is True or v is False for v in row):
            block, names = next((b, n) for b, n in plan if not (
                isinstance(entry[b], dict) and entry[b].keys() == n.keys() and all(type(entry[b][c]) is bool for c in n)))
            raise ScheduleError(f"cache_schedule.schedule step {s} block \"{block}\" needs exactly "
                                f"{', '.join(f'{n!r}' for n in names)}: true/false", path)
        bits[s] = row
    mask = Mask(layout, bits)

    metrics_doc = doc.get("metrics", {})
    _require(isinstance(metrics_doc, dict), "\"metrics\" must be an object", path)
    macs = _amount(metrics_doc.get("total_macs"), "metrics.total_macs", path)
    full_macs = None
    by_step = metrics_doc.get("by_inference_step")
    if by_step is not None:
        _require(isinstance(by_step, dict) and by_step.keys() == set(step_keys)
                 and all(isinstance(by_step[k], dict) for k in step_keys),
                 "metrics.by_inference_step must have one object per step of the table", path)
        step_macs = np.array([_amount(by_step[k].get("macs"), f"metrics.by_inference_step step {s}.macs", path)
                              if by_step[k].get("macs") is not None else math.nan
                              for s, k in enumerate(step_keys)], dtype=np.float64)
        if np.isfinite(step_macs).all():
            with np.errstate(all="ignore"):
                try:
                    full_macs = fit_full_macs_from_steps(mask, step_macs)
                except np.linalg.LinAlgError:
                    full_macs = None
            if full_macs is not None and not (math.isfinite(full_macs) and full_macs > 0):
                full_macs = None  # the per-step figures do not determine it
    if macs and full_macs and full_macs / macs >= MAX_LABEL_NUMBER:
        full_macs = None
    latency = metrics_doc.get("latency", {})
    _require(isinstance(latency, dict), "metrics.latency must be an object", path)
    extra: dict[str, Any] = {"mac_convention": "linear layers only (calflops)"}
    gpu = latency.get("gpu")
    if gpu is not None:
        extra["latency_gpu"] = _label_text(gpu, "metrics.latency.gpu", path)
    metrics = PointMetrics(macs=macs, full_macs=full_macs,
                           latency_ms=_amount(latency.get("avg"), "metrics.latency.avg", path), extra=extra)

    original = cs.get("name")
    _require(original is None or isinstance(original, str), "cache_schedule.name must be a string", path)
    if path:
        name = Path(path).stem
        why = label_text_problem(name)
        _require(why is None, f"names its only point after the file, and the file name {why}: rename the file", path)
    else:
        name = _label_text(original if original is not None else "official", "cache_schedule.name", path)
    config = doc.get("config", {})
    _require(isinstance(config, dict), "\"config\" must be an object", path)
    provenance = {"source": "official ECAD repository schedule (github.com/AniAggarwal/ecad)",
                  "original_name": original, "config": config}
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


def dump_schedule(s: ScheduleFile, path: Optional[Path | str] = None) -> str:
    """The file's text; a ScheduleError (naming ``path``) where a value is NaN or infinite: JSON has no such numbers,
    and the reader refuses the 'NaN' Python's json would write."""
    try:
        return json.dumps(schedule_to_json(s), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    except ValueError:
        raise ScheduleError("cannot be written: a value (a metric?) is NaN or infinite, which JSON does not allow; the "
                            "file was left as it was", path) from None


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
    text = dump_schedule(s, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())  # after a crash the name points at the old file or the whole new one, never an empty one
        os.chmod(tmp, _file_mode(path))  # mkstemp makes 0600; a ComfyUI run by another user must read it
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path

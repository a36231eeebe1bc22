"""Schedule reader under hostile input: how many generated files were tried, what became of them, how long and how
much memory the worst took; and how long the largest files the reader accepts take, cold and cached.

    python benchmarks/bench_schedule_fuzz.py [--inputs 20000] [--seed 0] [--listing-every 25]

Inputs, in equal shares: random bytes; random JSON documents; valid files of this project's format and of the
official ECAD format with 1-3 parts replaced, removed, duplicated or set to boundary numbers; the same files with
bytes flipped, inserted or cut; and small hand-made files that once crashed or stalled the reader (deep nesting,
integers past Python's digit limit, huge declared step and block counts). Each is written to a file and read with
``load_schedule``; anything but a schedule or a ScheduleError is a failure (the exit status is 1). Every
``--listing-every``-th input is also put in a schedule folder and listed through the node, which must list it exactly
when it is valid, and always the heuristics. Memory is the peak of Python and numpy allocations (tracemalloc).
"""
from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from ecad_nodes import library  # noqa: E402
from ecad_nodes.schedule import BlockGroup, FrontierPoint, Layout, Mask, PointMetrics, ScheduleError, ScheduleFile  # noqa: E402
from ecad_nodes.schedule_io import (MAX_FILE_BYTES, MAX_VALUES, dump_schedule, load_schedule,  # noqa: E402
                                    schedule_to_json)

FLUX = Layout("flux", (BlockGroup("double_blocks", 19, ("attn", "img_mlp", "txt_mlp")),
                       BlockGroup("single_blocks", 38, ("attn", "mlp_in", "out_proj"))))
SMALL = Layout("flux", (BlockGroup("double_blocks", 2, ("attn", "img_mlp", "txt_mlp")),
                        BlockGroup("single_blocks", 3, ("attn", "mlp_in", "out_proj"))))


def v1_doc(layout: Layout = SMALL, steps: int = 3, points: int = 2, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    pts = [FrontierPoint(f"p{i}", Mask(layout, rng.random((steps, layout.bits_per_step)) < 0.5),
                         PointMetrics("image_reward", 1.0 - i / 10, macs=1e9 * (points - i), full_macs=1e9 * points + 1,
                                      latency_ms=10.0, speedup=1.0 + i))
           for i in range(points)]
    return schedule_to_json(ScheduleFile(layout.family, "flux-dev", layout, steps, pts, {"tool": "bench"}))


def official_doc(steps: int = 3, double: int = 2, single: int = 2) -> dict:
    table = {f"{s:03d}": {**{str(b): {"full_attn": True, "full_ff": s % 2 == 0, "full_ff_context": True}
                             for b in range(double)},
                          **{f"single_{b}": {"single_attn": s != 1, "single_proj_mlp": True, "single_proj_out": True}
                             for b in range(single)}}
             for s in range(steps)}
    return {"cache_schedule": {"num_blocks": double, "num_single_blocks": single, "num_inference_steps": steps,
                               "name": "gen", "schedule": table},
            "config": {}, "metrics": {"total_macs": 5000, "latency": {"avg": 10.0, "gpu": "A6000"},
                                      "by_inference_step": {k: {"macs": 2000 + 100 * (i % 2)} for i, k in enumerate(table)}}}


BASES = [v1_doc(), official_doc()]
HOSTILE = [
    b"[" * 100_000, b'{"a": ' * 40 + b"1" + b"}" * 40,
    b'{"cache_schedule": {"num_inference_steps": ' + b"9" * 10_000 + b"}}",
    json.dumps({"format": "ecad-schedule", "version": 1, "model": {"family": "flux"}, "steps": 10**9,
                "block_groups": [{"name": "b", "blocks": 10**9, "components": ["a"]}], "points": []}).encode(),
    json.dumps({"cache_schedule": {"num_inference_steps": 10**9, "num_blocks": 10**9,
                                   "schedule": {"0": {"9999": {"attn1": True}}}}}).encode(),
    json.dumps({"cache_schedule": {"schedule": {"²": {"0": {}}, "٣": {}}}}).encode(),
    b'{"format": "ecad-schedule", "version": 1, "steps": NaN, "steps": 1e999}',
    b'{"points": "' + b'\\"' * 1_000_000,   # unterminated string of escaped quotes (quadratic before 2026-12-04)
]


def random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice([0, 1, -1, 3, 17, 1025, 10**4 + 1, 10**9, 2**63, 10**25, rng.randrange(-1000, 1000)])
    if kind == 3:
        return rng.choice([0.0, -0.5, 2.5, 1e300, -1e-300, rng.uniform(-10, 10)])
    if kind in (4, 5):
        return rng.choice(["", "a", "000", "single_0", "attn", "double_blocks", "111 010", "·", " a", "١", "\n",
                           "ecad-schedule", "x" * rng.randrange(200)])
    if kind in (6, 7):
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(5))]
    keys = ["name", "mask", "metrics", "schedule", "000", "0", "single_0", "format", "version", "steps", "x"]
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randrange(5))}


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.extend(_paths(v, prefix + (k,)))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.extend(_paths(v, prefix + (i,)))
    return out


def mutated(rng: random.Random, base: dict) -> Any:
    doc = copy.deepcopy(base)
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(_paths(doc))
        if not path:
            return random_json(rng)
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        action = rng.choice(["replace", "replace", "remove", "duplicate", "number", "string"])
        if action == "replace":
            parent[key] = random_json(rng)
        elif action == "remove":
            del parent[key]
        elif action == "duplicate":
            if isinstance(parent, list):
                parent.append(copy.deepcopy(parent[key]))
            else:
                parent[rng.choice(["000", "003", "1", "single_2", "extra", "2"])] = copy.deepcopy(parent[key])
        elif action == "number":
            parent[key] = rng.choice([0, -1, 1, 2, 4, 17, 1025, 10**4, 10**4 + 1, 10**9, -1e9, 2.5, 1e300])
        elif isinstance(parent[key], str) and parent[key]:
            value = parent[key]
            i = rng.randrange(len(value))
            parent[key] = value[:i] + rng.choice(["2", " ", "\t", "·", "١", "\n", "", "00"]) + value[i + 1:]
    return doc


def damaged(rng: random.Random, base: dict) -> bytes:
    data = bytearray(json.dumps(base, indent=1).encode())
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(data))
        kind = rng.choice(["flip", "insert", "cut"])
        if kind == "flip":
            data[i] = rng.randrange(256)
        elif kind == "insert":
            data[i:i] = rng.choice([b"[", b"{", b'"', b",", b"1e999", b"NaN", b"\\u0000", b"9" * 30])
        else:
            del data[i:i + rng.randint(1, 40)]
    return bytes(data)


def as_bytes(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False, allow_nan=False).encode("utf-8", "surrogatepass")


def generate(rng: random.Random, i: int) -> tuple[str, bytes]:
    kind = ("bytes", "json", "mutated", "damaged", "hostile")[i % 5]
    if kind == "bytes":
        return kind, rng.randbytes(rng.randrange(2048))
    if kind == "json":
        return kind, as_bytes(random_json(rng))
    if kind == "mutated":
        return kind, as_bytes(mutated(rng, rng.choice(BASES)))
    if kind == "damaged":
        return kind, damaged(rng, rng.choice(BASES))
    return kind, rng.choice(HOSTILE) if rng.random() < 0.5 else as_bytes(mutated(rng, rng.choice(BASES)))


def read(path: Path) -> tuple[str, float, int, str]:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        load_schedule(path)
        outcome, detail = "valid", ""
    except ScheduleError:
        outcome, detail = "ScheduleError", ""
    except Exception as e:  # the failure this benchmark looks for
        outcome, detail = "other", f"{type(e).__name__}: {e}"[:200]
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return outcome, seconds, peak, detail


def listed_as_expected(folder: Path, data: bytes, valid: bool) -> bool:
    (folder / "input.json").write_bytes(data)
    library._cache.clear()
    sources = library.list_sources()
    return sources == (["input.json"] if valid else []) + [library.HEURISTICS_SOURCE]


def largest_files(tmp: Path) -> list[tuple[str, int, float, float]]:
    """(what, bytes, first read in s, cached listing in s) for the largest valid files within the limits."""
    rng = np.random.default_rng(0)
    one = len(dump_schedule(ScheduleFile("flux", None, FLUX, 50, [FrontierPoint(
        "p", Mask(FLUX, rng.random((50, FLUX.bits_per_step)) < 0.5))])).encode())
    count = min(1000, (MAX_FILE_BYTES - 4096) // one)
    v1 = dump_schedule(ScheduleFile("flux", None, FLUX, 50, [
        FrontierPoint(f"p{i}", Mask(FLUX, rng.random((50, FLUX.bits_per_step)) < 0.5),
                      PointMetrics("image_reward", 1.0, macs=1.0, full_macs=2.0)) for i in range(count)])).encode()
    steps = 1
    while len(as_bytes(official_doc(steps * 2, 19, 38))) < MAX_FILE_BYTES and steps < 5000:
        steps *= 2
    official = as_bytes(official_doc(steps, 19, 38))
    many = max(1, (MAX_VALUES - 100) // 4)
    values = as_bytes({**v1_doc(), "provenance": {"runs": [{"a": i % 7, "b": [1, 2]} for i in range(many // 2)]}})
    out = []
    files = [(f"this format, {count} FLUX.1 points × 50 steps", v1),
             (f"official format, FLUX.1, {steps} steps", official),
             ("this format, a provenance of nearly MAX_VALUES small values", values)]
    for n, (what, data) in enumerate(files):
        folder = tmp / f"large-{n}"
        folder.mkdir()
        (folder / "big.json").write_bytes(data)
        library.schedule_folders = lambda folder=folder: [folder]
        library._cache.clear()
        started = time.perf_counter()
        assert library.list_sources() == ["big.json", library.HEURISTICS_SOURCE], what
        first = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(10):
            library.list_sources()
        cached = (time.perf_counter() - started) / 10
        out.append((what, len(data), first, cached))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--inputs", type=int, default=20_000, help="generated inputs to try (default 20000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--listing-every", type=int, default=25, help="every N-th input is also listed through the node")
    args = p.parse_args(argv)
    import logging
    logging.getLogger("ComfyUI-ECAD").setLevel(logging.CRITICAL)  # every left-out file would log a line
    rng = random.Random(args.seed)
    outcomes: dict[str, dict[str, int]] = {}
    slowest: tuple[float, str] = (0.0, "")
    largest: tuple[int, str] = (0, "")
    times, failures, listing_checked, listing_wrong = [], [], 0, 0
    real_folders = library.schedule_folders
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = tmp / "input.json"
        folder = tmp / "folder"
        folder.mkdir()
        try:
            for i in range(args.inputs):
                kind, data = generate(rng, i)
                path.write_bytes(data)
                outcome, seconds, peak, detail = read(path)
                outcomes.setdefault(kind, {}).setdefault(outcome, 0)
                outcomes[kind][outcome] += 1
                times.append(seconds)
                slowest = max(slowest, (seconds, kind))
                largest = max(largest, (peak, kind))
                if outcome == "other":
                    failures.append(f"input {i} ({kind}): {detail}")
                if args.listing_every and i % args.listing_every == 0 and outcome != "other":
                    library.schedule_folders = lambda: [folder]
                    listing_checked += 1
                    listing_wrong += not listed_as_expected(folder, data, outcome == "valid")
            library._cache.clear()
            big = largest_files(tmp)
        finally:
            library.schedule_folders = real_folders
            library._cache.clear()
    wall = time.perf_counter() - started

    total = {o: sum(k.get(o, 0) for k in outcomes.values()) for o in ("valid", "ScheduleError", "other")}
    print(f"tried {args.inputs} generated inputs (seed {args.seed}): {total['valid']} valid schedules, "
          f"{total['ScheduleError']} ScheduleErrors, {total['other']} other exceptions; "
          f"{listing_checked} also listed through the node, {listing_wrong} listed wrongly")
    print(f"per input: median {1e3 * float(np.median(times)):.2f} ms, 99th percentile "
          f"{1e3 * float(np.percentile(times, 99)):.2f} ms, slowest {1e3 * slowest[0]:.1f} ms ({slowest[1]}); "
          f"largest peak allocation {largest[0] / 2**20:.2f} MiB ({largest[1]}); {wall:.0f} s in all")
    print()
    print("| inputs | tried | valid | ScheduleError | other |")
    print("|---|---:|---:|---:|---:|")
    for kind, counts in outcomes.items():
        print(f"| {kind} | {sum(counts.values())} | {counts.get('valid', 0)} | {counts.get('ScheduleError', 0)} | "
              f"{counts.get('other', 0)} |")
    print()
    print("| largest valid files | size | first listing (parse) | cached listing |")
    print("|---|---:|---:|---:|")
    for what, size, first, cached in big:
        print(f"| {what} | {size / 2**20:.1f} MiB | {first:.2f} s | {1e3 * cached:.1f} ms |")
    for line in failures[:20]:
        print("FAILED", line)
    return 1 if failures or listing_wrong else 0


if __name__ == "__main__":
    sys.exit(main())

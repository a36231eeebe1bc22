"""Property tests (hypothesis): whatever a schedule file holds, reading it ends in a valid schedule or a ScheduleError
naming the file, within a fixed time and memory; and the node's listing always ends with the heuristics, lists a
file exactly when it is valid, and every label it shows chooses its point back.

The inputs: any bytes, any JSON document, and valid files of both formats (this project's and the official ECAD
repository's) with random parts replaced, removed or duplicated, as text or as bytes. Each property runs a fixed number
of examples with a deadline; ``benchmarks/bench_schedule_fuzz.py`` runs many more.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import tempfile
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from ecad_nodes import library
from ecad_nodes.schedule import BlockGroup, FrontierPoint, Layout, Mask, PointMetrics, ScheduleError, ScheduleFile
from ecad_nodes.schedule_io import (_JSON_STRING, MAX_FILE_BYTES, MAX_STEPS, dump_schedule, label_text_problem,
                                    load_schedule, schedule_to_json)

SECONDS_PER_INPUT = 2.0          # a generous bound on a slow shared machine; typical inputs take milliseconds
PEAK_BYTES = 32 * 2**20          # Python and numpy allocations while reading one input (tracemalloc)
FUZZ = settings(max_examples=400, deadline=timedelta(seconds=SECONDS_PER_INPUT), database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

LAYOUT = Layout("flux", (BlockGroup("double_blocks", 2, ("attn", "img_mlp", "txt_mlp")),
                         BlockGroup("single_blocks", 3, ("attn", "mlp_in", "out_proj"))))


def v1_doc() -> dict:
    rng = np.random.default_rng(0)
    points = [FrontierPoint(name, Mask(LAYOUT, rng.random((3, LAYOUT.bits_per_step)) < 0.5),
                            PointMetrics("image_reward", 0.9 - i / 10, macs=1e9 * (3 - i), full_macs=3e9, latency_ms=12.5,
                                         speedup=1.5 + i, extra={"origin": "generation 2"}))
              for i, name in enumerate(("fast", "faster"))]
    baseline = FrontierPoint("FORA-2", Mask.full(LAYOUT, 3), PointMetrics("image_reward", 0.5, macs=2e9, full_macs=3e9))
    return schedule_to_json(ScheduleFile("flux", "flux-dev", LAYOUT, 3, points, {"tool": "fuzz", "seed": 1}, [baseline]))


def official_doc() -> dict:
    table = {f"{s:03d}": {**{str(b): {"full_attn": True, "full_ff": s != 1, "full_ff_context": True} for b in range(2)},
                          **{f"single_{b}": {"single_attn": s != 2, "single_proj_mlp": True, "single_proj_out": True}
                             for b in range(2)}}
             for s in range(3)}
    return {"cache_schedule": {"num_blocks": 2, "num_single_blocks": 2, "num_inference_steps": 3, "name": "gen_1",
                               "schedule": table},
            "config": {"height": 256},
            "metrics": {"total_macs": 5000, "by_inference_step": {k: {"macs": 2000 - 100 * i} for i, k in enumerate(table)},
                        "latency": {"avg": 10.0, "gpu": "A6000"}}}


BASES = {"v1": v1_doc(), "official": official_doc()}

# ---------------------------------------------------------------- strategies

scalars = (st.none() | st.booleans() | st.integers(min_value=-10**25, max_value=10**25)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
           | st.sampled_from(["000", "1", "single_0", "attn", "double_blocks", "111 010", "·", " a", "ecad-schedule",
                              0, 1, -1, 3, 10**9, 2**63, 1e308, 0.5]))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=8) | st.sampled_from(["name", "mask", "metrics", "schedule", "000", "0", "single_0"]), inner,
    max_size=4), max_leaves=12)


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            out.extend(_paths(value, prefix + (key,)))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out.extend(_paths(value, prefix + (i,)))
    return out


def _parent(doc: Any, path: tuple) -> Any:
    for key in path[:-1]:
        doc = doc[key]
    return doc


@st.composite
def mutated_documents(draw, base: str) -> Any:
    """A valid document with 1-3 random edits: a part replaced, removed, duplicated or given a boundary number."""
    doc = copy.deepcopy(BASES[base])
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        if not path:
            doc = draw(json_values)
            continue
        parent, key = _parent(doc, path), path[-1]
        action = draw(st.sampled_from(["replace", "replace", "remove", "duplicate", "number", "string"]))
        if action == "replace":
            parent[key] = draw(json_values)
        elif action == "remove":
            del parent[key]
        elif action == "duplicate":
            if isinstance(parent, list):
                parent.append(copy.deepcopy(parent[key]))
            else:
                parent[draw(st.sampled_from(["000", "003", "1", "single_2", "extra", "2", "name"]))] = copy.deepcopy(parent[key])
        elif action == "number":
            parent[key] = draw(st.sampled_from([0, -1, 1, 2, 4, 17, 1025, 10**4, 10**4 + 1, 10**9, -1e9, 0.0, 2.5, 1e300]))
        else:
            value = parent[key]
            if isinstance(value, str) and value:
                i = draw(st.integers(0, len(value) - 1))
                parent[key] = value[:i] + draw(st.sampled_from(["2", " ", "\t", "·", "١", "\n", "", "00"])) + value[i + 1:]
    return doc


@st.composite
def damaged_bytes(draw, base: str) -> bytes:
    """A valid file's text with a few bytes replaced, inserted or cut."""
    data = bytearray(json.dumps(BASES[base], indent=1).encode())
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "insert", "cut"]))
        if kind == "flip":
            data[i] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[i:i] = draw(st.sampled_from([b"[", b"{", b'"', b",", b"1e999", b"NaN", b"\\u0000", b"99999999999999999999999"]))
        else:
            del data[i:i + draw(st.integers(1, 40))]
    return bytes(data)


# ---------------------------------------------------------------- the properties

def check_valid(schedule: ScheduleFile) -> None:
    """What every schedule the reader accepts must satisfy."""
    assert schedule.points and 1 <= schedule.steps <= MAX_STEPS
    for group in schedule.layout.groups:
        assert group.blocks >= 1 and group.components
    for p in [*schedule.points, *schedule.baselines]:
        assert p.mask.bits.shape == (schedule.steps, schedule.layout.bits_per_step) and p.mask.bits.dtype == bool
        assert label_text_problem(p.name) is None
        m = p.metrics
        for figure in (m.macs, m.full_macs, m.latency_ms):
            assert figure is None or (math.isfinite(figure) and figure >= 0)
        assert m.speedup is None or (math.isfinite(m.speedup) and m.speedup > 0)
        assert m.quality is None or math.isfinite(m.quality)
    names = [p.name for p in schedule.points]
    assert len(set(names)) == len(names)
    for p in schedule.points:  # the dropdown label leads back to the point
        assert library.point_name(library.point_label(p)) == p.name
        assert schedule.point(library.point_name(library.point_label(p))) is p


def read_within_limits(data: bytes) -> ScheduleFile | ScheduleError:
    """Read ``data`` as a file: a schedule or a ScheduleError naming the file, in bounded time and memory."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "input.json"
        path.write_bytes(data)
        tracemalloc.start()
        started = time.perf_counter()
        try:
            try:
                result: ScheduleFile | ScheduleError = load_schedule(path)
            except ScheduleError as e:
                result = e
            seconds, peak = time.perf_counter() - started, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        if isinstance(result, ScheduleError):
            assert str(result).startswith(f"{path}: ") and result.reason
        else:
            check_valid(result)
        if currently_in_test_context():
            event("valid schedule" if isinstance(result, ScheduleFile) else "ScheduleError")
    assert seconds < SECONDS_PER_INPUT, f"{seconds:.2f} s for {len(data)} bytes"
    assert peak < PEAK_BYTES + 4 * len(data), f"{peak / 2**20:.1f} MiB for {len(data)} bytes"
    return result


def as_bytes(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False, allow_nan=False).encode("utf-8", "surrogatepass")


@FUZZ
@given(st.binary(max_size=2048))
def test_any_bytes_give_a_schedule_or_a_schedule_error(data):
    read_within_limits(data)


@FUZZ
@given(json_values)
def test_any_json_document_gives_a_schedule_or_a_schedule_error(doc):
    read_within_limits(as_bytes(doc))


@FUZZ
@given(st.sampled_from(sorted(BASES)).flatmap(mutated_documents))
def test_damaged_documents_of_both_formats_give_a_schedule_or_a_schedule_error(doc):
    read_within_limits(as_bytes(doc))


@FUZZ
@given(st.sampled_from(sorted(BASES)).flatmap(damaged_bytes))
def test_damaged_bytes_of_both_formats_give_a_schedule_or_a_schedule_error(data):
    read_within_limits(data)


def test_the_unmutated_documents_are_valid():
    """The properties above start from valid files (otherwise every mutation would only test the first check)."""
    for base in BASES.values():
        result = read_within_limits(as_bytes(base))
        assert isinstance(result, ScheduleFile), result
    again = read_within_limits(dump_schedule(read_within_limits(as_bytes(BASES["v1"]))).encode())
    assert [p.name for p in again.points] == ["fast", "faster"]


class Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@settings(FUZZ, max_examples=200)
@given(st.one_of(st.binary(max_size=512), json_values.map(as_bytes),
                 st.sampled_from(sorted(BASES)).flatmap(mutated_documents).map(as_bytes),
                 st.sampled_from(sorted(BASES)).flatmap(mutated_documents).map(as_bytes),
                 st.sampled_from(sorted(BASES)).flatmap(damaged_bytes),
                 st.sampled_from([as_bytes(b) for b in BASES.values()])))
def test_the_node_lists_a_file_exactly_when_it_is_valid_and_always_the_heuristics(data):
    from ecad_nodes.nodes import ECADLoadSchedule
    handler = Lines()
    logger = logging.getLogger("ComfyUI-ECAD")
    logger.addHandler(handler)
    real_folders = library.schedule_folders
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "good.json").write_bytes(as_bytes(BASES["v1"]))
        (folder / "input.json").write_bytes(data)
        library.schedule_folders = lambda: [folder]
        try:
            valid = not isinstance(read_within_limits(data), ScheduleError)
            inputs = ECADLoadSchedule.INPUT_TYPES()["required"]
            sources, labels = inputs["schedule"][0], inputs["point"][0]
            assert sources == (["good.json", "input.json"] if valid else ["good.json"]) + [library.HEURISTICS_SOURCE]
            assert [h for h in labels if h.startswith("FORA every")] == [f"FORA every {n} steps" for n in (2, 3, 4, 5)]
            assert library.choose(library.HEURISTICS_SOURCE, "FORA every 2 steps").heuristic is not None
            if valid:
                for label in library.labels_for("input.json"):
                    assert ECADLoadSchedule.VALIDATE_INPUTS("input.json", label) is True
                    assert label in labels
            else:
                logged = [line for line in handler.lines if str(folder / "input.json") in line]
                assert len(logged) == 1 and "left out of the schedule list" in logged[0]
                assert ECADLoadSchedule.VALIDATE_INPUTS("input.json", "x").startswith(f"{folder / 'input.json'}: ")
        finally:
            library.schedule_folders = real_folders
            logger.removeHandler(handler)
            library._cache.clear()


@pytest.mark.parametrize("end", [b"", b"\\"])
def test_an_unterminated_string_is_skipped_in_one_pass_and_refused_naming_the_file(tmp_path, end):
    """An unterminated string of escaped quotes: the reader's string pattern matches from its opening quote to the end
    of the text. A pattern that fails there is tried again from every escaped quote, which is quadratic: a few hundred
    KB held the GIL, and so the whole ComfyUI server, for minutes."""
    data = b'{"points": "' + b'\\"' * 200_000 + end
    opening = data.index(b'"', data.index(b":"))
    assert _JSON_STRING.match(data, opening).end() == len(data)
    path = tmp_path / "unterminated.json"
    path.write_bytes(data)
    with pytest.raises(ScheduleError, match=f"^{path}: "):
        load_schedule(path)


def test_a_valid_file_at_the_size_limit_reads_in_bounded_time(tmp_path):
    """The largest file the reader takes: a real frontier of FLUX.1-dev points, as large as the limit allows."""
    rng = np.random.default_rng(0)
    flux = Layout("flux", (BlockGroup("double_blocks", 19, ("attn", "img_mlp", "txt_mlp")),
                           BlockGroup("single_blocks", 38, ("attn", "mlp_in", "out_proj"))))
    point = lambda i: FrontierPoint(f"p{i}", Mask(flux, rng.random((50, flux.bits_per_step)) < 0.5),
                                    PointMetrics("image_reward", 1.0, macs=1.0, full_macs=2.0))
    one = len(dump_schedule(ScheduleFile("flux", None, flux, 50, [point(0)])).encode())
    count = min(1000, (MAX_FILE_BYTES - 4096) // one)
    text = dump_schedule(ScheduleFile("flux", None, flux, 50, [point(i) for i in range(count)]))
    assert MAX_FILE_BYTES // 2 < len(text.encode()) <= MAX_FILE_BYTES
    path = tmp_path / "big.json"
    path.write_text(text)
    started = time.perf_counter()
    schedule = load_schedule(path)
    seconds = time.perf_counter() - started
    assert len(schedule.points) == count
    assert seconds < 10, f"{seconds:.1f} s for {len(text) / 2**20:.1f} MiB"  # measured: benchmarks/README.md

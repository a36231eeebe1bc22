"""The schedule file format: round trips, the JSON Schema, compactness, official files, and errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import REFERENCE, requires_reference
from ecad_nodes.schedule import BlockGroup, FrontierPoint, Layout, Mask, PointMetrics, ScheduleError, ScheduleFile
from ecad_nodes.schedule_io import dump_schedule, load_schedule, parse_schedule, save_schedule, schedule_to_json

FLUX_LAYOUT = Layout("flux", (BlockGroup("double_blocks", 19, ("attn", "img_mlp", "txt_mlp")),
                              BlockGroup("single_blocks", 38, ("attn", "mlp_in", "out_proj"))))
SCHEMA = Path(__file__).resolve().parent.parent / "schedules" / "ecad-schedule.schema.json"


def random_schedule(layout: Layout = FLUX_LAYOUT, steps: int = 20, points: int = 3, seed: int = 0,
                    baselines: bool = True) -> ScheduleFile:
    rng = np.random.default_rng(seed)
    pts = []
    for i in range(points):
        bits = rng.random((steps, layout.bits_per_step)) < 0.4
        bits[0] = True
        pts.append(FrontierPoint(f"p{i}", Mask(layout, bits),
                                 PointMetrics("image_reward", 1.0 - 0.1 * i, macs=1e12 * (3 - i), full_macs=3e12,
                                              speedup=1.0 + i, extra={"ssim": 0.9})))
    return ScheduleFile(layout.family, "flux-dev", layout, steps, pts, {"tool": "test"},
                        baselines=[FrontierPoint("FORA every 2 steps", pts[0].mask)] if baselines else [])


def test_round_trip_keeps_everything(tmp_path):
    original = random_schedule()
    path = save_schedule(original, tmp_path / "s.json")
    loaded = load_schedule(path)
    assert loaded.path == path
    assert (loaded.family, loaded.variant, loaded.layout, loaded.steps) == ("flux", "flux-dev", FLUX_LAYOUT, 20)
    assert loaded.provenance == {"tool": "test"}
    assert [p.name for p in loaded.points] == ["p0", "p1", "p2"]
    for a, b in zip(original.points, loaded.points):
        assert a.mask == b.mask
        assert a.metrics == b.metrics
    assert loaded.baselines[0].mask == original.baselines[0].mask
    assert dump_schedule(loaded) == dump_schedule(original)


def test_written_files_follow_the_json_schema(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(schedule_to_json(random_schedule()), schema)
    broken = schedule_to_json(random_schedule())
    broken["points"][0]["mask"]["double_blocks"][0] = "11x"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_a_flux_point_is_compact_and_one_line_per_step():
    text = dump_schedule(random_schedule(points=1, baselines=False))
    # 3420 bits: the official format spends ~200 KB on one such mask.
    assert len(text.encode()) < 6000
    lines = text.splitlines()
    step_lines = [ln for ln in lines if ln.strip().startswith('"') and set(ln.strip().strip('",')) <= set("01 ")]
    assert len(step_lines) == 2 * 20  # one per step and block group
    assert max(len(ln) for ln in step_lines) < 170  # 38 blocks: 151 digits and spaces


def test_mask_string_layout_is_block_major_component_minor(tmp_path):
    layout = Layout("toy", (BlockGroup("blocks", 2, ("a", "b", "c")),))
    bits = np.array([[1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 1, 0]], dtype=bool)
    doc = schedule_to_json(ScheduleFile("toy", None, layout, 2, [FrontierPoint("x", Mask(layout, bits))]))
    assert doc["points"][0]["mask"] == {"blocks": ["111 111", "100 010"]}


def write(tmp_path: Path, doc) -> Path:
    path = tmp_path / "bad.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def good_doc() -> dict:
    return schedule_to_json(random_schedule(points=1, steps=3))


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d.update(version=2), "format version 2; this version of ComfyUI-ECAD reads version 1"),
    (lambda d: d.pop("format"), "is not a schedule file"),
    (lambda d: d.update(steps=0), "\"steps\" as a positive integer"),
    (lambda d: d["block_groups"][0].update(blocks="19"), "block_groups[0] needs"),
    (lambda d: d["points"][0]["mask"]["double_blocks"].pop(), "needs 3 rows (one per step), got 2"),
    (lambda d: d["points"][0]["mask"]["single_blocks"].__setitem__(1, "111"), "must be 38 space-separated blocks of 3 digits"),
    (lambda d: d["points"][0]["mask"].update(extra=["1"]), "unknown block groups ['extra']"),
    (lambda d: d["points"].append(d["points"][0]), "two points with the same name"),
    (lambda d: d["points"][0].update(name="a · b"), "must not contain ' · '"),
    (lambda d: d["points"][0]["metrics"].update(macs="many"), "metrics.macs must be a finite number"),
    (lambda d: d.update(points=[]), "non-empty \"points\" list"),
])
def test_malformed_files_name_the_file_and_what_was_expected(tmp_path, mutate, expected):
    doc = good_doc()
    mutate(doc)
    path = write(tmp_path, doc)
    with pytest.raises(ScheduleError) as err:
        load_schedule(path)
    assert str(path) in str(err.value)
    assert expected in str(err.value)


def test_not_json_reports_line_and_column(tmp_path):
    path = write(tmp_path, '{"format": "ecad-schedule",\n  "version": 1,,}')
    with pytest.raises(ScheduleError, match=r"bad\.json: is not valid JSON \(line 2, column 16"):
        load_schedule(path)


def test_binary_and_missing_files(tmp_path):
    binary = tmp_path / "blob.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ScheduleError, match="blob.json: is not UTF-8"):
        load_schedule(binary)
    with pytest.raises(ScheduleError, match="missing.json: cannot be read"):
        load_schedule(tmp_path / "missing.json")


def test_saving_is_atomic_and_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    path = save_schedule(random_schedule(points=1), tmp_path / "s.json")
    before = path.read_text()
    import ecad_nodes.schedule_io as io_module

    def explode(schedule):
        raise RuntimeError("disk full")
    monkeypatch.setattr(io_module, "dump_schedule", explode)
    with pytest.raises(RuntimeError):
        save_schedule(random_schedule(points=2), path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]


def test_saved_files_are_readable_by_others_as_a_plain_write_would_make_them(tmp_path):
    import os
    umask = os.umask(0o022)
    try:
        path = save_schedule(random_schedule(points=1), tmp_path / "new.json")
        assert path.stat().st_mode & 0o777 == 0o644
        path.chmod(0o664)
        save_schedule(random_schedule(points=2), path)  # replacing a file keeps its mode
        assert path.stat().st_mode & 0o777 == 0o664
    finally:
        os.umask(umask)


# ------------------------------------------------------------------ official ECAD schedules

def official_files():
    if REFERENCE is None:
        return []
    return sorted((REFERENCE / "schedules_in_paper").rglob("*.json"))


@requires_reference
@pytest.mark.parametrize("path", official_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_official_schedules_load_with_their_polarity_and_order(path):
    official = json.loads(path.read_text())
    table = official["cache_schedule"]["schedule"]
    schedule = load_schedule(path)
    assert len(schedule.points) == 1 and schedule.points[0].name == path.stem
    mask = schedule.points[0].mask
    assert mask.steps == official["cache_schedule"]["num_inference_steps"] == 20
    if schedule.family == "flux":
        assert schedule.layout == FLUX_LAYOUT
        double, single = mask.group("double_blocks"), mask.group("single_blocks")
        for s, step in enumerate(sorted(table)):
            for b in range(19):
                assert list(double[s, b]) == [table[step][str(b)][k] for k in ("full_attn", "full_ff", "full_ff_context")]
            for b in range(38):
                assert list(single[s, b]) == [table[step][f"single_{b}"][k]
                                              for k in ("single_attn", "single_proj_mlp", "single_proj_out")]
    else:
        assert schedule.layout == Layout("pixart", (BlockGroup("blocks", 28, ("self_attn", "cross_attn", "mlp")),))
        blocks = mask.group("blocks")
        for s, step in enumerate(sorted(table)):
            for b in range(28):
                assert list(blocks[s, b]) == [table[step][str(b)][k] for k in ("attn1", "attn2", "ff")]
    metrics = schedule.points[0].metrics
    assert metrics.macs == official["metrics"]["total_macs"]
    assert metrics.latency_ms == pytest.approx(official["metrics"]["latency"]["avg"])
    # The no-caching cost is recovered from the per-step MACs: it is above the schedule's own.
    assert metrics.full_macs is not None and metrics.full_macs > metrics.macs
    assert 1.5 < metrics.mac_speedup < 6


@requires_reference
def test_official_flux_full_macs_match_the_papers_baseline():
    # The paper's no-caching FLUX 256² baseline is 198.69 TMACs (20 steps, batch 2).
    schedule = load_schedule(REFERENCE / "schedules_in_paper" / "flux_256" / "ours_fast.json")
    assert schedule.points[0].metrics.full_macs == pytest.approx(198.69e12, rel=2e-3)


def test_official_format_errors_name_the_file(tmp_path):
    path = write(tmp_path, {"cache_schedule": {"num_inference_steps": 2,
                                               "schedule": {"000": {"0": {"attn1": True, "attn2": True, "ff": True}},
                                                            "001": {"0": {"attn1": "yes", "attn2": True, "ff": True}}}}})
    with pytest.raises(ScheduleError, match=r"bad\.json: official schedule step 001 block \"0\" needs \"attn1\": true/false"):
        load_schedule(path)


def test_parse_needs_an_object():
    with pytest.raises(ScheduleError, match="is not a schedule file"):
        parse_schedule([1, 2, 3], "list.json")

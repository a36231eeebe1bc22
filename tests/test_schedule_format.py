"""The schedule file format: round trips, the JSON Schema, compactness, official files, and errors."""
from __future__ import annotations

import json
import re
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
    for name in ("a · b", " lead", "trail ", "a·b", "line\nbreak", "x" * 101):  # what the reader refuses, the schema too
        doc = schedule_to_json(random_schedule())
        doc["points"][0]["name"] = name
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(doc, schema)
    for name in ("fast", "ecad-2.61x", "a b", "ß (α)", "x"):
        doc = schedule_to_json(random_schedule())
        doc["points"][0]["name"] = name
        jsonschema.validate(doc, schema)


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


SECRET = "s3cr3t-Value"  # planted in bad fields: no error message may repeat it


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d.update(version=2), "ComfyUI-ECAD reads format version 1 (the file is newer: update ComfyUI-ECAD)"),
    (lambda d: d.update(version=SECRET), "has a \"version\" this release cannot read"),
    (lambda d: d.update(version=True), "has a \"version\" this release cannot read"),
    (lambda d: d.pop("format"), "is not a schedule file"),
    (lambda d: d.update(model=[SECRET]), "needs \"model\": {\"family\": ...}"),
    (lambda d: d["model"].update(family=SECRET + " x"), "model.family must be a name of at most 64 letters"),
    (lambda d: d["model"].update(variant=SECRET + "\nx"), "model.variant contains control characters"),
    (lambda d: d.update(steps=0), "\"steps\" must be an integer from 1 to 10000"),
    (lambda d: d.update(steps=10**9), "\"steps\" must be an integer from 1 to 10000"),
    (lambda d: d.update(steps=2.0), "\"steps\" must be an integer from 1 to 10000"),
    (lambda d: d.update(block_groups={"a": SECRET}), "needs a \"block_groups\" list of 1 to 16 groups"),
    (lambda d: d["block_groups"].__setitem__(0, SECRET), "block_groups[0] needs exactly \"name\", \"blocks\""),
    (lambda d: d["block_groups"][0].update(blocks="19"), "block_groups[0].blocks must be an integer from 1 to 1024"),
    (lambda d: d["block_groups"][0].update(blocks=10**6), "block_groups[0].blocks must be an integer from 1 to 1024"),
    (lambda d: d["block_groups"][0].update(extra=SECRET), "block_groups[0] needs exactly \"name\""),
    (lambda d: d["block_groups"][0].update(components=SECRET), "block_groups[0].components must list 1 to 16"),
    (lambda d: d["block_groups"][0].update(components=["attn", 7, "x"]), "block_groups[0].components[1] must be a name"),
    (lambda d: d["block_groups"][0].update(components=["a"] * 17), "block_groups[0].components must list 1 to 16"),
    (lambda d: d["block_groups"][1].update(name="double_blocks"), "block_groups repeats a group name"),
    (lambda d: d["points"][0]["mask"]["double_blocks"].pop(), "points[0].mask.double_blocks needs 3 rows (one per step)"),
    (lambda d: d["points"][0]["mask"]["single_blocks"].__setitem__(1, "111"),
     "points[0].mask.single_blocks[1] must be 38 space-separated blocks of 3 digits 0/1 (attn, mlp_in, out_proj)"),
    (lambda d: d["points"][0]["mask"]["single_blocks"].__setitem__(2, d["points"][0]["mask"]["single_blocks"][2]
                                                                   .replace(" ", "\t", 1)),
     "points[0].mask.single_blocks[2] must be 38 space-separated blocks"),
    (lambda d: d["points"][0]["mask"]["single_blocks"].__setitem__(2, "١" + d["points"][0]["mask"]["single_blocks"][2][1:]),
     "points[0].mask.single_blocks[2] must be 38 space-separated blocks"),
    (lambda d: d["points"][0]["mask"]["double_blocks"].__setitem__(0, 12), "points[0].mask.double_blocks[0] must be 19"),
    (lambda d: d["points"][0]["mask"].update(extra=[SECRET]), "points[0].mask needs exactly one entry per block group"),
    (lambda d: d["points"][0]["mask"].pop("single_blocks"), "points[0].mask needs exactly one entry per block group"),
    (lambda d: d["points"].append(d["points"][0]), "points[1].name is the name of an earlier point"),
    (lambda d: d["points"][0].update(name="a · b"), "points[0].name contains '·'"),
    (lambda d: d["points"][0].update(name="a·b"), "points[0].name contains '·'"),
    (lambda d: d["points"][0].update(name=" fast"), "points[0].name starts or ends with white space"),
    (lambda d: d["points"][0].update(name="fast\u2003"), "points[0].name starts or ends with white space"),
    (lambda d: d["points"][0].update(name="a\nb"), "points[0].name contains control characters"),
    (lambda d: d["points"][0].update(name="x" * 101), "points[0].name is longer than 100 characters"),
    (lambda d: d["points"][0].update(name=""), "points[0].name must be a non-empty string"),
    (lambda d: d["points"][0]["metrics"].update(macs=SECRET), "points[0].metrics.macs must be a non-negative finite number"),
    (lambda d: d["points"][0]["metrics"].update(macs=-2e9), "points[0].metrics.macs must be a non-negative finite number"),
    (lambda d: d["points"][0]["metrics"].update(full_macs=True), "points[0].metrics.full_macs must be a non-negative"),
    (lambda d: d["points"][0]["metrics"].update(latency_ms=-1), "points[0].metrics.latency_ms must be a non-negative"),
    (lambda d: d["points"][0]["metrics"].update(speedup=0), "points[0].metrics.speedup must be a positive finite number"),
    (lambda d: d["points"][0]["metrics"].update(macs=1.0, full_macs=1e300), "points[0].metrics.full_macs / points[0]"),
    (lambda d: d["points"][0]["metrics"].update(quality=SECRET), "points[0].metrics.quality needs {\"metric\": name"),
    (lambda d: d["points"][0]["metrics"]["quality"].update(value=[1]), "points[0].metrics.quality.value must be a finite"),
    (lambda d: d["points"][0]["metrics"]["quality"].update(metric="IR · 3"), "points[0].metrics.quality.metric contains"),
    (lambda d: d["points"][0].update(metrics=[SECRET]), "points[0].metrics must be an object"),
    (lambda d: d.update(points=[]), "needs a non-empty \"points\" list"),
    (lambda d: d.update(points=[d["points"][0]] * 1001), "list of at most 1000 points"),
    (lambda d: d["points"].__setitem__(0, SECRET), "points[0] must be an object"),
    (lambda d: d.update(baselines={"a": 1}), "needs a \"baselines\" list"),
    (lambda d: d.update(provenance=SECRET), "\"provenance\" must be an object"),
])
def test_malformed_files_name_the_file_and_the_field_and_quote_nothing(tmp_path, mutate, expected):
    doc = good_doc()
    mutate(doc)
    path = write(tmp_path, doc)
    with pytest.raises(ScheduleError) as err:
        load_schedule(path)
    assert str(err.value).startswith(f"{path}: ")
    assert expected in err.value.reason
    assert SECRET not in str(err.value)


def test_a_well_formed_file_with_every_optional_field_loads(tmp_path):
    doc = good_doc()
    doc["points"][0]["metrics"].update(latency_ms=0, macs=0)  # zero is a figure, not an error
    doc["points"][0]["name"] = "fast-ß/2 (α)"                  # any printable name without '·'
    schedule = load_schedule(write(tmp_path, doc))
    assert schedule.points[0].name == "fast-ß/2 (α)" and schedule.points[0].metrics.macs == 0.0


@pytest.mark.parametrize("text, expected", [
    ('{"format": "ecad-schedule", "version": 1, "steps": NaN}', "holds NaN or Infinity, which JSON does not allow"),
    ('{"format": "ecad-schedule", "version": 1, "steps": -Infinity}', "holds NaN or Infinity"),
    ('{"format": "ecad-schedule", "version": 1, "steps": 1e999}', "holds a number too large for a double"),
    ('{"format": "ecad-schedule", "version": 1, "steps": ' + "9" * 5000 + "}", "holds an integer of more than 20 digits"),
    ('{"format": "ecad-schedule", "version": 1, "steps": 1.' + "0" * 100 + "}", "more than 64 characters"),
    ('{"format": "ecad-schedule", "version": 1, "version": 2}', 'repeats the key "version" in one JSON object'),
    ('{"format": "ecad-schedule", "s3cr3t-Value": 1, "s3cr3t-Value": 2}', "repeats a key in one JSON object"),
    ("[" * 100_000 + "]" * 100_000, "nests arrays and objects more than 32 levels deep"),
    ('{"a": ' * 40 + "1" + "}" * 40, "nests arrays and objects more than 32 levels deep"),
])
def test_json_that_python_would_mishandle_is_refused(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ScheduleError) as err:
        load_schedule(path)
    assert expected in err.value.reason and SECRET not in str(err.value)


def test_nesting_and_values_are_counted_without_decoding_and_strings_do_not_count():
    from ecad_nodes.schedule_io import json_shape
    assert json_shape(b'{"a": "[[[[{{{{\\"[[[[,,::", "b": [[1], {"c": "]]]]"}]}')[0] == 3
    assert json_shape(b"[" * 10 + b"]" * 10)[0] == 10
    assert json_shape(b"")[0] == 0 and json_shape(b'"[[["')[0] == 0
    assert 1000 <= json_shape(b"[" + b"1," * 999 + b"1]")[1] <= 1002


def test_a_file_of_a_million_small_values_is_refused_before_decoding(tmp_path):
    path = write(tmp_path, '{"format": "ecad-schedule", "version": 1, "provenance": [' + "{}," * 600_000 + "{}]}")
    with pytest.raises(ScheduleError, match="holds more than 500000 JSON values"):
        load_schedule(path)


def hostile_documents() -> dict[str, bytes]:
    """Small files that once made the reader allocate gigabytes, spin, recurse or raise something else."""
    doc = lambda **kw: json.dumps({"format": "ecad-schedule", "version": 1, "model": {"family": "flux"}, **kw}).encode()
    group = [{"name": "blocks", "blocks": 3, "components": ["a"]}]
    cs = lambda **kw: json.dumps({"cache_schedule": kw}).encode()
    return {
        "huge steps": doc(steps=10**8, block_groups=group, points=[{"name": "p", "mask": {"blocks": []}}]),
        "huge blocks": doc(steps=2, block_groups=[{"name": "b", "blocks": 10**9, "components": ["a"] * 16}],
                           points=[{"name": "p", "mask": {"b": ["1", "1"]}}]),
        "huge declared official steps": cs(num_inference_steps=10**9, schedule={"0": {"0": {"attn1": True}}}),
        "huge declared official blocks": cs(num_blocks=10**9, schedule={"0": {"0": {"attn1": True, "attn2": True, "ff": True}}}),
        "huge official block key": cs(schedule={"0": {"9999": {"attn1": True, "attn2": True, "ff": True}}}),
        "non-ASCII step digits": cs(schedule={"٣": {"0": {"attn1": True, "attn2": True, "ff": True}}}),
        "superscript step": cs(schedule={"²": {"0": {"attn1": True, "attn2": True, "ff": True}}}),
        "official wrong types": cs(schedule={"0": [1, 2]}),
        "official schedule list": cs(schedule=[1]),
        "official string blocks": cs(schedule={"0": {"0": "yes"}}),
        "official metrics list": json.dumps({"cache_schedule": {"schedule": {"0": {"0": {"attn1": True, "attn2": True, "ff": True}}}},
                                             "metrics": [1]}).encode(),
        "official latency string": json.dumps({"cache_schedule": {"schedule": {"0": {"0": {"attn1": True, "attn2": True, "ff": True}}}},
                                               "metrics": {"latency": "fast"}}).encode(),
        "deep": b"[" * 50_000,
        "long int": b'{"cache_schedule": {"num_inference_steps": ' + b"1" * 10_000 + b"}}",
        "mask of objects": doc(steps=1, block_groups=group, points=[{"name": "p", "mask": {"blocks": [{"x": 1}]}}]),
        "name as object": doc(steps=1, block_groups=group, points=[{"name": {"a": 1}, "mask": {"blocks": ["1 1 1"]}}]),
        "group name as list": doc(steps=1, block_groups=[{"name": ["b"], "blocks": 1, "components": ["a"]}], points=[]),
    }


@pytest.mark.parametrize("name", list(hostile_documents()))
def test_hostile_small_files_fail_fast_and_small(tmp_path, name):
    import time
    import tracemalloc
    path = tmp_path / "hostile.json"
    path.write_bytes(hostile_documents()[name])
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ScheduleError) as err:
            load_schedule(path)
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(err.value).startswith(f"{path}: ")
    assert seconds < 1.0, f"{name}: {seconds:.2f} s"
    assert peak < 8 * 2**20, f"{name}: {peak / 2**20:.1f} MiB"


def test_files_over_the_size_limit_are_refused_before_reading(tmp_path):
    from ecad_nodes.schedule_io import MAX_FILE_BYTES
    path = tmp_path / "big.json"
    with open(path, "wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: nothing is written, nothing must be read
    with pytest.raises(ScheduleError, match=r"big\.json: is larger than 8 MiB, the limit for schedule files"):
        load_schedule(path)


def test_a_fifo_is_refused_without_blocking(tmp_path):
    import os
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    os.mkfifo(tmp_path / "pipe.json")
    with pytest.raises(ScheduleError, match=r"pipe\.json: is not a regular file"):
        load_schedule(tmp_path / "pipe.json")


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

    def explode(*args):
        raise RuntimeError("disk full")
    monkeypatch.setattr(io_module, "dump_schedule", explode)
    with pytest.raises(RuntimeError):
        save_schedule(random_schedule(points=2), path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]


def test_a_nan_metric_is_refused_naming_the_file_and_the_old_file_is_kept(tmp_path):
    """Python's json writes NaN, which the reader (like JSON) refuses: such a file would replace a good one."""
    from dataclasses import replace
    path = save_schedule(random_schedule(points=1), tmp_path / "s.json")
    before = path.read_text()
    broken = random_schedule(points=1)
    broken.points[0] = replace(broken.points[0], metrics=replace(broken.points[0].metrics, quality=float("nan")))
    with pytest.raises(ScheduleError, match=f"^{path}: cannot be written: a value .* is NaN or infinite"):
        save_schedule(broken, path)
    assert path.read_text() == before and [p.name for p in tmp_path.iterdir()] == ["s.json"]


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


def official_doc(steps: int = 2, blocks: int = 2, single: int = 0) -> dict:
    """A small official-format document: PixArt blocks, or FLUX double and single blocks."""
    table = {}
    for s in range(steps):
        step = {}
        for b in range(blocks):
            step[str(b)] = ({"full_attn": True, "full_ff": s % 2 == 0, "full_ff_context": True} if single
                            else {"attn1": True, "attn2": s % 2 == 0, "ff": True})
        for b in range(single):
            step[f"single_{b}"] = {"single_attn": True, "single_proj_mlp": False, "single_proj_out": s == 0}
        table[f"{s:03d}"] = step
    cs = {"num_inference_steps": steps, "num_blocks": blocks, "schedule": table, "name": "gen_1"}
    if single:
        cs["num_single_blocks"] = single
    return {"cache_schedule": cs, "config": {}, "metrics": {"total_macs": 100, "latency": {"avg": 10.5, "gpu": "A6000"}}}


def test_a_small_official_file_loads(tmp_path):
    schedule = load_schedule(write(tmp_path, official_doc(steps=3, blocks=2, single=1)))
    assert schedule.layout.describe() == "flux (double_blocks=2×[attn, img_mlp, txt_mlp]; single_blocks=1×[attn, mlp_in, out_proj])"
    assert schedule.points[0].mask.bits.tolist() == [[1, 1, 1, 1, 1, 1, 1, 0, 1], [1, 0, 1, 1, 0, 1, 1, 0, 0],
                                                     [1, 1, 1, 1, 1, 1, 1, 0, 0]]
    assert schedule.points[0].metrics.latency_ms == 10.5 and schedule.points[0].metrics.extra["latency_gpu"] == "A6000"


def test_an_official_pixart_file_that_counts_its_single_blocks_as_zero_loads(tmp_path):
    doc = official_doc()
    doc["cache_schedule"]["num_single_blocks"] = 0
    assert load_schedule(write(tmp_path, doc)).layout.describe() == "pixart (blocks=2×[self_attn, cross_attn, mlp])"


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d["cache_schedule"]["schedule"]["001"]["0"].update(attn1="yes"),
     'cache_schedule.schedule step 1 block "0" needs exactly \'attn1\', \'attn2\', \'ff\': true/false'),
    (lambda d: d["cache_schedule"]["schedule"]["001"]["0"].update(extra=True), "step 1 block \"0\" needs exactly"),
    (lambda d: d["cache_schedule"].update(num_blocks=1), "cache_schedule.num_blocks disagrees with the table, which holds 2"),
    (lambda d: d["cache_schedule"].update(num_blocks=SECRET), "cache_schedule.num_blocks disagrees with the table"),
    (lambda d: d["cache_schedule"].update(num_single_blocks=3),
     "cache_schedule.num_single_blocks disagrees with the table, which holds 0 such blocks per step"),
    (lambda d: d["cache_schedule"].update(num_inference_steps=1), "num_inference_steps disagrees with the table, which lists 2"),
    (lambda d: d["cache_schedule"]["schedule"]["001"].pop("1"), "cache_schedule.schedule step 1 must hold the same blocks"),
    (lambda d: d["cache_schedule"]["schedule"]["001"].update({"2": {}}), "step 1 must hold the same blocks as step 0"),
    (lambda d: d["cache_schedule"]["schedule"]["000"].update({"7": {}}), "blocks must be numbered 0, 1, 2, … without gaps"),
    (lambda d: d["cache_schedule"]["schedule"]["000"].update({SECRET: {}}), "block key that is neither \"N\" nor \"single_N\""),
    (lambda d: d["cache_schedule"]["schedule"].update({"1": {}}), "lists a step twice"),
    (lambda d: d["cache_schedule"]["schedule"].update({"٢": {}}), "keys must be step numbers of ASCII digits"),
    (lambda d: d["cache_schedule"]["schedule"].update({"005": {}}), "must list steps 0 to 2 without gaps"),
    (lambda d: d["metrics"].update(total_macs=-2e9), "metrics.total_macs must be a non-negative finite number"),
    (lambda d: d["metrics"]["latency"].update(avg=SECRET), "metrics.latency.avg must be a non-negative finite number"),
    (lambda d: d["metrics"]["latency"].update(gpu="a · b"), "metrics.latency.gpu contains '·'"),
    (lambda d: d["metrics"].update(by_inference_step={"000": {"macs": 1}}), "metrics.by_inference_step must have one object per step"),
    (lambda d: d["metrics"].update(by_inference_step={"000": {"macs": 1}, "001": {"macs": -1}}),
     "metrics.by_inference_step step 1.macs must be a non-negative"),
    (lambda d: d.update(config=SECRET), "\"config\" must be an object"),
])
def test_official_format_errors_name_the_file_and_field(tmp_path, mutate, expected):
    doc = official_doc()
    mutate(doc)
    path = write(tmp_path, doc)
    with pytest.raises(ScheduleError) as err:
        load_schedule(path)
    assert str(err.value).startswith(f"{path}: ") and expected in err.value.reason
    assert SECRET not in str(err.value)


@pytest.mark.parametrize("text, expected", [
    ('{"cache_schedule": {"schedule": {"000": {"0": {"attn1": true, "attn2": true, "ff": true}}}}, '
     '"metrics": {"total_macs": NaN}}', "holds NaN or Infinity"),
    ('{"cache_schedule": {"schedule": {"000": {"0": {"attn1": true, "attn2": true, "ff": true}}}}, '
     '"metrics": {"latency": {"avg": Infinity}}}', "holds NaN or Infinity"),
    ('{"cache_schedule": {"schedule": {"000": {"0": {"attn1": true, "attn2": true, "ff": true}, '
     '"0": {"attn1": false, "attn2": false, "ff": false}}}}}', 'repeats the key "0"'),
])
def test_official_numbers_and_keys_json_cannot_hold_are_refused(tmp_path, text, expected):
    with pytest.raises(ScheduleError, match=re.escape(expected)):
        load_schedule(write(tmp_path, text))


@pytest.mark.parametrize("file_name", ["a · b.json", " lead.json", "a·b.json"])
def test_an_official_file_whose_name_cannot_name_its_point_is_refused(tmp_path, file_name):
    path = tmp_path / file_name
    path.write_text(json.dumps(official_doc()))
    with pytest.raises(ScheduleError, match="names its only point after the file, and the file name .*: rename the file"):
        load_schedule(path)


def test_parse_needs_an_object():
    with pytest.raises(ScheduleError, match="is not a schedule file"):
        parse_schedule([1, 2, 3], "list.json")

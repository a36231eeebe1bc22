"""The "ECAD Calibrate" node: through a real ComfyUI server (/prompt) it writes a schedule file for the workflow's tiny
FLUX that "ECAD Load Schedule" lists (/object_info) and that drives the model; it never replaces a file unless asked,
refuses names that leave models/ecad_schedules, and an interrupted calibration leaves no file."""
from __future__ import annotations

import json

import pytest

from comfy_server import start_server
from conftest import COMFYUI_ROOT

pytestmark = pytest.mark.comfy

STEPS = 6


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = start_server(COMFYUI_ROOT, tmp_path_factory.mktemp("comfy"))
    yield s
    s.stop()


def calibrate_workflow(file_name: str, seed: int = 7, overwrite: bool = False) -> dict:
    """Calibrate the testing pack's tiny FLUX, then sample with the point the node outputs."""
    family = {"family": "flux"}
    return {
        "1": {"class_type": "ECADTestTinyModel", "inputs": {**family, "seed": 0}},
        "4": {"class_type": "ECADTestConditioning", "inputs": {**family, "seed": 1, "tokens": 8}},
        "5": {"class_type": "ECADTestConditioning", "inputs": {**family, "seed": 2, "tokens": 8}},
        "6": {"class_type": "ECADTestLatent", "inputs": {**family, "width": 64, "height": 64, "batch": 1}},
        "7": {"class_type": "ECADCalibrate", "inputs": {
            "model": ["1", 0], "positive": ["4", 0], "negative": ["5", 0], "latent_image": ["6", 0],
            "sampler_name": "euler", "scheduler": "simple", "steps": STEPS, "cfg": 3.0, "seed": seed,
            "file_name": file_name, "overwrite": overwrite, "target_speedup": 2.0}},
        "8": {"class_type": "ECADApplyCache", "inputs": {"model": ["1", 0], "schedule": ["7", 0]}},
        "9": {"class_type": "KSampler", "inputs": {
            "model": ["8", 0], "seed": 3, "steps": STEPS, "cfg": 3.0, "sampler_name": "euler", "scheduler": "simple",
            "positive": ["4", 0], "negative": ["5", 0], "latent_image": ["6", 0], "denoise": 1.0}},
        "10": {"class_type": "ECADTestLatentStats", "inputs": {"latent": ["9", 0]}},
    }


def test_the_node_is_listed_with_its_inputs_and_outputs(server):
    info = server.get("/object_info/ECADCalibrate")["ECADCalibrate"]
    assert info["display_name"] == "ECAD Calibrate" and info["category"] == "ECAD"
    assert info["output"] == ["ECAD_SCHEDULE", "STRING"] and info["output_node"]
    required = info["input"]["required"]
    assert [required[k][0] for k in ("model", "positive", "negative", "latent_image")] == \
        ["MODEL", "CONDITIONING", "CONDITIONING", "LATENT"]
    assert "euler" in required["sampler_name"][0] and "simple" in required["scheduler"][0]
    assert all(options.get("tooltip") for _, options in required.values())


def test_a_calibration_writes_a_file_the_load_node_lists_and_uses(server):
    from ecad_nodes.schedule_io import load_schedule
    from test_server import workflow

    result = server.run_prompt(calibrate_workflow("calibrated/tiny-flux"))
    assert result["status"]["status_str"] == "success", result["status"]
    path = server.schedules / "calibrated" / "tiny-flux.json"
    schedule = load_schedule(path)
    assert schedule.family == "flux" and schedule.steps == STEPS  # the workflow's step count exactly
    assert schedule.provenance["sampling"]["sampler"] == "euler"
    assert schedule.provenance["search"]["images"] == 1 + schedule.provenance["search"]["evaluations"]
    assert [b.name for b in schedule.baselines] == ["FORA-2", "FORA-3", "FORA-4", "FORA-5"]
    summary = result["outputs"]["7"]["text"][0]
    assert str(path) in summary and "<- output" in summary
    assert result["outputs"]["10"]["stats"][0]["finite"]

    load = server.get("/object_info/ECADLoadSchedule")["ECADLoadSchedule"]["input"]["required"]
    assert "calibrated/tiny-flux.json" in load["schedule"][0]
    labels = [label for label in load["point"][0] if label.startswith("ecad-") and "latent PSNR" in label]
    assert len(labels) == len(schedule.points)
    point = labels[len(labels) // 2]
    sampled = server.run_prompt(workflow("calibrated/tiny-flux.json", point, cfg=3.0))  # 6 steps, as calibrated
    assert sampled["status"]["status_str"] == "success", sampled["status"]
    name = point.split(" · ")[0]
    assert f"ECAD [calibrated/tiny-flux.json / {name}]: computed" in server.log()
    assert "was made for" not in server.log()  # no step mapping: the file fits the workflow


def test_an_existing_file_is_replaced_only_when_asked(server):
    first = server.run_prompt(calibrate_workflow("kept.json", seed=11))
    assert first["status"]["status_str"] == "success", first["status"]
    path = server.schedules / "kept.json"
    before = path.read_bytes()
    again = server.run_prompt(calibrate_workflow("kept.json", seed=12))
    assert again["status"]["status_str"] == "error"
    assert "kept.json exists; choose another file name, or turn on 'overwrite'" in json.dumps(again["status"])
    assert path.read_bytes() == before
    replaced = server.run_prompt(calibrate_workflow("kept.json", seed=12, overwrite=True))
    assert replaced["status"]["status_str"] == "success", replaced["status"]
    assert json.loads(path.read_text())["provenance"]["sampling"]["seed"] == 12


@pytest.mark.parametrize("name", ["../outside.json", "/tmp/absolute.json", ".hidden.json", "a\\b.json"])
def test_names_that_leave_the_folder_or_cannot_be_listed_are_refused_at_validation(server, name):
    with pytest.raises(AssertionError, match="cannot be used"):
        server.run_prompt(calibrate_workflow(name))
    assert not (server.schedules.parent / "outside.json").exists()


def test_an_interrupted_calibration_writes_nothing(tmp_path, monkeypatch):
    """ComfyUI's own interrupt (what the Cancel button sets), raised from the node's progress updates."""
    import comfy.model_management
    import comfy.utils
    import folder_paths

    from ecad_nodes.calibrate_node import ECADCalibrate
    from ecad_nodes.families.flux import TinyFlux

    monkeypatch.setitem(folder_paths.folder_names_and_paths, "ecad_schedules", ([str(tmp_path)], {".json"}))
    spec = TinyFlux()
    steps, seen = 12, []

    def hook(value, total, preview=None, **kwargs):
        seen.append(value)
        if value > steps:  # after the recorded run, while candidates are sampled
            comfy.model_management.interrupt_current_processing(True)

    comfy.utils.set_progress_bar_global_hook(hook)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            ECADCalibrate().calibrate(spec.build(seed=0), spec.conditioning(1), spec.conditioning(2),
                                      {"samples": spec.empty_latent(64, 64, 1)}, "euler", "simple", steps, 1.0, 0,
                                      "interrupted.json", False, 2.0)
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
        comfy.model_management.interrupt_current_processing(False)
    assert max(seen) > steps
    assert list(tmp_path.iterdir()) == []  # no file, no temporary file


def test_a_file_name_from_another_node_is_checked_when_the_node_runs(server):
    """A linked input has no value at validation (ComfyUI passes None): it must not fail there, and is checked when the
    node runs."""
    workflow = calibrate_workflow("unused.json", seed=13)
    workflow["11"] = {"class_type": "PrimitiveString", "inputs": {"value": "from-a-node"}}
    workflow["7"]["inputs"]["file_name"] = ["11", 0]
    result = server.run_prompt(workflow)
    assert result["status"]["status_str"] == "success", result["status"]
    assert (server.schedules / "from-a-node.json").is_file()
    workflow["11"]["inputs"]["value"] = "../outside"
    refused = server.run_prompt(workflow)
    assert refused["status"]["status_str"] == "error"
    assert "file name '../outside' cannot be used" in json.dumps(refused["status"])
    assert not (server.schedules.parent / "outside.json").exists()


@pytest.fixture
def two_folders(tmp_path, monkeypatch):
    """models/ecad_schedules and a second folder (extra_model_paths.yaml) of ComfyUI's own folder registry."""
    import folder_paths
    first, second = tmp_path / "ecad_schedules", tmp_path / "extra"
    first.mkdir(), second.mkdir()
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "ecad_schedules", ([str(first), str(second)], {".json"}))
    return first, second


def test_a_file_of_another_folder_is_not_hidden_by_a_new_one_unless_asked(two_folders):
    from ecad_nodes import library
    from ecad_nodes.calibrate_node import target_path
    from ecad_nodes.schedule import ScheduleError
    first, second = two_folders
    (second / "taken.json").write_text("{}")
    with pytest.raises(ScheduleError, match=f"^{second / 'taken.json'} is listed as 'taken.json', and a new file"):
        target_path("taken", overwrite=False)
    assert target_path("taken", overwrite=True) == ("taken.json", first / "taken.json")
    assert library.find("free.json") is None and target_path("free", overwrite=False)[1] == first / "free.json"


@pytest.mark.parametrize("name, problem", [
    ("x" * 242, "longer than 241 bytes"), ("é" * 121 + "/a", "longer than 241 bytes"),  # é: two bytes in UTF-8
])
def test_names_too_long_to_write_are_refused_before_sampling(two_folders, name, problem):
    from ecad_nodes.calibrate_node import ECADCalibrate, MAX_PART_BYTES, target_path, write_new
    from ecad_nodes.schedule import ScheduleError
    assert problem in ECADCalibrate.VALIDATE_INPUTS(name)
    longest = "x" * (MAX_PART_BYTES - len(".json"))
    _, path = target_path(longest, overwrite=False)
    write_new(_small_schedule(), path, overwrite=False)  # the longest name allowed is written, temporary name and all
    assert path.is_file() and len(path.name.encode()) == MAX_PART_BYTES
    with pytest.raises(ScheduleError):
        target_path(name, overwrite=False)


def test_a_sub_folder_that_is_a_file_is_refused_before_sampling(two_folders):
    from ecad_nodes.calibrate_node import target_path
    from ecad_nodes.schedule import ScheduleError
    first, _ = two_folders
    (first / "a.json").write_text("{}")
    with pytest.raises(ScheduleError, match=f"^{first / 'a.json'} is a file, not a folder"):
        target_path("a.json/b", overwrite=False)


def _small_schedule():
    from ecad_nodes.schedule import BlockGroup, FrontierPoint, Layout, Mask, ScheduleFile
    layout = Layout("pixart", (BlockGroup("blocks", 1, ("self_attn",)),))
    return ScheduleFile("pixart", None, layout, 2, [FrontierPoint("p", Mask.full(layout, 2))])


def test_a_latent_holding_nan_scores_nan_and_an_uncached_one_stops_the_calibration(two_folders):
    """NaN is not 'identical' (min(100, nan) is 100); a model whose uncached run overflows has nothing to compare to."""
    import torch

    from ecad_nodes.calibrate_node import ECADCalibrate, latent_psnr
    from ecad_nodes.families.flux import TinyFlux
    from ecad_nodes.schedule import ScheduleError
    reference = torch.randn(2, 4, 8, 8)
    broken = reference.clone()
    broken[1, 0, 0, 0] = float("nan")
    assert latent_psnr(reference, reference) == 100.0 and latent_psnr(broken, reference) != latent_psnr(broken, reference)
    spec = TinyFlux()
    model = spec.build(seed=0)
    with torch.no_grad():
        model.model.diffusion_model.final_layer.linear.bias[0] = float("nan")
    with pytest.raises(ScheduleError, match="sampling without caching gave a latent holding NaN or infinity"):
        ECADCalibrate().calibrate(model, spec.conditioning(1), spec.conditioning(2),
                                  {"samples": spec.empty_latent(64, 64, 1)}, "euler", "simple", 4, 1.0, 0,
                                  "nan.json", False, 2.0)
    assert list(two_folders[0].iterdir()) == []


def test_a_point_from_another_node_is_checked_when_the_load_node_runs(server):
    """The point linked from a node of any output type (a switch, say), which ComfyUI lets into a dropdown input."""
    from ecad_nodes.library import HEURISTICS_SOURCE
    workflow = calibrate_workflow("unused.json")
    del workflow["7"]
    workflow["12"] = {"class_type": "ECADLoadSchedule", "inputs": {"schedule": HEURISTICS_SOURCE, "point": ["13", 0]}}
    workflow["13"] = {"class_type": "ECADTestAnyText", "inputs": {"value": "FORA every 2 steps"}}
    workflow["8"]["inputs"]["schedule"] = ["12", 0]
    result = server.run_prompt(workflow)
    assert result["status"]["status_str"] == "success", result["status"]
    workflow["13"]["inputs"]["value"] = "FORA every 0 steps"
    refused = server.run_prompt(workflow)
    assert refused["status"]["status_str"] == "error" and "FORA every 0 steps" in json.dumps(refused["status"])


def test_without_hard_links_a_new_file_is_still_never_written_over_another(two_folders, monkeypatch):
    """On a file system without hard links (FAT, exFAT, some network mounts) the name is claimed before the move."""
    import errno
    import os

    from ecad_nodes.calibrate_node import write_new
    from ecad_nodes.schedule import ScheduleError
    from ecad_nodes.schedule_io import load_schedule

    def no_links(src, dst, *args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")
    monkeypatch.setattr(os, "link", no_links)
    first, _ = two_folders
    write_new(_small_schedule(), first / "new.json", overwrite=False)
    assert load_schedule(first / "new.json").points[0].name == "p"
    (first / "other.json").write_text("mine")
    with pytest.raises(ScheduleError, match="other.json was created while calibrating; nothing was written"):
        write_new(_small_schedule(), first / "other.json", overwrite=False)
    assert (first / "other.json").read_text() == "mine" and sorted(p.name for p in first.iterdir()) == [
        "new.json", "other.json"]

"""The pack in a real ComfyUI server (``main.py --cpu``): start-up, /object_info, and workflows through /prompt."""
from __future__ import annotations

import json

import pytest

from comfy_server import REPO, start_server
from conftest import COMFYUI_ROOT

pytestmark = pytest.mark.comfy

HEURISTICS = "heuristics (any model)"


def write_schedules(base):
    """A learned-style schedule for the testing pack's tiny FLUX, and a corrupt file beside it."""
    import numpy as np
    from ecad_nodes.families.flux import flux_layout
    from ecad_nodes.schedule import FrontierPoint, Mask, PointMetrics, ScheduleFile
    from ecad_nodes.schedule_io import save_schedule
    layout = flux_layout(2, 4)
    bits = np.random.default_rng(0).random((6, layout.bits_per_step)) < 0.5
    bits[0] = True
    point = FrontierPoint("half", Mask(layout, bits), PointMetrics("psnr", 30.0, macs=1.0, full_macs=2.0))
    save_schedule(ScheduleFile("flux", "tiny", layout, 6, [point]), base / "models" / "ecad_schedules" / "tiny-flux.json")
    (base / "models" / "ecad_schedules" / "corrupt.json").write_text('{"format": "ecad-schedule", "version": ')
    write_hostile_files(base)


SECRET = "s3cr3t"


def write_hostile_files(base):
    """Files a hostile tester leaves in the folder: small files that once crashed or stalled the reader, a symlink to a
    JSON file outside the schedule folders (whose values are secrets), and names no dropdown can hold."""
    from test_schedule_format import hostile_documents
    folder = base / "models" / "ecad_schedules"
    for i, data in enumerate(hostile_documents().values()):
        (folder / f"hostile-{i}.json").write_bytes(data)
    outside = base / "outside"
    outside.mkdir()
    (outside / "settings.json").write_text(json.dumps({"format": "ecad-schedule", "version": SECRET + "-version"}))
    save_schedule_for_secret(outside / "valid.json")
    (folder / "linked.json").symlink_to(outside / "settings.json")
    (folder / "linked-valid.json").symlink_to(outside / "valid.json")
    (folder / "elsewhere").symlink_to(outside, target_is_directory=True)
    (folder / "ours · fast.json").write_text(json.dumps({"cache_schedule": {"schedule": {
        "000": {"0": {"attn1": True, "attn2": True, "ff": True}}}}}))


def save_schedule_for_secret(path):
    from ecad_nodes.families.pixart import pixart_layout
    from ecad_nodes.schedule import FrontierPoint, Mask, ScheduleFile
    from ecad_nodes.schedule_io import save_schedule
    layout = pixart_layout(2)
    save_schedule(ScheduleFile("pixart", None, layout, 2, [FrontierPoint(SECRET + "-point", Mask.full(layout, 2))]), path)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = start_server(COMFYUI_ROOT, tmp_path_factory.mktemp("comfy"), before_start=write_schedules)
    yield s
    s.stop()


def workflow(schedule: str, point: str, cfg: float = 1.0) -> dict:
    family = {"family": "flux"}
    return {
        "1": {"class_type": "ECADTestTinyModel", "inputs": {**family, "seed": 0}},
        "2": {"class_type": "ECADLoadSchedule", "inputs": {"schedule": schedule, "point": point}},
        "3": {"class_type": "ECADApplyCache", "inputs": {"model": ["1", 0], "schedule": ["2", 0]}},
        "4": {"class_type": "ECADTestConditioning", "inputs": {**family, "seed": 1, "tokens": 8}},
        "5": {"class_type": "ECADTestConditioning", "inputs": {**family, "seed": 2, "tokens": 8}},
        "6": {"class_type": "ECADTestLatent", "inputs": {**family, "width": 64, "height": 64, "batch": 1}},
        "7": {"class_type": "KSampler", "inputs": {
            "model": ["3", 0], "seed": 7, "steps": 6, "cfg": cfg, "sampler_name": "euler", "scheduler": "simple",
            "positive": ["4", 0], "negative": ["5", 0], "latent_image": ["6", 0], "denoise": 1.0}},
        "8": {"class_type": "ECADTestLatentStats", "inputs": {"latent": ["7", 0]}},
    }


def test_both_nodes_appear_in_object_info_with_the_schedule_dropdowns(server):
    info = server.get("/object_info")
    load, apply = info["ECADLoadSchedule"], info["ECADApplyCache"]
    assert load["display_name"] == "ECAD Load Schedule" and apply["display_name"] == "ECAD Apply Cache"
    assert load["output"] == ["ECAD_SCHEDULE"] and apply["output"] == ["MODEL"]
    assert apply["input"]["required"]["schedule"][0] == "ECAD_SCHEDULE"
    sources = load["input"]["required"]["schedule"][0]
    assert sources == ["tiny-flux.json", HEURISTICS]  # the corrupt file is left out
    assert "half · 2.00× MACs · PSNR 30.00" in load["input"]["required"]["point"][0]


def test_a_corrupt_schedule_file_is_logged_and_does_not_stop_start_up(server):
    log = server.log()
    assert "corrupt.json: is not valid JSON" in log
    import_lines = [line for line in log.splitlines() if "seconds" in line and "ComfyUI-ECAD" in line]
    assert import_lines and not any("IMPORT FAILED" in line for line in import_lines), log[-3000:]
    assert "Cannot import" not in log


def test_hostile_files_and_links_outside_leave_the_node_listed_and_are_named_in_the_log(server):
    from test_schedule_format import hostile_documents
    info = server.get("/object_info/ECADLoadSchedule")["ECADLoadSchedule"]
    assert info["input"]["required"]["schedule"][0] == ["tiny-flux.json", HEURISTICS]
    points = info["input"]["required"]["point"][0]
    assert "FORA every 2 steps" in points and "no caching (reference)" in points
    assert SECRET not in json.dumps(server.get("/object_info"))
    log = server.log()
    folder = server.schedules
    for i in range(len(hostile_documents())):
        named = [line for line in log.splitlines() if f"{folder / f'hostile-{i}.json'}: " in line]
        assert len(named) == 1 and "left out of the schedule list" in named[0], (i, named)
    for name in ("linked.json", "linked-valid.json"):
        assert f"left out of the schedule list: {folder / name}: leads outside the schedule folders" in log
    assert f"{folder / 'elsewhere'}: this folder leads outside the schedule folders" in log
    assert f"{folder / 'ours · fast.json'}: names its only point after the file" in log
    assert SECRET not in log and "ecad_nodes/" not in log  # no traceback through the pack


def test_files_outside_the_folders_are_neither_served_nor_loaded_by_prompts(server):
    import urllib.error
    import urllib.parse
    import urllib.request
    listing = server.get("/api/ecad/schedules")
    by_name = {e["name"]: e for e in listing["schedules"]}
    assert "leads outside the schedule folders" in by_name["linked.json"]["error"]
    assert "elsewhere/settings.json" not in by_name and SECRET not in json.dumps(listing)
    for name in ("linked.json", "linked-valid.json", "elsewhere/valid.json", "../outside/valid.json"):
        url = f"{server.url}/api/ecad/schedules/summary?name={urllib.parse.quote(name, safe='')}"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=30)
        body = refused.value.read().decode()
        assert refused.value.code in (400, 404) and SECRET not in body, (name, body)
    for name in ("linked-valid.json", "elsewhere/valid.json", "../outside/valid.json"):
        with pytest.raises(AssertionError) as refused:
            server.run_prompt(workflow(name, SECRET + "-point"))
        message = str(refused.value)
        assert "leads outside the schedule folders" in message or "is not in the schedule folders" in message
        assert "has no point" not in message  # the file was never read


def test_comfyui_offers_only_the_ui_workflow_as_a_template(server):
    assert server.get("/workflow_templates").get("ComfyUI-ECAD") == ["flux-dev-ecad"]


def test_a_heuristic_workflow_runs_through_the_prompt_api(server):
    result = server.run_prompt(workflow(HEURISTICS, "FORA every 2 steps", cfg=3.0))
    assert result["status"]["status_str"] == "success", result["status"]
    stats = result["outputs"]["8"]["stats"][0]
    assert stats["finite"] and stats["shape"] == [1, 16, 8, 8]
    assert "ECAD [heuristics / FORA every 2 steps]: computed 50.0% of component calls over 6 steps" in server.log()


def test_a_file_point_runs_and_differs_from_the_heuristic(server):
    from_file = server.run_prompt(workflow("tiny-flux.json", "half · 2.00× MACs · PSNR 30.00"))
    assert from_file["status"]["status_str"] == "success", from_file["status"]
    reference = server.run_prompt(workflow(HEURISTICS, "no caching (reference)"))
    assert from_file["outputs"]["8"]["stats"][0]["mean"] != reference["outputs"]["8"]["stats"][0]["mean"]
    assert "ECAD [tiny-flux.json / half]" in server.log()


def test_a_point_of_another_file_is_refused_at_validation(server):
    with pytest.raises(AssertionError, match="has no point named 'FORA every 2 steps'"):
        server.run_prompt(workflow("tiny-flux.json", "FORA every 2 steps"))


def test_a_schedule_for_another_model_fails_the_prompt_with_a_clear_message(server):
    prompt = workflow("tiny-flux.json", "half")
    prompt["1"]["inputs"]["family"] = "pixart"
    for key in ("4", "5", "6"):
        prompt[key]["inputs"]["family"] = "pixart"
    prompt["6"]["inputs"].update(width=384, height=384)
    result = server.run_prompt(prompt)
    assert result["status"]["status_str"] == "error"
    message = str(result["status"]["messages"])
    assert "tiny-flux.json: cannot be applied to this model: it is for model family 'flux', but the model is 'pixart'" in message


def example_with_testing_models() -> dict:
    """docs/workflows/flux-dev-ecad.api.json with its weight files replaced by the testing pack's random-weight stand-ins."""
    prompt = json.loads((REPO / "docs" / "workflows" / "flux-dev-ecad.api.json").read_text())
    stand_ins = {
        "UNETLoader": {"class_type": "ECADTestTinyModel", "inputs": {"family": "flux", "seed": 0}},
        "CLIPTextEncode": {"class_type": "ECADTestConditioning", "inputs": {"family": "flux", "seed": 1, "tokens": 8}},
        "VAELoader": {"class_type": "ECADTestTinyVAE", "inputs": {"seed": 0}},
    }
    for node_id, node in list(prompt.items()):
        if node["class_type"] == "DualCLIPLoader":
            del prompt[node_id]  # its only user, CLIPTextEncode, is replaced
        elif node["class_type"] in stand_ins:
            prompt[node_id] = stand_ins[node["class_type"]]
        elif node["class_type"] == "EmptySD3LatentImage":
            node["inputs"].update(width=64, height=64)  # the tiny model at 1024² would only take longer
    return prompt


def test_the_example_workflow_runs_with_testing_models_in_place_of_its_weight_files(server):
    prompt = example_with_testing_models()
    assert {n["class_type"] for n in prompt.values()} >= {"ECADLoadSchedule", "ECADApplyCache", "FluxGuidance",
                                                          "ConditioningZeroOut", "KSampler", "VAEDecode", "SaveImage"}
    result = server.run_prompt(prompt)
    assert result["status"]["status_str"] == "success", result["status"]
    save_id = next(i for i, n in prompt.items() if n["class_type"] == "SaveImage")
    [image] = result["outputs"][save_id]["images"]
    assert image["type"] == "output" and image["subfolder"] == "ECAD"
    assert (server.base / "output" / image["subfolder"] / image["filename"]).stat().st_size > 0
    schedule = prompt[next(i for i, n in prompt.items() if n["class_type"] == "ECADLoadSchedule")]["inputs"]
    assert f"ECAD [heuristics / {schedule['point']}]: computed 50.0% of component calls over 20 steps" in server.log()

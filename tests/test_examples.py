"""The example workflow in ``examples/`` (UI format: what ComfyUI's frontend saves and loads, and offers as a
template) and its API-format twin in ``docs/workflows/`` (what ``/prompt`` takes) describe the same graph, and
every node, link and widget value fits the node definitions of ComfyUI and of this pack. ``examples/`` holds UI
workflows only: ComfyUI offers every JSON file there as a template, and an API file would empty the canvas.

The links and the ECAD nodes are checked anywhere; ComfyUI's own nodes need COMFYUI_PATH.
(``tests/test_server.py`` also runs the API file in a real server, with testing models in place of
its weight files.)
"""
from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any, Optional

import pytest

from conftest import COMFYUI_ROOT

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
API_WORKFLOWS = REPO / "docs" / "workflows"
PAIRS = [("flux-dev-ecad.json", "flux-dev-ecad.api.json")]  # examples/<UI file>, docs/workflows/<API file>
WIDGET_KINDS = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
# Weight files the examples name, by ComfyUI model folder: empty stand-ins make ComfyUI's file dropdowns list them.
MODEL_FOLDERS = ("diffusion_models", "text_encoders", "vae")


def load(name: str) -> dict:
    folder = API_WORKFLOWS if name.endswith(".api.json") else EXAMPLES
    return json.loads((folder / name).read_text())


def ecad_classes() -> dict[str, Any]:
    from ecad_nodes.nodes import ECADApplyCache, ECADLoadSchedule
    return {"ECADLoadSchedule": ECADLoadSchedule, "ECADApplyCache": ECADApplyCache}


def widget_names(input_types: dict) -> list[Optional[str]]:
    """The inputs behind a node's ``widgets_values``, in the order the frontend saves them.

    ``None`` stands for the frontend's "control after generate" value that follows a seed.
    """
    names: list[Optional[str]] = []
    for section in ("required", "optional"):
        for name, spec in input_types.get(section, {}).items():
            kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
            if options.get("forceInput") or not (isinstance(kind, list) or kind in WIDGET_KINDS):
                continue
            names.append(name)
            if options.get("control_after_generate") or (kind == "INT" and name in ("seed", "noise_seed")):
                names.append(None)
    return names


def input_kind(input_types: dict, name: str) -> Any:
    for section in ("required", "optional"):
        if name in input_types.get(section, {}):
            kind = input_types[section][name][0]
            return "COMBO" if isinstance(kind, list) else kind
    raise AssertionError(f"no input named {name!r}")


def ui_to_api(workflow: dict, classes: dict[str, Any]) -> dict:
    """The API prompt a UI workflow stands for: widget values by input name, links as [source id, slot]."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        names = widget_names(classes[node["type"]].INPUT_TYPES())
        values = node.get("widgets_values", [])
        assert len(values) == len(names), (
            f"node {node['id']} ({node['type']}): {len(values)} widget values for the widgets {names}")
        inputs = {name: value for name, value in zip(names, values) if name is not None}
        for socket in node.get("inputs", []):
            if socket.get("link") is not None:
                link = links[socket["link"]]
                inputs[socket["name"]] = [str(link[1]), link[2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def assert_fits_definitions(workflow: dict, classes: dict[str, Any]) -> None:
    """Sockets, outputs and link types agree with each node's INPUT_TYPES and RETURN_TYPES."""
    nodes = {node["id"]: node for node in workflow["nodes"]}
    for node in nodes.values():
        definition = classes[node["type"]]
        input_types = definition.INPUT_TYPES()
        for socket in node.get("inputs", []):
            assert socket["type"] == input_kind(input_types, socket["name"]), (node["id"], socket)
        returns = list(definition.RETURN_TYPES)
        assert [o["type"] for o in node.get("outputs", [])] == returns, (node["id"], node["type"])
    for link_id, source, slot, target, target_slot, kind in workflow["links"]:
        if source in nodes:
            assert kind == classes[nodes[source]["type"]].RETURN_TYPES[slot], f"link {link_id}"


# ------------------------------------------------------------------ anywhere

def test_examples_holds_only_ui_workflows_and_every_api_workflow_has_its_ui_twin():
    """ComfyUI serves every ``examples/*.json`` as a template: each must be a UI workflow (nodes and links)."""
    templates = sorted(p.name for p in EXAMPLES.glob("*.json"))
    assert templates == sorted(ui for ui, _ in PAIRS)
    for name in templates:
        workflow = load(name)
        assert isinstance(workflow.get("nodes"), list) and isinstance(workflow.get("links"), list), name
        assert "class_type" not in json.dumps(workflow), f"{name} looks like an API-format prompt"
    assert sorted(p.name for p in API_WORKFLOWS.glob("*.json")) == sorted(api for _, api in PAIRS)


@pytest.mark.parametrize("ui_name, api_name", PAIRS)
def test_links_agree_with_both_of_their_ends(ui_name, api_name):
    workflow = load(ui_name)
    nodes = {node["id"]: node for node in workflow["nodes"]}
    assert len(nodes) == len(workflow["nodes"]), "node ids repeat"
    link_ids = [link[0] for link in workflow["links"]]
    assert len(set(link_ids)) == len(link_ids), "link ids repeat"
    assert workflow["last_node_id"] >= max(nodes) and workflow["last_link_id"] >= max(link_ids)
    for link_id, source, slot, target, target_slot, kind in workflow["links"]:
        output = nodes[source]["outputs"][slot]
        socket = nodes[target]["inputs"][target_slot]
        assert link_id in output["links"] and output["type"] == kind, f"link {link_id} at its source"
        assert socket["link"] == link_id and socket["type"] == kind, f"link {link_id} at its target"
    for node in nodes.values():
        for socket in node.get("inputs", []):
            assert socket["link"] in link_ids, f"node {node['id']} input {socket['name']} is not connected"
        for output in node.get("outputs", []):
            assert set(output["links"] or []) <= set(link_ids), f"node {node['id']} output {output['name']}"


@pytest.mark.parametrize("ui_name, api_name", PAIRS)
def test_both_files_hold_the_same_nodes_and_connections(ui_name, api_name):
    workflow, prompt = load(ui_name), load(api_name)
    assert {str(n["id"]): n["type"] for n in workflow["nodes"]} == {i: n["class_type"] for i, n in prompt.items()}
    links = {link[0]: link for link in workflow["links"]}
    for node in workflow["nodes"]:
        api_links = {name: value for name, value in prompt[str(node["id"])]["inputs"].items() if isinstance(value, list)}
        ui_links = {s["name"]: [str(links[s["link"]][1]), links[s["link"]][2]] for s in node.get("inputs", [])}
        assert api_links == ui_links, f"node {node['id']} ({node['type']})"


@pytest.mark.parametrize("ui_name, api_name", PAIRS)
def test_the_ecad_nodes_widgets_fit_their_inputs_and_the_schedule_resolves_on_flux_dev(ui_name, api_name):
    from ecad_nodes import library
    from ecad_nodes.families.flux import flux_layout
    workflow, prompt = load(ui_name), load(api_name)
    classes = ecad_classes()
    ours = {"nodes": [n for n in workflow["nodes"] if n["type"] in classes], "links": workflow["links"]}
    assert {n["type"] for n in ours["nodes"]} == set(classes), "the example uses both ECAD nodes"
    assert_fits_definitions(ours, classes)
    derived = ui_to_api(ours, classes)
    for node_id, node in derived.items():
        assert prompt[node_id]["inputs"] == node["inputs"], f"node {node_id}: the API file differs from the UI file"
        if node["class_type"] == "ECADLoadSchedule":
            source, point = node["inputs"]["schedule"], node["inputs"]["point"]
            required = classes["ECADLoadSchedule"].INPUT_TYPES()["required"]
            assert source in required["schedule"][0] and point in required["point"][0]
            assert classes["ECADLoadSchedule"].VALIDATE_INPUTS(source, point) is True
            # FLUX.1-dev: 19 double and 38 single blocks; the KSampler runs 20 steps.
            layout = flux_layout(19, 38)
            mask = library.choose(source, point).resolve(layout, 20).mask
            assert mask.bits.shape == (20, layout.bits_per_step) and 0 < mask.bits.mean() < 1


@pytest.mark.parametrize("ui_name, api_name", PAIRS)
def test_every_sampler_takes_its_model_through_ecad_apply_cache(ui_name, api_name):
    prompt = load(api_name)
    samplers = [n for n in prompt.values() if n["class_type"] == "KSampler"]
    assert samplers
    for sampler in samplers:
        cache = prompt[sampler["inputs"]["model"][0]]
        assert cache["class_type"] == "ECADApplyCache"
        assert prompt[cache["inputs"]["model"][0]]["class_type"] == "UNETLoader"
        assert prompt[cache["inputs"]["schedule"][0]]["class_type"] == "ECADLoadSchedule"


# ------------------------------------------------------------------ with ComfyUI

@pytest.fixture(scope="module")
def comfy_classes() -> dict[str, Any]:
    """ComfyUI's node classes with its built-in extras (as a server has them), and this pack's."""
    if COMFYUI_ROOT is None:
        pytest.skip("needs ComfyUI's nodes: set COMFYUI_PATH")
    # main.py imports ComfyUI's utils package (server.py needs it) before nodes.py puts comfy/, which
    # holds a utils.py, first on sys.path. Here nodes may be imported already (and an earlier
    # 'from server import ...' may have bound comfy/utils.py to the bare name): import it the same way round.
    bare_utils = sys.modules.get("utils")
    if bare_utils is not None and not hasattr(bare_utils, "__path__"):
        del sys.modules["utils"]
    sys.path.insert(0, str(COMFYUI_ROOT))
    try:
        import server  # noqa: F401
    finally:
        sys.path.remove(str(COMFYUI_ROOT))
    import nodes
    # Some extras need a running server (v0.20.1's nodes_replacements reads PromptServer.instance); what matters is
    # that every node the examples use is there.
    failed = asyncio.run(nodes.init_builtin_extra_nodes())
    classes = {**nodes.NODE_CLASS_MAPPINGS, **ecad_classes()}
    used = {node["type"] for ui_name, _ in PAIRS for node in load(ui_name)["nodes"]}
    missing = sorted(used - set(classes))
    assert not missing, f"ComfyUI lacks nodes the examples use: {missing} (extras that did not import: {failed})"
    return classes


@pytest.fixture
def model_files(tmp_path, monkeypatch):
    """Empty files under the names the examples use, listed by ComfyUI's model folders (nothing is loaded)."""
    import folder_paths
    names = set()
    for ui_name, _ in PAIRS:
        for node in load(ui_name)["nodes"]:
            names.update((m["directory"], m["name"]) for m in node.get("properties", {}).get("models", []))
    assert {folder for folder, _ in names} <= set(MODEL_FOLDERS)
    for folder in MODEL_FOLDERS:
        (tmp_path / folder).mkdir()
        monkeypatch.setitem(folder_paths.folder_names_and_paths, folder,
                            ([str(tmp_path / folder)], folder_paths.supported_pt_extensions))
    for folder, name in names:
        (tmp_path / folder / name).touch()
    monkeypatch.setattr(folder_paths, "filename_list_cache", {})
    return names


@pytest.mark.comfy
@pytest.mark.parametrize("ui_name, api_name", PAIRS)
def test_every_node_widget_and_link_fits_comfyui_and_the_api_file_matches(ui_name, api_name, comfy_classes, model_files):
    workflow, prompt = load(ui_name), load(api_name)
    missing = {n["type"] for n in workflow["nodes"]} - set(comfy_classes)
    assert not missing, f"node types neither ComfyUI nor this pack defines: {missing}"
    assert_fits_definitions(workflow, comfy_classes)
    derived = ui_to_api(workflow, comfy_classes)
    for node_id, node in derived.items():
        assert prompt[node_id]["inputs"] == node["inputs"], f"node {node_id} ({node['class_type']})"


@pytest.mark.comfy
@pytest.mark.parametrize("ui_name, api_name", PAIRS)
def test_comfyui_accepts_the_api_file(ui_name, api_name, comfy_classes, model_files, monkeypatch):
    """ComfyUI's own prompt validation (combo values, ranges, link types), as the server runs it on /prompt."""
    import execution
    import nodes
    for name, cls in ecad_classes().items():
        monkeypatch.setitem(nodes.NODE_CLASS_MAPPINGS, name, cls)
    valid, error, outputs, node_errors = asyncio.run(execution.validate_prompt("examples", load(api_name), None))
    assert valid, (error, node_errors)
    assert not node_errors
    assert outputs == [i for i, n in load(api_name).items() if n["class_type"] == "SaveImage"]

"""The schedule picture and the "ECAD Schedule Preview" node (ecad_nodes/preview.py)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ecad_nodes.choice import ScheduleChoice
from ecad_nodes.families.flux import flux_layout
from ecad_nodes.heuristics import HEURISTICS, fora_bits, heuristic
from ecad_nodes.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from ecad_nodes.preview import (ANY_MODEL_LAYOUT, BACKGROUND, HEURISTIC_DEFAULT_STEPS, PALETTE, REUSED_SHADE,
                                ECADSchedulePreview, Geometry, component_colours, preview_image, render_mask)
from ecad_nodes.schedule import BlockGroup, Layout, Mask, ScheduleError
from frontier_files import frontier

TWO_GROUPS = Layout("test", (BlockGroup("double", 2, ("attn", "mlp")), BlockGroup("single", 3, ("attn", "out"))))


def shade(colour):
    return tuple(int(round(b + (c - b) * REUSED_SHADE)) for c, b in zip(colour, BACKGROUND))


def cell_colour(image: np.ndarray, mask: Mask, step: int, group: str, block: int, component: int) -> tuple:
    """The colour at the centre of one cell, located from the drawing's geometry."""
    rows = sum(g.bits for g in mask.layout.groups)
    geo = Geometry.fit(mask.steps, rows)
    y = 0
    for g in mask.layout.groups:
        if g.name == group:
            y += (block * len(g.components) + component) * geo.row_height
            break
        y += g.bits * geo.row_height + geo.group_gap
    cx = geo.left + step * geo.cell_width + geo.cell_width // 2 - 1
    cy = geo.top + y + geo.row_height // 2
    return tuple(int(v) for v in image[cy, cx])


def expected_colour(mask: Mask, step: int, group: str, block: int, component: int) -> tuple:
    g = mask.layout.group(group)
    colour = component_colours(mask.layout)[g.components[component]]
    return colour if mask.group(group)[step, block, component] else shade(colour)


def assert_cells_match(image: np.ndarray, mask: Mask) -> None:
    for g in mask.layout.groups:
        for step in range(mask.steps):
            for block in range(g.blocks):
                for c in range(len(g.components)):
                    assert cell_colour(image, mask, step, g.name, block, c) == expected_colour(mask, step, g.name, block, c), \
                        (step, g.name, block, c)


def test_each_component_has_one_colour_across_groups():
    colours = component_colours(TWO_GROUPS)
    assert list(colours) == ["attn", "mlp", "out"]
    assert colours["attn"] == PALETTE[0] and len(set(colours.values())) == 3


def test_every_cell_shows_computed_in_its_component_colour_and_reused_dim():
    rng = np.random.default_rng(3)
    mask = Mask(TWO_GROUPS, rng.random((7, TWO_GROUPS.bits_per_step)) < 0.5)
    image = render_mask(mask, "test / point", "subtitle")
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert_cells_match(image, mask)


def test_a_flux_point_is_drawn_at_its_own_steps_and_mapped_onto_other_step_counts():
    schedule = frontier(flux_layout(19, 38), 20, ["a", "b"], seed=4)
    choice = ScheduleChoice.of_point("flux-dev.json", schedule, schedule.points[1])
    own = preview_image(choice)
    assert_cells_match(own, schedule.points[1].mask)
    mapped = preview_image(choice, steps=28)
    assert_cells_match(mapped, schedule.points[1].mask.resampled(28))
    assert mapped.shape[0] == own.shape[0]  # same rows, other columns


def test_a_heuristic_without_a_model_is_one_row_at_the_default_step_count():
    image = preview_image(ScheduleChoice.of_heuristic(heuristic("FORA every 3 steps")))
    expected = Mask(ANY_MODEL_LAYOUT, fora_bits(ANY_MODEL_LAYOUT, HEURISTIC_DEFAULT_STEPS, 3))
    assert_cells_match(image, expected)


def test_a_heuristic_on_a_model_layout_uses_its_blocks_and_the_given_steps():
    layout = flux_layout(2, 4)
    image = preview_image(ScheduleChoice.of_heuristic(heuristic("FORA every 2 steps")), steps=9, layout=layout)
    assert_cells_match(image, Mask(layout, fora_bits(layout, 9, 2)))


def test_a_file_for_another_model_is_refused_with_the_file_named():
    schedule = frontier(flux_layout(19, 38), 20, ["a"])
    schedule.path = "flux-dev.json"
    choice = ScheduleChoice.of_point("flux-dev.json", schedule, schedule.points[0])
    with pytest.raises(ScheduleError, match=r"flux-dev.json: cannot be applied to this model: it expects flux \(double_blocks=19×"):
        preview_image(choice, layout=flux_layout(2, 4))


def test_the_node_is_registered_with_tooltips_and_an_image_output():
    assert NODE_CLASS_MAPPINGS["ECADSchedulePreview"] is ECADSchedulePreview
    assert NODE_DISPLAY_NAME_MAPPINGS["ECADSchedulePreview"] == "ECAD Schedule Preview"
    inputs = ECADSchedulePreview.INPUT_TYPES()
    assert inputs["required"]["schedule"][0] == "ECAD_SCHEDULE"
    assert inputs["optional"]["steps"][0] == "INT" and inputs["optional"]["model"][0] == "MODEL"
    for section in ("required", "optional"):
        for name, (_, options) in inputs[section].items():
            assert options.get("tooltip"), name
    assert ECADSchedulePreview.RETURN_TYPES == ("IMAGE",) and ECADSchedulePreview.OUTPUT_NODE


@pytest.fixture
def temp_dir(tmp_path, monkeypatch):
    import folder_paths
    monkeypatch.setattr(folder_paths, "temp_directory", str(tmp_path / "temp"))
    return tmp_path / "temp"


@pytest.mark.comfy
def test_the_node_shows_a_temp_png_and_returns_the_same_picture_as_an_image(temp_dir):
    schedule = frontier(flux_layout(19, 38), 20, ["a", "b"], seed=5)
    choice = ScheduleChoice.of_point("flux-dev.json", schedule, schedule.points[0])
    out = ECADSchedulePreview().preview(choice)
    (entry,) = out["ui"]["images"]
    assert entry["type"] == "temp" and entry["subfolder"] == "" and entry["filename"].endswith(".png")
    png = np.asarray(Image.open(temp_dir / entry["filename"]).convert("RGB"))
    (image,) = out["result"]
    assert image.dtype.is_floating_point and image.shape == (1, *png.shape)
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert np.array_equal((image[0].numpy() * 255).round().astype(np.uint8), png)
    assert_cells_match(png, schedule.points[0].mask)


@pytest.mark.comfy
def test_the_node_lays_a_heuristic_onto_a_connected_tiny_flux(temp_dir):
    from ecad_nodes.families.flux import TinyFlux
    model = TinyFlux().build(seed=0)
    out = ECADSchedulePreview().preview(ScheduleChoice.of_heuristic(HEURISTICS[2]), steps=6, model=model)
    layout = flux_layout(TinyFlux().depth, TinyFlux().depth_single)
    rgb = (out["result"][0][0].numpy() * 255).round().astype(np.uint8)
    assert_cells_match(rgb, Mask(layout, fora_bits(layout, 6, 3)))


@pytest.mark.comfy
def test_the_node_refuses_a_file_for_another_family_on_a_connected_model(temp_dir):
    from ecad_nodes.families.pixart import TinyPixArt
    schedule = frontier(flux_layout(2, 4), 6, ["a"])
    choice = ScheduleChoice.of_point("tiny-flux.json", schedule, schedule.points[0])
    with pytest.raises(ScheduleError, match="it is for model family 'flux', but the model is 'pixart'"):
        ECADSchedulePreview().preview(choice, model=TinyPixArt().build(seed=0))


@pytest.mark.comfy
def test_a_workflow_on_a_real_server_shows_the_preview_in_its_history(tmp_path):
    from comfy_server import start_server
    from conftest import COMFYUI_ROOT
    from frontier_files import write_flux

    server = start_server(COMFYUI_ROOT, tmp_path, before_start=lambda base: write_flux(base / "models" / "ecad_schedules" / "flux-dev.json"))
    try:
        label = server.get("/api/ecad/schedules/summary?name=flux-dev.json")["points"][0]["label"]
        result = server.run_prompt({
            "1": {"class_type": "ECADLoadSchedule", "inputs": {"schedule": "flux-dev.json", "point": label}},
            "2": {"class_type": "ECADSchedulePreview", "inputs": {"schedule": ["1", 0], "steps": 0}},
        })
        assert result["status"]["status_str"] == "success", result["status"]
        (entry,) = result["outputs"]["2"]["images"]
        assert entry["type"] == "temp" and (server.base / "temp" / entry["filename"]).is_file()
    finally:
        server.stop()


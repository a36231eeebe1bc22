"""The two nodes' ComfyUI surface: inputs, tooltips, validation, change detection (no ComfyUI needed)."""
from __future__ import annotations

import pytest

from ecad_nodes import library
from ecad_nodes.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, ECADApplyCache, ECADLoadSchedule
from ecad_nodes.schedule import ScheduleError
from ecad_nodes.schedule_io import save_schedule
from test_library import schedule


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setattr(library, "schedule_folders", lambda: [tmp_path])
    library._cache.clear()
    save_schedule(schedule(), tmp_path / "pixart-alpha.json")
    return tmp_path


def test_node_names_are_prefixed_and_displayed_with_ecad():
    assert set(NODE_CLASS_MAPPINGS) >= {"ECADLoadSchedule", "ECADApplyCache"}
    assert all(key.startswith("ECAD") for key in NODE_CLASS_MAPPINGS)
    assert NODE_DISPLAY_NAME_MAPPINGS["ECADLoadSchedule"] == "ECAD Load Schedule"
    assert NODE_DISPLAY_NAME_MAPPINGS["ECADApplyCache"] == "ECAD Apply Cache"


def test_every_input_has_a_tooltip_and_every_node_a_description(folder):
    for cls in (ECADLoadSchedule, ECADApplyCache):
        assert cls.DESCRIPTION
        for name, (kind, options) in cls.INPUT_TYPES()["required"].items():
            assert options.get("tooltip"), f"{cls.__name__}.{name} has no tooltip"


def test_dropdowns_list_files_then_heuristics_and_every_point(folder):
    inputs = ECADLoadSchedule.INPUT_TYPES()["required"]
    assert inputs["schedule"][0] == ["pixart-alpha.json", library.HEURISTICS_SOURCE]
    points = inputs["point"][0]
    assert points[:2] == ["fast · 1.80× · IR 1.00", "faster · 2.60× · IR 0.80"]
    assert "FORA every 2 steps" in points


def test_validation_checks_the_point_against_its_own_file(folder):
    assert ECADLoadSchedule.VALIDATE_INPUTS("pixart-alpha.json", "faster · 2.60× · IR 0.80") is True
    assert ECADLoadSchedule.VALIDATE_INPUTS(library.HEURISTICS_SOURCE, "FORA every 3 steps") is True
    message = ECADLoadSchedule.VALIDATE_INPUTS("pixart-alpha.json", "FORA every 3 steps")
    assert "pixart-alpha.json: has no point named 'FORA every 3 steps'" in message
    assert "is not in the schedule folders" in ECADLoadSchedule.VALIDATE_INPUTS("gone.json", "fast")


def test_load_returns_the_chosen_point(folder):
    (choice,) = ECADLoadSchedule().load("pixart-alpha.json", "fast · 1.80× · IR 1.00")
    assert choice.name == "fast" and choice.source == "pixart-alpha.json"
    assert choice.point.mask == schedule().points[0].mask


def test_a_rewritten_file_counts_as_changed(folder):
    before = ECADLoadSchedule.IS_CHANGED("pixart-alpha.json", "fast")
    assert ECADLoadSchedule.IS_CHANGED("pixart-alpha.json", "fast") == before
    save_schedule(schedule(("fast", "fastest")), folder / "pixart-alpha.json")
    assert ECADLoadSchedule.IS_CHANGED("pixart-alpha.json", "fast") != before


def test_apply_cache_refuses_a_non_model_with_a_clear_error():
    from ecad_nodes.families import UnsupportedModelError

    class NotADiT:
        model = type("UNetModel", (), {})()

        def get_model_object(self, name):
            return None
    (choice,) = ECADLoadSchedule().load(library.HEURISTICS_SOURCE, "FORA every 2 steps")
    with pytest.raises(UnsupportedModelError, match="ECAD has no adapter for the model class .*Supported families: .*flux.*pixart"):
        ECADApplyCache().apply(NotADiT(), choice)

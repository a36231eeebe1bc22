"""Schedule discovery, dropdown labels and choices (no ComfyUI needed)."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from ecad_nodes import library
from ecad_nodes.choice import ScheduleChoice
from ecad_nodes.heuristics import HEURISTICS, fora_bits
from ecad_nodes.schedule import BlockGroup, FrontierPoint, Layout, Mask, PointMetrics, ScheduleError, ScheduleFile
from ecad_nodes.schedule_io import save_schedule

LAYOUT = Layout("pixart", (BlockGroup("blocks", 4, ("self_attn", "cross_attn", "mlp")),))


def schedule(names=("fast", "faster"), steps=10) -> ScheduleFile:
    points = []
    for i, name in enumerate(names):
        points.append(FrontierPoint(name, Mask(LAYOUT, fora_bits(LAYOUT, steps, i + 2)),
                                    PointMetrics("image_reward", 1.0 - 0.2 * i, macs=10.0 / (i + 2), full_macs=10.0,
                                                 speedup=(1.8, 2.6)[i % 2])))
    return ScheduleFile("pixart", "pixart-alpha", LAYOUT, steps, points)


@pytest.fixture
def folders(tmp_path, monkeypatch):
    pack, user = tmp_path / "pack", tmp_path / "user"
    pack.mkdir(), user.mkdir()
    monkeypatch.setattr(library, "schedule_folders", lambda: [user, pack])
    library._cache.clear()
    return pack, user


def test_lists_files_of_both_folders_and_subfolders_then_heuristics(folders):
    pack, user = folders
    save_schedule(schedule(), pack / "pixart-alpha.json")
    save_schedule(schedule(), user / "paper" / "ours.json")
    (pack / "ecad-schedule.schema.json").write_text("{}")
    assert library.list_sources() == ["paper/ours.json", "pixart-alpha.json", library.HEURISTICS_SOURCE]


def test_a_user_file_shadows_a_pack_file_of_the_same_name(folders, caplog):
    pack, user = folders
    save_schedule(schedule(("pack_point",)), pack / "s.json")
    save_schedule(schedule(("user_point",)), user / "s.json")
    with caplog.at_level(logging.WARNING):
        assert library.labels_for("s.json")[0].startswith("user_point")
    assert "shadowed" in caplog.text


def test_a_corrupt_file_is_logged_once_and_left_out(folders, caplog):
    pack, _ = folders
    save_schedule(schedule(), pack / "good.json")
    (pack / "corrupt.json").write_text('{"format": "ecad-schedule", "version": 1, "steps": ')
    with caplog.at_level(logging.ERROR):
        assert library.list_sources() == ["good.json", library.HEURISTICS_SOURCE]
        assert library.list_sources() == ["good.json", library.HEURISTICS_SOURCE]
    errors = [r for r in caplog.records if "corrupt.json" in r.getMessage()]
    assert len(errors) == 1 and "is not valid JSON" in errors[0].getMessage()
    with pytest.raises(ScheduleError, match="corrupt.json: is not valid JSON"):
        library.choose("corrupt.json", "anything")


def test_a_fixed_file_comes_back_after_it_is_rewritten(folders):
    pack, _ = folders
    path = pack / "s.json"
    path.write_text("not json")
    assert library.list_sources() == [library.HEURISTICS_SOURCE]
    save_schedule(schedule(), path)
    assert library.list_sources() == ["s.json", library.HEURISTICS_SOURCE]


def test_labels_show_name_speed_and_quality_and_resolve_back(folders):
    pack, _ = folders
    save_schedule(schedule(), pack / "s.json")
    labels = library.labels_for("s.json")
    assert labels == ["fast · 1.80× · IR 1.00", "faster · 2.60× · IR 0.80"]
    choice = library.choose("s.json", labels[1])
    assert choice.name == "faster" and choice.point.mask == schedule().points[1].mask
    # A label with stale figures still finds its point by name.
    assert library.choose("s.json", "faster · 9.99× · IR 0.10").name == "faster"


def test_mac_ratio_is_shown_when_no_speedup_was_measured():
    p = FrontierPoint("x", Mask.full(LAYOUT, 2), PointMetrics("psnr", 31.456, macs=4.0, full_macs=10.0))
    assert library.point_label(p) == "x · 2.50× MACs · PSNR 31.46"
    assert library.point_label(FrontierPoint("bare", Mask.full(LAYOUT, 2))) == "bare"


def test_unknown_points_and_files_are_clear_errors(folders):
    pack, _ = folders
    save_schedule(schedule(), pack / "s.json")
    with pytest.raises(ScheduleError, match=r"s\.json: has no point named 'nope' \(points: fast, faster\)"):
        library.choose("s.json", "nope")
    with pytest.raises(ScheduleError, match="schedule 'other.json' is not in the schedule folders"):
        library.choose("other.json", "fast")
    with pytest.raises(ScheduleError, match="is not a built-in heuristic"):
        library.choose(library.HEURISTICS_SOURCE, "FORA every 7 steps")


def test_names_outside_the_listing_are_never_read(folders, tmp_path):
    pack, _ = folders
    secret = tmp_path / "secret.json"
    save_schedule(schedule(), secret)
    for name in ("../secret.json", str(secret), "..%2Fsecret.json"):
        with pytest.raises(ScheduleError, match="is not in the schedule folders"):
            library.load_source(name)


def test_heuristics_resolve_against_any_layout_and_step_count():
    choice = library.choose(library.HEURISTICS_SOURCE, "FORA every 3 steps")
    resolved = choice.resolve(LAYOUT, 7)
    assert resolved.note is None
    assert resolved.mask.steps == 7
    assert [bool(r.all()) for r in resolved.mask.bits] == [True, False, False, True, False, False, True]
    assert not resolved.mask.bits[1:3].any()
    assert library.all_point_labels()[-len(HEURISTICS):] == [h.name for h in HEURISTICS]


def test_file_points_are_mapped_onto_other_step_counts():
    s = schedule(steps=10)
    choice = ScheduleChoice.of_point("s.json", s, s.points[0])
    same = choice.resolve(LAYOUT, 10)
    assert same.note is None and same.mask == s.points[0].mask
    longer = choice.resolve(LAYOUT, 19)
    assert "made for 10 steps; the workflow runs 19" in longer.note
    assert list(longer.schedule_step_of) == [round(i * 9 / 18 + 1e-9) for i in range(19)]
    np.testing.assert_array_equal(longer.mask.bits, s.points[0].mask.bits[longer.schedule_step_of])
    shorter = choice.resolve(LAYOUT, 4)
    assert list(shorter.schedule_step_of) == [0, 3, 6, 9]


def test_schedules_for_another_model_are_refused_with_both_layouts():
    s = schedule()
    choice = ScheduleChoice.of_point("s.json", s, s.points[0])
    flux = Layout("flux", (BlockGroup("double_blocks", 19, ("attn", "img_mlp", "txt_mlp")),))
    with pytest.raises(ScheduleError, match="is for model family 'pixart', but the model is 'flux'"):
        choice.check(flux)
    bigger = Layout("pixart", (BlockGroup("blocks", 28, ("self_attn", "cross_attn", "mlp")),))
    with pytest.raises(ScheduleError, match=r"expects pixart \(blocks=4×.*but the model has pixart \(blocks=28×"):
        choice.resolve(bigger, 10)


# ------------------------------------------------------------------ hostile folders

def test_a_symlink_leading_outside_is_neither_listed_nor_loaded(folders, tmp_path, caplog):
    pack, user = folders
    secret = tmp_path / "secret.json"
    save_schedule(schedule(("secret-point",)), secret)
    (user / "linked.json").symlink_to(secret)
    save_schedule(schedule(), user / "inside.json")
    (user / "alias.json").symlink_to(user / "inside.json")  # a link that stays inside is fine
    with caplog.at_level(logging.WARNING):
        assert library.list_sources() == ["alias.json", "inside.json", library.HEURISTICS_SOURCE]
        assert not any("secret-point" in label for label in library.all_point_labels())
        with pytest.raises(ScheduleError, match=r"linked\.json: leads outside the schedule folders"):
            library.choose("linked.json", "secret-point")
        library.list_sources()
    assert [r.getMessage() for r in caplog.records if "linked.json" in r.getMessage()] == [
        f"ECAD: left out of the schedule list: {user / 'linked.json'}: {library.OUTSIDE}"]


def test_folders_leading_outside_are_not_searched_and_link_loops_end(folders, tmp_path):
    pack, user = folders
    outside = tmp_path / "outside"
    outside.mkdir()
    save_schedule(schedule(("secret-point",)), outside / "secret.json")
    (user / "elsewhere").symlink_to(outside, target_is_directory=True)
    (user / "sub").mkdir()
    save_schedule(schedule(), user / "sub" / "s.json")
    (user / "sub" / "loop").symlink_to(user, target_is_directory=True)  # sub/loop/sub/loop/... is the same folder
    assert library.list_sources() == ["sub/s.json", library.HEURISTICS_SOURCE]
    with pytest.raises(ScheduleError, match="is not in the schedule folders"):
        library.load_source("elsewhere/secret.json")


@pytest.mark.parametrize("file_name", ["a%2fb.json", "back\\slash.json", " lead.json", "new\nline.json"])
def test_files_whose_names_cannot_be_asked_for_are_left_out(folders, file_name, caplog):
    pack, _ = folders
    save_schedule(schedule(), pack / "good.json")
    save_schedule(schedule(), pack / file_name)
    with caplog.at_level(logging.WARNING):
        assert library.list_sources() == ["good.json", library.HEURISTICS_SOURCE]
    assert any("its name cannot be chosen in a dropdown" in r.getMessage() for r in caplog.records)


def test_an_official_file_whose_name_holds_the_label_separator_is_left_out(folders, caplog):
    import json
    pack, _ = folders
    official = {"cache_schedule": {"schedule": {"000": {"0": {"attn1": True, "attn2": True, "ff": True}}}}}
    (pack / "ours · fast.json").write_text(json.dumps(official))
    (pack / "ours-fast.json").write_text(json.dumps(official))
    with caplog.at_level(logging.ERROR):
        assert library.list_sources() == ["ours-fast.json", library.HEURISTICS_SOURCE]
    assert library.labels_for("ours-fast.json") == ["ours-fast"]
    assert library.choose("ours-fast.json", "ours-fast").name == "ours-fast"
    assert "ours · fast.json: names its only point after the file" in caplog.text


def test_a_fifo_in_the_folder_is_left_out_without_blocking(folders):
    import os
    pack, _ = folders
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    os.mkfifo(pack / "pipe.json")
    save_schedule(schedule(), pack / "good.json")
    assert library.list_sources() == ["good.json", library.HEURISTICS_SOURCE]
    with pytest.raises(ScheduleError, match=r"pipe\.json: is not a regular file"):
        library.load_source("pipe.json")


def test_hostile_files_leave_the_heuristics_and_the_good_files_listed(folders, caplog):
    from test_schedule_format import hostile_documents
    pack, user = folders
    save_schedule(schedule(), pack / "good.json")
    for i, data in enumerate(hostile_documents().values()):
        (user / f"hostile-{i}.json").write_bytes(data)
    with caplog.at_level(logging.ERROR):
        assert library.list_sources() == ["good.json", library.HEURISTICS_SOURCE]
        assert library.all_point_labels()[-len(HEURISTICS):] == [h.name for h in HEURISTICS]
    for i in range(len(hostile_documents())):
        lines = [r for r in caplog.records if f"hostile-{i}.json: " in r.getMessage()]
        assert len(lines) == 1 and lines[0].getMessage().startswith("ECAD: left out of the schedule list: ")


def test_an_unforeseen_error_in_the_reader_leaves_one_file_out_with_one_log_line(folders, monkeypatch, caplog):
    # The reader raises only ScheduleError for any input (tests/test_schedule_fuzz.py); this stands in for a bug in it.
    pack, _ = folders
    save_schedule(schedule(), pack / "good.json")
    save_schedule(schedule(), pack / "trips.json")
    real = library.parse_schedule_bytes

    def buggy(data, path=None):
        if str(path).endswith("trips.json"):
            raise RecursionError("maximum recursion depth exceeded")
        return real(data, path)
    monkeypatch.setattr(library, "parse_schedule_bytes", buggy)
    with caplog.at_level(logging.ERROR):
        assert library.list_sources() == ["good.json", library.HEURISTICS_SOURCE]
        assert library.list_sources() == ["good.json", library.HEURISTICS_SOURCE]
    lines = [r.getMessage() for r in caplog.records if "trips.json" in r.getMessage()]
    assert lines == [f"ECAD: left out of the schedule list: {pack / 'trips.json'}: could not be read (RecursionError); "
                     "please report this file to ComfyUI-ECAD"]


def test_files_are_parsed_once_per_change(folders, monkeypatch):
    import os
    pack, _ = folders
    path = save_schedule(schedule(), pack / "s.json")
    reads = []
    real = library.read_limited
    monkeypatch.setattr(library, "read_limited", lambda p: reads.append(p) or real(p))
    for _ in range(3):
        library.list_sources(), library.all_point_labels(), library.choose("s.json", "fast")
    assert len(reads) == 1
    stamp = library.stamp("s.json")
    save_schedule(schedule(("renamed",)), path)  # a new file (atomic replace): a new inode
    assert library.stamp("s.json") != stamp
    assert library.labels_for("s.json")[0].startswith("renamed") and len(reads) == 2
    os.utime(path, ns=(1, 1))  # touched only: parsed again, same result
    assert library.labels_for("s.json")[0].startswith("renamed") and len(reads) == 3
    assert library.stamp("missing.json") == "" and library.stamp("../s.json") == ""


def test_a_file_whose_name_holds_the_label_separator_is_listed_and_chosen(folders):
    """Only point names are read back from labels; a file name is the dropdown value as it is."""
    pack, _ = folders
    save_schedule(schedule(), pack / "ours · fast.json")
    assert library.list_sources() == ["ours · fast.json", library.HEURISTICS_SOURCE]
    label = library.labels_for("ours · fast.json")[1]
    assert library.choose("ours · fast.json", label).name == "faster"


def test_a_file_that_could_not_be_read_is_listed_once_it_can_be(folders, monkeypatch, caplog):
    """A read refused by the system (permissions, ACLs) is not cached: fixing it changes nothing the stamp holds."""
    import os
    from ecad_nodes import schedule_io
    pack, _ = folders
    path = save_schedule(schedule(), pack / "mine.json")
    real_open = os.open

    def refused(p, *args, **kwargs):
        if os.fspath(p) == os.fspath(path.resolve()):
            raise PermissionError(13, "Permission denied")
        return real_open(p, *args, **kwargs)
    monkeypatch.setattr(schedule_io.os, "open", refused)  # os.open itself: what the system answers, once per read
    with caplog.at_level(logging.ERROR):
        assert library.list_sources() == [library.HEURISTICS_SOURCE]
        assert library.list_sources() == [library.HEURISTICS_SOURCE]
    assert [r.getMessage() for r in caplog.records if "mine.json" in r.getMessage()] == [
        f"ECAD: left out of the schedule list: {path}: cannot be read (Permission denied)"]    # logged once
    with pytest.raises(ScheduleError, match=r"mine.json: cannot be read \(Permission denied\)"):
        library.choose("mine.json", "fast")
    monkeypatch.setattr(schedule_io.os, "open", real_open)  # the user fixes the permissions; the stamp is the same
    assert library.list_sources() == ["mine.json", library.HEURISTICS_SOURCE]


def test_a_deleted_file_leaves_the_cache_at_the_next_listing(folders):
    pack, _ = folders
    kept, gone = save_schedule(schedule(), pack / "kept.json"), save_schedule(schedule(), pack / "gone.json")
    assert library.list_sources() == ["gone.json", "kept.json", library.HEURISTICS_SOURCE]
    assert set(library._cache) == {kept, gone}
    gone.unlink()
    assert library.list_sources() == ["kept.json", library.HEURISTICS_SOURCE] and set(library._cache) == {kept}

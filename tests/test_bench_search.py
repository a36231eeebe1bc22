"""The measures of benchmarks/bench_search.py: images to reach a hypervolume, medians with runs that never reach it,
frontiers per generation, ratios (fast; no model is run)."""
from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from optimizer.report import pareto_front

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_search.py"
_spec = importlib.util.spec_from_file_location("bench_search", _PATH)
bench = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("bench_search", bench)   # dataclasses look their module up
_spec.loader.exec_module(bench)


def test_images_to_reach_is_the_first_generation_at_or_above_the_level():
    curve = [(100, 1.0), (150, 2.5), (180, 2.4), (200, 3.0)]
    assert bench.images_to_reach(curve, 2.5) == 150          # reaching exactly counts
    assert bench.images_to_reach(curve, 2.45) == 150         # the first, not a later dip and recovery
    assert bench.images_to_reach(curve, 3.0) == 200
    assert bench.images_to_reach(curve, 3.01) is None        # never reached
    assert bench.images_to_reach(curve, 0.5) == 100
    assert bench.images_to_reach([], 1.0) is None
    level = 0.99 * 7.0                                        # float noise at the level itself still counts
    assert bench.images_to_reach([(10, 7.0 * 0.99)], level) == 10


def test_median_counts_runs_that_never_reach_as_infinitely_many_images():
    assert bench.median_reached([300, 100, 200]) == 200
    assert bench.median_reached([100, None, 200]) == 200     # one of three never reached: the median still exists
    assert bench.median_reached([100, None, None]) is None   # most never reached
    assert bench.median_reached([100, 300, None, None]) is None
    assert bench.median_reached([100, 300, 500, None]) == 400
    assert bench.median_reached([]) is None


def test_frontier_after_each_generation_holds_what_was_evaluated_until_then():
    rows = [("fora2", 30.0, 0.5, 0), ("fora4", 25.0, 0.25, 0), ("worse", 24.0, 0.3, 0),
            ("better", 32.0, 0.5, 1), ("baseline-after", 99.0, 0.1, -1), ("cheap", 24.5, 0.2, 2)]
    fronts = bench.frontier_keys_by_generation(rows, [0, 1, 2])
    assert fronts[0] == ["fora4", "fora2"]
    assert fronts[1] == ["fora4", "better"]
    assert fronts[2] == ["cheap", "fora4", "better"]           # rows measured after the search (-1) never count


def test_ratio_of_median_images_and_its_per_seed_range():
    text, ratio = bench.ratio_text([1000, 2000, 3000], [100, 400, 300])
    assert ratio == pytest.approx(2000 / 300)
    assert "per seed 5.0–10.0×" in text
    text, ratio = bench.ratio_text([1000, None, None], [100, 200, 300])
    assert ratio is None and "plain NSGA-II does not reach it (> 1 000 images)" in text
    assert bench.ratio_text([1000, 2000, 3000], [None, None, 100]) == ("cheap search does not reach it", None)
    assert bench.ratio_text([], [100]) == ("not measured", None)


def test_spread_text():
    assert bench._spread([1200, 800, None]) == "1 200 (800–1 200) 2/3"
    assert bench._spread([None, None, 900]) == "— (1/3; 900–900)"
    assert bench._spread([None]) == "— (0/1)"
    assert math.isinf(sorted([math.inf, 1])[-1])


def test_a_search_run_stops_at_the_level_the_generation_cap_or_the_image_cap():
    run = bench.Run("toy", "fidelity", "cheap", 0, curve=[(100, 1.0), (150, 2.0)], generations=8)
    finished = bench.Bench._finished
    assert finished(run, stop_at=2.0, cap=32, image_cap=None)               # reached the level
    assert not finished(run, stop_at=2.5, cap=32, image_cap=None)           # may go on
    assert finished(run, stop_at=2.5, cap=8, image_cap=None)                # generation cap
    assert finished(run, stop_at=2.5, cap=32, image_cap=150)                # as many images as the reference
    assert not finished(run, stop_at=2.5, cap=32, image_cap=151)
    assert not finished(run, stop_at=None, cap=32, image_cap=None)          # the reference: only the cap ends it


def test_a_process_may_take_a_later_range_of_seeds_and_its_settings_say_which():
    args = bench.parse(["--seeds", "2", "--first-seed", "3"])
    assert (args.first_seed, args.seeds) == (3, 2) and "--seeds 2 " in bench.settings_text(args)
    assert "--first-seed 3" in bench.settings_text(args)
    assert "--first-seed" not in bench.settings_text(bench.parse(["--seeds", "2"]))


def test_plain_runs_may_go_on_longer_than_the_reference_and_the_settings_say_so():
    assert bench.parse(["--reference-generations", "64"]).plain_generations == 64
    args = bench.parse(["--reference-generations", "64", "--plain-generations", "128"])
    assert args.plain_generations == 128 and "--plain-generations 128" in bench.settings_text(args)
    assert "--plain-generations" not in bench.settings_text(bench.parse(["--reference-generations", "64"]))


def test_cheap_runs_may_start_with_given_lengths_then_go_on_by_extend():
    """A finer grid where a cheap search reaches a level at once (its first length), the usual steps after it."""
    assert [bench.next_length(n, [1, 2, 4], 8) for n in (0, 1, 2, 3, 4, 12)] == [1, 2, 4, 4, 12, 20]
    assert bench.next_length(4, [], 4) == 8
    args = bench.parse(["--cheap-lengths", "4,1,2,2"])
    assert args.cheap_lengths == [1, 2, 4] and "--cheap-lengths 1,2,4" in bench.settings_text(args)
    assert bench.parse([]).cheap_lengths is None and "--cheap-lengths" not in bench.settings_text(bench.parse([]))
    assert bench.parse(["--cheap-lengths", "0,4"]).cheap_lengths == [0, 4]      # 0: the initial generation only
    for wrong in ("1,x", "-1,2"):
        with pytest.raises(SystemExit):
            bench.parse(["--cheap-lengths", wrong])


def test_calibration_options_give_the_searches_prompts_and_seeds_per_prompt():
    def options(*argv):
        return bench.calibration_options(bench.parse(list(argv)))
    assert options() == []                                                  # the preset's own images
    assert options("--calibration-prompts", "64") == ["--num-prompts", "64", "--images-per-prompt", "1"]
    assert options("--calibration-prompts", "64", "--calibration-seeds", "2") == [
        "--num-prompts", "64", "--images-per-prompt", "2"]
    assert "--calibration-seeds 2" in bench.settings_text(bench.parse(["--calibration-prompts", "64",
                                                                        "--calibration-seeds", "2"]))
    for wrong in (["--calibration-seeds", "2"], ["--calibration-prompts", "64", "--calibration-seeds", "0"]):
        with pytest.raises(SystemExit):                                     # seeds of no prompts, or no seeds
            bench.parse(wrong)


def test_steps_and_batch_size_reach_every_run_and_the_held_out_renders_and_population_the_searches(tmp_path):
    """A harder search than the preset's (more steps: a longer genome): every search runs with both, the held-out set
    renders with the same steps, so each frontier's schedules fit it; the batch size reaches every render."""
    from optimizer.run import build_parser
    from optimizer.spec import spec_from_args
    args = bench.parse(["--steps", "16", "--population", "16", "--batch-size", "8", "--cheap-options", "--race-margin 1"])
    assert bench.model_options(args) == ["--steps", "16", "--batch-size", "8"] and bench.model_options(bench.parse([])) == []
    assert "--steps 16 --batch-size 8 --population 16" in bench.settings_text(args)
    held = bench.HeldOut("toy", ["fidelity"], 2, 1, tmp_path, lambda text: None, bench.model_options(args))
    assert held.steps == 16 and held.codec.steps == 16 and held.backend.batch_size == 8
    for method in ("reference", "plain", "cheap"):
        spec = spec_from_args(build_parser().parse_args(["--model", "toy", "--run-dir", str(tmp_path / method),
                                                         *bench.search_options(args, method)]))
        assert (spec.steps, spec.population, spec.racing, spec.batch_size) == (16, 16, method == "cheap", 8)
    assert spec.race_margin == 1


def test_a_work_directory_of_other_steps_is_refused_naming_its_options_file(tmp_path):
    """Its finished runs would be reported as runs of these options; a work directory of the same options continues."""
    bench.check_work_dir(tmp_path, bench.parse(["--steps", "16"]))
    bench.check_work_dir(tmp_path, bench.parse(["--steps", "16", "--extend", "8"]))  # extend: same runs, continued
    with pytest.raises(SystemExit) as refused:
        bench.check_work_dir(tmp_path, bench.parse(["--population", "16"]))
    message = str(refused.value)
    assert str(tmp_path / "options.json") in message
    assert "--steps: the runs there have 16, now the default" in message and "--population" in message
    with pytest.raises(SystemExit, match="--batch-size: the runs there have the default, now 16"):
        bench.check_work_dir(tmp_path, bench.parse(["--steps", "16", "--batch-size", "16"]))


def test_a_steered_search_runs_each_length_anew_so_each_entry_holds_one_verification(tmp_path):
    """A steered run verifies its frontier at its end; continued, it would carry every earlier end's verification,
    which an uninterrupted run of that length does not have. So each length is a run of its own."""
    args = bench.parse(["--presets", "toy", "--metrics", "fidelity", "--calibration-prompts", "20", "--extend", "1",
                        "--work-dir", str(tmp_path)])
    b = bench.Bench(args, tmp_path, lambda text: None)
    assert b.steers("toy", "fidelity", "cheap")                     # 20 images per candidate: steers on 16
    assert not b.steers("toy", "fidelity", "plain")
    (tmp_path / "preset").mkdir()
    assert not bench.Bench(bench.parse([]), tmp_path / "preset", lambda text: None).steers("toy", "fidelity", "cheap")
    held = bench.HeldOut("toy", ["fidelity"], 2, 1, tmp_path, lambda text: None)
    run = b.search_run("toy", "fidelity", "cheap", 0, held, None, lengths=[0], cap=1)   # 0: initial generation

    base = tmp_path / "toy" / "fidelity" / "cheap-0"
    assert sorted(p.name for p in base.iterdir()) == ["generations-0", "generations-1"]
    assert run.generations == 1 and len(run.curve) == 2
    for (images, hv), length in zip(run.curve, (0, 1)):
        rows = bench.run_generations(base / f"generations-{length}")
        assert [r["generation"] for r in rows] == list(range(length + 1))      # one run from its start, not resumed
        assert images == rows[-1]["images"]                                   # its images, its verification's included
        full = bench.run_rows(base / f"generations-{length}")
        front = set(pareto_front([(h, (q, c)) for h, _, q, c, _ in full]))  # on calibration: what the run chose
        assert len(front) < len(full)                 # verified points that fell below the frontier are left out
        assert hv == pytest.approx(held.hypervolume([g for h, g, *_ in full if h in front], "fidelity"))
    assert "--resume" not in (tmp_path / "runs.log").read_text()


def test_jobs_run_each_seed_in_a_process_of_its_own_with_the_numbers_of_one_process(tmp_path):
    """--jobs: the reference in the parent, each (method, seed) in a benchmark process of its own sharing the work
    directory; the stored runs are those one process stores (the toy is deterministic), and the report's time is
    the runs' own, not the parent's last pass over stored runs."""
    small = ["--presets", "toy", "--metrics", "fidelity", "--seeds", "1", "--first-seed", "1", "--methods",
             "plain,cheap", "--reference-generations", "1", "--cheap-generations", "1", "--holdout-prompts", "2"]
    curves = {}
    for jobs in (1, 2):
        work = tmp_path / f"jobs-{jobs}"
        assert bench.main([*small, "--jobs", str(jobs), "--work-dir", str(work), "--json", str(work / "out.json")]) == 0
        runs = json.loads((work / "out.json").read_text())["results"][0]["metrics"]["fidelity"]["runs"]
        curves[jobs] = {(r["method"], r["seed"]): r["curve"] for r in runs}
    assert set(curves[2]) == {("reference", 1000), ("plain", 1), ("cheap", 1)}
    assert curves[2] == curves[1] and all(curves[2].values())
    work = tmp_path / "jobs-2"
    assert sorted(p.name for p in work.glob("job-*.log")) == ["job-toy-cheap-1.log", "job-toy-plain-1.log"]
    assert (work / "runs.log").read_text().count("--seed 1000") == 1      # the reference ran once, in the parent
    results = json.loads((work / "out.json").read_text())["results"]
    runs = results[0]["metrics"]["fidelity"]["runs"]
    assert all(r["seconds"] > 0 for r in runs)                            # each job stored its own time
    for minutes, r in enumerate(runs, start=1):
        r["seconds"] = 60.0 * minutes
    assert "the runs' own time (held-out scoring not counted; summed over runs that ran side by side): fidelity 6.0 min" \
        in bench.report(results, "settings").replace("\n", " ")

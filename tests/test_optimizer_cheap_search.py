"""The cheap search on the toy preset (no ComfyUI needed): the image budget (counted through the backend, never
exceeded, also across SIGKILL and --resume), racing, paired scoring, the surrogate and its fallback, --warm-start,
and the random-critic metric."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch

from ecad_nodes.schedule import BlockGroup, FrontierPoint, Layout, Mask, PointMetrics, ScheduleFile
from ecad_nodes.schedule_io import load_schedule, save_schedule
from optimizer.budget import BudgetExhausted, ImageLedger, MeteredBackend
from optimizer.calibration import calibration_items, items_hash
from optimizer.database import RunDatabase, StoredEvaluation
from optimizer.evaluate import Evaluation, Evaluator
from optimizer.genome import GenomeCodec
from optimizer.metrics import make_metric
from optimizer.racing import Archive, RacingConfig, pooled_sd, screening_items, screening_stages, standard_error
from optimizer.search import Search, SearchConfig
from optimizer.seeding import initial_population
from optimizer.surrogate import RidgeModel, SurrogateConfig, SurrogateState, choose, kendall_tau
from optimizer.toy_backend import ToyBackend, ToySpec
from optimizer.toy_dit import ToyConfig
from test_optimizer_cli import frontier_of, read_run_database, run_cli, sigkill_mid_generation, toy_args

PROMPTS = ["a red cube", "a quiet harbour at dawn", "three owls on a branch", "a lighthouse in fog"]
SMALL = ToySpec(ToyConfig(hidden=16, heads=2, depth=3, channels=4, text_dim=8), text_tokens=4)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class CountingToyBackend(ToyBackend):
    """The real toy backend, counting every image it renders."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.images = 0

    rendered_in_this_process = 0

    def render(self, mask, items):
        self.images += len(items)
        CountingToyBackend.rendered_in_this_process += len(items)
        return super().render(mask, items)


def toy_search(tmp_path: Path, metric: str = "fidelity", racing: RacingConfig | None = None,
               surrogate: SurrogateConfig | None = None, population: int = 6, images_per_prompt: int = 2,
               ledger: ImageLedger | None = None):
    """``ledger``: renders paid for by it (``MeteredBackend``), as a run with ``--budget-images`` is."""
    backend = CountingToyBackend(SMALL, steps=6, cfg=1.0, sampler="euler", size=8, batch_size=2, label="toy")
    items = calibration_items(PROMPTS, images_per_prompt)
    evaluator = Evaluator(MeteredBackend(backend, ledger) if ledger else backend, make_metric(metric), items, "macs")
    codec = GenomeCodec(backend.layout, backend.steps)
    tmp_path.mkdir(parents=True, exist_ok=True)
    db = RunDatabase(tmp_path / "run.sqlite", "ctx", "model", items_hash(items))
    config = SearchConfig(population, 0, racing=racing, surrogate=surrogate)
    return Search(codec, evaluator, db, tmp_path, config, "ctx", ledger=ledger), backend, db


# ---------------------------------------------------------------- --budget-images

def _counting_run(monkeypatch, capsys, argv: list[str]) -> tuple[int, int, str]:
    """``python -m optimizer.run`` in this process with the toy model's backend counting its renders: (exit code,
    images rendered, stdout)."""
    from optimizer import run
    from optimizer.toy_backend import ToyModels
    rendered = []

    def counting_open(self, spec):
        backend = CountingToyBackend(spec.preset.tiny, spec.steps, spec.cfg, spec.sampler, spec.width, spec.batch_size,
                                     spec.preset.name)
        rendered.append(backend)
        return backend

    monkeypatch.setattr(ToyModels, "open", counting_open)
    code = run.main(argv)
    return code, sum(b.images for b in rendered), capsys.readouterr().out


@pytest.mark.parametrize("budget", [None, 260])
def test_the_budget_is_never_exceeded_and_the_file_records_every_image_rendered(budget, tmp_path, monkeypatch, capsys):
    argv = [*toy_args(generations=6), "--holdout", "1", "--measure-latency", "1", "--run-dir", str(tmp_path / "run"),
            "--out", str(tmp_path / "out.json")] + ([] if budget is None else ["--budget-images", str(budget)])
    code, rendered, out = _counting_run(monkeypatch, capsys, argv)
    assert code == 0
    schedule = load_schedule(tmp_path / "out.json")
    assert schedule.provenance["search"]["images"] == rendered  # references, screens, full evaluations, measurements
    assert f"{rendered} images rendered in all" in out
    if budget is not None:
        assert rendered <= budget
        assert "the budget ended the search early" in out and "stopped, the image budget is spent" in out
        assert schedule.provenance["search"]["generations_run"] < 6
        assert [b.name for b in schedule.baselines] == ["FORA-2", "FORA-3", "FORA-4", "FORA-5"]  # kept room for them


MEASURED = ["--holdout", "1", "--measure-latency", "1", "--budget-images", "260"]


def test_resuming_a_finished_run_renders_nothing_and_writes_the_same_file(tmp_path, monkeypatch, capsys):
    """Its measurements are kept in the run directory: rendering them again would find the budget spent and write a
    file without them (it did)."""
    argv = [*toy_args(generations=6), *MEASURED, "--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "out.json")]
    code, first, _ = _counting_run(monkeypatch, capsys, argv)
    assert code == 0
    before = (tmp_path / "out.json").read_text()
    code, again, out = _counting_run(monkeypatch, capsys, [*argv, "--resume"])
    assert code == 0 and again == 0
    written = [json.loads(text) for text in (before, (tmp_path / "out.json").read_text())]
    for doc in written:
        del doc["provenance"]["date"], doc["provenance"]["command"]  # the second says --resume
    assert written[0] == written[1] and written[1]["provenance"]["search"]["images"] == first
    assert all("holdout_quality" in p["metrics"] and p["metrics"].get("speedup")
               for p in written[1]["points"] + written[1]["baselines"])


def test_images_a_kill_interrupts_in_the_measurements_stay_counted(tmp_path, monkeypatch, capsys):
    """Measurement images count as they are rendered: a resumed run renders them again within the budget, and the file
    records every image rendered."""
    import optimizer.evaluate
    real = optimizer.evaluate.measure_latency

    def killed_after_one_render(backend, masks, items, repeats=3):
        backend.render(None, items)
        raise KeyboardInterrupt  # SIGKILL would lose the same: the renders of a measurement not finished
    monkeypatch.setattr(optimizer.evaluate, "measure_latency", killed_after_one_render)
    monkeypatch.setattr(CountingToyBackend, "rendered_in_this_process", 0)
    argv = [*toy_args(generations=6), *MEASURED, "--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "out.json")]
    assert _counting_run(monkeypatch, capsys, argv)[0] == 130  # interrupted (as Ctrl-C is)
    rendered_before = CountingToyBackend.rendered_in_this_process
    monkeypatch.setattr(optimizer.evaluate, "measure_latency", real)
    code, resumed, _ = _counting_run(monkeypatch, capsys, [*argv, "--resume"])
    assert code == 0
    images = load_schedule(tmp_path / "out.json").provenance["search"]["images"]
    assert images == rendered_before + resumed and images <= 260


def test_a_budget_too_small_for_the_references_and_baselines_is_refused(tmp_path, capsys):
    from optimizer.run import main
    assert main([*toy_args(), "--budget-images", "20", "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "--budget-images 20 is too small" in err and "need 30 images" in err  # 6 references + 4 FORA × 6
    # steering on 2 of the 6 images: a round of verifying 8 points on the other 4 is kept too
    assert main([*toy_args(), "--steer-images", "2", "--budget-images", "60", "--run-dir", str(tmp_path / "run")]) == 2
    assert "need 62 images" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


BUDGETED = [*toy_args(generations=8), "--surrogate-evaluations", "4", "--budget-images", "230"]


def test_a_budgeted_run_killed_and_resumed_writes_the_uninterrupted_frontier(tmp_path):
    whole = run_cli(*BUDGETED, "--run-dir", str(tmp_path / "whole"), "--out", str(tmp_path / "whole.json"))
    assert whole.returncode == 0, whole.stderr
    assert "the budget ended the search early" in whole.stdout
    run_dir = tmp_path / "killed"
    env = {k: v for k, v in os.environ.items() if k != "COMFYUI_PATH"}
    code = sigkill_mid_generation([*BUDGETED, "--run-dir", str(run_dir), "--out", str(tmp_path / "killed.json")],
                                  run_dir, env=env)
    assert code == -signal.SIGKILL and not (tmp_path / "killed.json").exists()
    resumed = run_cli(*BUDGETED, "--run-dir", str(run_dir), "--out", str(tmp_path / "killed.json"), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after generation" in resumed.stdout and "references from the run directory" in resumed.stdout
    assert frontier_of(tmp_path / "killed.json") == frontier_of(tmp_path / "whole.json")
    searched = [load_schedule(tmp_path / f"{name}.json").provenance["search"] for name in ("whole", "killed")]
    assert searched[0] == searched[1] and searched[0]["images"] <= 230
    # resumed again with the same budget: nothing more to render, the same file
    again = run_cli(*BUDGETED, "--run-dir", str(run_dir), "--out", str(tmp_path / "again.json"), "--resume")
    assert again.returncode == 0, again.stderr
    assert frontier_of(tmp_path / "again.json") == frontier_of(tmp_path / "whole.json")
    assert load_schedule(tmp_path / "again.json").provenance["search"]["images"] == searched[0]["images"]
    # a measurement the spent budget cannot pay for is left out, the file still written
    timed = run_cli(*BUDGETED, "--measure-latency", "1", "--run-dir", str(run_dir), "--out",
                    str(tmp_path / "timed.json"), "--resume")
    assert timed.returncode == 0 and "latency not measured: the image budget is spent" in timed.stdout, timed.stderr
    assert load_schedule(tmp_path / "timed.json").provenance["search"]["images"] <= 230
    # a larger budget continues the search where the budget stopped it
    more = run_cli(*BUDGETED[:-1], "300", "--run-dir", str(run_dir), "--out",
                   str(tmp_path / "more.json"), "--resume")
    assert more.returncode == 0, more.stderr
    assert 230 < load_schedule(tmp_path / "more.json").provenance["search"]["images"] <= 300


def test_the_generations_log_reports_images_and_hypervolume(tmp_path):
    import json
    done = run_cli(*toy_args(generations=2), "--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "out.json"))
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in (tmp_path / "run" / "generations.jsonl").read_text().splitlines()]
    assert [g["generation"] for g in lines] == [0, 1, 2] and all(g["complete"] for g in lines)
    images = [g["images"] for g in lines]
    assert images == sorted(images) and images[0] > 6  # after the references
    assert all(g["hypervolume"] > 0 and "screened" in g and "surrogate" in g for g in lines)
    assert images[-1] <= load_schedule(tmp_path / "out.json").provenance["search"]["images"]


# ---------------------------------------------------------------- racing and paired scoring

def test_screening_items_spread_over_prompts_and_are_seeded():
    items = calibration_items(PROMPTS, 3)
    chosen = screening_items(items, 4, seed=0)
    assert len(chosen) == 4 and len({items[i].prompt for i in chosen}) == 4 and list(chosen) == sorted(chosen)
    assert screening_items(items, 6, seed=0) != screening_items(items, 6, seed=1)
    assert screening_items(items, 100, seed=0) == tuple(range(len(items)))


def test_paired_estimates_cancel_what_every_schedule_shares(tmp_path):
    """Paired: the no-caching mean plus the mean difference to the uncached images of the same prompts and seeds;
    unpaired: the plain mean of the screened images. On every image both are the plain mean."""
    search, backend, db = toy_search(tmp_path, metric="random_critic")
    evaluator = search.evaluator
    full = evaluator.prepare()
    codec = search.codec
    mask = codec.mask(initial_population(codec, 1, 0)[0].genome)
    screen = (0, 5)
    paired = evaluator.evaluate(mask, items=screen)
    assert paired.items == screen and paired.images == 2
    r = evaluator.reference_scores
    assert paired.quality == pytest.approx(full.quality + np.mean(paired.scores - r[list(screen)]))
    evaluator.paired = False
    assert evaluator.estimate(paired.scores, screen) == pytest.approx(np.mean(paired.scores))
    rest = evaluator.evaluate(mask, known=paired)  # on every image: renders only the other six
    assert rest.items == () and rest.images == len(evaluator.items) - 2
    assert rest.quality == pytest.approx(np.mean(rest.scores))
    np.testing.assert_array_equal(rest.scores[list(screen)], paired.scores)
    db.close()


def test_standard_error_of_a_screen():
    d = np.array([1.0, 3.0])
    assert standard_error(d, None, total=8) == pytest.approx(np.std(d, ddof=1) / np.sqrt(2) * np.sqrt(1 - 2 / 8))
    assert standard_error(d, 10.0, total=8) == pytest.approx(10.0 / np.sqrt(2) * np.sqrt(1 - 2 / 8))
    assert standard_error(np.array([1.0]), None, total=8) == np.inf  # nothing known: promoted
    assert standard_error(d, None, total=2) == 0.0  # every image scored


def test_pooled_spread_weighs_each_sample_by_its_degrees_of_freedom():
    a, b = np.array([1.0, 3.0]), np.array([0.0, 4.0, 8.0])
    pooled = np.sqrt((np.var(a, ddof=1) * 1 + np.var(b, ddof=1) * 2) / 3)
    assert pooled_sd([a, b, np.array([5.0])]) == pytest.approx(pooled)  # a single value says nothing of the spread
    assert pooled_sd([np.array([5.0])]) is None and pooled_sd([]) is None


def _row(seq: int, key: str, differences, items: tuple[int, ...] = (), cost: float = 0.5) -> StoredEvaluation:
    """A database row of a paired evaluation whose uncached images all score 0: its scores are its differences."""
    scores = np.asarray(differences, dtype=np.float64)
    ev = Evaluation(float(np.mean(scores)), cost, 1.0, 1.0, scores, items=items, images=len(scores))
    return StoredEvaluation(key, np.zeros(4, dtype=bool), ev, "test", 0, seq, full=not items)


def test_estimates_are_read_less_the_offset_their_images_show_on_the_full_evaluations():
    """A screen's images easier than the rest by the same amount for every schedule shift every estimate alike;
    the archive subtracts what the full evaluations so far show on those images (0 before the first)."""
    archive = Archive(steer_images=2)
    easy = (0, 1)                                                   # +1 on the screen's images for every schedule
    archive.add(_row(1, "s", [0.0, 0.0], items=easy, cost=0.3), np.array([0.0, 0.0]))
    assert archive.offset(easy) == 0.0 and archive.steered["s"] == (0.0, 0.3)   # nothing measured yet
    archive.add(_row(2, "f1", [0.0, 0.0, -2.0, -2.0]), np.array([0.0, 0.0, -2.0, -2.0]))      # offset +1
    archive.add(_row(3, "f2", [1.0, 0.0, -1.0, -2.0]), np.array([1.0, 0.0, -1.0, -2.0]))      # offset +1
    archive.add(_row(4, "f3", [-1.0, -1.0, -2.0, -2.0]), np.array([-1.0, -1.0, -2.0, -2.0]))  # offset +0.5
    assert archive.offset(easy) == pytest.approx(2.5 / 3)
    assert archive.offset(()) == 0.0 and archive.offset((0, 1, 2, 3)) == pytest.approx(0.0)
    assert archive.steered["s"] == pytest.approx((-2.5 / 3, 0.3))
    assert archive.steering()["s"] == pytest.approx((-2.5 / 3, 0.3)) and archive.steering()["f1"] == (-1.0, 0.5)
    assert archive.best["s"][1] == pytest.approx(-2.5 / 3) and archive.best["f2"][1] == -0.5
    measured = [0.0, 0.0, -2.0, -2.0]                               # "s" in full: its figure, uncorrected
    archive.add(_row(5, "s", measured, cost=0.3), np.array(measured))
    assert archive.best["s"][1] == -1.0 and archive.steering()["s"] == (-1.0, 0.3)


def test_a_steered_run_estimates_without_the_shared_offset_of_its_steering_images(tmp_path):
    """Over the schedules a steered run verified, its estimates less the offset are right on average: every verified
    estimate's error is its steering images' mean minus its mean on every image, which the offset averages. What the
    search was told (``Search.evaluate``) is the estimate less the offset known then."""
    search, backend, db = toy_search(tmp_path, racing=RacingConfig(screen_images=2, steer_images=4),
                                     images_per_prompt=3)
    search.run(generations=3)
    assert search.archive.offset(search.stages[-1]) == 0.0          # nothing in full yet: nothing to correct by
    screens = {r.genome_hash: r for r in db.rows() if len(r.evaluation.items) == 4}
    assert search.verify(count=3) > 2
    full = {r.genome_hash: r.evaluation.quality for r in db.rows() if r.full}
    raw = np.array([screens[k].evaluation.quality - q for k, q in full.items()])
    offset = search.archive.offset(search.stages[-1])
    assert abs(raw.mean()) > 0.05 and offset == pytest.approx(raw.mean())
    corrected = np.array([search.archive.steered[k][0] - q for k, q in full.items()])
    assert corrected.mean() == pytest.approx(0.0, abs=1e-9)
    unverified = next(k for k in screens if k not in full)
    told = search.evaluate(screens[unverified].genome, "again", 4, race=True)   # from the database, as on --resume
    assert told.quality == pytest.approx(screens[unverified].evaluation.quality - offset)
    db.close()


def test_racing_never_lets_a_screen_into_the_frontier(tmp_path):
    search, backend, db = toy_search(tmp_path, racing=RacingConfig(screen_images=2))
    result = search.run(generations=3)
    rows = db.rows()
    screens = {r.genome_hash: r for r in rows if not r.full}
    full = {r.genome_hash: r for r in rows if r.full}
    assert screens and full
    dropped = set(screens) - set(full)
    promoted = set(screens) & set(full)
    assert dropped and promoted  # racing decided both ways
    assert all(e.genome_hash in full for e in result.frontier)
    assert {e.genome_hash for e in db.all()} == set(full)
    for key in promoted:  # the frontier's figures are the full evaluation's, not the screen's estimate
        assert full[key].evaluation.quality != screens[key].evaluation.quality
    # the schedule file is made of full evaluations only
    from optimizer.pipeline import frontier_stage
    points = frontier_stage(db.all(), [], search.codec, frontier_size=8)
    qualities = {round(r.evaluation.quality, 12) for r in full.values()}
    assert points and all(round(p.quality, 12) in qualities for p in points)
    # every image rendered is in the rows (screens with 2, full rows with the rest) and the references
    assert backend.images == sum(r.evaluation.images for r in rows) + len(search.evaluator.items)
    db.close()


def test_screening_stages_double_and_nest():
    items = calibration_items(PROMPTS, 3)                           # 12 images
    stages = screening_stages(items, 2, seed=0)
    assert [len(s) for s in stages] == [2, 4, 8]                    # the next would be every image
    assert all(set(a) < set(b) for a, b in zip(stages, stages[1:]))  # a stage renders only what is new
    assert len({items[i].prompt for i in stages[1]}) == 4           # one image of each prompt before second ones
    assert screening_stages(items, 12, seed=0) == ()                # a first screen of every image: no racing


def test_racing_drops_candidates_at_every_stage_and_renders_each_image_once(tmp_path):
    """12 images, stages of 2, 4 and 8: a candidate's rows are the stages it passed, in order, each on the images
    of its stage, then (promoted) every image; each row renders only the images its predecessor lacks."""
    search, backend, db = toy_search(tmp_path, racing=RacingConfig(screen_images=2), images_per_prompt=3)
    search.run(generations=4)
    stages = search.stages
    assert [len(s) for s in stages] == [2, 4, 8]
    by_genome: dict[str, list] = {}
    for row in db.rows():
        by_genome.setdefault(row.genome_hash, []).append(row)
    last_stage = []                                               # per raced candidate: its last screen's stage
    for key, rows in by_genome.items():
        screens = [r for r in rows if not r.full]
        if not screens:
            continue  # the FORA-like seeds of the first generation, evaluated before any frontier existed
        assert [r.evaluation.items for r in screens] == list(stages[:len(screens)])
        seen = 0
        for r in rows:
            assert r.evaluation.images == r.evaluation.fidelity(12) - seen
            seen = r.evaluation.fidelity(12)
        last_stage.append(len(screens) if not rows[-1].full else "full")
    assert {1, 2, 3} <= set(last_stage) and "full" in last_stage, last_stage   # dropped at every stage, and promoted
    assert backend.images == sum(r.evaluation.images for r in db.rows()) + 12
    db.close()


def test_screening_stages_stop_at_the_steering_cap():
    items = calibration_items(PROMPTS, 3)                           # 12 images
    assert [len(s) for s in screening_stages(items, 2, seed=0, last=4)] == [2, 4]
    assert [len(s) for s in screening_stages(items, 2, seed=0, last=6)] == [2, 4, 6]
    assert [len(s) for s in screening_stages(items, 8, seed=0, last=4)] == [4]     # a first screen above the cap
    assert screening_stages(items, 2, seed=0, last=12) == screening_stages(items, 2, seed=0)  # a cap of every image
    assert screening_stages(items, 2, seed=0, last=4)[-1] == screening_items(items, 4, seed=0)


def test_screens_and_steering_default_to_the_calibration_images(tmp_path):
    """16 images or fewer per candidate: no steering, a first screen of an eighth; more: steering on an eighth (at
    least 16), first screens of a quarter of that; what the run's settings record."""
    from optimizer.run import build_parser
    from optimizer.spec import spec_from_args

    def spec(*extra):
        return spec_from_args(build_parser().parse_args(["--model", "toy", "--run-dir", str(tmp_path), *extra]))
    toy = spec()                                                      # 6 prompts x 2 images
    assert (toy.race_images, toy.steer_images) == (2, 16)
    wide = spec("--num-prompts", "64", "--images-per-prompt", "2")   # 128 images
    assert (wide.race_images, wide.steer_images) == (4, 16)
    paper = spec("--num-prompts", "100", "--images-per-prompt", "10")  # the paper's 1 000
    assert (paper.race_images, paper.steer_images) == (32, 125)
    assert spec("--num-prompts", "64", "--images-per-prompt", "2", "--race-images", "8").race_images == 8
    # the run's settings name the cap only where it steers: runs made before it existed resume as they were
    from optimizer.settings import RunSettings

    def racing(run_spec):
        return RunSettings.of(run_spec, model={}, device="cpu", calibration_hash="", metric_files={}).racing
    assert racing(toy) == {"screen_images": 2, "margin": 2.0}
    assert racing(wide) == {"screen_images": 4, "margin": 2.0, "steer_images": 16}


def _kept_of_the_steering_frontier(search: Search, count: int) -> list[str]:
    from optimizer.report import select_points
    steering = search.archive.steering()
    anchors = [search.archive.full[k][1] for k in search.full_fidelity if k in search.archive.full]
    return select_points(search.archive.steering_frontier(), count, cost_of=lambda k: steering[k][1], anchors=anchors)


def test_steering_renders_in_full_only_the_frontier_of_estimates(tmp_path):
    """12 images, screens of 2 and 4, steering on 4: the search renders nothing in full; ``verify`` then renders on
    every image (only the 8 images each screen lacks) the frontier of estimates, until every point of it is measured
    in full, and the schedule file is made of those full evaluations."""
    search, backend, db = toy_search(tmp_path, racing=RacingConfig(screen_images=2, steer_images=4),
                                     images_per_prompt=3)
    search.run(generations=3)
    assert [len(s) for s in search.stages] == [2, 4]
    rows = db.rows()
    assert rows and not any(r.full for r in rows)                  # nothing in full during the search
    assert search.archive.steered and search.archive.steering() == search.archive.steered
    estimated_frontier = search.archive.steering_frontier()
    assert len(estimated_frontier) > 3                             # more than the 3 points the file keeps
    rendered = backend.images
    verified = search.verify(count=3)
    full = [r for r in db.rows() if r.full]
    assert verified == len(full) >= len(estimated_frontier)
    assert all(r.evaluation.images == 8 for r in full)             # the screen's 4 images are not rendered again
    assert backend.images - rendered == 8 * len(full)
    full_keys = {r.genome_hash for r in full}
    assert set(search.archive.steering_frontier()) <= full_keys    # the frontier: every point measured
    assert full_keys < set(search.archive.steered)                 # the estimates below it: not rendered again
    for r in full:  # each verified genome had been steered on, and its full figure replaced the estimate
        assert r.genome_hash in search.archive.steered and search.archive.steering()[r.genome_hash] == (
            r.evaluation.quality, r.evaluation.cost)
    from optimizer.pipeline import frontier_stage
    points = frontier_stage(db.all(), [], search.codec, frontier_size=3)
    assert points and {round(p.quality, 12) for p in points} <= {round(r.evaluation.quality, 12) for r in full}
    assert search.verify(count=3) == 0 and {r.genome_hash for r in db.rows() if r.full} == full_keys  # nothing more
    assert db.generations()[-1]["full_evaluations"] == len(full)
    db.close()


def test_a_budget_that_ends_verifying_ends_it_with_the_points_the_file_keeps_measured(tmp_path):
    """The points the file keeps of the frontier of estimates are verified first: a budget that pays for only those
    ends verifying (``BudgetExhausted``) with each of them measured on every image and nothing else."""
    ledger = ImageLedger()
    search, backend, db = toy_search(tmp_path, racing=RacingConfig(screen_images=2, steer_images=4),
                                     images_per_prompt=3, ledger=ledger)
    search.run(generations=3)
    first = _kept_of_the_steering_frontier(search, 3)
    assert len(search.archive.steering_frontier()) > len(first) and not search.archive.full
    ledger.limit = ledger.used + 8 * len(first)                    # each verification renders the 8 images a screen lacks
    with pytest.raises(BudgetExhausted):
        search.verify(count=3)
    assert {r.genome_hash for r in db.rows() if r.full} == set(first)
    assert ledger.used == ledger.limit
    db.close()


STEERED = [*toy_args(generations=6), "--surrogate-evaluations", "4", "--steer-images", "4", "--budget-images", "200"]


def _verifying(db_path: Path) -> bool:
    """A steered toy run is verifying: a full evaluation beyond its four FORA baselines is in the database."""
    rows = read_run_database(db_path, "SELECT COUNT(*) FROM evaluations WHERE full = 1")
    return rows is not None and rows[0][0] > 4


def test_a_steered_budgeted_run_verifies_within_its_budget_and_resumes_to_the_same_file(tmp_path):
    whole = run_cli(*STEERED, "--run-dir", str(tmp_path / "whole"), "--out", str(tmp_path / "whole.json"))
    assert whole.returncode == 0, whole.stderr
    assert "the budget ended the search early" in whole.stdout and "steering on 4 images" in whole.stdout
    assert "schedules of the frontier of estimates on every calibration image" in whole.stdout
    assert "points of it are left unverified, and the file holds none of them" in whole.stdout  # the budget ended it
    schedule = load_schedule(tmp_path / "whole.json")
    assert schedule.provenance["search"]["images"] <= 200
    db = sqlite3.connect(tmp_path / "whole" / "run.sqlite")
    full = {round(q, 9) for (q,) in db.execute("SELECT quality FROM evaluations WHERE full = 1")}
    db.close()
    assert {round(p.metrics.quality, 9) for p in schedule.points} <= full     # only full evaluations in the file
    assert len(full) > 4                                                      # verified points beyond FORA's
    log = [json.loads(line) for line in (tmp_path / "whole" / "generations.jsonl").read_text().splitlines()]
    assert log[-1]["images"] == schedule.provenance["search"]["images"]      # the last generation counts verification
    run_dir = tmp_path / "killed"
    env = {k: v for k, v in os.environ.items() if k != "COMFYUI_PATH"}
    code = sigkill_mid_generation([*STEERED, "--run-dir", str(run_dir), "--out", str(tmp_path / "killed.json")],
                                  run_dir, env=env, when=_verifying)
    assert code == -signal.SIGKILL and not (tmp_path / "killed.json").exists()
    resumed = run_cli(*STEERED, "--run-dir", str(run_dir), "--out", str(tmp_path / "killed.json"), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert frontier_of(tmp_path / "killed.json") == frontier_of(tmp_path / "whole.json")
    searched = [load_schedule(tmp_path / f"{name}.json").provenance["search"] for name in ("whole", "killed")]
    assert searched[0] == searched[1]


# ---------------------------------------------------------------- the surrogate

def test_ridge_surrogate_ranks_a_linear_quality():
    """Fewer evaluations than bits, a few of which matter (as a few steps and blocks matter most)."""
    rng = np.random.default_rng(0)
    X = rng.random((120, 200)) < 0.5
    w = rng.standard_normal(200) * (rng.random(200) < 0.1)
    y = X @ w + 0.1 * rng.standard_normal(120)
    test = rng.random((40, 200)) < 0.5
    model = RidgeModel(X, y)
    assert kendall_tau(model.predict(test), test @ w) > 0.5


def test_the_surrogate_chooses_by_predicted_hypervolume_gain():
    """Quality ref 50, frontier (90 @ 0.8), (70 @ 0.4), hypervolume 16: a schedule cheaper than anything measured
    but below the reference adds nothing (crowding, before, took it first: it ends the front); 75 @ 0.2 adds 7,
    85 @ 0.5 4.5, 86 @ 0.55 4; the second choice counts the first in (then 85 @ 0.5 adds 3, 86 @ 0.55 2.75)."""
    frontier = [(90.0, 0.8), (70.0, 0.4)]
    predicted = np.array([40.0, 85.0, 60.0, 86.0, 75.0])
    costs = np.array([0.1, 0.5, 0.6, 0.55, 0.2])
    assert choose(predicted, costs, frontier, 1, quality_ref=50.0) == [4]
    assert choose(predicted, costs, frontier, 2, quality_ref=50.0) == [4, 1]


def test_without_a_predicted_gain_the_surrogate_chooses_the_nearest_to_the_frontier():
    frontier = [(90.0, 0.5)]
    predicted = np.array([40.0, 88.0, 85.0, 95.0])   # 10, 2 and 5 below the frontier (the first: below 50)
    costs = np.array([0.1, 0.6, 0.7, 1.0])            # the last saves nothing
    assert choose(predicted, costs, frontier, 2, quality_ref=50.0) == [1, 2]


def test_surrogate_agreement_switches_it_on_and_off():
    config = SurrogateConfig(min_tau=0.3, window=8)
    state = SurrogateState()
    state.record([1, 2, 3], [1, 2, 3], config)
    assert state.active and state.tau is None  # too few to judge
    state.record([4, 5, 6], [6, 5, 4], config)
    assert state.tau is not None
    state.record([1, 2, 3, 4, 5, 6, 7, 8], [8, 7, 6, 5, 4, 3, 2, 1], config)
    assert not state.active and state.tau == pytest.approx(-1.0)
    state.record([1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6, 7, 8], config)
    assert state.active and state.tau == pytest.approx(1.0)


class NoiseMetric:
    """A quality no model of the genome can predict: a hash of the image's pixels."""

    name, short_name, needs_reference = "noise", "N", False

    def score(self, images, prompts, references=None):
        return np.array([int.from_bytes(hashlib.sha256(np.asarray(i).tobytes()).digest()[:4], "big") / 2 ** 32
                         for i in images])


def test_the_surrogate_falls_back_to_plain_nsga2_offspring_when_it_ranks_badly(tmp_path):
    config = SurrogateConfig(pool=60, evaluate=2, min_tau=0.3, window=6, min_training=8)
    search, backend, db = toy_search(tmp_path, surrogate=config, images_per_prompt=1)
    search.evaluator.metric = NoiseMetric()
    search.run(generations=6)
    generations = db.generations()
    offspring = generations[1:]
    assert offspring[0]["surrogate"] == "on" and offspring[0]["evaluated"] <= 2  # the predicted best two
    off = [g for g in offspring if g["surrogate"].startswith("off")]
    assert off, [(g["surrogate"], g["kendall_tau"]) for g in offspring]
    assert all(g["kendall_tau"] < 0.3 for g in off)
    first_off = offspring.index(off[0])
    if first_off + 1 < len(offspring):  # the generation after the switch: a whole population of NSGA-II offspring
        assert offspring[first_off + 1]["evaluated"] > 2
    db.close()


def test_the_surrogate_offers_only_genomes_not_evaluated_before(tmp_path):
    # Its predicted best are often genomes the search already has; choosing them renders nothing new and the
    # search stalls (benchmarks/bench_search.py, toy with the random critic: before this, most of 30 generations
    # here took both of their candidates from the database).
    config = SurrogateConfig(pool=300, evaluate=2, min_training=8)
    search, backend, db = toy_search(tmp_path, metric="random_critic", racing=RacingConfig(screen_images=2),
                                     surrogate=config, population=8)
    search.run(generations=30)
    offspring = db.generations()[1:]
    assert sum(g["surrogate"] == "on" for g in offspring) >= 20
    assert [g["reused"] for g in offspring] == [0] * len(offspring)
    assert all(g["evaluated"] >= 2 for g in offspring)
    db.close()


def test_surrogate_and_racing_resume_with_the_same_decisions(tmp_path):
    config = dict(racing=RacingConfig(screen_images=2), surrogate=SurrogateConfig(pool=60, evaluate=2))
    whole, _, db_whole = toy_search(tmp_path / "whole", **config)
    expected = whole.run(generations=4)
    first, _, db_first = toy_search(tmp_path / "split", **config)
    first.run(generations=2)
    db_first.close()
    resumed, _, db_resumed = toy_search(tmp_path / "split", **config)
    result = resumed.run(generations=4)
    key = lambda r: sorted((e.genome_hash, e.evaluation.quality, e.evaluation.cost) for e in r.frontier)  # noqa: E731
    assert key(result) == key(expected)
    assert [(r.genome_hash, r.full) for r in db_resumed.rows()] == [(r.genome_hash, r.full) for r in db_whole.rows()]
    db_whole.close()
    db_resumed.close()


# ---------------------------------------------------------------- --warm-start

def _toy_file(path: Path, blocks: int, steps: int, family: str = "toy") -> Path:
    layout = Layout(family, (BlockGroup("blocks", blocks, ("self_attn", "cross_attn", "mlp")),))
    bits = np.ones((steps, layout.bits_per_step), dtype=bool)
    bits[1::2, ::2] = False
    save_schedule(ScheduleFile(family, None, layout, steps, [FrontierPoint("p", Mask(layout, bits), PointMetrics())]),
                  path)
    return path


def test_warm_start_from_a_file_of_another_layout_is_a_clear_error(tmp_path):
    other_blocks = _toy_file(tmp_path / "other-blocks.json", blocks=2, steps=8)
    done = run_cli(*toy_args(), "--warm-start", str(other_blocks), "--run-dir", str(tmp_path / "run"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error: {other_blocks}: --warm-start: its schedules do not fit the model: it "
                                  "expects toy (blocks=2×[self_attn, cross_attn, mlp])"), done.stderr
    assert not (tmp_path / "run" / "run.sqlite").exists()  # refused before anything was rendered: no run left
    other_family = _toy_file(tmp_path / "flux.json", blocks=4, steps=8, family="flux")
    done = run_cli(*toy_args(), "--warm-start", str(other_family), "--run-dir", str(tmp_path / "run"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error: {other_family}: --warm-start: it holds schedules for model family 'flux', "
                                  "not 'toy'"), done.stderr  # found before anything is loaded
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{")
    done = run_cli(*toy_args(), "--warm-start", str(garbage), "--run-dir", str(tmp_path / "run"))
    assert done.returncode == 2 and done.stderr.startswith(f"error: {garbage}: ") and "Traceback" not in done.stderr
    # with other problems, it is listed with them
    done = run_cli(*toy_args(), "--warm-start", str(garbage), "--steps", "1", "--run-dir", str(tmp_path / "run"))
    assert done.returncode == 2 and "error: cannot start:" in done.stderr and f"  - {garbage}: " in done.stderr


def test_warm_start_from_the_file_the_run_would_write_is_refused(tmp_path):
    source = _toy_file(tmp_path / "seed.json", blocks=4, steps=8)
    before = source.read_bytes()
    done = run_cli(*toy_args(), "--warm-start", str(source), "--out", str(source), "--run-dir", str(tmp_path / "run"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"--warm-start and --out are the same file, {source}" in done.stderr
    assert source.read_bytes() == before and not (tmp_path / "run" / "run.sqlite").exists()


def test_a_warm_started_run_resumes_without_its_seed_file_but_not_with_another_one(tmp_path):
    """Its seeds and the file's digest are in the run directory; a file of that name with other contents would seed
    another search."""
    source = _toy_file(tmp_path / "seed.json", blocks=4, steps=8)
    args = [*toy_args(generations=1), "--warm-start", str(source), "--run-dir", str(tmp_path / "run")]
    first = run_cli(*args, "--out", str(tmp_path / "first.json"))
    assert first.returncode == 0, first.stderr
    source.rename(tmp_path / "moved.json")
    longer = [*toy_args(generations=2), *args[len(toy_args()):]]
    resumed = run_cli(*longer, "--out", str(tmp_path / "resumed.json"), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after generation" in resumed.stdout
    assert load_schedule(tmp_path / "resumed.json").provenance["search"]["warm_start"] == \
        load_schedule(tmp_path / "first.json").provenance["search"]["warm_start"]
    _toy_file(source, blocks=4, steps=12)  # another file under the same name
    other = run_cli(*longer, "--out", str(tmp_path / "other.json"), "--resume")
    assert other.returncode == 2 and "other settings" in other.stderr and "warm_start" in other.stderr


def test_warm_start_maps_another_step_count_into_the_first_generation(tmp_path):
    source = _toy_file(tmp_path / "twelve-steps.json", blocks=4, steps=12)
    done = run_cli(*toy_args(generations=1), "--warm-start", str(source), "--run-dir", str(tmp_path / "run"),
                   "--out", str(tmp_path / "out.json"))
    assert done.returncode == 0, done.stderr
    db = sqlite3.connect(tmp_path / "run" / "run.sqlite")
    origins = [o for (o,) in db.execute("SELECT origin FROM evaluations WHERE generation = 0")]
    db.close()
    assert "warm start twelve-steps.json: p, 12 steps mapped to 8" in origins
    assert load_schedule(tmp_path / "out.json").provenance["search"]["warm_start"]["name"] == "twelve-steps.json"


# ---------------------------------------------------------------- the random critic

def test_random_critic_is_deterministic_and_not_maximised_by_the_uncached_image(tmp_path):
    from PIL import Image
    critic = make_metric("random_critic")
    gradient = Image.fromarray(np.tile(np.arange(256, dtype=np.uint8)[None, :, None], (64, 1, 3))[:, ::4])
    assert critic.score([gradient], [""])[0] == pytest.approx(make_metric("random_critic").score([gradient], [""])[0],
                                                               abs=0)
    assert critic.score([gradient], [""])[0] == pytest.approx(0.19359022, abs=2e-9)  # the same on every machine
    search, backend, db = toy_search(tmp_path, metric="random_critic")
    uncached = search.evaluator.prepare().quality
    codec = search.codec
    cached = [search.evaluator.evaluate(codec.mask(s.genome)).quality for s in initial_population(codec, 6, 0)]
    assert max(cached) > uncached  # some cached schedule scores higher: no caching is not the optimum
    db.close()


def test_quick_calibration_seeds_the_first_generation_without_extra_images(tmp_path):
    def generation_zero(*extra: str) -> tuple[list[str], int]:
        run_dir = tmp_path / f"run{len(extra)}"
        done = run_cli(*toy_args(generations=0), *extra, "--run-dir", str(run_dir), "--out", str(run_dir / "out.json"))
        assert done.returncode == 0, done.stderr
        db = sqlite3.connect(run_dir / "run.sqlite")
        origins = [o for (o,) in db.execute("SELECT origin FROM evaluations WHERE generation = 0")]
        evaluated = db.execute("SELECT SUM(images) FROM evaluations").fetchone()[0]
        db.close()
        searched = load_schedule(run_dir / "out.json").provenance["search"]
        # the changes were recorded while the 6 references rendered: nothing else was rendered
        assert searched["images"] == 6 + evaluated
        return origins, searched

    with_seeds, searched = generation_zero()
    assert any(o.startswith("quick calibration: greedy") for o in with_seeds) and searched["calibration_seeds"] is True
    without, _ = generation_zero("--no-calibration-seeds")
    assert not any(o.startswith("quick calibration") for o in without)

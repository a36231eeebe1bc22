"""The optimizer's search, database, checkpoints and metric use on the toy backend (no ComfyUI needed)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ecad_nodes.heuristics import fora_bits
from ecad_nodes.schedule import BlockGroup, Layout, Mask
from optimizer.calibration import calibration_items, items_hash, sampling_batches
from optimizer.comfy_backend import stack_conditioning
from optimizer.database import RunDatabase
from optimizer.evaluate import Evaluator
from optimizer.genome import GenomeCodec, genome_hash
from optimizer.metrics import make_metric
from optimizer.report import hypervolume, pareto_front, point_names, select_points
from optimizer.search import Search, SearchConfig, load_checkpoint
from optimizer.seeding import initial_population
from optimizer.toy_backend import ToyBackend, ToySpec
from optimizer.toy_dit import ToyConfig

LAYOUT = Layout("toy", (BlockGroup("blocks", 3, ("self_attn", "cross_attn", "mlp")),))
PROMPTS = ["a red cube", "a quiet harbour at dawn", "three owls on a branch"]
SMALL = ToySpec(ToyConfig(hidden=16, heads=2, depth=3, channels=4, text_dim=8), text_tokens=4)


class CountingToyBackend(ToyBackend):
    """The real toy backend, counting the schedules it renders."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rendered: list[bytes] = []

    def render(self, mask, items):
        self.rendered.append(b"full" if mask is None else np.packbits(mask.bits).tobytes())
        return super().render(mask, items)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The toy model's layers are tiny: threads only contend for the cores (as the CLI does for tiny presets)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def toy_backend(steps: int = 6) -> CountingToyBackend:
    return CountingToyBackend(SMALL, steps=steps, cfg=1.0, sampler="euler", size=8, batch_size=2, label="toy")


def make_search(tmp_path, backend=None, population: int = 6, seed: int = 0):
    backend = backend or toy_backend()
    tmp_path.mkdir(parents=True, exist_ok=True)
    items = calibration_items(PROMPTS, 2)
    evaluator = Evaluator(backend, make_metric("fidelity"), items, "macs")
    codec = GenomeCodec(backend.layout, backend.steps)
    db = RunDatabase(tmp_path / "run.sqlite", "ctx", "model", items_hash(items))
    return Search(codec, evaluator, db, tmp_path, SearchConfig(population, seed), "ctx"), backend, db


# ---------------------------------------------------------------- genome, seeds, calibration set

def test_genome_round_trip_forces_the_first_step():
    codec = GenomeCodec(LAYOUT, 5)
    assert codec.n_var == 4 * 9
    genome = np.random.default_rng(0).random(codec.n_var) < 0.5
    mask = codec.mask(genome)
    assert mask.bits[0].all()
    np.testing.assert_array_equal(codec.genome(mask), genome)
    assert genome_hash(genome) == genome_hash(genome.copy())
    assert genome_hash(genome) != genome_hash(~genome)
    assert GenomeCodec.caches_something(genome)
    assert not GenomeCodec.caches_something(np.ones(codec.n_var, dtype=bool))
    with pytest.raises(ValueError, match="at least 2 steps"):
        GenomeCodec(LAYOUT, 1)


def test_initial_population_is_heuristic_distinct_and_seeded():
    codec = GenomeCodec(LAYOUT, 10)
    population = initial_population(codec, 60, seed=3)  # FORA and its 19 moves, then 60 more
    assert len(population) == 25 + 60
    assert len({genome_hash(s.genome) for s in population}) == len(population)
    assert all(GenomeCodec.caches_something(s.genome) for s in population)
    fora2 = codec.genome(Mask(LAYOUT, fora_bits(LAYOUT, 10, 2)))
    assert population[0].origin == "FORA-2"
    np.testing.assert_array_equal(population[0].genome, fora2)
    origins = [s.origin for s in population]
    assert any(o.startswith("self_attn every") for o in origins) and any(o.startswith("mutated") for o in origins)
    assert any("moved to" in o for o in origins) and any("evenly spaced steps" in o for o in origins)
    assert not any(o.startswith("mutated") for o in origins[:46])  # the 46 heuristics first, then their mutations
    again = initial_population(codec, 60, seed=3)
    assert [genome_hash(s.genome) for s in again] == [genome_hash(s.genome) for s in population]
    other = initial_population(codec, 60, seed=4)
    assert [genome_hash(s.genome) for s in other] != [genome_hash(s.genome) for s in population]


def test_every_fora_and_its_one_step_moves_come_first_whatever_the_population():
    codec = GenomeCodec(LAYOUT, 10)
    population = initial_population(codec, 4, seed=0)
    origins = [s.origin for s in population]
    assert origins[:6] == [f"FORA-{n}" for n in range(2, 8)]
    assert all("moved to" in o for o in origins[6:25]) and len(population) == 25 + 4
    fora4_moves = {o for o in origins if o.startswith("FORA-4, ")}
    assert fora4_moves == {f"FORA-4, step {a} moved to {b}" for a, b in ((4, 3), (4, 5), (8, 7), (8, 9))}
    assert not any("moved to" in o for o in origins[25:])  # the population's own 4 are other heuristics


def test_calibration_items_and_their_sampling_batches():
    items = calibration_items(["a", "b"], 3)
    assert [(i.prompt, i.seed) for i in items] == [("a", 0), ("a", 1), ("a", 2), ("b", 3), ("b", 4), ("b", 5)]
    assert [[i.seed for i in b] for b in sampling_batches(items, 4)] == [[0, 1, 2, 3], [4, 5]]
    assert [[i.seed for i in b] for b in sampling_batches(items[1:], 4)] == [[1, 2, 3, 4], [5]]
    assert items_hash(items) != items_hash(calibration_items(["a", "b"], 3, first_seed=1000))


def test_conditionings_of_several_prompts_stack_row_by_row_only_where_each_row_stays_its_own():
    def cond(seed: int, tokens: int = 4, **options) -> list:
        g = torch.Generator().manual_seed(seed)
        return [[torch.randn(1, tokens, 8, generator=g), {"pooled_output": torch.randn(1, 8, generator=g), **options}]]

    a, b = cond(1, guidance=3.5), cond(2, guidance=3.5)
    assert stack_conditioning([a, a]) is a                      # one prompt: its conditioning, repeated by ComfyUI
    (tensor, options), = stack_conditioning([a, b, a])
    assert torch.equal(tensor, torch.cat([a[0][0], b[0][0], a[0][0]])) and options["guidance"] == 3.5
    assert torch.equal(options["pooled_output"], torch.cat([a[0][1]["pooled_output"], b[0][1]["pooled_output"],
                                                            a[0][1]["pooled_output"]]))
    mask = torch.ones(1, 4, dtype=torch.int64)
    (_, masked), = stack_conditioning([cond(1, attention_mask=mask), cond(2, attention_mask=mask.clone())])
    assert masked["attention_mask"] is mask and masked["pooled_output"].shape == (2, 8)   # the same in every row: kept
    assert stack_conditioning([a, cond(2, tokens=5, guidance=3.5)]) is None   # text of another length
    assert stack_conditioning([a, cond(2, guidance=2.0)]) is None             # another guidance
    assert stack_conditioning([a, cond(2)]) is None                           # other options
    assert stack_conditioning([a, a + b]) is None                             # two entries (areas, masks)
    two_rows = [[torch.cat([a[0][0], b[0][0]]), a[0][1]]]
    assert stack_conditioning([two_rows, b]) is None                          # already a batch of its own


# ---------------------------------------------------------------- frontier helpers

def test_pareto_front_hypervolume_and_selection():
    points = [("a", (30.0, 0.5)), ("b", (25.0, 0.3)), ("c", (20.0, 0.4)), ("d", (35.0, 0.9)), ("e", (30.0, 0.5))]
    assert pareto_front(points) == ["b", "a", "d"]  # c is dominated by b; e duplicates a
    front = [(25.0, 0.3), (30.0, 0.5), (35.0, 0.9)]
    assert hypervolume(front, 20.0) == pytest.approx(0.2 * 5 + 0.4 * 10 + 0.1 * 15)
    assert hypervolume(front, 40.0) == 0.0
    # points that are not a front (a calibration frontier re-scored on held-out images, a frontier with a candidate
    # added): dominated points add nothing, points below the reference quality or saving nothing neither
    hv = hypervolume(front, 20.0)
    assert hypervolume(front + [(28.0, 0.6), (33.0, 0.95)], 20.0) == pytest.approx(hv)
    assert hypervolume([(19.0, 0.2)], 20.0) == 0.0 and hypervolume([(50.0, 1.0)], 20.0) == 0.0
    assert hypervolume([], 20.0) == 0.0
    many = [(i + 1) / 20 for i in range(20)]  # costs 0.05 … 1
    picked = select_points(many, 5)
    assert len(picked) == 5 and picked[0] == 0.05 and picked[-1] == 1.0
    anchored = select_points(many, 5, anchors=[0.26])
    assert 0.25 in anchored  # the best point costing no more than the anchor
    assert select_points(many[:3], 5) == many[:3]
    # spread in speedup, not in rank: a frontier found densely among the cheap schedules (20 points from 10× to 5×)
    # and sparsely above (1.5×, 1.1×) still gives a 5-point file its 1.5× point (spread by rank, all three middle
    # points would lie between 5× and 10×)
    dense = sorted([0.1 + 0.1 * i / 19 for i in range(20)] + [1 / 1.5, 1 / 1.1])
    kept = select_points(dense, 5)
    assert kept[0] == 0.1 and kept[-1] == 1 / 1.1 and 1 / 1.5 in kept
    assert sum(c <= 0.2 for c in kept) == 3
    names = point_names([2.611, 2.614, 3.0])
    assert len(set(names)) == 3 and all(" · " not in n for n in names)
    assert names[2] == "ecad-3.000x"


# ---------------------------------------------------------------- evaluation

def test_evaluation_is_order_independent_and_full_computation_is_the_reference():
    backend = toy_backend()
    items = calibration_items(PROMPTS, 2)
    evaluator = Evaluator(backend, make_metric("fidelity"), items, "macs")
    full = evaluator.prepare()
    assert full.quality == 100.0  # PSNR cap: identical images
    codec = GenomeCodec(backend.layout, backend.steps)
    masks = [codec.mask(s.genome) for s in initial_population(codec, 3, seed=0)]
    first = [evaluator.evaluate(m) for m in masks]
    again = [evaluator.evaluate(m) for m in reversed(masks)][::-1]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.scores, b.scores)
        assert a.macs == b.macs and a.cost == pytest.approx(a.macs / evaluator.full_macs)
    fora2 = first[0]
    assert 0.45 < fora2.cost < 0.6  # FORA-2 on 6 steps computes 3 of them, plus the per-step constant
    assert fora2.quality < 100.0
    # a fresh backend and evaluator give the very same numbers (what a resumed run relies on)
    other = Evaluator(toy_backend(), make_metric("fidelity"), items, "macs")
    np.testing.assert_array_equal(other.evaluate(masks[0]).scores, fora2.scores)


def test_latency_cost_is_relative_to_no_caching():
    evaluator = Evaluator(toy_backend(), make_metric("fidelity"), calibration_items(PROMPTS[:1], 1), "latency")
    codec = GenomeCodec(LAYOUT, 6)
    ev = evaluator.evaluate(codec.mask(initial_population(codec, 1, 0)[0].genome))
    assert ev.cost == pytest.approx(ev.latency_ms / evaluator.full.latency_ms)


# ---------------------------------------------------------------- database

def test_database_keeps_evaluations_per_context(tmp_path):
    search, backend, db = make_search(tmp_path)
    codec = search.codec
    genome = initial_population(codec, 1, 0)[0].genome
    ev = search.evaluate(genome, "FORA-2", 0)
    db.close()
    reopened = RunDatabase(tmp_path / "run.sqlite", "ctx", "model", "items")
    stored = reopened.get(genome_hash(genome))
    assert stored is not None and stored.origin == "FORA-2"
    np.testing.assert_array_equal(stored.genome, genome)
    np.testing.assert_array_equal(stored.evaluation.scores, ev.scores)
    assert stored.evaluation.quality == ev.quality and stored.evaluation.macs == ev.macs
    assert stored.evaluation.timings.model > 0
    other_context = RunDatabase(tmp_path / "run.sqlite", "other", "model", "items")
    assert other_context.get(genome_hash(genome)) is None
    reopened.set_meta("settings", {"steps": 6})
    assert reopened.get_meta("settings") == {"steps": 6}
    reopened.close()
    other_context.close()


# ---------------------------------------------------------------- search and resume

def test_search_never_evaluates_a_genome_twice(tmp_path):
    search, backend, db = make_search(tmp_path)
    result = search.run(generations=3)
    assert result.completed == 4
    renders = [r for r in backend.rendered if r != b"full"]
    assert len(renders) == len(set(renders)) == result.new_evaluations == db.count()
    assert all(GenomeCodec.caches_something(e.genome) for e in result.evaluations)
    # the frontier is non-dominated among everything evaluated
    for f in result.frontier:
        assert not any(e.evaluation.quality >= f.evaluation.quality and e.evaluation.cost < f.evaluation.cost
                       for e in result.evaluations)
    assert [g["generation"] for g in db.generations()] == [0, 1, 2, 3]
    hv = [g["hypervolume"] for g in db.generations()]
    assert hv == sorted(hv)  # the frontier over all evaluations only grows
    # running again to the same target does nothing; re-evaluating known genomes reads the database
    again = search.run(generations=3)
    assert again.new_evaluations == 0 and len(backend.rendered) == len(renders) + 1
    search.evaluate(result.evaluations[0].genome, "again", 9)
    assert len(backend.rendered) == len(renders) + 1
    db.close()


def test_resumed_search_ends_like_an_uninterrupted_one(tmp_path):
    whole, _, db_whole = make_search(tmp_path / "whole")
    expected = whole.run(generations=4)

    first, _, db_first = make_search(tmp_path / "split")
    first.run(generations=1)
    state = load_checkpoint(tmp_path / "split" / "checkpoint.pkl", "ctx")
    assert state["completed"] == 2
    db_first.close()
    # a new process: fresh model, evaluator and database connection; the checkpoint carries pymoo's RNG
    resumed, backend, db_resumed = make_search(tmp_path / "split")
    result = resumed.run(generations=4)
    key = lambda r: sorted((e.genome_hash, e.evaluation.quality, e.evaluation.cost) for e in r.frontier)
    assert key(result) == key(expected)
    assert sorted(e.genome_hash for e in result.evaluations) == sorted(e.genome_hash for e in expected.evaluations)
    np.testing.assert_array_equal(
        resumed.db.all()[0].evaluation.scores,
        next(e for e in expected.evaluations if e.genome_hash == resumed.db.all()[0].genome_hash).evaluation.scores)
    db_whole.close()
    db_resumed.close()


def test_checkpoint_of_other_settings_is_refused(tmp_path):
    search, _, db = make_search(tmp_path)
    search.run(generations=0)
    with pytest.raises(RuntimeError, match="other settings"):
        load_checkpoint(tmp_path / "checkpoint.pkl", "another fingerprint")
    (tmp_path / "checkpoint.pkl").write_bytes(b"not a pickle")
    with pytest.raises(RuntimeError, match="cannot be read"):
        load_checkpoint(tmp_path / "checkpoint.pkl", "ctx")
    db.close()


def test_step_moves_swap_two_neighbouring_steps_and_keep_the_cost():
    from pymoo.core.population import Population

    from optimizer.search import ScheduleProblem, StepMoveMutation
    codec = GenomeCodec(LAYOUT, 10)
    fora4 = codec.genome(Mask(LAYOUT, fora_bits(LAYOUT, 10, 4)))  # steps 0, 4, 8
    mutation = StepMoveMutation(codec.steps, move_prob=1.0, prob=0.0)  # moves only, no bit flips
    pop = mutation.do(ScheduleProblem(codec.n_var), Population.new(X=np.tile(fora4, (200, 1))),
                      random_state=np.random.default_rng(0))
    seen = set()
    for genome in pop.get("X").astype(bool):
        assert genome.sum() == fora4.sum()
        computed = tuple(np.flatnonzero(codec.mask(genome).bits.all(axis=1)))
        assert codec.mask(genome).bits.any(axis=1).sum() == 3 and computed[0] == 0
        seen.add(computed)
    # every neighbour swap, a no-op where both steps agree: each computed step one earlier or later
    assert seen == {(0, 4, 8), (0, 3, 8), (0, 5, 8), (0, 4, 7), (0, 4, 9)}


# ---------------------------------------------------------------- the run directory as one unit (real SQLite)

def test_every_row_carries_a_checksum_and_a_changed_row_is_found_on_opening(tmp_path):
    import sqlite3

    from optimizer.database import DamagedRun
    search, _, db = make_search(tmp_path)
    search.run(generations=0)
    count = db.count()
    db.close()
    other = sqlite3.connect(tmp_path / "run.sqlite")  # another program changes one figure
    other.execute("UPDATE evaluations SET quality = quality + 1e-9 WHERE seq = 2")
    other.commit()
    other.close()
    with pytest.raises(DamagedRun, match=rf"run\.sqlite: 1 of its {count} evaluations do not match their checksums"):
        RunDatabase(tmp_path / "run.sqlite", "ctx", "model", "items")


def test_the_checkpoint_records_what_the_database_holds(tmp_path):
    import sqlite3
    search, _, db = make_search(tmp_path)
    search.run(generations=1)
    state = load_checkpoint(tmp_path / "checkpoint.pkl", "ctx")
    assert state["database"]["evaluations"] == db.count() and db.holds(state["database"]) is None
    assert (tmp_path / "run.sqlite-wal").stat().st_size == 0  # synced into the database file before the checkpoint
    genome = initial_population(search.codec, 40, 5)[-1].genome
    search.evaluate(genome, "later", 2)  # evaluations after the checkpoint do not disagree with it
    assert db.holds(state["database"]) is None
    db.close()
    other = sqlite3.connect(tmp_path / "run.sqlite")
    other.execute("DELETE FROM evaluations WHERE seq = 1")
    other.commit()
    other.close()
    reopened = RunDatabase(tmp_path / "run.sqlite", "ctx", "model", "items")
    assert reopened.holds(state["database"]).startswith(f"holds {state['database']['evaluations'] - 1} of the "
                                                        f"{state['database']['evaluations']} evaluations")
    reopened.close()


def test_a_damaged_or_foreign_checkpoint_is_named(tmp_path):
    import pickle

    from optimizer.database import DamagedRun
    search, _, db = make_search(tmp_path)
    search.run(generations=0)
    db.close()
    path = tmp_path / "checkpoint.pkl"
    data = bytearray(path.read_bytes())
    data[-10] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(DamagedRun, match="checkpoint.pkl: cannot be read: it is damaged"):
        load_checkpoint(path, "ctx")
    path.write_bytes(pickle.dumps({"format": 1, "completed": 3}))  # the previous version's checkpoint
    with pytest.raises(DamagedRun, match="not a checkpoint of this optimizer version"):
        load_checkpoint(path, "ctx")


def test_a_database_of_the_previous_schema_is_refused_by_name(tmp_path):
    import sqlite3

    from optimizer.database import DamagedRun
    old = sqlite3.connect(tmp_path / "run.sqlite")
    old.executescript("CREATE TABLE run (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                      "CREATE TABLE evaluations (genome_hash TEXT, context TEXT);")
    old.close()
    with pytest.raises(DamagedRun, match="was written by another version of the optimizer"):
        RunDatabase(tmp_path / "run.sqlite", "ctx", "model", "items")

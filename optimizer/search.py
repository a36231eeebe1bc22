"""NSGA-II over schedule genomes (pymoo, ask/tell), with a database and checkpoints that survive being killed, and
three ways to spend fewer images on the same frontier: racing, a surrogate, and an image budget.

Each generation: ``ask`` the algorithm for candidates (with the surrogate: many, of which the predicted best
few are kept, ``optimizer/surrogate.py``), take each one's objectives from the database or evaluate it (with
racing: screened on a few images first, then on more, the rest only if it could still reach the frontier,
``optimizer/racing.py``) and commit it at once, ``tell`` the results, copy the database's log into its file,
then write the algorithm — population, RNG state and all — and the search's own state to ``checkpoint.pkl``
atomically, with what the database holds (``optimizer/run_dir.py``). A resumed run loads the checkpoint, is
asked for the very same candidates (same RNG state), finds those already evaluated in the database, makes the
same racing and surrogate decisions (they depend only on the evaluations processed before, rebuilt from the
database) and ends with the same frontier as an uninterrupted run — also when ``--budget-images`` stopped it.

Objectives, both minimised: the negated mean quality, and the cost as a fraction of the full
computation's. Constraint (the ECAD paper's): a candidate must cache something. Only evaluations on every
calibration image make the frontier; with ``RacingConfig.steer_images`` the search renders none but the FORA
baselines', and ``verify`` renders after it the frontier of estimates (``optimizer/racing.py``).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.evaluator import Evaluator as PymooEvaluator
from pymoo.core.problem import Problem
from pymoo.core.termination import NoTermination
from pymoo.operators.crossover.pntx import PointCrossover
from pymoo.operators.mutation.bitflip import BitflipMutation
from pymoo.problems.static import StaticProblem

from .budget import BudgetExhausted, ImageLedger
from .database import DamagedRun, RunDatabase, StoredEvaluation
from .evaluate import Evaluation, Evaluator, Timings
from .genome import GenomeCodec, genome_hash
from .progress import Progress
from .racing import Archive, RacingConfig, could_reach_frontier, screening_stages, standard_error
from .report import hypervolume, pareto_front, summary_line
from .run_dir import CHECKPOINT_FORMAT, CHECKPOINT_NAME, read_checkpoint, write_checkpoint
from .seeding import Seed, initial_population
from .surrogate import SurrogateConfig, SurrogateState, choose, fit

GENERATIONS_LOG = "generations.jsonl"


class ScheduleProblem(Problem):
    """Only the shape of the problem: candidates are evaluated outside pymoo (ask/tell)."""

    def __init__(self, n_var: int):
        super().__init__(n_var=n_var, n_obj=2, n_ieq_constr=1, xl=0, xu=1, vtype=bool)


@dataclass(frozen=True)
class SearchConfig:
    population: int
    seed: int
    crossover_points: int = 4          # the ECAD paper: PointCrossover(prob=0.9, n_points=4)
    crossover_prob: float = 0.9
    mutation_prob: float = 0.05        # share of offspring mutated (pymoo's BitflipMutation semantics, as the paper)
    mutation_bits: float = 1.0         # expected bits flipped in a mutated offspring
    step_move_prob: float = 0.25       # share of offspring with two neighbouring steps swapped (not in the paper)
    racing: Optional[RacingConfig] = None
    surrogate: Optional[SurrogateConfig] = None


class StepMoveMutation(BitflipMutation):
    """pymoo's bit flips (the paper's mutation), then, in a ``move_prob`` share of offspring, one step's genes
    swapped with a neighbouring step's (the first step stays computed).

    A swap keeps the cost and moves a computed step in time: (0, 4, 8) becomes (0, 5, 8). Bit flips change
    the cost with every flip and would need a whole step's bits at once to do this, so without moves the
    search stays stuck on FORA's step grid at equal cost."""

    def __init__(self, steps: int, move_prob: float, **kwargs):
        super().__init__(**kwargs)
        self.steps, self.move_prob = steps, move_prob

    def do(self, problem, pop, inplace=True, *args, random_state=None, **kwargs):
        pop = super().do(problem, pop, inplace, *args, random_state=random_state, **kwargs)
        if self.steps < 3 or self.move_prob <= 0:
            return pop
        X = pop.get("X").copy()
        rows = X.reshape(len(X), self.steps - 1, -1)  # genome: steps 1.. (step-major)
        for i in np.flatnonzero(random_state.random(len(X)) < self.move_prob):
            a = int(random_state.integers(self.steps - 2))
            rows[i, [a, a + 1]] = rows[i, [a + 1, a]]
        pop.set("X", X)
        return pop


def make_algorithm(codec: GenomeCodec, config: SearchConfig, seeds: Sequence[Seed]) -> NSGA2:
    algorithm = NSGA2(
        pop_size=config.population,
        sampling=np.array([s.genome for s in seeds], dtype=bool),
        crossover=PointCrossover(prob=config.crossover_prob, n_points=config.crossover_points),
        mutation=StepMoveMutation(codec.steps, config.step_move_prob, prob=config.mutation_prob,
                                  prob_var=min(0.5, config.mutation_bits / codec.n_var)),
        eliminate_duplicates=True)
    algorithm.setup(ScheduleProblem(codec.n_var), termination=NoTermination(), seed=config.seed)
    return algorithm


@dataclass
class SearchState:
    """The search's own state between generations, kept in the checkpoint next to pymoo's."""

    completed: int = 0                                 # generations done, the initial one included
    archive_seq: int = 0                               # the archive holds every evaluation up to this insertion number
    images: int = 0                                    # images the run had rendered
    surrogate: SurrogateState = field(default_factory=SurrogateState)


def save_checkpoint(path: Path, algorithm: NSGA2, state: SearchState, fingerprint: str,
                    database: Optional[dict] = None) -> None:
    """Atomic, with a digest; ``database``: what the run's database holds now (``RunDatabase.state``)."""
    write_checkpoint(path, {"format": CHECKPOINT_FORMAT, "completed": state.completed, "fingerprint": fingerprint,
                            "database": database or {"evaluations": 0, "last_seq": 0, "digest": "", "references": 0,
                                                     "references_digest": ""},
                            "algorithm": algorithm, "search": state})


def load_checkpoint(path: Path, fingerprint: str) -> Optional[dict]:
    """The checkpoint's state (None if there is none); a DamagedRun naming the file if it is damaged or foreign."""
    state = read_checkpoint(path)
    if state is not None and state.get("fingerprint") != fingerprint:
        raise DamagedRun(path, "the checkpoint belongs to a run with other settings than its database")
    return state


@dataclass
class SearchResult:
    completed: int                                   # generations done, the initial one included
    evaluations: list[StoredEvaluation]              # on every calibration image
    frontier: list[StoredEvaluation]
    wall_seconds: float = 0.0                        # of this session's search loop
    timings: Timings = field(default_factory=Timings)  # inside it: sampling, decoding, scoring of new evaluations
    new_evaluations: int = 0                         # new database rows (screens and full evaluations)
    reused_evaluations: int = 0
    evaluation_seconds: float = 0.0                  # wall time of new evaluations, committing them included
    budget_spent: bool = False                       # --budget-images ended the search early


@dataclass
class _Generation:
    """Counts of one generation, for its line and its row in the database."""

    new: int = 0
    reused: int = 0
    screened: int = 0
    promoted: int = 0
    predicted: list = field(default_factory=list)    # (predicted quality, measured quality) of surrogate predictions


class Search:
    def __init__(self, codec: GenomeCodec, evaluator: Evaluator, db: RunDatabase, run_dir: Path,
                 config: SearchConfig, fingerprint: str, progress: Optional[Progress] = None, metric_short: str = "Q",
                 ledger: Optional[ImageLedger] = None, extra_seeds: Sequence[Seed] = (),
                 full_fidelity: Sequence[np.ndarray] = ()):
        """``ledger``: counts (and caps) rendered images, the backend's (``budget.MeteredBackend``); ``full_fidelity``:
        genomes never raced (the FORA baselines the schedule file reports)."""
        self.codec, self.evaluator, self.db, self.config = codec, evaluator, db, config
        self.run_dir = Path(run_dir)
        self.checkpoint_path = self.run_dir / CHECKPOINT_NAME
        self.fingerprint = fingerprint
        self.progress = progress
        self.metric_short = metric_short
        self.ledger = ledger or ImageLedger()
        self.timings = Timings()
        self.new_evaluations = self.reused_evaluations = 0
        self.evaluation_seconds = 0.0
        self.seeds = initial_population(codec, config.population, config.seed, extra_seeds)
        self.seed_origins = {genome_hash(s.genome): s.origin for s in self.seeds}
        self.full_fidelity = {genome_hash(g) for g in full_fidelity}
        self.steer_images = config.racing.steer_images if config.racing else None
        if self.steer_images is not None and self.steer_images >= len(evaluator.items):
            self.steer_images = None                  # the cap is every image: nothing to verify later
        self.stages = (screening_stages(evaluator.items, config.racing.screen_images, config.seed, self.steer_images)
                       if config.racing else ())
        self.archive = Archive(self.steer_images)
        self._generation = _Generation()
        self._offspring_images: list[int] = []        # images of this session's offspring generations (for the ETA)

    # ------------------------------------------------------------ the archive the decisions are made from

    def _process(self, row: StoredEvaluation) -> None:
        """Add ``row`` to the archive, with every row inserted before it that the archive lacks (baselines measured
        after an earlier session's search), so the archive is always every row up to an insertion number."""
        if row.seq <= self.archive.last_seq:
            return
        if row.seq > self.archive.last_seq + 1:
            for earlier in self.db.rows(row.seq - 1):
                if earlier.seq > self.archive.last_seq:
                    self._add_to_archive(earlier)
        self._add_to_archive(row)

    def _add_to_archive(self, row: StoredEvaluation) -> None:
        self.archive.add(row, self.evaluator.differences(row.evaluation))

    def _rebuild_archive(self, up_to_seq: int) -> None:
        self.archive = Archive(self.steer_images)
        for row in self.db.rows(up_to_seq):
            self._add_to_archive(row)
        self.archive.last_seq = up_to_seq

    # ------------------------------------------------------------ one genome

    def _stored_or_new(self, genome: np.ndarray, origin: str, generation: int, items: tuple[int, ...] = (),
                       known: Optional[Evaluation] = None) -> StoredEvaluation:
        """On ``items`` (() = every image); the images ``known`` scored are not rendered again."""
        key = genome_hash(genome)
        stored = self.db.get(key, items)
        if stored is not None:
            self.reused_evaluations += 1
            self._generation.reused += 1
            self._process(stored)
            return stored
        start = time.perf_counter()
        mask = self.codec.mask(genome)
        ev = self.evaluator.evaluate(mask, items=items, known=known)
        row = self.db.put(key, genome, ev, origin, generation)
        self.evaluation_seconds += time.perf_counter() - start
        self.timings.add(ev.timings)
        self.new_evaluations += 1
        self._generation.new += 1
        self._process(row)
        return row

    def evaluate(self, genome: np.ndarray, origin: str, generation: int, race: bool = False) -> Evaluation:
        """The genome's evaluation: from the database when known, else evaluated and committed at once. With
        ``race`` (and racing on), screened in stages first and evaluated on every image only if it could still
        reach the frontier after the last; the latest screen's estimate is returned otherwise, less the offset of its
        images (``Archive.estimate``). ``BudgetExhausted`` before rendering what the budget lacks."""
        if not GenomeCodec.caches_something(genome):
            return self.evaluator.prepare()  # no caching at all: the reference itself (infeasible, never stored)
        key = genome_hash(genome)
        full = self.db.get(key)
        if full is not None or not race or not self.stages or key in self.full_fidelity:
            return self._stored_or_new(genome, origin, generation).evaluation
        ev = None
        for stage, items in enumerate(self.stages):
            ev = self._stored_or_new(genome, origin, generation, items, known=ev).evaluation
            if stage == 0:
                self._generation.screened += 1
            error = standard_error(self.evaluator.differences(ev), self.archive.pooled_sd(), len(self.evaluator.items))
            estimate = self.archive.estimate(ev)
            if not could_reach_frontier(estimate, error, ev.cost, self.archive.steering().values(),
                                        self.config.racing.margin):
                return replace(ev, quality=estimate)
        if self.steer_images is not None:  # steering: only ``verify`` renders in full
            return replace(ev, quality=estimate)
        self._generation.promoted += 1
        return self._stored_or_new(genome, origin, generation, known=ev).evaluation

    # ------------------------------------------------------------ the loop

    def completed_generations(self) -> int:
        state = load_checkpoint(self.checkpoint_path, self.fingerprint)
        return 0 if state is None else int(state["completed"])

    def _offspring(self, algorithm: NSGA2, state: SearchState):
        """The generation's candidates and, where the surrogate made them, its predicted qualities."""
        config = self.config.surrogate
        best = self.archive.best
        model = fit(best, config.min_training) if config else None
        if model is None or not state.surrogate.active:
            population = algorithm.ask()
            if population is None or model is None or len(population) == 0:
                return population, None
            return population, model.predict(population.get("X").astype(bool))
        algorithm.n_offsprings = config.pool
        try:
            pool = algorithm.ask()
        finally:
            algorithm.n_offsprings = self.config.population
        if pool is None or len(pool) == 0:
            return pool, None
        # Offer the surrogate only genomes the search has not evaluated: the predicted best are often ones it
        # already has (it fits them well), and choosing those adds nothing; the search then stalls.
        fresh = np.array([genome_hash(x) not in best for x in pool.get("X")])
        if fresh.any():
            pool = pool[fresh]
        X = pool.get("X").astype(bool)
        predicted = model.predict(X)
        bits = np.ones((len(X), self.codec.steps, self.codec.layout.bits_per_step), dtype=bool)
        bits[:, 1:] = X.reshape(len(X), self.codec.steps - 1, -1)  # the first step always computes
        costs = self.evaluator.image_cost.macs_of_many(bits) / self.evaluator.full_macs
        steering = self.archive.steering()
        chosen = choose(predicted, costs, [steering[k] for k in self.archive.steering_frontier()],
                        min(config.evaluate, len(pool)),
                        self.db.get_meta("hypervolume_reference"))
        return pool[chosen], predicted[chosen]

    def run(self, generations: int) -> SearchResult:
        """Run until ``generations`` offspring generations follow the initial one (resuming where the checkpoint is),
        or until the image budget is spent."""
        start = time.perf_counter()
        self.timings, self.new_evaluations, self.reused_evaluations, self.evaluation_seconds = Timings(), 0, 0, 0.0
        checkpoint = load_checkpoint(self.checkpoint_path, self.fingerprint)
        if checkpoint:
            algorithm, state = checkpoint["algorithm"], checkpoint["search"]
            self._rebuild_archive(state.archive_seq)
        else:
            algorithm, state = make_algorithm(self.codec, self.config, self.seeds), SearchState()
            self.archive = Archive(self.steer_images)
        target = generations + 1
        hv_ref = self.db.get_meta("hypervolume_reference")
        budget_spent = False
        while state.completed < target:
            generation = state.completed
            gen_start = time.perf_counter()
            self._generation = _Generation()
            self._generation_start_images = self.ledger.used
            if self.progress:
                self.progress.set_generation(f"generation {generation}/{generations}")
            population, predictions = (algorithm.ask(), None) if generation == 0 else self._offspring(algorithm, state)
            if population is None or len(population) == 0:
                self._line(f"generation {generation}: the algorithm proposes no new schedules (search space exhausted)")
                break
            X = population.get("X").astype(bool)
            F = np.zeros((len(X), 2))
            G = np.zeros((len(X), 1))
            try:
                for i, genome in enumerate(X):
                    origin = (self.seed_origins.get(genome_hash(genome), "initial") if generation == 0
                              else f"generation {generation}")
                    ev = self.evaluate(genome, origin, generation, race=True)
                    F[i] = (-ev.quality, ev.cost)
                    G[i, 0] = 1.0 - float(np.count_nonzero(~genome))
                    if predictions is not None:
                        self._generation.predicted.append((float(predictions[i]), ev.quality))
            except BudgetExhausted as spent:
                budget_spent = True
                hv_ref = self._record(generation, generations, algorithm, hv_ref, state, gen_start, complete=False)
                self._line(f"generation {generation}/{generations}: stopped, {spent}; the frontier is what was "
                           "measured so far")
                break
            PymooEvaluator().eval(StaticProblem(algorithm.problem, F=F, G=G), population)
            algorithm.tell(infills=population)
            if predictions is not None and self.config.surrogate:
                state.surrogate.record(*zip(*self._generation.predicted), config=self.config.surrogate)
            state.completed += 1
            state.archive_seq, state.images = self.archive.last_seq, self.ledger.used
            hv_ref = self._record(generation, generations, algorithm, hv_ref, state, gen_start, complete=True)
            self.db.sync()  # the database file holds everything the checkpoint will record, without its -wal
            save_checkpoint(self.checkpoint_path, algorithm, state, self.fingerprint, self.db.state())
        self.db.sync()
        evaluations = self.db.all()
        by_hash = {e.genome_hash: e for e in evaluations}
        front = pareto_front([(e.genome_hash, (e.evaluation.quality, e.evaluation.cost)) for e in evaluations])
        return SearchResult(state.completed, evaluations, [by_hash[k] for k in front], time.perf_counter() - start,
                            replace(self.timings),  # a copy: later evaluations must not change it
                            self.new_evaluations, self.reused_evaluations, self.evaluation_seconds, budget_spent)

    def verify(self, count: int) -> int:
        """Where the search steered on estimates (``RacingConfig.steer_images``): render on every image every point of
        the frontier of estimates, until that frontier is made of full evaluations only (a verified point may fall
        below it, and an estimate it dominated takes its place). The points a schedule file keeps of it come first
        (``report.select_points`` with ``count`` and the baselines' costs as anchors, as the file's points are
        chosen), so a budget that ends verifying (``BudgetExhausted``) ends it with those measured. Every point, not
        only those: the run's frontier is its full evaluations', and a frontier of a file's few points holds much
        less hypervolume than the search found (``benchmarks/README.md``, eleventh round). After ``run``; the last generation
        recorded (complete or stopped by the budget) counts these images and owns these evaluations. Returns the
        number of new full evaluations; 0 without steering."""
        if self.steer_images is None:
            return 0
        from .report import select_points
        generation = max((g["generation"] for g in self.db.generations()), default=0)  # the last recorded
        full_before = len(self.archive.full)
        anchors = [self.archive.full[k][1] for k in self.full_fidelity if k in self.archive.full]
        per_point = len(self.evaluator.items) - self.steer_images  # the images a steered estimate's screen lacks
        try:
            while True:
                steering = self.archive.steering()
                frontier = self.archive.steering_frontier()
                missing = self.unverified()
                if not missing:
                    break
                kept = select_points(frontier, count, cost_of=lambda k: steering[k][1], anchors=anchors)
                first = [k for k in kept if k not in self.archive.full]
                if self.progress:
                    self.progress.set_generation("verifying the frontier")
                    self.progress.set_total(self.ledger.capped(self.ledger.used + len(missing) * per_point))
                for key in first or missing:  # each a steered estimate: its last screen's images are not rendered again
                    screen = self.db.get(key, self.stages[-1])
                    self._stored_or_new(screen.genome, screen.origin, generation, known=screen.evaluation)
        finally:
            self.db.sync()
            self._rerecord_images(generation)
        return len(self.archive.full) - full_before

    def unverified(self) -> list[str]:
        """The points of the frontier the search steers by that are estimates, not full evaluations."""
        return [k for k in self.archive.steering_frontier() if k not in self.archive.full]

    def _rerecord_images(self, generation: int) -> None:
        """The generation's row (and ``generations.jsonl``) with the images rendered since, the hypervolume now."""
        hv_ref = self.db.get_meta("hypervolume_reference") or 0.0
        points = self.archive.steering()
        hv = hypervolume([points[k] for k in pareto_front(list(points.items()))], hv_ref)
        self.db.amend_generation(generation, hv, self.ledger.used, {"full_evaluations": len(self.archive.full)})
        self._write_log()

    def _record(self, generation: int, generations: int, algorithm: NSGA2, hv_ref, state: SearchState,
                gen_start: float, complete: bool):
        """The generation's row in the database and in ``generations.jsonl``, and its line; returns the hypervolume's
        quality reference (the lowest quality of generation 0, stored so resumed runs compare)."""
        points = self.archive.steering()  # the full evaluations, and estimates where the search steers on them
        if hv_ref is None:
            measured = self.archive.full or points
            hv_ref = float(min(q for q, _ in measured.values())) if measured else 0.0
            self.db.set_meta("hypervolume_reference", hv_ref)
        front = pareto_front(list(points.items()))
        hv = hypervolume([points[k] for k in front], hv_ref)
        g = self._generation
        if complete and generation > 0 and self.progress:
            self._offspring_images.append(self.ledger.used - self._generation_start_images)
            per_generation = sum(self._offspring_images) / len(self._offspring_images)
            expected = self.ledger.used + (generations - generation) * per_generation
            self.progress.set_total(self.ledger.capped(expected))
        details = {"screened": g.screened, "promoted": g.promoted, "full_evaluations": len(self.archive.full),
                   "frontier": len(front)}
        if self.config.surrogate:
            details["surrogate"] = "on" if state.surrogate.active else "off (fallback to NSGA-II offspring)"
            details["kendall_tau"] = state.surrogate.tau
        population = [genome_hash(x) for x in algorithm.pop.get("X").astype(bool)] if algorithm.pop is not None else []
        self.db.record_generation(generation, hv, population, g.new, g.reused, time.perf_counter() - gen_start,
                                  self.ledger.used, complete, details)
        self._write_log()
        if complete:
            racing = ((f" · {g.screened} screened, steering on {self.steer_images} images" if self.steer_images
                       else f" · {g.screened} screened, {g.promoted} in full") if self.stages else "")
            surrogate = (f" · surrogate {'on' if state.surrogate.active else 'off'}"
                         + (f" (tau {state.surrogate.tau:.2f})" if state.surrogate.tau is not None else "")
                         if self.config.surrogate else "")
            self._line(f"generation {generation}/{generations}: " + summary_line([points[k] for k in front], hv, self.metric_short,
                                                                   g.new, g.reused)
                       + f" · {self.ledger.used} images{racing}{surrogate}")
        return hv_ref

    def _write_log(self) -> None:
        """``generations.jsonl``: one JSON object per generation (images so far, hypervolume, ...), rewritten whole from
        the database, so a resumed run leaves no duplicates."""
        lines = [json.dumps(g, sort_keys=True) for g in self.db.generations()]
        tmp = self.run_dir / (GENERATIONS_LOG + ".tmp")
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        tmp.replace(self.run_dir / GENERATIONS_LOG)

    def _line(self, text: str) -> None:
        if self.progress:
            self.progress.line(text)

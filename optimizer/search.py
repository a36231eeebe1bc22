"""NSGA-II over schedule genomes (pymoo, ask/tell), with a database and checkpoints that survive being killed.

Each generation: ``ask`` the algorithm for candidates, take each one's objectives from the database
or evaluate it (and commit it at once), ``tell`` the results, copy the database's log into its file,
then write the algorithm — population, RNG state and all — to ``checkpoint.pkl`` atomically, with
what the database holds (``optimizer/run_dir.py``). A resumed run loads the checkpoint, is asked
for the very same candidates (same RNG state), finds those already evaluated in the database and
ends with the same frontier as an uninterrupted run.

Objectives, both minimised: the negated mean quality, and the cost as a fraction of the full
computation's. Constraint (the ECAD paper's): a candidate must cache something.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.evaluator import Evaluator as PymooEvaluator
from pymoo.core.problem import Problem
from pymoo.operators.crossover.pntx import PointCrossover
from pymoo.operators.mutation.bitflip import BitflipMutation
from pymoo.problems.static import StaticProblem
from pymoo.core.termination import NoTermination

from .database import DamagedRun, RunDatabase, StoredEvaluation
from .evaluate import Evaluation, Evaluator, Timings
from .genome import GenomeCodec, genome_hash
from .report import hypervolume, pareto_front, summary_line
from .run_dir import CHECKPOINT_FORMAT, CHECKPOINT_NAME, read_checkpoint, write_checkpoint
from .seeding import initial_population


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


def make_algorithm(codec: GenomeCodec, config: SearchConfig) -> NSGA2:
    seeds = initial_population(codec, config.population, config.seed)
    algorithm = NSGA2(
        pop_size=config.population,
        sampling=np.array([s.genome for s in seeds], dtype=bool),
        crossover=PointCrossover(prob=config.crossover_prob, n_points=config.crossover_points),
        mutation=StepMoveMutation(codec.steps, config.step_move_prob, prob=config.mutation_prob,
                                  prob_var=min(0.5, config.mutation_bits / codec.n_var)),
        eliminate_duplicates=True)
    algorithm.setup(ScheduleProblem(codec.n_var), termination=NoTermination(), seed=config.seed)
    return algorithm


def save_checkpoint(path: Path, algorithm: NSGA2, completed: int, fingerprint: str,
                    database: Optional[dict] = None) -> None:
    """Atomic, with a digest; ``database``: what the run's database holds now (``RunDatabase.state``)."""
    write_checkpoint(path, {"format": CHECKPOINT_FORMAT, "completed": completed, "fingerprint": fingerprint,
                            "database": database or {"evaluations": 0, "last_seq": 0, "digest": ""},
                            "algorithm": algorithm})


def load_checkpoint(path: Path, fingerprint: str) -> Optional[dict]:
    """The checkpoint's state (None if there is none); a DamagedRun naming the file if it is damaged or foreign."""
    state = read_checkpoint(path)
    if state is not None and state.get("fingerprint") != fingerprint:
        raise DamagedRun(path, "the checkpoint belongs to a run with other settings than its database")
    return state


class Progress:
    """Where the search reports to: a tqdm bar over evaluations and one line per generation."""

    def __init__(self, total: int, enabled: Optional[bool] = None, write: Callable[[str], None] = print):
        """``enabled=None``: a bar when the output is a terminal; lines are always written."""
        from tqdm import tqdm
        self.bar = tqdm(total=total, unit="eval", dynamic_ncols=True, smoothing=0.1,
                        disable=None if enabled is None else not enabled)
        self._write = write

    def set_generation(self, text: str) -> None:
        self.bar.set_description(text)

    def step(self) -> None:
        self.bar.update(1)

    def line(self, text: str) -> None:
        if self.bar.disable:
            self._write(text)
        else:
            self.bar.write(text)

    def close(self) -> None:
        self.bar.close()


@dataclass
class SearchResult:
    completed: int                                   # generations done, the initial one included
    evaluations: list[StoredEvaluation]
    frontier: list[StoredEvaluation]
    wall_seconds: float = 0.0                        # of this session's search loop
    timings: Timings = field(default_factory=Timings)  # inside it: sampling, decoding, scoring of new evaluations
    new_evaluations: int = 0
    reused_evaluations: int = 0
    evaluation_seconds: float = 0.0                  # wall time of new evaluations, committing them included


class Search:
    def __init__(self, codec: GenomeCodec, evaluator: Evaluator, db: RunDatabase, run_dir: Path,
                 config: SearchConfig, fingerprint: str, progress: Optional[Progress] = None, metric_short: str = "Q"):
        self.codec, self.evaluator, self.db, self.config = codec, evaluator, db, config
        self.checkpoint_path = Path(run_dir) / CHECKPOINT_NAME
        self.fingerprint = fingerprint
        self.progress = progress
        self.metric_short = metric_short
        self.timings = Timings()
        self.new_evaluations = self.reused_evaluations = 0
        self.evaluation_seconds = 0.0
        self.seed_origins = {genome_hash(s.genome): s.origin
                             for s in initial_population(codec, config.population, config.seed)}

    # ------------------------------------------------------------ one genome

    def evaluate(self, genome: np.ndarray, origin: str, generation: int) -> Evaluation:
        """From the database when known; else evaluated and committed at once."""
        key = genome_hash(genome)
        stored = self.db.get(key)
        if stored is not None:
            self.reused_evaluations += 1
            return stored.evaluation
        if not GenomeCodec.caches_something(genome):
            return self.evaluator.prepare()  # no caching at all: the reference itself (infeasible, never stored)
        start = time.perf_counter()
        ev = self.evaluator.evaluate(self.codec.mask(genome))
        self.db.put(key, genome, ev, origin, generation)
        self.evaluation_seconds += time.perf_counter() - start
        self.timings.add(ev.timings)
        self.new_evaluations += 1
        return ev

    # ------------------------------------------------------------ the loop

    def completed_generations(self) -> int:
        state = load_checkpoint(self.checkpoint_path, self.fingerprint)
        return 0 if state is None else int(state["completed"])

    def run(self, generations: int) -> SearchResult:
        """Run until ``generations`` offspring generations follow the initial one (resuming where the checkpoint is)."""
        start = time.perf_counter()
        self.timings, self.new_evaluations, self.reused_evaluations, self.evaluation_seconds = Timings(), 0, 0, 0.0
        state = load_checkpoint(self.checkpoint_path, self.fingerprint)
        algorithm = state["algorithm"] if state else make_algorithm(self.codec, self.config)
        completed = int(state["completed"]) if state else 0
        target = generations + 1
        points = {e.genome_hash: (e.evaluation.quality, e.evaluation.cost) for e in self.db.all()}
        hv_ref = self.db.get_meta("hypervolume_reference")
        while completed < target:
            generation = completed
            gen_start = time.perf_counter()
            if self.progress:
                self.progress.set_generation(f"generation {generation}/{generations}")
            population = algorithm.ask()
            if population is None or len(population) == 0:
                self._line(f"generation {generation}: the algorithm proposes no new schedules (search space exhausted)")
                break
            X = population.get("X").astype(bool)
            F = np.zeros((len(X), 2))
            G = np.zeros((len(X), 1))
            new_before, reused_before = self.new_evaluations, self.reused_evaluations
            for i, genome in enumerate(X):
                origin = self.seed_origins.get(genome_hash(genome), "initial") if generation == 0 else f"generation {generation}"
                ev = self.evaluate(genome, origin, generation)
                F[i] = (-ev.quality, ev.cost)
                G[i, 0] = 1.0 - float(np.count_nonzero(~genome))
                if GenomeCodec.caches_something(genome):
                    points[genome_hash(genome)] = (ev.quality, ev.cost)
                if self.progress:
                    self.progress.step()
            PymooEvaluator().eval(StaticProblem(algorithm.problem, F=F, G=G), population)
            algorithm.tell(infills=population)
            completed += 1
            if hv_ref is None:
                hv_ref = float(min(q for q, _ in points.values())) if points else 0.0
                self.db.set_meta("hypervolume_reference", hv_ref)
            front = pareto_front(list(points.items()))
            hv = hypervolume([points[k] for k in front], hv_ref)
            pop_hashes = [genome_hash(x) for x in algorithm.pop.get("X").astype(bool)]
            self.db.record_generation(generation, hv, pop_hashes, self.new_evaluations - new_before,
                                      self.reused_evaluations - reused_before, time.perf_counter() - gen_start)
            self.db.sync()  # the database file holds everything the checkpoint will record, without its -wal
            save_checkpoint(self.checkpoint_path, algorithm, completed, self.fingerprint, self.db.state())
            self._line(f"generation {generation}/{generations}: "
                       + summary_line([points[k] for k in front], hv, self.metric_short,
                                      self.new_evaluations - new_before, self.reused_evaluations - reused_before))
        evaluations = self.db.all()
        by_hash = {e.genome_hash: e for e in evaluations}
        front = pareto_front([(e.genome_hash, (e.evaluation.quality, e.evaluation.cost)) for e in evaluations])
        return SearchResult(completed, evaluations, [by_hash[k] for k in front], time.perf_counter() - start,
                            replace(self.timings),  # a copy: later evaluations must not change it
                            self.new_evaluations, self.reused_evaluations, self.evaluation_seconds)

    def _line(self, text: str) -> None:
        if self.progress:
            self.progress.line(text)

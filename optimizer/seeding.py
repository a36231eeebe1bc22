"""The search's initial population: hand-made schedules and variants of them, not random bits.

As in the ECAD paper, the first generation is seeded with heuristics. It always holds

- FORA-N: everything computed every N steps, reused in between;
- every one-step move of FORA-N: one computed step (not the first) moved one step earlier or later.
  These cost exactly what FORA-N costs, so the frontier is measured against FORA's neighbourhood
  from the start; the paper mutates FORA seeds, and moving whole steps is what bit flips cannot do.

and then as many schedules as the population size: one heuristic from each of these kinds in turn,

- everything on k evenly spaced steps, the last step among them (it refines the details every
  image ends with);
- one component kind cached FORA-style while the rest compute every step;
- one component kind reused in evenly spaced blocks over the middle steps;

then mutated variants of all of these. Extra seeds (``--warm-start``, quick calibration) come right after
FORA's. The first generation is thus larger than the population
(NSGA-II's survival keeps the best). Random bits would cache about half of everything and
start far from any useful trade-off. The 4-point crossover then recombines the seeds' step ranges
(the genome is step-major), so the step choices of different seeds mix.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ecad_nodes.heuristics import component_every_bits, fora_bits
from ecad_nodes.schedule import Layout

from .genome import GenomeCodec, genome_hash

MAX_FORA_EVERY = 7


@dataclass(frozen=True)
class Seed:
    origin: str           # how it was made, stored with its evaluation
    genome: np.ndarray


def _genome(codec: GenomeCodec, bits: np.ndarray) -> np.ndarray:
    bits = np.asarray(bits, dtype=bool).copy()
    bits[0] = True
    return codec.genome(codec.mask(bits[1:].reshape(-1)))


def _full_steps(codec: GenomeCodec, steps) -> np.ndarray:
    on = np.zeros(codec.steps, dtype=bool)
    on[list(steps)] = True
    return np.repeat(on[:, None], codec.layout.bits_per_step, axis=1)


def _fora_steps(steps: int, every: int) -> list[int]:
    return list(range(0, steps, every))


def fora_seeds(codec: GenomeCodec) -> list[Seed]:
    layout, steps = codec.layout, codec.steps
    return [Seed(f"FORA-{n}", _genome(codec, fora_bits(layout, steps, n)))
            for n in range(2, min(MAX_FORA_EVERY, steps - 1) + 1)]


def shifted_fora_seeds(codec: GenomeCodec) -> list[Seed]:
    """FORA-N with one computed step (not the first) moved one step earlier or later, for every N and step."""
    seeds = []
    for n in range(2, min(MAX_FORA_EVERY, codec.steps - 1) + 1):
        base = _fora_steps(codec.steps, n)
        for i in range(1, len(base)):
            for delta in (-1, 1):
                moved = base[i] + delta
                if 0 < moved < codec.steps and moved not in base:
                    steps = sorted(set(base[:i] + [moved] + base[i + 1:]))
                    seeds.append(Seed(f"FORA-{n}, step {base[i]} moved to {moved}",
                                      _genome(codec, _full_steps(codec, steps))))
    return seeds


def spaced_seeds(codec: GenomeCodec) -> list[Seed]:
    """Everything computed on k evenly spaced steps from the first to the last; half the steps first, then outwards."""
    steps = codec.steps
    return [Seed(f"{k} evenly spaced steps",
                 _genome(codec, _full_steps(codec, np.round(np.linspace(0, steps - 1, k)).astype(int))))
            for k in sorted(range(2, steps), key=lambda k: (abs(2 * k - steps), k))]


def component_kinds(layout: Layout) -> list[str]:
    """Component names in layout order, each once (FLUX's "attn" names a component of both groups)."""
    seen: dict[str, None] = {}
    for g in layout.groups:
        for c in g.components:
            seen.setdefault(c, None)
    return list(seen)


def component_seeds(codec: GenomeCodec) -> list[Seed]:
    layout, steps = codec.layout, codec.steps
    return [Seed(f"{kind} every {n}", _genome(codec, component_every_bits(layout, steps, n, {kind})))
            for n in (2, 3, 4) for kind in component_kinds(layout) if n < steps]


def evenly_spaced_bits(layout: Layout, steps: int, kind: str, every_block: int) -> np.ndarray:
    """``kind`` reused in every ``every_block``-th block over the middle half of the steps, computed elsewhere."""
    bits = np.ones((steps, layout.bits_per_step), dtype=bool)
    middle = np.arange(max(1, steps // 4), max(2, (3 * steps + 3) // 4))
    for g in layout.groups:
        if kind not in g.components:
            continue
        cols = layout.component_bits(g.name, kind)[::every_block]
        bits[np.ix_(middle, cols)] = False
    return bits


def evenly_spaced_seeds(codec: GenomeCodec) -> list[Seed]:
    return [Seed(f"{kind} in every {k} blocks, middle steps", _genome(codec, evenly_spaced_bits(codec.layout, codec.steps, kind, k)))
            for k in (2, 1) for kind in component_kinds(codec.layout)]


def initial_population(codec: GenomeCodec, size: int, seed: int, extra: Sequence[Seed] = ()) -> list[Seed]:
    """All FORA-N seeds, the ``extra`` seeds (a warm start's frontier, a quick calibration's schedules), FORA's
    one-step moves, then ``size`` more: one new heuristic from each other kind in turn, then mutations
    of any of them (each bit flipped with a probability of 1–10 %); all distinct, all caching something. The first
    generation is larger than the population; NSGA-II's survival then keeps the best ``size``."""
    if size < 1:
        raise ValueError(f"the population needs at least one member, got {size}")
    chosen: list[Seed] = []
    seen: set[str] = set()

    def take(s: Seed, limit: float = float("inf")) -> bool:
        key = genome_hash(s.genome)
        if len(chosen) < limit and key not in seen and GenomeCodec.caches_something(s.genome):
            seen.add(key)
            chosen.append(s)
            return True
        return False

    for s in [*fora_seeds(codec), *extra, *shifted_fora_seeds(codec)]:  # extra seeds before FORA's moves: a budget
        take(s)                                                            # may end the first generation early
    total = len(chosen) + size
    queues = [spaced_seeds(codec), component_seeds(codec), evenly_spaced_seeds(codec)]
    while any(queues) and len(chosen) < total:
        for queue in queues:
            while queue and not take(queue.pop(0), total):  # duplicates do not use up a kind's turn
                pass
    bases = list(chosen)
    rng = np.random.default_rng(seed)
    attempts = 0
    while len(chosen) < total:
        attempts += 1
        if attempts > 100 * total:
            raise ValueError(f"cannot make {total} distinct schedules for a genome of {codec.n_var} bits; "
                             "use a smaller --population")
        base = bases[int(rng.integers(len(bases)))]
        flips = rng.random(codec.n_var) < rng.uniform(0.01, 0.10)
        take(Seed(f"mutated {base.origin}", base.genome ^ flips), total)
    return chosen

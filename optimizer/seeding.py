"""The search's initial population: hand-made schedules and mutations of them, not random bits.

As in the ECAD paper, the first generation is seeded with heuristics: FORA (everything every N
steps), one component kind cached FORA-style, one component cached in evenly spaced blocks over the
middle steps, and mutated variants of these to fill the population. Random bits would cache about
half of everything and start far from any useful trade-off.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import zip_longest

import numpy as np

from ecad_nodes.heuristics import component_every_bits, fora_bits
from ecad_nodes.schedule import Layout

from .genome import GenomeCodec, genome_hash


@dataclass(frozen=True)
class Seed:
    origin: str           # how it was made, stored with its evaluation
    genome: np.ndarray


def fora_seeds(codec: GenomeCodec, max_every: int = 7) -> list[Seed]:
    layout, steps = codec.layout, codec.steps
    return [Seed(f"FORA-{n}", _genome(codec, fora_bits(layout, steps, n))) for n in range(2, min(max_every, steps - 1) + 1)]


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
    offsets = layout.offsets()
    for g in layout.groups:
        if kind not in g.components:
            continue
        c = g.components.index(kind)
        blocks = np.arange(0, g.blocks, every_block)
        cols = offsets[g.name] + blocks * len(g.components) + c
        bits[np.ix_(middle, cols)] = False
    return bits


def evenly_spaced_seeds(codec: GenomeCodec) -> list[Seed]:
    return [Seed(f"{kind} in every {k} blocks, middle steps", _genome(codec, evenly_spaced_bits(codec.layout, codec.steps, kind, k)))
            for k in (2, 1) for kind in component_kinds(codec.layout)]


def _genome(codec: GenomeCodec, bits: np.ndarray) -> np.ndarray:
    bits = np.asarray(bits, dtype=bool).copy()
    bits[0] = True
    return codec.genome(codec.mask(bits[1:].reshape(-1)))


def initial_population(codec: GenomeCodec, size: int, seed: int) -> list[Seed]:
    """``size`` distinct genomes that all cache something: heuristics taken in turn from each kind
    (FORA first), then mutations of them (each bit flipped with a probability of 1–10 %)."""
    if size < 1:
        raise ValueError(f"the population needs at least one member, got {size}")
    kinds = [fora_seeds(codec), component_seeds(codec), evenly_spaced_seeds(codec)]
    chosen: list[Seed] = []
    seen: set[str] = set()

    def take(s: Seed) -> None:
        key = genome_hash(s.genome)
        if len(chosen) < size and key not in seen and GenomeCodec.caches_something(s.genome):
            seen.add(key)
            chosen.append(s)

    for group in zip_longest(*kinds):
        for s in group:
            if s is not None:
                take(s)
    bases = list(chosen)
    rng = np.random.default_rng(seed)
    attempts = 0
    while len(chosen) < size and bases:
        attempts += 1
        if attempts > 100 * size:
            raise ValueError(f"cannot make {size} distinct schedules for a genome of {codec.n_var} bits; "
                             "use a smaller --population")
        base = bases[int(rng.integers(len(bases)))]
        flips = rng.random(codec.n_var) < rng.uniform(0.01, 0.10)
        take(Seed(f"mutated {base.origin}", base.genome ^ flips))
    return chosen

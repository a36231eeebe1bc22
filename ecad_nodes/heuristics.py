"""Hand-made schedules that work for any model before it has a learned one.

They are resolved at sampling time against the connected model's layout and the workflow's step
count, so they never need step mapping.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from .schedule import Layout, Mask


@dataclass(frozen=True)
class Heuristic:
    name: str
    description: str
    build: Callable[[Layout, int], np.ndarray]  # (layout, steps) -> bool bits (steps, layout.bits_per_step)

    def mask(self, layout: Layout, steps: int) -> Mask:
        bits = np.asarray(self.build(layout, steps), dtype=bool).copy()
        if steps:
            bits[0] = True  # nothing is cached before the first step
        return Mask(layout, bits)


def fora_bits(layout: Layout, steps: int, every: int) -> np.ndarray:
    """FORA: every component computed on every ``every``-th step, reused in between."""
    on = (np.arange(steps) % every) == 0
    return np.repeat(on[:, None], layout.bits_per_step, axis=1)


def component_every_bits(layout: Layout, steps: int, every: int, components: set[str]) -> np.ndarray:
    """Only the named components are cached FORA-style; all others are computed at every step."""
    bits = np.ones((steps, layout.bits_per_step), dtype=bool)
    on = (np.arange(steps) % every) == 0
    for g in layout.groups:
        for comp in g.components:
            if comp in components:
                bits[:, layout.component_bits(g.name, comp)] = on[:, None]
    return bits


def _fora(every: int) -> Heuristic:
    return Heuristic(
        name=f"FORA every {every} steps",
        description=f"Compute every component on steps 0, {every}, {2 * every}, … and reuse the cached outputs in between "
                    f"(about {every}× fewer block MACs).",
        build=lambda layout, steps: fora_bits(layout, steps, every))


NO_CACHING = Heuristic(
    name="no caching (reference)",
    description="Compute everything at every step: the output equals the unpatched model's. For A/B comparisons.",
    build=lambda layout, steps: np.ones((steps, layout.bits_per_step), dtype=bool))

HEURISTICS: tuple[Heuristic, ...] = (NO_CACHING, _fora(2), _fora(3), _fora(4), _fora(5))


def heuristic(name: str) -> Optional[Heuristic]:
    for h in HEURISTICS:
        if h.name == name:
            return h
    return None

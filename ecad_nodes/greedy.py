"""Greedy caching schedules from recorded component changes, at several MAC budgets.

The input is what ``ecad_nodes.calibration`` records, as a staleness matrix ``S[b, a, u]``: how far
component b's output at step u is from its output at step a < u, i.e. what reusing at step u the
output computed at step a gets wrong (measured over a few steps, extended by adding the one-step
changes beyond: a reuse at step s+1 of an output computed at s−1 carries both steps' change). A
schedule's *drift* is that charge summed over every step at which a component's output is used
while stale:

* a component that reaches the block output is used at every step;
* an internal component (it feeds only other components of its block, e.g. FLUX single blocks'
  ``attn`` and ``mlp_in`` feeding ``out_proj``) is used only at steps where one of its consumers
  computes. Schedules are kept *consistent*: an internal component computes only at steps where a
  consumer computes (computing it where nothing reads it would only refresh a cache that a
  computation at the reading step refreshes better).

A greedy starts from a schedule (everything computed) and repeatedly turns computations into reuses,
never at the first step, which always computes: the move that adds the least drift per MAC saved
(``macs[s, b]``: what component b costs at step s, e.g. ``CostTable.per_bit`` times the model
evaluations of the step). Whenever the block MACs fall to a budget (a fraction of the block MACs
with everything computed), the schedule is kept; one pass serves all budgets, so a greedy's
schedules are nested: a smaller budget reuses everything a larger one reuses. Two kinds of moves:

* ``step_schedules``: a move reuses a whole step (every component), priced by the MAC-weighted
  mean staleness of all components. Whole steps keep every block's inputs and outputs from the
  same step; on the tiny models the full search's best frontier points are of this kind too
  (FORA-like, with the steps chosen where outputs change least).
* ``component_schedules``: a move reuses one component at one step (a move on a consumer also
  turns its internal components into reuses where no consumer computes any more, priced with
  them). It finds what whole steps cannot: components that barely change (Lumina's context
  refiner, whose input is the prompt) or cost little (FLUX's text MLPs).

``calibrated_schedules`` gives, at each budget, the step schedule, the component schedule, and the
step schedule just above the budget continued with component moves down to it.

Components with unknown staleness (NaN: never observed) are never reused.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np

from .schedule import BlockGroup, Layout, Mask

#: Block-MAC fractions quick calibration makes schedules for: from the near-lossless end (components that barely change
#: or cost little) to a quarter of the work.
DEFAULT_BUDGETS = (0.95, 0.85, 0.70, 0.55, 0.45, 0.35, 0.25)
STEPS = "steps"
COMPONENTS = "components"
MIXED = "steps, then components"

#: Stands in for an unknown staleness; a move adding half of it or more is never made.
_UNKNOWN = 1e12


@dataclass(frozen=True)
class GreedySchedule:
    kind: str                   # STEPS, COMPONENTS or MIXED: which greedy made it
    budget: float               # the block-MAC fraction asked for
    mask: Mask
    mac_fraction: float         # block MACs of ``mask`` over those of computing everything (≤ budget)
    drift: float                # the schedule's drift (module docstring)


@dataclass(frozen=True)
class _Unit:
    """Bits whose drift depends on each other's masks: a consumer with its internal components, or a lone bit."""

    bits: np.ndarray                            # bit indices
    readers: tuple[Optional[np.ndarray], ...]   # per bit: positions (in ``bits``) of its consumers; None if not internal


def _units(nbits: int, consumers: Mapping[int, Sequence[int]]) -> list[_Unit]:
    parent = list(range(nbits))

    def root(b: int) -> int:
        while parent[b] != b:
            parent[b] = parent[parent[b]]
            b = parent[b]
        return b

    for internal, users in consumers.items():
        for user in users:
            parent[root(int(user))] = root(int(internal))
    members: dict[int, list[int]] = {}
    for b in range(nbits):
        members.setdefault(root(b), []).append(b)
    units = []
    for bits in members.values():
        position = {b: i for i, b in enumerate(bits)}
        readers = tuple(np.asarray([position[int(u)] for u in consumers[b]]) if b in consumers else None for b in bits)
        units.append(_Unit(np.asarray(bits), readers))
    return units


def _consistent(masks: np.ndarray, unit: _Unit) -> np.ndarray:
    """``masks`` (..., steps, unit bits) with every internal bit computed only where one of its consumers computes."""
    for j, readers in enumerate(unit.readers):
        if readers is not None:
            keep = masks[..., readers].any(axis=-1)
            keep[..., 0] = True
            masks[..., j] &= keep
    return masks


def _drift(masks: np.ndarray, unit: _Unit, staleness: np.ndarray) -> np.ndarray:
    """Drift of each of ``masks`` (candidates, steps, unit bits); ``staleness`` (unit bits, steps, steps)."""
    steps = masks.shape[-2]
    index = np.arange(steps)
    total = np.zeros(masks.shape[0])
    for j, readers in enumerate(unit.readers):
        computed = masks[..., j]
        used = np.ones_like(computed) if readers is None else masks[..., readers].any(axis=-1)
        last = np.maximum.accumulate(np.where(computed, index, 0), axis=-1)
        stale = used & ~computed
        total += np.where(stale, staleness[j][last, index[None, :]], 0.0).sum(axis=-1)
    return total


class _Greedy:
    """One greedy pass over single-bit moves (module docstring)."""

    def __init__(self, staleness: np.ndarray, macs: np.ndarray, consumers: Mapping[int, Sequence[int]],
                 start: np.ndarray):
        nbits = staleness.shape[0]
        steps = start.shape[0]
        self.staleness = np.where(np.isnan(staleness), _UNKNOWN, staleness)
        self.macs = macs
        self.mask = start.copy()
        self.units = _units(nbits, consumers)
        self.unit_of = np.empty(nbits, dtype=np.int64)
        for i, u in enumerate(self.units):
            self.unit_of[u.bits] = i
        self.ratio = np.full((steps, nbits), np.inf)   # added drift per MAC saved of each move; inf: no move
        self.saved = np.zeros((steps, nbits))
        self.drift_of_unit = np.zeros(len(self.units))
        # per unit: the masks its moves lead to (moves, steps, unit bits) and (step, position in unit) -> move
        self.moves: dict[int, tuple[np.ndarray, dict[tuple[int, int], int]]] = {}
        for i in range(len(self.units)):
            self._price(i)

    def _price(self, i: int) -> None:
        """Price every move of unit ``i`` from its current masks."""
        unit = self.units[i]
        current = self.mask[:, unit.bits]
        staleness = self.staleness[unit.bits]
        self.drift_of_unit[i] = _drift(current[None], unit, staleness)[0]
        t, j = np.nonzero(current[1:])
        t = t + 1
        after = np.repeat(current[None], len(t), axis=0)
        after[np.arange(len(t)), t, j] = False
        after = _consistent(after, unit)
        saved = ((current[None] & ~after) * self.macs[:, unit.bits][None]).sum(axis=(1, 2))
        added = _drift(after, unit, staleness) - self.drift_of_unit[i]
        usable = (saved > 0) & (added < _UNKNOWN / 2)
        self.ratio[:, unit.bits] = np.inf
        self.ratio[t, unit.bits[j]] = np.where(usable, added / np.where(saved > 0, saved, 1.0), np.inf)
        self.saved[t, unit.bits[j]] = saved
        self.moves[i] = (after, {(int(a), int(b)): k for k, (a, b) in enumerate(zip(t, j))})

    def run(self, budgets: Sequence[float], layout: Layout, kind: str) -> list[GreedySchedule]:
        full = float(self.macs.sum())
        wanted = sorted({float(b) for b in budgets}, reverse=True)
        out: list[GreedySchedule] = []
        spent = float((self.macs * self.mask).sum())
        while wanted:
            while wanted and spent <= wanted[0] * full * (1 + 1e-9):
                out.append(GreedySchedule(kind, wanted.pop(0), Mask(layout, self.mask.copy()), spent / full,
                                          float(self.drift_of_unit.sum())))
            if not wanted:
                break
            t, b = divmod(int(np.argmin(self.ratio)), self.mask.shape[1])
            if not np.isfinite(self.ratio[t, b]):
                break  # nothing more can be reused: the remaining budgets cannot be met
            i = int(self.unit_of[b])
            after, index = self.moves[i]
            j = int(np.flatnonzero(self.units[i].bits == b)[0])
            self.mask[:, self.units[i].bits] = after[index[(t, j)]]
            spent -= self.saved[t, b]
            self._price(i)
        return out


def _checked(staleness: np.ndarray, macs: np.ndarray, layout: Layout,
             budgets: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    staleness = np.asarray(staleness, dtype=np.float64)
    nbits, steps, _ = staleness.shape
    if nbits != layout.bits_per_step or staleness.shape[2] != steps:
        raise ValueError(f"staleness of shape {staleness.shape} does not fit {layout.describe()}")
    if not all(0.0 < b <= 1.0 for b in budgets):
        raise ValueError(f"budgets are fractions of the block MACs in (0, 1], got {list(budgets)}")
    return staleness, np.broadcast_to(np.asarray(macs, dtype=np.float64), (steps, nbits)).copy()


def component_schedules(staleness: np.ndarray, macs: np.ndarray, layout: Layout,
                        budgets: Sequence[float] = DEFAULT_BUDGETS,
                        consumers: Optional[Mapping[int, Sequence[int]]] = None,
                        start: Optional[Mask] = None) -> list[GreedySchedule]:
    """Schedules of single-component moves, one per budget that can be met, largest budget first.

    ``staleness``: (bits, steps, steps), ``S[b, a, u]`` (``ComponentChanges.staleness()``; NaN: unknown, never reused
    across); ``macs``: (steps, bits) MACs of each component at each step, or (bits,) the same at every step;
    ``consumers``: each internal component's bit -> the bits that read it (``FamilyAdapter.consumers``); ``start``:
    the schedule to continue from (default: everything computed; its budgets above its own cost are left out).
    """
    staleness, macs = _checked(staleness, macs, layout, budgets)
    first = np.ones(macs.shape, dtype=bool) if start is None else start.with_first_step_computed().bits
    return _Greedy(staleness, macs, consumers or {}, first).run(budgets, layout, COMPONENTS)


def step_schedules(staleness: np.ndarray, macs: np.ndarray, layout: Layout,
                   budgets: Sequence[float] = DEFAULT_BUDGETS) -> list[GreedySchedule]:
    """Schedules of whole-step moves, one per budget that can be met, largest budget first (arguments as for
    ``component_schedules``). A component with unknown staleness is computed at every step."""
    staleness, macs = _checked(staleness, macs, layout, budgets)
    steps = macs.shape[0]
    known = ~np.isnan(staleness).any(axis=(1, 2))
    weight = macs.sum(axis=0) * known
    mean = np.einsum("b,bau->au", weight, np.nan_to_num(staleness)) / max(float(weight.sum()), 1e-300)
    one_bit = Layout(layout.family, (BlockGroup("steps", 1, ("step",)),))
    full = float(macs.sum())
    per_step = (macs * known).sum(axis=1, keepdims=True)
    fixed = float((macs * ~known).sum())  # computed at every step whatever the budget
    # The budgets of the whole steps' greedy, which sees only the reusable components' MACs.
    reusable = max(full - fixed, 1e-300)
    wanted = {b: (b * full - fixed) / reusable for b in budgets if b * full > fixed}
    found = _Greedy(mean[None], per_step, {}, np.ones((steps, 1), dtype=bool)).run(
        [w for w in wanted.values() if w > 0], one_bit, STEPS)
    out = []
    for budget, w in wanted.items():
        match = next((g for g in found if abs(g.budget - w) < 1e-12), None)
        if match is None:
            continue
        bits = np.where(known[None, :], match.mask.bits, True)
        out.append(GreedySchedule(STEPS, budget, Mask(layout, bits), float((macs * bits).sum()) / full, match.drift))
    return sorted(out, key=lambda g: -g.budget)


def calibrated_schedules(staleness: np.ndarray, macs: np.ndarray, layout: Layout,
                         budgets: Sequence[float] = DEFAULT_BUDGETS,
                         consumers: Optional[Mapping[int, Sequence[int]]] = None) -> list[GreedySchedule]:
    """Every kind of greedy schedule at each budget, distinct masks only, largest budget first (arguments as for
    ``component_schedules``): the whole-step schedule; the component schedule; and the whole-step schedule with the
    fewest computed steps that still costs at least the budget, continued with component moves down to it
    (``MIXED``). Which kind is best differs by model and budget (on tiny PixArt, components at moderate budgets and
    whole steps at small ones), so all are verified by rendering."""
    staleness, macs = _checked(staleness, macs, layout, budgets)
    steps = macs.shape[0]
    # Every whole-step schedule, one per number of computed steps, to continue from.
    ladder = step_schedules(staleness, macs, layout, [min(1.0, k / steps + 1e-9) for k in range(1, steps + 1)])
    ladder.append(GreedySchedule(STEPS, 1.0, Mask.full(layout, steps), 1.0, 0.0))
    whole = {g.budget: g for g in step_schedules(staleness, macs, layout, budgets)}
    single = {g.budget: g for g in component_schedules(staleness, macs, layout, budgets, consumers)}
    out: list[GreedySchedule] = []

    def add(schedule: Optional[GreedySchedule]) -> None:
        if schedule is not None and not any(o.mask == schedule.mask for o in out):
            out.append(schedule)

    for budget in sorted(set(budgets), reverse=True):
        add(whole.get(budget))
        add(single.get(budget))
        above = [g for g in ladder if g.mac_fraction >= budget * (1 - 1e-9)]
        if above:
            start = min(above, key=lambda g: g.mac_fraction)
            continued = component_schedules(staleness, macs, layout, [budget], consumers, start.mask)
            add(GreedySchedule(MIXED, *[getattr(continued[0], f) for f in ("budget", "mask", "mac_fraction", "drift")])
                if continued else None)
    return out

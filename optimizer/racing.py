"""Racing: screen each candidate on a few calibration images, then on more, and render the rest only for those
that could still reach the frontier.

A candidate is first scored on ``screen`` images (one image each of a seeded choice of prompts). Its quality on all
images is estimated from them (paired with the uncached images where paired scoring is on, ``Evaluator.estimate``;
less the offset those images show on the full evaluations, ``Archive``), with a standard error from the spread of
those paired differences (pooled over every first screen so far, because two or three images say little about their
own spread). It goes on only if it might not be dominated: if the estimate plus ``margin`` standard errors reaches
the quality the frontier already has at its cost. Then the same test on twice the images (the first ones and as many
more, only the new ones rendered), and so on (``screening_stages``) until every image is scored: most candidates
near the frontier pass a first screen of two or three images, and most of those that end up dominated are dropped at
a later stage for a fraction of the full set. Only evaluations on every image enter the frontier and the schedule
file; a screen only steers the search (NSGA-II is told its latest estimate).

**Steering on few images.** With many images per candidate (the paper's 1 000), candidates near the frontier
pass every screen and are rendered on every image: racing then saves little. With ``steer_images`` set, the
stages stop at that many images and no candidate is rendered in full during the search: the search steers on
those estimates (a candidate races against the full evaluations and every other estimate on as many images),
and at its end only the frontier of estimates is rendered in full (``Search.verify``; the points a schedule file
keeps first), until that frontier is made of full evaluations only.

``Archive`` is what those decisions are made from: the evaluations the search has processed, in its
order. It is rebuilt from the database (every row up to the insertion number the checkpoint records), so a
resumed run makes the very same decisions as an uninterrupted one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np

from .calibration import CalibrationItem
from .database import StoredEvaluation
from .evaluate import Evaluation
from .report import pareto_front


@dataclass(frozen=True)
class RacingConfig:
    screen_images: int                 # calibration images of a candidate's first screen (then twice as many …)
    margin: float = 2.0                # standard errors of optimism before a screened candidate is dropped
    steer_images: Optional[int] = None  # screens stop here; only the frontier is rendered in full (None: no cap)


def screening_items(items: Sequence[CalibrationItem], count: int, seed: int) -> tuple[int, ...]:
    """``count`` calibration images (indices, in calibration order) to screen on: one image of each prompt, prompts
    in a seeded order, then second images, and so on; many prompts tell more than many seeds of one."""
    by_prompt: dict[int, list[int]] = {}
    for index, item in enumerate(items):
        by_prompt.setdefault(item.prompt_index, []).append(index)
    order = [list(by_prompt)[i] for i in np.random.default_rng([seed, 0x5C12EE]).permutation(len(by_prompt))]
    chosen: list[int] = []
    depth = 0
    while len(chosen) < min(count, len(items)):
        for prompt in order:
            if depth < len(by_prompt[prompt]) and len(chosen) < count:
                chosen.append(by_prompt[prompt][depth])
        depth += 1
    return tuple(sorted(chosen))


def screening_stages(items: Sequence[CalibrationItem], first: int, seed: int,
                     last: Optional[int] = None) -> tuple[tuple[int, ...], ...]:
    """The images (indices, in calibration order) of each screening stage: ``first``, then twice as many each stage
    while fewer than all (each stage's images include the previous stage's: they are not rendered again); with
    ``last``, no stage has more than ``last`` images and the last stage has exactly that many."""
    end = len(items) if last is None else min(last, len(items))
    stages = []
    count = min(first, end)
    while count < end:
        stages.append(screening_items(items, count, seed))
        count *= 2
    if last is not None and end < len(items):
        stages.append(screening_items(items, end, seed))
    return tuple(stages)


class Archive:
    """The evaluations the search has processed: the frontier of the full ones, every genome's best estimate,
    the estimates on ``steer_images`` images, the spread of screens' paired differences, the offset of each
    screen's images, and the images they rendered.

    **Offset.** Every screen of a run is on the same seeded images (``screening_stages``), so what makes those images
    easier or harder than the rest for a cached schedule shifts every estimate alike; pairing with the uncached
    images cannot remove it when the uncached image scores the same everywhere (fidelity). The full evaluations
    measure it: on a screen's images their paired mean minus their mean on every image, averaged over the full
    evaluations so far. Estimates are read with it subtracted (``estimate``); before any full evaluation it is 0.
    The FORA baselines, measured in full first, pin it within about 0.05 dB (``benchmarks/README.md``,
    fourteenth round)."""

    def __init__(self, steer_images: Optional[int] = None):
        self.steer_images = steer_images
        self.last_seq = 0
        self.full: dict[str, tuple[float, float]] = {}           # genome hash -> (quality, cost)
        self.images = 0
        self._latest: dict[str, tuple[np.ndarray, Evaluation]] = {}  # genome hash -> genome, full or latest screen
        self._steered: dict[str, Evaluation] = {}                # genome hash -> its screen on steer_images images
        self._dof = 0                                            # pooled variance of the paired differences
        self._sum_squares = 0.0                                  # (of first screens)
        self._screened: set[str] = set()
        self._full_rows = 0
        self._deviations: Optional[np.ndarray] = None            # per image, summed over the full evaluations:
        self._offsets: dict[tuple[int, ...], float] = {}         # paired difference - their mean (``offset``)

    def add(self, row: StoredEvaluation, differences: np.ndarray) -> None:
        """``differences``: what the row's quality averages per image (``Evaluator.differences``)."""
        self.last_seq = max(self.last_seq, row.seq)
        self.images += row.evaluation.images
        ev = row.evaluation
        if row.full:
            self.full[row.genome_hash] = (ev.quality, ev.cost)
            deviation = np.asarray(differences, dtype=np.float64) - float(np.mean(differences))
            self._deviations = deviation if self._deviations is None else self._deviations + deviation
            self._full_rows += 1
            self._offsets.clear()
        if row.full or row.genome_hash not in self.full:
            self._latest[row.genome_hash] = (row.genome, ev)
        if not row.full and len(ev.items) == self.steer_images:
            self._steered[row.genome_hash] = ev
        if not row.full and row.genome_hash not in self._screened:  # a first screen: later stages repeat its images
            self._screened.add(row.genome_hash)
            if len(differences) > 1:
                self._dof += len(differences) - 1
                self._sum_squares += float(np.var(differences, ddof=1)) * (len(differences) - 1)

    def offset(self, items: Sequence[int]) -> float:
        """How far an estimate on the calibration images ``items`` lies above the mean on every image, on average
        over the full evaluations so far (0 on every image, or before any full evaluation)."""
        if not items or self._deviations is None:
            return 0.0
        key = tuple(items)
        if key not in self._offsets:
            self._offsets[key] = float(np.mean(self._deviations[list(key)])) / self._full_rows
        return self._offsets[key]

    def estimate(self, ev: Evaluation) -> float:
        """``ev``'s quality, less the offset of its images: what racing, steering and the surrogate go by."""
        return ev.quality - self.offset(ev.items)

    @property
    def best(self) -> dict[str, tuple[np.ndarray, float, float]]:
        """Genome hash -> (genome, quality, cost): the full evaluation where there is one, else the latest estimate."""
        return {k: (genome, self.estimate(ev), ev.cost) for k, (genome, ev) in self._latest.items()}

    @property
    def steered(self) -> dict[str, tuple[float, float]]:
        """Genome hash -> (estimate, cost) on ``steer_images`` images."""
        return {k: (self.estimate(ev), ev.cost) for k, ev in self._steered.items()}

    def pooled_sd(self) -> Optional[float]:
        return math.sqrt(self._sum_squares / self._dof) if self._dof else None

    def frontier(self) -> list[tuple[float, float]]:
        keys = pareto_front(list(self.full.items()))
        return [self.full[k] for k in keys]

    def steering(self) -> dict[str, tuple[float, float]]:
        """What the search steers by: the full evaluations and, for genomes without one, their estimates on
        ``steer_images`` images (only the full evaluations without a cap)."""
        return {**{k: v for k, v in self.steered.items() if k not in self.full}, **self.full}

    def steering_frontier(self) -> list[str]:
        """The keys of ``steering``'s Pareto frontier."""
        return pareto_front(list(self.steering().items()))


def pooled_sd(samples: Sequence[np.ndarray]) -> Optional[float]:
    """The standard deviation pooled over ``samples`` (each about its own mean), as ``Archive`` pools first screens;
    None without a sample of two or more."""
    dof = sum(len(x) - 1 for x in samples if len(x) > 1)
    if not dof:
        return None
    return math.sqrt(sum(float(np.var(x, ddof=1)) * (len(x) - 1) for x in samples if len(x) > 1) / dof)


def standard_error(differences: np.ndarray, pooled_sd: Optional[float], total: int) -> float:
    """Of a mean of ``differences`` (k of ``total`` images, drawn without replacement) as an estimate of the mean over
    all: the larger of the screen's own and the pooled spread, with the finite-population correction."""
    k = len(differences)
    known = [v for v in (float(np.std(differences, ddof=1)) if k > 1 else None, pooled_sd) if v is not None]
    if not known:  # one image and no screen before it: nothing is known about the spread
        return math.inf
    return max(known) / math.sqrt(k) * math.sqrt(max(0.0, 1.0 - k / total))


def could_reach_frontier(estimate: float, error: float, cost: float, measured: Iterable[tuple[float, float]],
                         margin: float) -> bool:
    """Not dominated by more than ``margin`` standard errors by the best of ``measured`` (full-fidelity (quality, cost)
    pairs, e.g. ``Archive.full``'s values) at no more than ``cost``; nothing measured as cheap: it could."""
    best = max((q for q, c in measured if c <= cost), default=None)
    return best is None or estimate + margin * error >= best

"""Surrogate pre-screening of offspring (as MSuNAS/NSGANetV2 do): propose many, evaluate the predicted best few.

Each offspring generation, NSGA-II's own operators (selection, crossover, mutation, step moves) propose
``pool`` candidates; a ridge regression on the genome bits, fitted on every evaluation the search has
processed (``racing.Archive``: full evaluations, and screens' estimates where there is no full one),
predicts their quality. Their cost needs no model: MACs follow from the mask (with ``--cost latency`` the MAC
fraction stands in for it when ranking). The ``evaluate`` candidates chosen are those predicted to add the most
hypervolume to the measured frontier (``choose``), and only they are evaluated and told to NSGA-II.

A surrogate that ranks badly would steer the search astray, so its rank agreement is checked on the
latest evaluations: Kendall's tau between what it predicted (before each evaluation) and what was
measured. Below ``min_tau`` the next generations are plain NSGA-II offspring, which the surrogate keeps
predicting, so it takes over again once it agrees.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from .report import hypervolume

RIDGE_PENALTIES = tuple(10.0 ** e for e in range(-4, 3))   # × the mean eigenvalue; chosen by leave-one-out error
MAX_TRAINING = 1024                                         # latest evaluations a fit uses


@dataclass(frozen=True)
class SurrogateConfig:
    pool: int = 300                   # offspring proposed per generation
    evaluate: int = 4                 # of them evaluated (the predicted best)
    min_tau: float = 0.3              # rank agreement below which plain NSGA-II offspring are used
    window: int = 24                  # latest predicted evaluations the agreement is measured on
    min_training: int = 8             # evaluations before the surrogate is used at all


@dataclass
class SurrogateState:
    """What the search remembers between generations (in its checkpoint)."""

    active: bool = True
    agreement: list[tuple[float, float]] = field(default_factory=list)   # (predicted, measured), latest last
    tau: Optional[float] = None

    def record(self, predicted: Sequence[float], measured: Sequence[float], config: SurrogateConfig) -> None:
        """Add a generation's predictions and measurements; switch on or off by the agreement of the latest."""
        self.agreement = (self.agreement + list(zip(map(float, predicted), map(float, measured))))[-config.window:]
        if len(self.agreement) >= 6:
            self.tau = kendall_tau([p for p, _ in self.agreement], [m for _, m in self.agreement])
            self.active = self.tau >= config.min_tau


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b (as ``scipy.stats.kendalltau``, whose import alone costs half a second); 0 where it is
    undefined (a constant input). Quadratic: for the few dozen pairs of the agreement window."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    dx = np.sign(x[:, None] - x[None, :])
    dy = np.sign(y[:, None] - y[None, :])
    upper = np.triu_indices(len(x), k=1)
    concordance = float((dx * dy)[upper].sum())
    pairs_x, pairs_y = float(np.abs(dx[upper]).sum()), float(np.abs(dy[upper]).sum())
    if pairs_x == 0 or pairs_y == 0:
        return 0.0
    return concordance / math.sqrt(pairs_x * pairs_y)


class RidgeModel:
    """Quality from genome bits: ridge regression in its dual form (fewer evaluations than bits), the penalty chosen
    by the exact leave-one-out error of each."""

    def __init__(self, genomes: np.ndarray, qualities: np.ndarray):
        X = np.asarray(genomes, dtype=np.float64)
        y = np.asarray(qualities, dtype=np.float64)
        self.x_mean, self.y_mean = X.mean(axis=0), float(y.mean())
        self.X = X - self.x_mean
        yc = y - self.y_mean
        eigenvalues, U = np.linalg.eigh(self.X @ self.X.T)
        eigenvalues = np.clip(eigenvalues, 0.0, None)
        Uy = U.T @ yc
        best = None
        scale = max(float(eigenvalues.mean()), 1e-12)
        for penalty in (scale * r for r in RIDGE_PENALTIES):
            shrink = eigenvalues / (eigenvalues + penalty)
            fitted = U @ (shrink * Uy)
            leverage = np.einsum("ij,j,ij->i", U, shrink, U) + 1.0 / len(y)   # the mean is fitted too
            loo = np.mean(((yc - fitted) / np.clip(1.0 - leverage, 1e-9, None)) ** 2)
            if best is None or loo < best[0]:
                best = (loo, penalty)
        self.penalty = best[1]
        self.alpha = U @ (Uy / (eigenvalues + self.penalty))

    def predict(self, genomes: np.ndarray) -> np.ndarray:
        Xn = np.asarray(genomes, dtype=np.float64) - self.x_mean
        return self.y_mean + (Xn @ self.X.T) @ self.alpha


def fit(best: dict, min_training: int) -> Optional[RidgeModel]:
    """A model of the archive's best estimates (``racing.Archive.best``); None with fewer than ``min_training``."""
    rows = list(best.values())[-MAX_TRAINING:]
    if len(rows) < max(2, min_training):
        return None
    return RidgeModel(np.array([g for g, _, _ in rows]), np.array([q for _, q, _ in rows]))


def choose(predicted: np.ndarray, costs: np.ndarray, frontier: Sequence[tuple[float, float]], count: int,
           quality_ref: float) -> list[int]:
    """Indices of the ``count`` candidates (predicted quality, cost) that add the most hypervolume (above
    ``quality_ref``, below cost 1) to the measured ``frontier`` (quality, cost), chosen one at a time, each counted
    into the frontier at its prediction before the next (so the choices spread over the frontier's gaps). Where
    none adds any, the ones predicted nearest the frontier. Non-dominated sorting with crowding, which this
    replaces, preferred the front's ends: mostly schedules cheaper than anything measured and worse than the
    hypervolume's reference, which can never improve the frontier."""
    front = list(frontier)
    base = hypervolume(front, quality_ref)
    remaining = list(range(len(predicted)))
    chosen: list[int] = []
    while remaining and len(chosen) < count:
        gains = np.array([hypervolume(front + [(float(predicted[i]), float(costs[i]))], quality_ref) - base
                          for i in remaining])
        if gains.max() > 0:
            pick = remaining[int(np.argmax(gains))]
        else:
            shortfalls = [_shortfall(float(predicted[i]), float(costs[i]), front, quality_ref) for i in remaining]
            pick = remaining[int(np.argmin(shortfalls))]
        chosen.append(pick)
        remaining.remove(pick)
        front.append((float(predicted[pick]), float(costs[pick])))
        base = hypervolume(front, quality_ref)
    return chosen


def _shortfall(quality: float, cost: float, frontier: Sequence[tuple[float, float]], quality_ref: float) -> float:
    """How far below the frontier (the best quality at no more cost, else ``quality_ref``) ``quality`` lies."""
    if cost >= 1.0:
        return math.inf  # saves nothing
    return max([quality_ref] + [q for q, c in frontier if c <= cost]) - quality

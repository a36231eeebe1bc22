"""Scoring one schedule: its calibration images through the quality metric, and its cost.

The full-computation images are rendered once: they are the references of reference metrics
(fidelity) and of paired scoring, and give the cost model the model's real shapes and the no-caching
latency. A run directory keeps them (``References``), so a resumed run does not render them again.

A schedule may be scored on some of the calibration images only (racing screens candidates on a few):
its quality is then an estimate of the mean over all of them. With **paired scoring** the estimate is
the no-caching mean plus the mean difference to the uncached image of the same prompt and seed, so a
prompt that every schedule renders well or badly cancels out; without it, the plain mean of the scored
images. On all images both are the plain mean.
"""
from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from ecad_nodes.schedule import Mask

from .backend import Backend, ImageCost
from .calibration import CalibrationItem

COSTS = ("macs", "macs-attention", "latency")


@dataclass
class Timings:
    model: float = 0.0      # sampling
    decode: float = 0.0     # latent -> RGB
    metric: float = 0.0     # scoring

    def add(self, other: "Timings") -> None:
        self.model += other.model
        self.decode += other.decode
        self.metric += other.metric

    @property
    def total(self) -> float:
        return self.model + self.decode + self.metric


@dataclass
class Evaluation:
    quality: float                      # mean metric score over the calibration images (estimated from `items`)
    cost: float                         # the cost objective: a fraction of the full computation's
    macs: float                         # MACs of one image
    latency_ms: float                   # sampling time of one image
    scores: np.ndarray                  # one score per scored image, in the order of `items`
    timings: Timings = field(default_factory=Timings)
    items: tuple[int, ...] = ()         # the calibration images scored (indices); () = all of them
    images: int = 0                     # images rendered for this evaluation (earlier ones reused are not)

    def fidelity(self, total: int) -> int:
        """How many of the ``total`` calibration images the quality rests on."""
        return len(self.items) if self.items else total


@dataclass
class References:
    """The uncached images of the calibration set and what was measured on them."""

    images: list[Image.Image]
    scores: np.ndarray
    latency_ms: float
    image_cost: ImageCost
    timings: Timings


class Evaluator:
    def __init__(self, backend: Backend, metric, items: Sequence[CalibrationItem], cost: str = "macs",
                 paired: bool = True):
        if cost not in COSTS:
            raise ValueError(f"unknown cost {cost!r}; choose one of {', '.join(COSTS)}")
        if not items:
            raise ValueError("no calibration images: at least one prompt and one image per prompt are needed")
        self.backend, self.metric, self.items, self.cost_kind = backend, metric, list(items), cost
        self.paired = paired
        self.references: Optional[list[Image.Image]] = None
        self.reference_scores: Optional[np.ndarray] = None
        self.full: Optional[Evaluation] = None
        self.image_cost: Optional[ImageCost] = None
        self.full_macs = 0.0

    def prepare(self, stored: Optional[References] = None, recorder=None) -> Evaluation:
        """The no-caching evaluation: from ``stored`` references, else rendered (once); ``recorder``: an
        ``ecad_nodes.calibration.ChangeRecorder`` that records that render (quick calibration)."""
        if self.full is not None:
            return self.full
        made = stored if stored is not None else self._render_references(recorder)
        if len(made.images) != len(self.items):
            raise ValueError(f"{len(made.images)} references for {len(self.items)} calibration images")
        self.image_cost, self.references = made.image_cost, list(made.images)
        self.full_macs = self.image_cost.full_macs(self.backend.steps)
        self.reference_scores = np.asarray(made.scores, dtype=np.float64)
        self.full = Evaluation(float(np.mean(self.reference_scores)), 1.0, self.full_macs, made.latency_ms,
                               self.reference_scores, made.timings, images=0 if stored else len(self.items))
        return self.full

    # The two places where images are made: a backend that renders elsewhere brings an evaluator that does both
    # there (``evaluator_type``, see ``make_evaluator``).

    def _render_references(self, recorder=None) -> References:
        with recorder.recording() if recorder is not None else contextlib.nullcontext():
            return render_references(self.backend, self.metric, self.items, self.cost_kind)

    def _render_and_score(self, mask: Mask, indices: Sequence[int]) -> tuple[np.ndarray, Timings]:
        references = [self.references[i] for i in indices] if self.metric.needs_reference else None
        return render_and_score(self.backend, self.metric, mask, [self.items[i] for i in indices], references)

    def references_record(self) -> References:
        full = self.prepare()
        return References(self.references, self.reference_scores, full.latency_ms, self.image_cost, full.timings)

    def estimate(self, scores: np.ndarray, items: Sequence[int]) -> float:
        """The mean score over all calibration images, estimated from ``scores`` of ``items`` (() = all)."""
        if not items or len(items) == len(self.items):
            return float(np.mean(scores))
        if self.paired:
            return float(np.mean(self.reference_scores)
                         + np.mean(np.asarray(scores) - self.reference_scores[list(items)]))
        return float(np.mean(scores))

    def differences(self, ev: Evaluation) -> np.ndarray:
        """What the estimate averages, per scored image: the paired differences, or the plain scores."""
        self.prepare()
        items = list(ev.items) if ev.items else list(range(len(self.items)))
        return ev.scores - self.reference_scores[items] if self.paired else np.asarray(ev.scores)

    def evaluate(self, mask: Mask, items: Sequence[int] = (), known: Optional[Evaluation] = None) -> Evaluation:
        """``mask`` scored on the calibration images ``items`` (() = all); the images ``known`` (an evaluation of the
        same mask on fewer images) already scored are not rendered again."""
        full = self.prepare()
        wanted = list(items) if items and len(items) < len(self.items) else list(range(len(self.items)))
        reused: dict[int, float] = {}
        reused_ms = 0.0
        if known is not None:
            known_items = list(known.items) if known.items else list(range(len(self.items)))
            reused = {i: s for i, s in zip(known_items, known.scores) if i in set(wanted)}
            reused_ms = known.latency_ms * len(reused)
        todo = [i for i in wanted if i not in reused]
        timings = Timings()
        new_scores: dict[int, float] = {}
        if todo:
            scored, timings = self._render_and_score(mask, todo)
            new_scores = dict(zip(todo, scored))
        scores = np.array([reused[i] if i in reused else new_scores[i] for i in wanted], dtype=np.float64)
        scored = () if len(wanted) == len(self.items) else tuple(wanted)
        macs = self.image_cost.macs(mask)
        latency_ms = (reused_ms + 1e3 * timings.model) / len(wanted)
        cost = latency_ms / full.latency_ms if self.cost_kind == "latency" else macs / self.full_macs
        return Evaluation(self.estimate(scores, scored), cost, macs, latency_ms, scores, timings, scored, len(todo))


def make_evaluator(backend: Backend, metric, items: Sequence[CalibrationItem], cost: str = "macs",
                   paired: bool = True) -> Evaluator:
    """An evaluator of ``items`` on ``backend``: the backend's own kind where it has one (``evaluator_type``: the
    Ray workers', which render and score on the actors holding the model, ``optimizer/workers.py``), else one that
    renders and scores in this process."""
    return getattr(backend, "evaluator_type", Evaluator)(backend, metric, items, cost, paired)


def score_images(metric, images: Sequence[Image.Image], prompts: Sequence[str],
                 references: Optional[Sequence[Image.Image]]) -> np.ndarray:
    """One score per image; ``references``: the uncached images of the same prompts and seeds (for metrics that
    compare with them)."""
    scores = np.asarray(metric.score(images, prompts, references=references if metric.needs_reference else None),
                        dtype=np.float64)
    if scores.shape != (len(images),):
        raise RuntimeError(f"metric {metric.name} returned {scores.shape} scores for {len(images)} images")
    return scores


def render_and_score(backend: Backend, metric, mask: Optional[Mask], items: Sequence[CalibrationItem],
                     references: Optional[Sequence[Image.Image]]) -> tuple[np.ndarray, Timings]:
    """``items`` rendered with ``mask`` and scored: a pure function of its arguments (every image's noise comes from
    its own seed), wherever it runs."""
    rendered = backend.render(mask, items)
    start = time.perf_counter()
    scores = score_images(metric, rendered.images, [it.prompt for it in items], references)
    return scores, Timings(rendered.model_seconds, rendered.decode_seconds, time.perf_counter() - start)


def render_references(backend: Backend, metric, items: Sequence[CalibrationItem], cost: str) -> References:
    """The uncached images of ``items``, scored (against themselves, for reference metrics), the cost model the
    render gave the backend and the no-caching latency."""
    rendered = backend.render(None, items)
    image_cost = backend.image_cost(attention_matmuls=cost == "macs-attention")
    start = time.perf_counter()
    scores = score_images(metric, rendered.images, [it.prompt for it in items], rendered.images)
    timings = Timings(rendered.model_seconds, rendered.decode_seconds, time.perf_counter() - start)
    return References(rendered.images, scores, 1e3 * rendered.model_seconds / len(items), image_cost, timings)


def measure_latency(backend: Backend, masks: dict[str, Optional[Mask]], items: Sequence[CalibrationItem],
                    repeats: int = 3) -> dict[str, float]:
    """Median sampling seconds per image of each schedule (None = full computation), runs interleaved
    (A, B, C, A, B, C, …) after one warm-up round so drift hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in masks}
    for round_ in range(repeats + 1):
        for name, mask in masks.items():
            rendered = backend.render(mask, items)
            if round_:
                times[name].append(rendered.model_seconds / len(items))
    return {name: statistics.median(t) for name, t in times.items()}

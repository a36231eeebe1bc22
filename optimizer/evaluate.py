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
        self.prompts = [it.prompt for it in self.items]
        self.references: Optional[list[Image.Image]] = None
        self.reference_scores: Optional[np.ndarray] = None
        self.full: Optional[Evaluation] = None
        self.image_cost: Optional[ImageCost] = None
        self.full_macs = 0.0

    def prepare(self, stored: Optional[References] = None) -> Evaluation:
        """The no-caching evaluation: from ``stored`` references, else rendered (once)."""
        if self.full is not None:
            return self.full
        if stored is None:
            rendered = self.backend.render(None, self.items)
            image_cost = self.backend.image_cost(attention_matmuls=self.cost_kind == "macs-attention")
            self.references = rendered.images
            start = time.perf_counter()
            scores = self._score(rendered.images, range(len(self.items)))
            timings = Timings(rendered.model_seconds, rendered.decode_seconds, time.perf_counter() - start)
            latency_ms = 1e3 * rendered.model_seconds / len(self.items)
        else:
            if len(stored.images) != len(self.items):
                raise ValueError(f"{len(stored.images)} stored references for {len(self.items)} calibration images")
            image_cost, self.references, scores = stored.image_cost, list(stored.images), stored.scores
            timings, latency_ms = stored.timings, stored.latency_ms
        self.image_cost = image_cost
        self.full_macs = image_cost.full_macs(self.backend.steps)
        self.reference_scores = np.asarray(scores, dtype=np.float64)
        self.full = Evaluation(float(np.mean(self.reference_scores)), 1.0, self.full_macs, latency_ms,
                               self.reference_scores, timings, images=0 if stored else len(self.items))
        return self.full

    def references_record(self) -> References:
        full = self.prepare()
        return References(self.references, self.reference_scores, full.latency_ms, self.image_cost, full.timings)

    def _score(self, images: list[Image.Image], indices: Sequence[int]) -> np.ndarray:
        indices = list(indices)
        references = [self.references[i] for i in indices] if self.metric.needs_reference else None
        scores = np.asarray(self.metric.score(images, [self.prompts[i] for i in indices], references=references),
                            dtype=np.float64)
        if scores.shape != (len(images),):
            raise RuntimeError(f"metric {self.metric.name} returned {scores.shape} scores for {len(images)} images")
        return scores

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
            rendered = self.backend.render(mask, [self.items[i] for i in todo])
            start = time.perf_counter()
            new_scores = dict(zip(todo, self._score(rendered.images, todo)))
            timings = Timings(rendered.model_seconds, rendered.decode_seconds, time.perf_counter() - start)
        scores = np.array([reused[i] if i in reused else new_scores[i] for i in wanted], dtype=np.float64)
        scored = () if len(wanted) == len(self.items) else tuple(wanted)
        macs = self.image_cost.macs(mask)
        latency_ms = (reused_ms + 1e3 * timings.model) / len(wanted)
        cost = latency_ms / full.latency_ms if self.cost_kind == "latency" else macs / self.full_macs
        return Evaluation(self.estimate(scores, scored), cost, macs, latency_ms, scores, timings, scored, len(todo))


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

"""Scoring one schedule: its calibration images through the quality metric, and its cost.

The full-computation images are rendered once: they are the references of reference metrics
(fidelity) and give the cost model the model's real shapes and the no-caching latency.
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
    quality: float                      # mean metric score, higher is better
    cost: float                         # the cost objective: a fraction of the full computation's
    macs: float                         # MACs of one image
    latency_ms: float                   # sampling time of one image
    scores: np.ndarray                  # one score per calibration image
    timings: Timings = field(default_factory=Timings)


class Evaluator:
    def __init__(self, backend: Backend, metric, items: Sequence[CalibrationItem], cost: str = "macs"):
        if cost not in COSTS:
            raise ValueError(f"unknown cost {cost!r}; choose one of {', '.join(COSTS)}")
        if not items:
            raise ValueError("no calibration images: at least one prompt and one image per prompt are needed")
        self.backend, self.metric, self.items, self.cost_kind = backend, metric, list(items), cost
        self.prompts = [it.prompt for it in self.items]
        self.references: Optional[list[Image.Image]] = None
        self.full: Optional[Evaluation] = None
        self.image_cost: Optional[ImageCost] = None
        self.full_macs = 0.0

    def prepare(self) -> Evaluation:
        """Render the full computation once: references, the cost model, the no-caching quality and latency."""
        if self.full is not None:
            return self.full
        rendered = self.backend.render(None, self.items)
        self.references = rendered.images
        self.image_cost = self.backend.image_cost(attention_matmuls=self.cost_kind == "macs-attention")
        self.full_macs = self.image_cost.full_macs(self.backend.steps)
        start = time.perf_counter()
        scores = self._score(rendered.images)
        timings = Timings(rendered.model_seconds, rendered.decode_seconds, time.perf_counter() - start)
        self.full = Evaluation(float(np.mean(scores)), 1.0, self.full_macs,
                               1e3 * rendered.model_seconds / len(self.items), scores, timings)
        return self.full

    def _score(self, images: list[Image.Image]) -> np.ndarray:
        references = self.references if self.metric.needs_reference else None
        scores = np.asarray(self.metric.score(images, self.prompts, references=references), dtype=np.float64)
        if scores.shape != (len(images),):
            raise RuntimeError(f"metric {self.metric.name} returned {scores.shape} scores for {len(images)} images")
        return scores

    def evaluate(self, mask: Mask) -> Evaluation:
        full = self.prepare()
        rendered = self.backend.render(mask, self.items)
        start = time.perf_counter()
        scores = self._score(rendered.images)
        timings = Timings(rendered.model_seconds, rendered.decode_seconds, time.perf_counter() - start)
        macs = self.image_cost.macs(mask)
        latency_ms = 1e3 * rendered.model_seconds / len(self.items)
        cost = latency_ms / full.latency_ms if self.cost_kind == "latency" else macs / self.full_macs
        return Evaluation(float(np.mean(scores)), cost, macs, latency_ms, scores, timings)


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

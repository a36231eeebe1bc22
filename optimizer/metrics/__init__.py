"""Quality metrics the schedule optimizer maximises.

Every metric scores a batch of generated images, one float per image, higher is better; the
optimizer's objective is the mean. ``needs_reference`` metrics compare each image with the image
the same prompt and seed give with full compute (no caching).

    metric = make_metric("fidelity")
    scores = metric.score(images, prompts, references=full_compute_images)

Known metrics:
- ``image_reward``: ImageReward (Xu et al. 2023) human-preference score of image vs prompt, the
  objective of the ECAD paper. Loaded from local files only (see ``image_reward.py``).
- ``fidelity``: PSNR (dB) against the full-compute image; SSIM alongside via ``details()``.
- ``random_critic``: a small convolutional network with fixed random weights (tiny models): a score the
  uncached image does not maximise, standing in for a learned reward where there are no real pictures.
"""
from __future__ import annotations

from typing import Callable, Optional, Protocol, Sequence, runtime_checkable

import numpy as np
from PIL import Image


class MetricUnavailable(RuntimeError):
    """The files (weights, configs) a metric needs are missing; the message says which and where."""


@runtime_checkable
class QualityMetric(Protocol):
    name: str             # "image_reward" | "fidelity" | "random_critic"
    short_name: str       # for labels: "IR", "PSNR"
    needs_reference: bool  # score() needs the full-compute images of the same prompt/seed

    def score(self, images: Sequence[Image.Image], prompts: Sequence[str],
              references: Optional[Sequence[Image.Image]] = None) -> np.ndarray:
        """One float per image, higher is better."""
        ...


def _make_fidelity(**options) -> QualityMetric:
    from .fidelity import FidelityMetric
    return FidelityMetric(**options)


def _make_image_reward(**options) -> QualityMetric:
    from .image_reward import ImageRewardMetric
    return ImageRewardMetric.load(**options)


def _make_random_critic(**options) -> QualityMetric:
    from .random_critic import RandomCriticMetric
    return RandomCriticMetric(**options)


_FACTORIES: dict[str, Callable[..., QualityMetric]] = {
    "image_reward": _make_image_reward,
    "fidelity": _make_fidelity,
    "random_critic": _make_random_critic,
}


def known_metrics() -> list[str]:
    return list(_FACTORIES)


def make_metric(name: str, **options) -> QualityMetric:
    """The metric called ``name``; ``options`` go to its constructor (e.g. image_reward's file paths)."""
    factory = _FACTORIES.get(name)
    if factory is None:
        raise ValueError(f"unknown quality metric {name!r}; known metrics: {', '.join(known_metrics())}")
    return factory(**options)


__all__ = ["QualityMetric", "MetricUnavailable", "make_metric", "known_metrics"]

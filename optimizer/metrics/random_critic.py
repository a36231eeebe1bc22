"""A quality score the uncached image does not maximise, for tiny random-weight models: a fixed random critic.

Fidelity rewards closeness to the uncached image, so it is maximised by no caching at all, and a search
tuned on it only ever trades closeness for speed. A learned reward such as ImageReward is not: a cached
image can score higher than the uncached one. Tiny models make no pictures a real reward could judge, so
this metric stands in for one: a small convolutional network with fixed random weights scores each image.
It is an arbitrary but smooth function of the pixels (small changes, small score changes), so schedules
trade it against cost the way they would trade a real reward, and some cached images score higher.

Deterministic across runs and machines: the weights come from NumPy's PCG64 generator with a fixed seed
(the same on every platform), images are resized by PIL (integer arithmetic), the network runs in float64
and scores are rounded to 9 decimals, far below any difference between schedules.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from PIL import Image

CRITIC_SEED = 20240612
INPUT_SIZE = 64
LAYERS = ((3, 16, 5, 2), (16, 32, 3, 2), (32, 32, 3, 2))   # (in channels, out channels, kernel, stride)
DECIMALS = 9


def _weights(seed: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    rng = np.random.Generator(np.random.PCG64(seed))
    convolutions = []
    for cin, cout, k, _ in LAYERS:
        fan_in = cin * k * k
        convolutions.append((rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / fan_in),
                             rng.standard_normal(cout) * 0.1))
    head = rng.standard_normal(LAYERS[-1][1]) / np.sqrt(LAYERS[-1][1])
    return convolutions, head


def _convolve(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride: int) -> np.ndarray:
    """'valid' convolution of (C, H, W) with (O, C, k, k), then tanh."""
    k = weight.shape[-1]
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))[:, ::stride, ::stride]
    return np.tanh(np.einsum("chwij,ocij->ohw", windows, weight, optimize=False) + bias[:, None, None])


class RandomCriticMetric:
    name = "random_critic"
    short_name = "RC"
    needs_reference = False

    def __init__(self, seed: int = CRITIC_SEED):
        self.seed = seed
        self._convolutions, self._head = _weights(seed)

    def _score_one(self, image: Image.Image) -> float:
        pixels = image.convert("RGB").resize((INPUT_SIZE, INPUT_SIZE), Image.BILINEAR)
        x = np.asarray(pixels, dtype=np.float64).transpose(2, 0, 1) / 255.0 - 0.5
        for (weight, bias), (_, _, _, stride) in zip(self._convolutions, LAYERS):
            x = _convolve(x, weight, bias, stride)
        return round(float(x.mean(axis=(1, 2)) @ self._head), DECIMALS)

    def score(self, images: Sequence[Image.Image], prompts: Sequence[str],
              references: Optional[Sequence[Image.Image]] = None) -> np.ndarray:
        return np.array([self._score_one(image) for image in images], dtype=np.float64)

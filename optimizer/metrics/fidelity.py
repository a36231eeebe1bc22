"""Fidelity to the full-compute image: PSNR (the score) and SSIM.

Both compare a cached-schedule image with the image the same prompt and seed give without
caching, so they measure how much the schedule changes the output, not how good it looks.

- PSNR: over all RGB pixels of 8-bit images (data range 255), ``10·log10(255² / MSE)``. Identical
  images have MSE 0; their PSNR is capped at ``PSNR_CAP_DB`` (100 dB) so means over a batch stay
  finite. The cap binds only for near-identical images (one 8-bit value off by one in a 1024² RGB
  image is ~113 dB), far beyond visible differences.
- SSIM: Wang et al. 2004 on the BT.601 luminance ``Y = 0.299 R + 0.587 G + 0.114 B`` (0..255),
  Gaussian window 11×11 with σ = 1.5, K1 = 0.01, K2 = 0.03, "valid" filtering (no padding), mean
  over the map. Images smaller than 11 pixels on a side use the largest odd window that fits.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from PIL import Image

PSNR_CAP_DB = 100.0
DATA_RANGE = 255.0
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


@dataclass(frozen=True)
class FidelityScores:
    psnr: np.ndarray  # dB, one per image, capped at PSNR_CAP_DB
    ssim: np.ndarray  # in [-1, 1], one per image


def _rgb(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float64)


def psnr(image: np.ndarray, reference: np.ndarray) -> float:
    mse = float(np.mean((image - reference) ** 2))
    if mse == 0.0:
        return PSNR_CAP_DB
    return min(PSNR_CAP_DB, 10.0 * np.log10(DATA_RANGE ** 2 / mse))


def _gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    k = np.exp(-(x ** 2) / (2 * sigma ** 2))
    return k / k.sum()


def _filter_valid(plane: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering of a 2-D plane with a 1-D kernel along both axes."""
    windows = np.lib.stride_tricks.sliding_window_view(plane, len(kernel), axis=0)
    plane = windows @ kernel
    windows = np.lib.stride_tricks.sliding_window_view(plane, len(kernel), axis=1)
    return windows @ kernel


def ssim(image: np.ndarray, reference: np.ndarray) -> float:
    """SSIM of two RGB arrays (H, W, 3) in 0..255, on luminance."""
    weights = np.array([0.299, 0.587, 0.114])
    x, y = image @ weights, reference @ weights
    size = min(SSIM_WINDOW, *x.shape)
    size -= 1 - size % 2  # odd
    kernel = _gaussian_kernel(size, SSIM_SIGMA)
    mu_x, mu_y = _filter_valid(x, kernel), _filter_valid(y, kernel)
    var_x = _filter_valid(x * x, kernel) - mu_x ** 2
    var_y = _filter_valid(y * y, kernel) - mu_y ** 2
    cov = _filter_valid(x * y, kernel) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * DATA_RANGE) ** 2, (SSIM_K2 * DATA_RANGE) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return float(ssim_map.mean())


class FidelityMetric:
    name = "fidelity"
    short_name = "PSNR"
    needs_reference = True

    def details(self, images: Sequence[Image.Image],
                references: Optional[Sequence[Image.Image]]) -> FidelityScores:
        if references is None:
            raise ValueError("the fidelity metric compares each image with its full-compute reference image; "
                             "no references were given")
        if len(images) != len(references):
            raise ValueError(f"fidelity: {len(images)} images but {len(references)} reference images")
        psnrs, ssims = [], []
        for i, (image, reference) in enumerate(zip(images, references)):
            if image.size != reference.size:
                raise ValueError(f"fidelity: image {i} is {image.size[0]}×{image.size[1]} but its reference is "
                                 f"{reference.size[0]}×{reference.size[1]}")
            a, b = _rgb(image), _rgb(reference)
            psnrs.append(psnr(a, b))
            ssims.append(ssim(a, b))
        return FidelityScores(np.array(psnrs, dtype=np.float64), np.array(ssims, dtype=np.float64))

    def score(self, images: Sequence[Image.Image], prompts: Sequence[str],
              references: Optional[Sequence[Image.Image]] = None) -> np.ndarray:
        return self.details(images, references).psnr

"""The metric interface and the fidelity metric (PSNR/SSIM against the full-compute image)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter

from optimizer.metrics import MetricUnavailable, QualityMetric, known_metrics, make_metric
from optimizer.metrics.fidelity import PSNR_CAP_DB, FidelityMetric


def _image(array: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), "RGB")


def _random_image(seed: int, size=(48, 40)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # smooth content so SSIM is meaningful
    base = rng.uniform(0, 255, size=(size[0] // 8, size[1] // 8, 3))
    return np.kron(base, np.ones((8, 8, 1)))


def test_registry_names_and_unknown_metric():
    assert set(known_metrics()) >= {"image_reward", "fidelity"}
    metric = make_metric("fidelity")
    assert isinstance(metric, QualityMetric)
    assert (metric.name, metric.short_name, metric.needs_reference) == ("fidelity", "PSNR", True)
    with pytest.raises(ValueError) as e:
        make_metric("clip_score")
    assert "clip_score" in str(e.value) and "image_reward" in str(e.value) and "fidelity" in str(e.value)
    assert issubclass(MetricUnavailable, RuntimeError)


def test_psnr_of_a_known_error():
    reference = np.full((16, 16, 3), 100.0)
    image = reference + 10.0  # MSE 100
    scores = make_metric("fidelity").score([_image(image)], ["a prompt"], references=[_image(reference)])
    assert scores.shape == (1,) and scores.dtype == np.float64
    assert scores[0] == pytest.approx(10 * math.log10(255 ** 2 / 100))


def test_identical_images_give_the_finite_cap_and_ssim_one():
    a = _image(_random_image(0))
    details = FidelityMetric().details([a, a], [a, a.copy()])
    np.testing.assert_array_equal(details.psnr, [PSNR_CAP_DB, PSNR_CAP_DB])
    np.testing.assert_allclose(details.ssim, [1.0, 1.0])
    assert np.isfinite(details.psnr.mean())


def test_more_noise_scores_lower():
    rng = np.random.default_rng(1)
    reference = _random_image(2)
    noisy = [reference + rng.normal(0, sigma, reference.shape) for sigma in (2, 10, 40)]
    details = FidelityMetric().details([_image(n) for n in noisy], [_image(reference)] * 3)
    assert np.all(np.diff(details.psnr) < 0)
    assert np.all(np.diff(details.ssim) < 0)
    assert details.ssim[0] < 1.0


def test_ssim_matches_an_independent_gaussian_filter_implementation():
    rng = np.random.default_rng(3)
    reference = _random_image(4, size=(64, 56))
    image = np.clip(reference + rng.normal(0, 15, reference.shape), 0, 255).round()
    ours = FidelityMetric().details([_image(image)], [_image(reference)]).ssim[0]

    lum = np.array([0.299, 0.587, 0.114])
    x, y = image @ lum, np.clip(reference, 0, 255).astype(np.uint8).astype(np.float64) @ lum
    f = lambda p: gaussian_filter(p, 1.5, truncate=3.5)[5:-5, 5:-5]  # 11-tap window, valid region
    mx, my = f(x), f(y)
    vx, vy, cxy = f(x * x) - mx ** 2, f(y * y) - my ** 2, f(x * y) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    expected = np.mean((2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
    assert ours == pytest.approx(expected, rel=1e-9)


def test_ssim_of_constant_images_is_the_closed_form():
    a, b = 80.0, 120.0
    details = FidelityMetric().details([_image(np.full((20, 20, 3), a))], [_image(np.full((20, 20, 3), b))])
    c1 = (0.01 * 255) ** 2
    assert details.ssim[0] == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1))


def test_tiny_images_use_a_smaller_window():
    reference = _random_image(5, size=(8, 8))
    details = FidelityMetric().details([_image(reference + 5)], [_image(reference)])
    assert np.isfinite(details.ssim).all() and 0 < details.ssim[0] < 1


def test_bad_inputs_are_clear_errors():
    metric = make_metric("fidelity")
    a = _image(_random_image(6))
    with pytest.raises(ValueError, match="reference"):
        metric.score([a], ["p"])
    with pytest.raises(ValueError, match="1 images but 2 reference"):
        metric.score([a], ["p"], references=[a, a])
    with pytest.raises(ValueError, match="40×48 but its reference is 16×16"):
        metric.score([a], ["p"], references=[_image(np.zeros((16, 16, 3)))])


def test_rgba_input_is_compared_as_rgb():
    rgb = _image(_random_image(7))
    scores = make_metric("fidelity").score([rgb.convert("RGBA")], ["p"], references=[rgb])
    assert scores[0] == PSNR_CAP_DB

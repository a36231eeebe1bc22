"""The cost model reproduces the per-step MACs stored in the paper's official schedules (ComfyUI tests:
the released models' shapes are built by ComfyUI on the meta device, no memory).

The official numbers were counted by calflops (linear layers only, no attention matrix products)
for one call of batch 2 (text and null embedding) at 256×256 px with the real model widths; they are
reproduced with ``attention_matmuls=False`` and the first step always computed (nothing is cached
before it). PixArt-Σ's numbers use 120 caption tokens, the same as PixArt-α's (not Σ's 300).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from ecad_nodes.costs import CostTable
from ecad_nodes.families.base import CallTokens
from ecad_nodes.families.flux import TinyFlux, flux_costs
from ecad_nodes.families.pixart import TinyPixArt, pixart_costs
from ecad_nodes.schedule_io import load_schedule
from conftest import REFERENCE, requires_reference

pytestmark = pytest.mark.comfy

BATCH = 2             # text and null embedding
TOLERANCE = 0.02
IMAGE_TOKENS = (256 // 16) ** 2   # 256 px: VAE /8, patch 2 -> 16×16 tokens (FLUX and PixArt)

FLUX_DEV = TinyFlux(hidden=3072, heads=24, depth=19, depth_single=38, context_dim=4096, vec_dim=768, mlp_ratio=4.0,
                    axes_dim=(16, 56, 56))
# PixArt-XL-2-256: no micro-conditioning at 256 px (the Σ-style checkpoint layout), learned sigma (8 channels out)
PIXART_XL_2 = TinyPixArt(hidden=1152, heads=16, depth=28, caption_channels=4096, max_tokens=120, sigma=True)


def _dm(spec):
    return spec.meta_model().diffusion_model


def _table(folder: str) -> CostTable:
    if folder == "flux_256":
        return flux_costs(_dm(FLUX_DEV), CallTokens(image=IMAGE_TOKENS, text=512))
    if folder in ("pixart_alpha_256", "pixart_sigma_256"):
        return pixart_costs(_dm(PIXART_XL_2), CallTokens(image=IMAGE_TOKENS, text=120))
    raise AssertionError(f"no dimensions for reference folder {folder}")


def _reference_files():
    if REFERENCE is None:
        return []
    return sorted((REFERENCE / "schedules_in_paper").glob("*/*.json"))


@requires_reference
def test_all_six_reference_schedules_are_checked():
    assert [f"{p.parent.name}/{p.stem}" for p in _reference_files()] == [
        "flux_256/ours_fast", "flux_256/ours_faster", "pixart_alpha_256/ours_fast", "pixart_alpha_256/ours_faster",
        "pixart_alpha_256/ours_fastest", "pixart_sigma_256/ours_fast"]


@requires_reference
@pytest.mark.parametrize("path", _reference_files(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_cost_model_reproduces_the_stored_macs(path):
    schedule = load_schedule(path)
    mask = schedule.points[0].mask.with_first_step_computed()
    by_step = json.loads(path.read_text())["metrics"]["by_inference_step"]
    stored = np.array([by_step[f"{s:03d}"]["macs"] for s in range(schedule.steps)], dtype=np.float64)

    ours = _table(path.parent.name).step_macs(mask) * BATCH
    np.testing.assert_allclose(ours, stored, rtol=TOLERANCE)
    assert ours.sum() == pytest.approx(stored.sum(), rel=TOLERANCE)
    # the schedules cache a lot: the comparison covers both cheap and expensive steps
    assert stored.max() / stored.min() > 10


def test_attention_products_are_the_only_difference_between_the_conventions():
    tokens = CallTokens(image=IMAGE_TOKENS, text=512)
    dm = _dm(FLUX_DEV)
    linear, with_attention = flux_costs(dm, tokens), flux_costs(dm, tokens, attention_matmuls=True)
    both = tokens.image + tokens.text
    attention = 2.0 * both * both * FLUX_DEV.hidden  # QKᵀ and AV of the joint sequence, per block
    assert with_attention.per_step_constant == linear.per_step_constant
    expected = FLUX_DEV.depth * attention + FLUX_DEV.depth_single * attention
    assert with_attention.full_macs(1) - linear.full_macs(1) == pytest.approx(expected)

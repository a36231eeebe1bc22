"""Mochi inside real ComfyUI (COMFYUI_PATH), beyond the family contract (tests/test_family_contract.py):
prompts padded as ComfyUI's Mochi text encoder pads them (to 256 tokens, the padding masked), so
the joint attention reads only each prompt's real tokens (``num_tokens``, a per-prompt constant that
makes ComfyUI run cond and uncond in separate calls) while the text projections and MLP run on all
(and the cost model counts both so);
and the layout: the last block, which does not update the text, is its own group."""
from __future__ import annotations

import pytest

from family_checks import (assert_all_compute_is_identical, assert_cached_outputs_stay_untouched,
                           assert_flops_follow_the_cost_model, assert_runs_as_planned, layout_of)

pytestmark = pytest.mark.comfy

SIZE = 64      # 8×8 latent per frame, 2 latent frames, 32 video tokens
PADDED = 24    # stands in for the encoder's 256


@pytest.fixture(scope="module")
def mochi():
    from ecad_nodes.families.mochi import TinyMochi
    spec = TinyMochi(depth=3)
    return spec, spec.build(seed=0)


def padded_prompts(spec) -> dict:
    return {"positive": spec.conditioning(1, tokens=11, padded_to=PADDED),
            "negative": spec.conditioning(2, tokens=3, padded_to=PADDED)}


def test_the_last_block_is_its_own_group(mochi):
    spec, model = mochi
    layout = layout_of(model)
    assert [(g.name, g.blocks, g.components) for g in layout.groups] == [
        ("blocks", 2, ("attn", "mlp_x", "mlp_y")), ("last_block", 1, ("attn", "mlp_x"))]


def test_all_compute_is_bit_identical_with_padded_prompts(mochi):
    spec, model = mochi
    assert_all_compute_is_identical(model, spec, steps=4, cfg=4.5, width=SIZE, height=SIZE, **padded_prompts(spec))


def test_components_run_exactly_where_the_mask_says_with_padded_prompts(mochi):
    spec, model = mochi
    assert_runs_as_planned(model, spec, cfg=4.5, width=SIZE, height=SIZE, **padded_prompts(spec))


def test_the_cost_model_counts_the_attention_over_the_real_tokens_only(mochi):
    """The text projections and MLP run on all 128 tokens, the attention on 11 of them (counting all 128 would be
    about 6 % off here): PyTorch's FLOP counter agrees."""
    spec, model = mochi
    assert_flops_follow_the_cost_model(model, spec, width=SIZE, height=SIZE,
                                       positive=spec.conditioning(1, tokens=11, padded_to=128))


def test_cached_outputs_are_never_written_into_with_padded_prompts(mochi, monkeypatch):
    """The attention zero-pads its text output back to the padded length (``o[:, :n] = y``) before projecting it."""
    spec, model = mochi
    assert_cached_outputs_stay_untouched(model, spec, monkeypatch, cfg=4.5, width=SIZE, height=SIZE,
                                         **padded_prompts(spec))

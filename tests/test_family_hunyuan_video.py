"""HunyuanVideo's own paths inside real ComfyUI (COMFYUI_PATH), beyond the family contract
(tests/test_family_contract.py): token-wise modulation (image-to-video's guiding frame) and text
attention masks, which ComfyUI applies to one batch row only, so they run with cfg 1 or with cond
and uncond in separate calls (prompts of different lengths)."""
from __future__ import annotations

import pytest
import torch

from family_checks import assert_all_compute_is_identical, assert_cached_outputs_stay_untouched, assert_runs_as_planned

pytestmark = pytest.mark.comfy

SIZE = 64  # 8×8 latent per frame, 2 latent frames, 32 image tokens


@pytest.fixture(scope="module")
def hunyuan():
    from ecad_nodes.families.hunyuan_video import TinyHunyuanVideo
    spec = TinyHunyuanVideo()
    return spec, spec.build(seed=0)


def conditioning(spec, seed: int, tokens: int | None = None, **extra) -> list:
    cond = spec.conditioning(seed, tokens)
    cond[0][1].update(extra)
    return cond


def image_to_video(spec, seed: int, tokens: int | None = None) -> list:
    """A guiding frame switches ComfyUI's HunyuanVideo to token-wise modulation (``modulation_dims``)."""
    return conditioning(spec, seed, tokens, guiding_frame_index=0)


@pytest.mark.parametrize("cfg", [1.0, 3.5], ids=["cfg1", "cfg-separate-calls"])
def test_all_compute_is_bit_identical_with_token_wise_modulation(hunyuan, cfg):
    spec, model = hunyuan
    assert_all_compute_is_identical(model, spec, cfg=cfg, width=SIZE, height=SIZE,
                                    positive=image_to_video(spec, 1), negative=image_to_video(spec, 2, tokens=5))


def test_all_compute_is_bit_identical_with_a_text_attention_mask(hunyuan):
    spec, model = hunyuan
    mask = torch.tensor([[1] * 11 + [0] * 5])
    assert_all_compute_is_identical(model, spec, cfg=3.0, width=SIZE, height=SIZE,
                                    positive=conditioning(spec, 1, attention_mask=mask),
                                    negative=conditioning(spec, 2, 5, attention_mask=torch.tensor([[1, 1, 1, 0, 0]])))


def test_components_run_exactly_where_the_mask_says_with_token_wise_modulation(hunyuan):
    spec, model = hunyuan
    assert_runs_as_planned(model, spec, cfg=4.0, width=SIZE, height=SIZE,
                           positive=image_to_video(spec, 1), negative=image_to_video(spec, 2, tokens=5))


def test_cached_outputs_are_never_written_into_with_token_wise_modulation(hunyuan, monkeypatch):
    """With ``modulation_dims`` ComfyUI's ``apply_mod`` gates in place; the cached outputs must stay as computed."""
    spec, model = hunyuan
    assert_cached_outputs_stay_untouched(model, spec, monkeypatch, cfg=3.0, width=SIZE, height=SIZE,
                                         positive=image_to_video(spec, 1), negative=image_to_video(spec, 2, tokens=5))

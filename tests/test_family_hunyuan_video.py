"""HunyuanVideo's own paths inside real ComfyUI (COMFYUI_PATH), beyond the family contract
(tests/test_family_contract.py): token-wise modulation (image-to-video's guiding frame) and text
attention masks, which ComfyUI applies to one batch row only, so they run with cfg 1 or with cond
and uncond in separate calls (prompts of different lengths)."""
from __future__ import annotations

import pytest
import torch

from ecad_nodes.choice import ScheduleChoice
from ecad_nodes.heuristics import NO_CACHING
from family_checks import (apply, assert_all_compute_is_identical, assert_cached_outputs_stay_untouched,
                           assert_flops_follow_the_cost_model, assert_runs_as_planned)
from support import last_report, sample

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


# ---------------------------------------------------------------- HunyuanVideo 1.5 (ComfyUI v0.20 and later)

SIZE_15 = 64            # a 4×4 latent per frame (16× VAE), 2 latent frames, 32 image tokens
SIGLIP_TOKENS = 9       # SigLIP-so400m at 384 px gives 729 states per image; a few stand for them
GLYPH_TOKENS = 4        # ByT5 states of the prompt's quoted text


@pytest.fixture(scope="module")
def hunyuan15():
    from ecad_nodes.families.hunyuan_video import TinyHunyuanVideo15
    spec = TinyHunyuanVideo15()
    return spec, spec.build(seed=0)


def image_to_video_15(spec, seed: int, tokens: int | None = None) -> list:
    """Conditioning as HunyuanVideo15ImageToVideo makes it (the start image's latent and mask as input channels, its
    CLIP-vision output, whose states join the text stream), plus the ByT5 states the text encoder adds for quoted
    text. The image is the same for both prompts, as the node sets it."""
    import comfy.clip_vision
    gen = torch.Generator().manual_seed(100)
    latent = spec.empty_latent(SIZE_15, SIZE_15)
    start = torch.zeros(latent.shape)
    start[:, :, :1] = torch.randn(start[:, :, :1].shape, generator=gen)
    mask = torch.ones(1, 1, *latent.shape[2:])
    mask[:, :, :1] = 0.0
    vision = comfy.clip_vision.Output()
    vision.last_hidden_state = torch.randn(1, SIGLIP_TOKENS, 1152, generator=gen)
    cond = spec.conditioning(seed, tokens)
    glyphs = torch.randn(1, GLYPH_TOKENS, 1472, generator=torch.Generator().manual_seed(seed))
    cond[0][1].update(concat_latent_image=start, concat_mask=mask, clip_vision_output=vision,
                      conditioning_byt5small=glyphs)
    return cond


@pytest.mark.needs("hunyuan-video-1.5")
@pytest.mark.parametrize("cfg, negative_tokens", [(1.0, None), (3.5, None), (3.5, 5)],
                         ids=["cfg1", "cfg-batched", "cfg-separate-calls"])
def test_hunyuan_video_15_image_to_video_all_compute_is_bit_identical(hunyuan15, cfg, negative_tokens):
    """Vision and glyph states concatenated to the text stream, the start image as input channels."""
    spec, model = hunyuan15
    assert_all_compute_is_identical(model, spec, cfg=cfg, width=SIZE_15, height=SIZE_15,
                                    positive=image_to_video_15(spec, 1),
                                    negative=image_to_video_15(spec, 2, negative_tokens))


@pytest.mark.needs("hunyuan-video-1.5")
def test_hunyuan_video_15_image_to_video_runs_exactly_where_the_mask_says(hunyuan15):
    spec, model = hunyuan15
    assert_runs_as_planned(model, spec, cfg=4.0, width=SIZE_15, height=SIZE_15, positive=image_to_video_15(spec, 1),
                           negative=image_to_video_15(spec, 2, tokens=5))


@pytest.mark.needs("hunyuan-video-1.5")
def test_hunyuan_video_15_image_to_video_flops_follow_the_cost_model(hunyuan15):
    """The vision and glyph tokens run through every block as text tokens, and through their projections once."""
    from ecad_nodes.families.hunyuan_video import HunyuanVideoTokens
    spec, model = hunyuan15
    positive = image_to_video_15(spec, 1)
    assert_flops_follow_the_cost_model(model, spec, width=SIZE_15, height=SIZE_15, positive=positive)
    patched = apply(model, ScheduleChoice.of_heuristic(NO_CACHING))
    sample(patched, spec, steps=1, width=SIZE_15, height=SIZE_15, positive=positive)
    assert last_report(patched).tokens == HunyuanVideoTokens(image=32, text=16 + GLYPH_TOKENS + SIGLIP_TOKENS,
                                                             byt5=GLYPH_TOKENS, vision=SIGLIP_TOKENS)


def test_hunyuan_video_15_preset_and_benchmark_model():
    from ecad_nodes.registry import benchmark_models, preset, tiny_models
    p = preset("hunyuan-video-1.5-720p-t2v")
    assert (p.family, p.files.clip_type, p.cfg, p.steps, p.frames) == ("hunyuan_video", "HUNYUAN_VIDEO_15", 6.0, 20,
                                                                        121)
    assert {"hunyuan-video-1.5", "hunyuan-video-1.5-sr"} <= set(tiny_models())
    [bench] = [b for b in benchmark_models() if b.name == "hunyuan_video_1.5"]
    latent = bench.spec.empty_latent(bench.height, bench.width)
    assert bench.spec.hidden == 512 and latent.shape[2] * latent.shape[3] * latent.shape[4] == 1024  # 1×1×1 patches

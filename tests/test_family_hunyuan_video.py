"""HunyuanVideo inside real ComfyUI (COMFYUI_PATH): tiny random-weight models loaded through ComfyUI's
detection (``comfy.sd.load_diffusion_model_state_dict``): text-to-video sampled as a 2-latent-frame
video, and HunyuanImage 2.1 (the same class on 2-D latents)."""
from __future__ import annotations

import pytest
import torch

from family_checks import (assert_all_compute_is_identical, assert_cached_outputs_stay_untouched,
                           assert_flops_follow_the_cost_model, assert_fora2_behaviour,
                           assert_internal_outputs_are_cached_only_for_their_consumers, assert_runs_as_planned, layout_of)
from support import sample

pytestmark = pytest.mark.comfy

SIZE = 64  # video: 8×8 latent per frame, 2 latent frames, 32 image tokens
IMAGE_SIZE = 256  # HunyuanImage 2.1: 8×8 latent (32× VAE), 64 image tokens


@pytest.fixture(scope="module")
def video():
    from optimizer.presets.hunyuan_video import TinyHunyuanVideo
    spec = TinyHunyuanVideo()
    return spec, spec.build(seed=0), SIZE


@pytest.fixture(scope="module")
def image():
    from optimizer.presets.hunyuan_video import TinyHunyuanImage21
    spec = TinyHunyuanImage21()
    return spec, spec.build(seed=0), IMAGE_SIZE


@pytest.fixture(params=["video", "image-2.1"])
def any_model(request, video, image):
    return video if request.param == "video" else image


@pytest.fixture
def hunyuan(video):
    return video[:2]


def conditioning(spec, seed: int, tokens: int | None = None, **extra) -> list:
    cond = spec.conditioning(seed, tokens)
    cond[0][1].update(extra)
    return cond


def image_to_video(spec, seed: int, tokens: int | None = None) -> list:
    """A guiding frame switches ComfyUI's HunyuanVideo to token-wise modulation (``modulation_dims``)."""
    return conditioning(spec, seed, tokens, guiding_frame_index=0)


@pytest.mark.parametrize("which, config, variant", [("video", "HunyuanVideo", "hunyuan-video-t2v"),
                                                     ("image", "HunyuanImage21", "hunyuan-image-2.1")])
def test_comfyui_detects_the_tiny_state_dict_as_the_model_it_was_built_from(request, which, config, variant):
    from ecad_nodes.families import adapter_for
    spec, model, size = request.getfixturevalue(which)
    dm = model.model.diffusion_model
    assert (type(dm).__module__, type(dm).__name__) == ("comfy.ldm.hunyuan_video.model", "HunyuanVideo")
    assert type(model.model.model_config).__name__ == config
    expected = {k: v for k, v in spec.params().items() if k != "image_model"}
    assert {k: getattr(dm.params, k) for k in expected} == expected
    adapter = adapter_for(model.model)
    assert adapter.family == "hunyuan_video" and adapter.variant(model.model) == variant
    assert [(g.name, g.blocks) for g in layout_of(model).groups] == [("double_blocks", spec.depth),
                                                                     ("single_blocks", spec.depth_single)]
    latent = spec.empty_latent(size, size)
    assert latent.ndim == (5 if which == "video" else 4) and (which == "image" or latent.shape[2] >= 2)
    assert sample(model, spec, steps=2, width=size, height=size).shape == latent.shape


@pytest.mark.parametrize("cfg, negative_tokens", [(1.0, None), (3.5, None), (3.5, 5)],
                         ids=["cfg1", "cfg-batched", "cfg-separate-calls"])
def test_all_compute_is_bit_identical_to_the_unpatched_model(any_model, cfg, negative_tokens):
    spec, model, size = any_model
    negative = spec.conditioning(2, tokens=negative_tokens) if negative_tokens else None
    assert_all_compute_is_identical(model, spec, cfg=cfg, width=size, height=size, negative=negative)


# ComfyUI's HunyuanVideo applies token-wise modulation and text masks to one batch row only, so
# these paths run with cfg 1 or with cond and uncond in separate calls (prompts of different lengths).
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


@pytest.mark.parametrize("negative_tokens", [None, 5], ids=["batched", "separate-calls"])
def test_components_run_exactly_where_the_mask_says_per_stream(any_model, negative_tokens):
    spec, model, size = any_model
    negative = spec.conditioning(2, tokens=negative_tokens) if negative_tokens else None
    assert_runs_as_planned(model, spec, cfg=4.0, width=size, height=size, negative=negative)


def test_components_run_exactly_where_the_mask_says_with_token_wise_modulation(hunyuan):
    spec, model = hunyuan
    assert_runs_as_planned(model, spec, cfg=4.0, width=SIZE, height=SIZE,
                           positive=image_to_video(spec, 1), negative=image_to_video(spec, 2, tokens=5))


def test_skipped_components_really_skip_their_matmuls(any_model):
    spec, model, size = any_model
    assert_flops_follow_the_cost_model(model, spec, width=size, height=size)


def test_fora2_halves_the_component_calls_and_leaves_the_base_model_alone(any_model):
    spec, model, size = any_model
    assert_fora2_behaviour(model, spec, cfg=3.0, width=size, height=size)


@pytest.mark.parametrize("token_wise", [False, True], ids=["plain", "token-wise-modulation"])
def test_cached_outputs_are_never_written_into(hunyuan, monkeypatch, token_wise):
    """With ``modulation_dims`` ComfyUI's ``apply_mod`` gates in place; the cached outputs must stay as computed."""
    spec, model = hunyuan
    kwargs = dict(positive=image_to_video(spec, 1), negative=image_to_video(spec, 2, tokens=5)) if token_wise else {}
    assert_cached_outputs_stay_untouched(model, spec, monkeypatch, cfg=3.0, width=SIZE, height=SIZE, **kwargs)


def test_presets_and_the_benchmark_model():
    from ecad_nodes.families import adapter_for
    from optimizer.presets import benchmark_models, preset
    real, tiny = preset("hunyuan-video-t2v"), preset("tiny-hunyuan-video")
    assert real.family == tiny.family == "hunyuan_video" and real.files is not None and real.frames == 73
    assert tiny.frames == tiny.tiny.frames and tiny.tiny.empty_latent(tiny.height, tiny.width).shape[2] >= 2
    assert adapter_for(tiny.tiny.build(seed=0).model).family == "hunyuan_video"
    [bench] = [b for b in benchmark_models() if b.name == "hunyuan_video"]
    latent = bench.spec.empty_latent(bench.height, bench.width)
    assert latent.shape[2] >= 2 and latent.shape[2] * (latent.shape[-2] // 2) * (latent.shape[-1] // 2) == 1024


def test_single_block_attention_and_mlp_input_are_cached_only_for_the_output_projection(any_model, monkeypatch):
    spec, model, size = any_model
    assert_internal_outputs_are_cached_only_for_their_consumers(model, spec, monkeypatch, width=size, height=size)

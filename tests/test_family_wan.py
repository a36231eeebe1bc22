"""Wan 2.1 / 2.2 inside real ComfyUI (COMFYUI_PATH): tiny random-weight Wan models loaded through
ComfyUI's detection (``comfy.sd.load_diffusion_model_state_dict``), sampled as 2-latent-frame videos:
text-to-video, image-to-video (CLIP-image cross-attention, start-frame latent), Wan 2.2 TI2V's
layout with per-frame timesteps, the VACE/camera/HuMo/speech/Animate classes, and context windows."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from ecad_nodes.choice import ScheduleChoice
from ecad_nodes.heuristics import NO_CACHING
from ecad_nodes.schedule import Mask
from family_checks import (FORA2, apply, assert_all_compute_is_identical, assert_cached_outputs_stay_untouched,
                           assert_flops_follow_the_cost_model, assert_fora2_behaviour, assert_runs_as_planned,
                           layout_of, random_choice)
from support import assert_ran_as_planned, last_report, sample

pytestmark = pytest.mark.comfy

SIZE = 64          # 8×8 latent per frame (16 image tokens per latent frame), 2 latent frames
SIZE_22 = 128      # Wan 2.2's 16× VAE: the same 8×8 latent


@pytest.fixture(scope="module")
def t2v():
    from optimizer.presets.wan import tiny_wan_t2v
    spec = tiny_wan_t2v()
    return spec, spec.build(seed=0)


@pytest.fixture(scope="module")
def i2v():
    from optimizer.presets.wan import tiny_wan_i2v
    spec = tiny_wan_i2v()
    return spec, spec.build(seed=0)


@pytest.fixture(scope="module")
def ti2v():
    from optimizer.presets.wan import tiny_wan22_ti2v
    spec = tiny_wan22_ti2v()
    return spec, spec.build(seed=0)


@pytest.fixture(params=["t2v", "i2v"])
def wan(request):
    """(name, spec, model) of text-to-video and of image-to-video."""
    return (request.param, *request.getfixturevalue(request.param))


def with_start_image(spec, seed: int, tokens: int | None = None, size: int = SIZE) -> list:
    """Conditioning as WanImageToVideo makes it: the start frame's latent and a mask over the rest."""
    cond = spec.conditioning(seed, tokens)
    latent = spec.empty_latent(size, size)
    gen = torch.Generator().manual_seed(100)
    mask = torch.ones(1, 1, *latent.shape[2:])
    mask[:, :, :1] = 0.0
    cond[0][1].update(concat_latent_image=torch.randn(latent.shape, generator=gen), concat_mask=mask)
    return cond


def sample_kwargs(name: str, spec, cfg: float, negative_tokens: int | None = None) -> dict[str, Any]:
    """I2V runs with the start image on both prompts (as WanImageToVideo sets it)."""
    kwargs: dict[str, Any] = {"cfg": cfg, "width": SIZE, "height": SIZE}
    if name == "i2v":
        kwargs["positive"] = with_start_image(spec, 1)
        kwargs["negative"] = with_start_image(spec, 2, negative_tokens)
    elif negative_tokens:
        kwargs["negative"] = spec.conditioning(2, tokens=negative_tokens)
    return kwargs


@pytest.mark.parametrize("which, config, variant, in_channels", [
    ("t2v", "WAN21_T2V", "wan-t2v", 16), ("i2v", "WAN21_I2V", "wan2.1-i2v", 36),
    ("ti2v", "WAN22_T2V", "wan2.2-ti2v-5b", 48)])
def test_comfyui_detects_the_tiny_state_dict_as_the_model_it_was_built_from(request, which, config, variant, in_channels):
    from ecad_nodes.families import adapter_for
    spec, model = request.getfixturevalue(which)
    dm = model.model.diffusion_model
    assert (type(dm).__module__, type(dm).__name__) == ("comfy.ldm.wan.model", "WanModel")
    assert type(model.model.model_config).__name__ == config
    assert (dm.dim, dm.num_heads, len(dm.blocks), dm.patch_embedding.in_channels) == (spec.dim, 1, spec.depth, in_channels)
    assert type(dm.blocks[0].cross_attn).__name__ == ("WanI2VCrossAttention" if which == "i2v" else "WanT2VCrossAttention")
    adapter = adapter_for(model.model)
    assert adapter.family == "wan" and adapter.variant(model.model) == variant
    assert [(g.name, g.blocks, g.components) for g in layout_of(model).groups] == [
        ("blocks", spec.depth, ("self_attn", "cross_attn", "ffn"))]
    size = SIZE_22 if which == "ti2v" else SIZE
    latent = spec.empty_latent(size, size)
    assert latent.ndim == 5 and latent.shape[2] >= 2
    assert sample(model, spec, steps=2, width=size, height=size).shape == latent.shape


@pytest.mark.parametrize("cfg, negative_tokens", [(1.0, None), (3.5, None), (3.5, 5)],
                         ids=["cfg1", "cfg-batched", "cfg-separate-calls"])
def test_all_compute_is_bit_identical_to_the_unpatched_model(wan, cfg, negative_tokens):
    name, spec, model = wan
    assert_all_compute_is_identical(model, spec, **sample_kwargs(name, spec, cfg, negative_tokens))


@pytest.mark.parametrize("negative_tokens", [None, 5], ids=["batched", "separate-calls"])
def test_components_run_exactly_where_the_mask_says_per_stream(wan, negative_tokens):
    name, spec, model = wan
    assert_runs_as_planned(model, spec, **sample_kwargs(name, spec, 4.0, negative_tokens))


def test_skipped_components_really_skip_their_matmuls(wan):
    """FLOPs counted by PyTorch equal the cost model; I2V includes the 257 CLIP-image tokens' keys and values."""
    name, spec, model = wan
    kwargs = sample_kwargs(name, spec, 1.0)
    assert_flops_follow_the_cost_model(model, spec, **kwargs)


def test_fora2_halves_the_component_calls_and_leaves_the_base_model_alone(wan):
    name, spec, model = wan
    assert_fora2_behaviour(model, spec, **sample_kwargs(name, spec, 3.0))


def test_cached_outputs_are_never_written_into(t2v, monkeypatch):
    spec, model = t2v
    assert_cached_outputs_stay_untouched(model, spec, monkeypatch, cfg=3.0, width=SIZE, height=SIZE)


def test_a_skipped_component_yields_its_last_computed_output(t2v):
    spec, model = t2v
    layout = layout_of(model)
    bits = np.ones((6, layout.bits_per_step), dtype=bool)
    cross_attn_of_block_1 = 3 * 1 + 1
    bits[[1, 2, 4, 5], cross_attn_of_block_1] = False  # computed at steps 0 and 3 only
    patched = apply(model, ScheduleChoice.of_mask("cross-reuse", Mask(layout, bits)))
    seen = []  # a module hook sees the ECAD-patched forward's result
    handle = model.model.diffusion_model.blocks[1].cross_attn.register_forward_hook(
        lambda module, args, out: seen.append(out.clone()))
    try:
        sample(patched, spec, cfg=4.0, width=SIZE, height=SIZE)
    finally:
        handle.remove()
    assert len(seen) == 6 and seen[0].shape[0] == 2  # cond and uncond rows in one batch
    for step, source in ((1, 0), (2, 0), (4, 3), (5, 3)):
        assert torch.equal(seen[step], seen[source])
    assert not torch.equal(seen[3], seen[0])


# ---------------------------------------------------------------- Wan 2.2: per-frame timesteps


def sample_first_frame_fixed(model, spec, *, steps: int = 6, cfg: float = 1.0, negative_tokens: int | None = None):
    """As Wan22ImageToVideoLatent sets it up: the first latent frame given, a noise mask over the rest.

    WAN22 then gives every latent frame its own timestep (the first frame's is 0).
    """
    import comfy.sample
    latent = spec.empty_latent(SIZE_22, SIZE_22)
    latent[:, :, :1] = torch.randn(latent[:, :, :1].shape, generator=torch.Generator().manual_seed(5))
    mask = torch.ones(1, 1, *latent.shape[2:])
    mask[:, :, :1] = 0.0
    noise = comfy.sample.prepare_noise(latent, 42)
    negative = spec.conditioning(2, tokens=negative_tokens)
    with torch.inference_mode():
        return comfy.sample.sample(model, noise, steps, cfg, "euler", "simple", spec.conditioning(1), negative, latent,
                                   noise_mask=mask, seed=42, disable_pbar=True)


def test_wan22_per_frame_timesteps_stay_exact_and_cache_per_stream(ti2v):
    spec, model = ti2v
    seen_modulation_dims = []
    handle = model.model.diffusion_model.blocks[0].register_forward_pre_hook(
        lambda module, args, kwargs: seen_modulation_dims.append(kwargs["e"].ndim), with_kwargs=True)
    try:
        for cfg, negative_tokens in ((1.0, None), (3.5, None), (3.5, 5)):
            reference = sample_first_frame_fixed(model, spec, cfg=cfg, negative_tokens=negative_tokens)
            patched = apply(model, ScheduleChoice.of_heuristic(NO_CACHING))
            out = sample_first_frame_fixed(patched, spec, cfg=cfg, negative_tokens=negative_tokens)
            assert torch.equal(out, reference), f"cfg {cfg}: max difference {(out - reference).abs().max().item():.3g}"
        choice = random_choice(model, 6, keep=0.35, seed=3)
        patched = apply(model, choice)
        out = sample_first_frame_fixed(patched, spec, cfg=3.5)
    finally:
        handle.remove()
    assert set(seen_modulation_dims) == {4}  # per-frame modulation (B, frames, 6, dim) reached the blocks
    assert torch.isfinite(out).all()
    assert_ran_as_planned(last_report(patched), choice.point.mask.bits, streams=2)
    fora = apply(model, ScheduleChoice.of_heuristic(FORA2))
    assert not torch.equal(sample_first_frame_fixed(fora, spec, cfg=3.5), sample_first_frame_fixed(model, spec, cfg=3.5))


# ---------------------------------------------------------------- the other Wan classes


VARIANTS = {  # model type -> (TinyWan arguments, ComfyUI model config, diffusion model class)
    "vace": ({"model_type": "vace", "extra": {"vace_layers": 1, "vace_in_dim": 96}}, "WAN21_Vace", "VaceWanModel"),
    "camera": ({"model_type": "camera", "in_dim": 32}, "WAN21_Camera", "CameraWanModel"),
    "s2v": ({"model_type": "s2v"}, "WAN22_S2V", "WanModel_S2V"),
    "humo": ({"model_type": "humo"}, "WAN21_HuMo", "HumoWanModel"),
    "animate": ({"model_type": "animate", "in_dim": 36, "depth": 5}, "WAN22_Animate", "AnimateWanModel"),  # 5 blocks: one face adapter
}


@pytest.mark.parametrize("model_type", list(VARIANTS))
def test_every_wan_class_caches_through_the_same_submodules(model_type):
    """Each Wan subclass loops over the same blocks: all-compute stays identical, a random mask runs as planned."""
    from ecad_nodes.families import adapter_for
    from optimizer.presets.wan import TinyWan
    arguments, config, cls = VARIANTS[model_type]
    spec = TinyWan(**arguments)
    model = spec.build(seed=0)
    assert type(model.model.model_config).__name__ == config
    assert type(model.model.diffusion_model).__name__ == cls
    assert adapter_for(model.model).family == "wan"
    assert_all_compute_is_identical(model, spec, steps=3, cfg=3.0, width=SIZE, height=SIZE)
    choice = random_choice(model, 4, keep=0.4, seed=7)
    patched = apply(model, choice)
    assert torch.isfinite(sample(patched, spec, steps=4, cfg=3.0, width=SIZE, height=SIZE)).all()
    assert_ran_as_planned(last_report(patched), choice.point.mask.bits, streams=2)


def test_vace_blocks_are_in_the_cost_model():
    from optimizer.presets.wan import TinyWan
    spec = TinyWan(**VARIANTS["vace"][0])
    assert_flops_follow_the_cost_model(spec.build(seed=0), spec, width=SIZE, height=SIZE)


# ---------------------------------------------------------------- context windows


def with_context_windows(model, frames: int):
    """ComfyUI's "WAN Context Windows (Manual)" node, static windows of ``frames`` video frames, no overlap."""
    from comfy_extras.nodes_context_windows import WanContextWindowsManualNode
    return WanContextWindowsManualNode.execute(model, context_length=frames, context_overlap=0,
                                               context_schedule="standard_static", context_stride=1,
                                               closed_loop=False, fuse_method="pyramid").result[0]


@pytest.fixture(scope="module")
def long_t2v():
    from optimizer.presets.wan import TinyWan
    spec = TinyWan(frames=13)  # 4 latent frames: two windows of 2
    return spec, spec.build(seed=0)


def test_context_windows_keep_one_cache_per_window(long_t2v):
    """Each window is a separate model call at the same step with the same cond uuids; each must reuse its own outputs."""
    spec, model = long_t2v
    windowed = with_context_windows(model, frames=5)  # 5 video frames = 2 latent frames per window
    reference = sample(windowed, spec, cfg=1.0, width=SIZE, height=SIZE)
    assert not torch.equal(reference, sample(model, spec, cfg=1.0, width=SIZE, height=SIZE))  # windows are in use
    patched = apply(windowed, ScheduleChoice.of_heuristic(NO_CACHING))
    assert torch.equal(sample(patched, spec, cfg=1.0, width=SIZE, height=SIZE), reference)

    patched = apply(windowed, ScheduleChoice.of_heuristic(FORA2))
    seen = []
    handle = model.model.diffusion_model.blocks[0].self_attn.register_forward_hook(
        lambda module, args, out: seen.append(out.clone()))
    try:
        out = sample(patched, spec, cfg=1.0, width=SIZE, height=SIZE)
    finally:
        handle.remove()
    assert torch.isfinite(out).all()
    per_step = [seen[2 * s:2 * s + 2] for s in range(6)]
    assert not torch.equal(per_step[0][0], per_step[0][1])
    for step in (1, 3, 5):  # FORA-2 reuses: each window gets its own window's output of the step before
        for window in (0, 1):
            assert torch.equal(per_step[step][window], per_step[step - 1][window]), f"step {step}, window {window}"
    report = last_report(patched)
    assert list(report.evaluations) == [2] * 6  # one model call per window and step
    assert len(report.streams) == 2 and {frames for _, frames in report.streams} == {(0, 1), (2, 3)}
    assert_ran_as_planned(report, report.planned, streams=2, evaluations_per_step=[1] * 6)


def test_presets_and_the_benchmark_model():
    from ecad_nodes.families import adapter_for
    from optimizer.presets import benchmark_models, preset
    real = [preset(name) for name in ("wan2.1-t2v-1.3b", "wan2.2-ti2v-5b")]
    tiny = preset("tiny-wan")
    assert {p.family for p in real + [tiny]} == {"wan"}
    assert all(p.files is not None and p.cfg > 1 and p.frames > 1 for p in real)
    assert adapter_for(tiny.tiny.build(seed=0).model).family == "wan"
    latent = tiny.tiny.empty_latent(tiny.height, tiny.width)
    assert latent.ndim == 5 and latent.shape[2] >= 2
    [bench] = [b for b in benchmark_models() if b.name == "wan"]
    latent = bench.spec.empty_latent(bench.height, bench.width)
    assert latent.shape[2] >= 2 and latent.shape[2] * (latent.shape[-2] // 2) * (latent.shape[-1] // 2) == 1024

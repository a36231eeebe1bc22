"""Wan's own paths inside real ComfyUI (COMFYUI_PATH), beyond the family contract (tests/test_family_contract.py,
which covers Wan 2.1 T2V/I2V, Wan 2.2 TI2V 5B and the VACE, camera, HuMo, S2V, Animate, SCAIL and WanDancer
classes through their tiny models): Wan 2.2's per-frame timesteps, ComfyUI's context windows, the refusal of
Causal Forcing Wan, and the presets."""
from __future__ import annotations

import inspect

import pytest
import torch

from ecad_nodes.choice import ScheduleChoice
from ecad_nodes.heuristics import NO_CACHING
from family_checks import FORA2, apply, random_choice
from support import assert_ran_as_planned, last_report, sample

pytestmark = pytest.mark.comfy


# ---------------------------------------------------------------- Wan 2.2: per-frame timesteps


@pytest.fixture(scope="module")
def ti2v():
    from ecad_nodes.families.wan import TinyWan22TI2V
    spec = TinyWan22TI2V()
    return spec, spec.build(seed=0)


def sample_first_frame_fixed(model, spec, *, steps: int = 6, cfg: float = 1.0, negative_tokens: int | None = None):
    """As Wan22ImageToVideoLatent sets it up: the first latent frame given, a noise mask over the rest.

    WAN22 then gives every latent frame its own timestep (the first frame's is 0).
    """
    import comfy.sample
    latent = spec.empty_latent(spec.test_size, spec.test_size)
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


# ---------------------------------------------------------------- context windows

WINDOW_VIDEO_FRAMES = 5   # 2 latent frames per window
LATENT_FRAMES = 4         # two windows


def with_context_windows(model):
    """ComfyUI's "WAN Context Windows (Manual)" node: static windows of 2 latent frames, no overlap, with the
    node's defaults otherwise (on ComfyUI v0.20+: no FreeNoise, the causal anchor frame before every window
    but the first)."""
    from comfy_extras.nodes_context_windows import WanContextWindowsManualNode
    options = dict(context_length=WINDOW_VIDEO_FRAMES, context_overlap=0, context_schedule="standard_static",
                   context_stride=1, closed_loop=False, fuse_method="pyramid")
    if "freenoise" in inspect.signature(WanContextWindowsManualNode.execute).parameters:  # ComfyUI v0.20+
        options["freenoise"] = False
    out = WanContextWindowsManualNode.execute(model, **options)
    return out.result[0] if hasattr(out, "result") else out[0]


def anchors_windows() -> bool:
    """Whether this ComfyUI prepends the frame before a window to it (``causal_window_fix``, ComfyUI v0.20+)."""
    from comfy.context_windows import IndexListContextHandler
    return "causal_window_fix" in inspect.signature(IndexListContextHandler.__init__).parameters


@pytest.fixture(scope="module")
def long_t2v():
    from ecad_nodes.families.wan import TinyWan
    spec = TinyWan(frames=4 * (LATENT_FRAMES - 1) + 1)
    return spec, spec.build(seed=0)


def test_context_windows_change_the_samples_and_all_compute_stays_identical(long_t2v):
    spec, model = long_t2v
    size = spec.test_size
    windowed = with_context_windows(model)
    reference = sample(windowed, spec, cfg=3.0, width=size, height=size)
    assert not torch.equal(reference, sample(model, spec, cfg=3.0, width=size, height=size))  # windows are in use
    patched = apply(windowed, ScheduleChoice.of_heuristic(NO_CACHING))
    assert torch.equal(sample(patched, spec, cfg=3.0, width=size, height=size), reference)


@pytest.mark.parametrize("cfg", [1.0, 3.0], ids=["cfg1", "cfg-batched"])
def test_context_windows_reuse_each_windows_own_outputs_as_planned(long_t2v, cfg):
    """Each window is a separate model call at the same step with the same cond uuids (on ComfyUI v0.20+ every
    window but the first also carries the frame before it, so windows alternate between 2 and 3 latent frames).
    Each window's streams compute exactly where FORA-2 says, reuse their own window's outputs of the step before,
    and no stream's cache is ever reset."""
    spec, model = long_t2v
    size = spec.test_size
    patched = apply(with_context_windows(model), ScheduleChoice.of_heuristic(FORA2))
    calls = []   # per call of block 0's self-attention: its input tokens and what it gives the block
    handle = model.model.diffusion_model.blocks[0].self_attn.register_forward_hook(
        lambda module, args, out: calls.append((args[0].shape[1], out.clone())))
    try:
        out = sample(patched, spec, steps=6, cfg=cfg, width=size, height=size)
    finally:
        handle.remove()
    assert torch.isfinite(out).all()

    report = last_report(patched)
    windows = [(0, 1), (2, 3)]
    conds = 2 if cfg != 1.0 else 1
    assert list(report.evaluations) == [len(windows)] * 6  # one model call per window and step
    assert sorted({frames for _, frames in report.streams}) == windows and len(report.streams) == conds * len(windows)
    assert_ran_as_planned(report, report.planned, streams=conds * len(windows), evaluations_per_step=[1] * 6)
    assert all(report.reused[s].sum() > 0 for s in report.streams)
    assert report.resets == 0, report.notes

    # A module hook sees what the ECAD-patched forward returns, computed or reused: per step one call per window,
    # in window order; a reusing step hands each window its own output of the step before.
    tokens_per_frame = (size // spec.compression // 2) ** 2
    frames = [2, 3] if anchors_windows() else [2, 2]
    assert [tokens for tokens, _ in calls] == [f * tokens_per_frame for f in frames] * 6
    per_step = [[value for _, value in calls[len(windows) * s:len(windows) * (s + 1)]] for s in range(6)]
    for step in (1, 3, 5):
        for window in range(len(windows)):
            assert torch.equal(per_step[step][window], per_step[step - 1][window]), f"step {step}, window {window}"
    for window in range(len(windows)):
        assert not torch.equal(per_step[2][window], per_step[0][window])


# ---------------------------------------------------------------- refused classes


@pytest.mark.needs("comfy.ldm.wan.ar_model.CausalWanModel")
def test_causal_forcing_wan_is_refused_by_name():
    from ecad_nodes.families import UnsupportedModelError, adapter_for
    from ecad_nodes.families.wan import TinyCausalWan
    spec = TinyCausalWan()
    model = spec.build(seed=0)
    assert type(model.model.diffusion_model).__name__ == "CausalWanModel"
    adapter = adapter_for(model.model)
    with pytest.raises(UnsupportedModelError, match="CausalWanModel"):
        adapter.layout(model.model.diffusion_model)
    with pytest.raises(UnsupportedModelError, match="CausalWanModel"):
        apply(model, ScheduleChoice.of_heuristic(FORA2))


# ---------------------------------------------------------------- presets


def test_presets_and_the_benchmark_model():
    from ecad_nodes.registry import benchmark_models, preset
    real = [preset(name) for name in ("wan2.1-t2v-1.3b", "wan2.2-ti2v-5b")]
    tiny = preset("tiny-wan")
    assert {p.family for p in real + [tiny]} == {"wan"}
    assert all(p.files is not None and p.cfg > 1 and p.frames > 1 and p.extra["model_sampling"] == "SD3" for p in real)
    latent = tiny.tiny.empty_latent(tiny.height, tiny.width)
    assert latent.ndim == 5 and latent.shape[2] >= 2
    [bench] = [b for b in benchmark_models() if b.name == "wan"]
    latent = bench.spec.empty_latent(bench.height, bench.width)
    assert latent.shape[2] >= 2 and latent.shape[2] * (latent.shape[-2] // 2) * (latent.shape[-1] // 2) == 1024

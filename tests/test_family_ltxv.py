"""LTX-Video and LTX-2 inside real ComfyUI (COMFYUI_PATH), beyond the family contract (tests/test_family_contract.py):
what their conditioning adds. Image-to-video (LTXVImgToVideo; LTXVImgToVideoInplace with LTX-2's audio) and keyframe
guides (LTXVAddGuide) give a noise mask, so every token gets its own timestep and its own modulation around the cached
submodule outputs; guides also append latent frames, keyframe positions and (ComfyUI v0.20) an attention bias for
guides weaker than 1; T5's padding mask reaches the cross-attention."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pytest
import torch

from ecad_nodes.choice import ScheduleChoice
from ecad_nodes.heuristics import NO_CACHING
from family_checks import (apply, assert_all_compute_is_identical, assert_cached_outputs_stay_untouched,
                           assert_flops_follow_the_cost_model, assert_runs_as_planned, random_choice)
from support import assert_ran_as_planned, last_report, sample

pytestmark = pytest.mark.comfy

SIZE = 128              # a 4×4 latent per frame (32× VAE), 2 latent frames: 32 video tokens
STRENGTH = 0.85         # of the start image / guide: its frames are denoised from 1 - 0.85 of each step's timestep


@pytest.fixture(scope="module")
def ltxv():
    from ecad_nodes.families.ltxv import TinyLTXV
    spec = TinyLTXV()
    return spec, spec.build(seed=0)


@pytest.fixture(scope="module")
def ltx2():
    from ecad_nodes.families.ltxv import TinyLTX2
    spec = TinyLTX2()
    return spec, spec.build(seed=0)


@pytest.fixture(params=["ltxv", pytest.param("ltx2", marks=pytest.mark.needs("ltx-2"))])
def model(request):
    return request.getfixturevalue(request.param)


def sampling(spec: Any, latent: Any) -> Any:
    """``spec`` sampling ``latent`` (what ComfyUI's image-to-video and guide nodes output) instead of an empty one."""
    @dataclass(frozen=True)
    class Prepared(type(spec)):
        def empty_latent(self, height: int, width: int, batch: int = 1) -> Any:
            return latent
    return Prepared(**{f.name: getattr(spec, f.name) for f in fields(spec)})


def image_to_video(spec: Any) -> tuple[Any, Any]:
    """(spec, noise mask) as LTXVImgToVideo makes them (and, for LTX-2, LTXVImgToVideoInplace then
    LTXVConcatAVLatent): the start image's latent in the first latent frame, whose mask is 1 - strength."""
    video = spec.video_latent(SIZE, SIZE, 1)
    video[:, :, :1] = torch.randn(video[:, :, :1].shape, generator=torch.Generator().manual_seed(100))
    mask = torch.ones(1, 1, video.shape[2], 1, 1)
    mask[:, :, :1] = 1.0 - STRENGTH
    if not hasattr(spec, "audio_latent"):
        return sampling(spec, video), mask
    import comfy.nested_tensor
    audio = spec.audio_latent(1)
    return (sampling(spec, comfy.nested_tensor.NestedTensor((video, audio))),
            comfy.nested_tensor.NestedTensor((mask, torch.ones_like(audio))))


@pytest.mark.parametrize("cfg", [1.0, 3.0], ids=["cfg1", "cfg-batched"])
def test_image_to_video_all_compute_is_bit_identical_with_per_token_timesteps(model, cfg):
    spec, patcher = model
    prepared, mask = image_to_video(spec)
    assert_all_compute_is_identical(patcher, prepared, steps=4, cfg=cfg, width=SIZE, height=SIZE, noise_mask=mask)


def test_image_to_video_components_run_exactly_where_the_mask_says(model):
    spec, patcher = model
    prepared, mask = image_to_video(spec)
    assert_runs_as_planned(patcher, prepared, cfg=4.0, width=SIZE, height=SIZE, noise_mask=mask)


def test_image_to_video_cached_outputs_are_never_written_into(model, monkeypatch):
    """The blocks add gated outputs into the residual stream in place (``x.addcmul_(ff(y), gate)``); never into a
    cached output, whatever per-token gates they apply."""
    spec, patcher = model
    prepared, mask = image_to_video(spec)
    assert_cached_outputs_stay_untouched(patcher, prepared, monkeypatch, cfg=3.0, width=SIZE, height=SIZE,
                                         noise_mask=mask)


def test_image_to_video_flops_follow_the_cost_model(model):
    """With a noise mask the adaLN layers run once per token (LTX-2: per video and per audio token); the cost model
    counts them from the call's masks."""
    spec, patcher = model
    prepared, mask = image_to_video(spec)
    assert_flops_follow_the_cost_model(patcher, prepared, width=SIZE, height=SIZE, noise_mask=mask)


def guided(spec: Any, strength: float) -> tuple[Any, list, list, torch.Tensor]:
    """(spec, positive, negative, noise mask) as LTXVAddGuide makes them for a one-frame guide at the last frame: the
    guide's latent appended as a frame, its keyframe positions in the conditioning, and (ComfyUI v0.20) its
    attention entry, which a strength below 1 turns into a self-attention bias between guide and video tokens."""
    import comfy_extras.nodes_lt as nodes_lt
    video = spec.video_latent(SIZE, SIZE, 1)
    guide = torch.randn(1, video.shape[1], 1, *video.shape[3:], generator=torch.Generator().manual_seed(101))
    frame_idx = (video.shape[2] - 1) * 8
    positive, negative, latent, mask = nodes_lt.LTXVAddGuide.append_keyframe(
        spec.conditioning(1), spec.conditioning(2, tokens=5), frame_idx, video, torch.ones(1, 1, video.shape[2], 1, 1),
        guide, strength, (8, 32, 32))
    if hasattr(nodes_lt, "_append_guide_attention_entry"):
        positive, negative = nodes_lt._append_guide_attention_entry(positive, negative, guide[0, 0].numel(),
                                                                    list(guide.shape[2:]), strength=strength)
    return sampling(spec, latent), positive, negative, mask


@pytest.mark.parametrize("strength", [1.0, 0.5], ids=["full-strength", "attention-bias"])
def test_keyframe_guides_all_compute_is_bit_identical_and_runs_as_planned(ltxv, strength):
    """cond and uncond (prompts of different lengths) run in separate calls."""
    spec, patcher = ltxv
    prepared, positive, negative, mask = guided(spec, strength)
    kwargs = dict(width=SIZE, height=SIZE, positive=positive, negative=negative, noise_mask=mask)
    assert_all_compute_is_identical(patcher, prepared, steps=4, cfg=3.0, **kwargs)
    assert_runs_as_planned(patcher, prepared, cfg=3.0, **kwargs)


def test_keyframe_guides_flops_follow_the_cost_model(ltxv):
    """Guide frames are tokens of the input latent (ComfyUI v0.20 drops those a negative mask marks)."""
    spec, patcher = ltxv
    prepared, positive, _, mask = guided(spec, 0.5)
    assert_flops_follow_the_cost_model(patcher, prepared, width=SIZE, height=SIZE, positive=positive, noise_mask=mask)


def test_all_compute_is_bit_identical_with_t5_padding(ltxv):
    """A padded prompt's attention mask reaches every block's cross-attention (``attn2``)."""
    spec, patcher = ltxv
    positive = spec.conditioning(1)
    positive[0][1]["attention_mask"] = torch.tensor([[1] * 11 + [0] * 5])
    negative = spec.conditioning(2, tokens=5)
    negative[0][1]["attention_mask"] = torch.tensor([[1, 1, 1, 0, 0]])
    assert_all_compute_is_identical(patcher, spec, cfg=3.0, width=SIZE, height=SIZE, positive=positive,
                                    negative=negative)


REFERENCE_TOKENS = 3    # audio latents of LTXVReferenceAudio's reference clip (8 channels × 16 bins each)


def with_reference_audio(cond: list) -> list:
    """What LTXVReferenceAudio adds to each prompt: the reference clip's patchified audio latents (ID-LoRA)."""
    tokens = torch.randn(1, REFERENCE_TOKENS, 128, generator=torch.Generator().manual_seed(102))
    return [[t, {**d, "ref_audio": {"tokens": tokens}}] for t, d in cond]


def with_identity_guidance(patcher: Any, scale: float = 3.0) -> Any:
    """LTXVReferenceAudio's identity guidance: after CFG, the positive prompt is predicted again without its reference
    audio (same step, same cond uuid) and ``scale`` times the difference is added."""
    import comfy.samplers

    def post_cfg(args: dict) -> torch.Tensor:
        without = [{**entry, "model_conds": {k: v for k, v in entry["model_conds"].items() if k != "ref_audio"}}
                   for entry in args["cond"]]
        (prediction,) = comfy.samplers.calc_cond_batch(args["model"], [without], args["input"], args["sigma"],
                                                       args["model_options"])
        return args["denoised"] + (args["cond_denoised"] - prediction) * scale

    guided_model = patcher.clone()
    guided_model.set_model_sampler_post_cfg_function(post_cfg)
    return guided_model


@pytest.mark.needs("ltx-2")
def test_reference_audio_identity_guidance_keeps_its_own_caches(ltx2):
    """The prediction without reference audio has fewer audio tokens than the prompt's own under the same uuid: it is
    a stream of its own (three in all, each called once per step), so caching neither mixes the two nor fails on
    their shapes."""
    spec, patcher = ltx2
    guided_model = with_identity_guidance(patcher)
    kwargs = dict(cfg=3.0, width=SIZE, height=SIZE, positive=with_reference_audio(spec.conditioning(1)),
                  negative=with_reference_audio(spec.conditioning(2)))
    all_compute = apply(guided_model, ScheduleChoice.of_heuristic(NO_CACHING))
    assert torch.equal(sample(all_compute, spec, steps=4, **kwargs), sample(guided_model, spec, steps=4, **kwargs))
    choice = random_choice(patcher, 6, keep=0.35, seed=11)
    cached = apply(guided_model, choice)
    assert torch.isfinite(sample(cached, spec, steps=6, **kwargs)).all()
    report = last_report(cached)
    assert list(report.evaluations) == [2] * 6   # CFG, then the prediction without reference audio
    assert report.reused[report.streams[0]].sum() > 0
    assert_ran_as_planned(report, choice.point.mask.bits, streams=3, evaluations_per_step=np.ones(6, dtype=np.int64))


@pytest.mark.needs("ltx-2")
def test_reference_audio_flops_follow_the_cost_model(ltx2):
    """The reference tokens run through the audio stream, at timestep 0, so the audio adaLN runs per token."""
    spec, patcher = ltx2
    assert_flops_follow_the_cost_model(patcher, spec, width=SIZE, height=SIZE,
                                       positive=with_reference_audio(spec.conditioning(1)))


def test_the_ltxv_preset_samples_the_templates_sigmas(ltxv):
    """The template's LTXVScheduler shifts by the latent's token count; at the preset's 768×512 and 97 frames (4992
    tokens) that is the model's own shift, 2.37, so the preset's "simple" schedule gives its sigmas (before the
    template's stretch to a terminal 0.1)."""
    import comfy.samplers
    from comfy_extras.nodes_lt import LTXVScheduler
    from ecad_nodes.registry import preset
    spec, patcher = ltxv
    ltxv_2b = preset("ltxv-2b")
    latent = spec.video_latent(ltxv_2b.height, ltxv_2b.width, 1)
    latent = torch.zeros(1, latent.shape[1], (ltxv_2b.frames - 1) // 8 + 1, *latent.shape[3:])
    template = LTXVScheduler.execute(ltxv_2b.steps, 2.05, 0.95, False, 0.1, {"samples": latent}).result[0]
    ours = comfy.samplers.calculate_sigmas(patcher.get_model_object("model_sampling"), ltxv_2b.scheduler, ltxv_2b.steps)
    torch.testing.assert_close(ours.float(), template.float(), atol=1e-3, rtol=0)


def test_presets_tiny_models_and_the_benchmark_model():
    from ecad_nodes.families.ltxv import LTXVAdapter
    from ecad_nodes.registry import benchmark_models, preset, tiny_models
    ltxv_2b, ltx2 = preset("ltxv-2b"), preset("ltx-2-19b")
    assert ltxv_2b.family == ltx2.family == preset("tiny-ltxv").family == "ltxv"
    assert (ltxv_2b.files.diffusion_model, ltxv_2b.files.clip_type) == ("ltx-video-2b-v0.9.safetensors", "LTXV")
    assert ltx2.files.diffusion_model == "ltx-2-19b-dev-fp8.safetensors" and ltx2.cfg == 4.0 and ltx2.frames == 121
    assert {name for name, entry in tiny_models().items() if entry.family == "ltxv"} == {"ltxv", "ltx-2", "ltx-2.3"}
    [bench] = [b for b in benchmark_models() if b.name == "ltxv"]
    dm = bench.spec.meta_model().diffusion_model
    tokens = LTXVAdapter().tokens(dm, bench.spec.empty_latent(bench.height, bench.width), None)
    assert dm.inner_dim == 512 and tokens.image == 1024


@pytest.mark.parametrize("name, variant", [("ltxv", "ltxv"), ("ltx-2", "ltx-2"), ("ltx-2.3", "ltx-2.3")])
def test_comfyui_configures_each_tiny_model_as_its_variant(name, variant):
    from ecad_nodes.families import adapter_for
    from ecad_nodes.registry import tiny_models
    spec = tiny_models()[name].model
    model = spec.meta_model()
    assert adapter_for(model).variant(model) == variant

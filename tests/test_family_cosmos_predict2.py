"""Cosmos Predict2 Video2World inside real ComfyUI (COMFYUI_PATH), beyond the family contract
(tests/test_family_contract.py): a start frame as CosmosPredict2ImageToVideoLatent gives it (a latent
with a noise mask) makes ComfyUI run the model with per-frame timesteps (the start frame at noise
level 0), which only change the blocks' modulation; caching must keep that exact."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ecad_nodes.choice import ScheduleChoice
from ecad_nodes.heuristics import NO_CACHING
from family_checks import apply, random_choice
from support import assert_ran_as_planned, last_report

pytestmark = pytest.mark.comfy

SIZE = 64  # 8×8 latent per frame, 2 latent frames, 32 image tokens


@pytest.fixture(scope="module")
def video2world():
    from ecad_nodes.registry import tiny_models
    spec = tiny_models()["cosmos-predict2-video2world"].model
    return spec, spec.build(seed=0)


def sample_from_start_frame(model, spec, *, steps: int = 4, cfg: float = 3.5, negative_tokens=None) -> torch.Tensor:
    """KSampler on a latent whose first frame is given and masked out of the denoising."""
    import comfy.sample
    latent = spec.empty_latent(SIZE, SIZE)
    latent[:, :, :1] = torch.randn(latent[:, :, :1].shape, generator=torch.Generator().manual_seed(7))
    mask = torch.ones(1, 1, *latent.shape[2:])
    mask[:, :, :1] = 0.0
    negative = spec.conditioning(2, tokens=negative_tokens)
    with torch.inference_mode():
        return comfy.sample.sample(model, comfy.sample.prepare_noise(latent, 42), steps, cfg, "euler", "karras",
                                   spec.conditioning(1), negative, latent, noise_mask=mask, seed=42, disable_pbar=True)


@pytest.fixture
def timesteps_seen(video2world):
    """The timesteps each model call embeds, (batch, frames) each."""
    spec, model = video2world
    seen: list[torch.Tensor] = []
    handle = model.model.diffusion_model.t_embedder[0].register_forward_pre_hook(
        lambda module, args: seen.append(args[0].detach().clone()))
    yield seen
    handle.remove()


@pytest.mark.parametrize("negative_tokens", [None, 5], ids=["cfg-batched", "cfg-separate-calls"])
def test_all_compute_is_bit_identical_with_per_frame_timesteps(video2world, timesteps_seen, negative_tokens):
    spec, model = video2world
    reference = sample_from_start_frame(model, spec, negative_tokens=negative_tokens)
    timesteps = timesteps_seen[0]
    assert timesteps.shape[1] == 2 and torch.all(timesteps[:, 0] == 0) and torch.all(timesteps[:, 1] > 0)
    patched = apply(model, ScheduleChoice.of_heuristic(NO_CACHING))
    assert torch.equal(sample_from_start_frame(patched, spec, negative_tokens=negative_tokens), reference)
    assert last_report(patched).compute_fraction() == 1.0


def test_components_run_exactly_where_the_mask_says_with_per_frame_timesteps(video2world, timesteps_seen):
    spec, model = video2world
    choice = random_choice(model, 6, keep=0.35, seed=11)
    patched = apply(model, choice)
    out = sample_from_start_frame(patched, spec, steps=6, cfg=4.0, negative_tokens=5)
    assert torch.isfinite(out).all()
    assert all(t.shape[1] == 2 for t in timesteps_seen)
    report = last_report(patched)
    assert list(report.evaluations) == [1] * 6
    assert_ran_as_planned(report, choice.point.mask.bits, streams=2)
    assert np.any(report.reused[report.streams[0]])

"""Lumina 2 / Z-Image paths inside real ComfyUI (COMFYUI_PATH), beyond the family contract
(tests/test_family_contract.py): the context refiner's exact reuse, Lumina 2's prompt attention mask,
Z-Image's reference latents (ComfyUI v0.20's in-place gates on the norms' outputs) and the refusal of
Z-Image Omni. Tiny models come from the registry."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ecad_nodes.choice import ScheduleChoice
from ecad_nodes.registry import tiny_models
from ecad_nodes.schedule import Mask
from family_checks import (apply, assert_all_compute_is_identical, assert_cached_outputs_stay_untouched,
                           assert_runs_as_planned, layout_of)
from support import built_tiny, last_report, sample

pytestmark = pytest.mark.comfy



def group_reused_after_first_step(model, group: str, steps: int = 6) -> Mask:
    """Everything computed, except ``group``'s components, which compute at the first step only."""
    layout = layout_of(model)
    bits = np.ones((steps, layout.bits_per_step), dtype=bool)
    bits[1:, layout.group_slice(group)] = False
    return Mask(layout, bits)


@pytest.mark.parametrize("name", ["lumina2", "z-image"])
def test_reusing_the_context_refiner_is_exact_and_reusing_the_noise_refiner_is_not(name):
    """The context refiner sees only the prompt, the same at every step, so its cached outputs are its outputs."""
    spec, model = built_tiny(name)
    kwargs = dict(cfg=4.0, width=spec.test_size, height=spec.test_size)
    reference = sample(model, spec, **kwargs)
    context_reused = apply(model, ScheduleChoice.of_mask("context", group_reused_after_first_step(model, "context_refiner")))
    assert torch.equal(sample(context_reused, spec, **kwargs), reference)
    report = last_report(context_reused)
    refiners = layout_of(model).group("context_refiner").bits
    assert all(report.reused[s].sum() == 5 * refiners for s in report.streams)
    noise_reused = apply(model, ScheduleChoice.of_mask("noise", group_reused_after_first_step(model, "noise_refiner")))
    out = sample(noise_reused, spec, **kwargs)
    assert torch.isfinite(out).all() and not torch.equal(out, reference)


def test_a_padded_prompt_runs_bit_identically_with_its_attention_mask():
    """Lumina 2's prompt mask (ComfyUI v0.3.x masks the padding out of the attention; later versions ignore it):
    cond and uncond of different lengths run in separate calls, the uncond padded."""
    spec, model = built_tiny("lumina2")
    negative = spec.conditioning(2, tokens=16, padding=5)
    kwargs = dict(cfg=4.0, width=spec.test_size, height=spec.test_size, negative=negative)
    assert_all_compute_is_identical(model, spec, **kwargs)
    assert_runs_as_planned(model, spec, **kwargs)


def with_reference_latent(spec, seed: int, tokens=None) -> list:
    """A reference image (ComfyUI's ReferenceLatent node): Z-Image then runs its noise refiner and main blocks on
    reference and image tokens, with a zero timestep for the reference (token-wise gates, applied in place)."""
    cond = spec.conditioning(seed, tokens)
    reference = torch.randn(spec.empty_latent(spec.test_size, spec.test_size).shape,
                            generator=torch.Generator().manual_seed(seed + 10))
    cond[0][1]["reference_latents"] = [reference]
    return cond


@pytest.mark.needs("z-image")
def test_z_image_with_a_reference_latent_caches_exactly_and_never_writes_into_the_cache(monkeypatch):
    from ecad_nodes.families.lumina import _padded
    spec, model = built_tiny("z-image")
    kwargs = dict(cfg=3.0, width=spec.test_size, height=spec.test_size, positive=with_reference_latent(spec, 1),
                  negative=with_reference_latent(spec, 2, tokens=5))
    dm = model.model.diffusion_model
    refined = []
    handle = dm.noise_refiner[0].register_forward_pre_hook(lambda module, args: refined.append(args[0].shape[1]))
    try:
        sample(model, spec, steps=1, **kwargs)
    finally:
        handle.remove()
    image = _padded((spec.test_size // spec.compression // dm.patch_size) ** 2, dm.pad_tokens_multiple)
    assert refined and set(refined) == {2 * image}  # the reference's tokens, then the image's
    assert_all_compute_is_identical(model, spec, **kwargs)
    assert_runs_as_planned(model, spec, **kwargs)
    assert_cached_outputs_stay_untouched(model, spec, monkeypatch, **kwargs)


def _no_siglip_refiner():
    import inspect
    from comfy.ldm.lumina.model import NextDiT
    if "siglip_feat_dim" not in inspect.signature(NextDiT.__init__).parameters:
        return "this ComfyUI's NextDiT has no SigLIP refiner"
    return None


@pytest.mark.needs("z-image", _no_siglip_refiner)
def test_z_image_omni_with_a_siglip_refiner_is_refused_by_name():
    import comfy.ops
    from comfy.ldm.lumina.model import NextDiT
    from ecad_nodes.families import UnsupportedModelError, adapter_named
    zimage = tiny_models()["z-image"].model
    dm = NextDiT(dim=zimage.hidden, n_heads=zimage.heads, n_kv_heads=zimage.kv_heads, axes_dims=list(zimage.axes_dims),
                 n_layers=1, cap_feat_dim=zimage.caption_dim, z_image_modulation=True, pad_tokens_multiple=32,
                 siglip_feat_dim=16, operations=comfy.ops.disable_weight_init, device="meta")
    with pytest.raises(UnsupportedModelError, match=r"comfy\.ldm\.lumina\.model\.NextDiT with a SigLIP refiner \(Z-Image Omni"):
        adapter_named("lumina2").layout(dm)


def test_benchmark_models_have_1024_image_tokens():
    from ecad_nodes.registry import benchmark_models
    benches = {b.name: b for b in benchmark_models() if b.name in ("lumina2", "z-image", "z-image-pixel")}
    assert set(benches) == {"lumina2", "z-image", "z-image-pixel"}
    for bench in benches.values():
        patch = getattr(bench.spec, "patch", 2)
        latent = bench.spec.empty_latent(bench.height, bench.width)
        assert bench.spec.hidden == 512 and sum(bench.spec.axes_dims) == bench.spec.hidden // bench.spec.heads
        assert (latent.shape[-2] // patch) * (latent.shape[-1] // patch) == 1024

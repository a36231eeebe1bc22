"""Qwen-Image's own paths inside real ComfyUI (COMFYUI_PATH), beyond the family contract
(tests/test_family_contract.py): the joint attention as one component of two outputs, a post-block patch
(ComfyUI's DiffSynth ControlNet patches the image stream after each block), and Qwen-Image-Edit's
reference latents, including Qwen-Image-Edit-2511's "timestep zero" reference tokens (ComfyUI v0.20+)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from ecad_nodes.choice import ScheduleChoice
from ecad_nodes.schedule import Mask
from family_checks import (apply, assert_all_compute_is_identical, assert_cached_outputs_stay_untouched,
                           assert_runs_as_planned, layout_of)
from support import sample

pytestmark = pytest.mark.comfy


def _built(spec):
    return spec, spec.build(seed=0)


def _edit_2511_unavailable():
    from ecad_nodes.families.qwen_image import TinyQwenImageEdit2511
    return TinyQwenImageEdit2511().unavailable()


@pytest.fixture(scope="module")
def qwen():
    from ecad_nodes.families.qwen_image import TinyQwenImage
    return _built(TinyQwenImage())


@pytest.fixture(scope="module", params=["edit", pytest.param("edit-2511", marks=pytest.mark.needs.with_args(_edit_2511_unavailable))])
def qwen_edit(request):
    """(spec, model) of Qwen-Image-Edit (reference tokens share the image's timestep) and of Qwen-Image-Edit-2511
    (reference tokens get timestep 0: the blocks modulate and gate them apart)."""
    from ecad_nodes.families.qwen_image import TinyQwenImage, TinyQwenImageEdit2511
    return _built(TinyQwenImage() if request.param == "edit" else TinyQwenImageEdit2511())


@dataclass(frozen=True)
class AddAfterBlock:
    """A post-block patch like ComfyUI's DiffSynth ControlNet patch: shifts the image stream after each block."""

    amount: float

    def __call__(self, args: dict) -> dict:
        return {"img": args["img"] + self.amount * (args["block_index"] + 1), "txt": args["txt"]}


def test_all_compute_stays_identical_with_a_post_block_patch(qwen):
    spec, model = qwen
    size = spec.test_size
    with_patch = model.clone()
    with_patch.set_model_double_block_patch(AddAfterBlock(0.01))
    reference = sample(model, spec, cfg=2.5, width=size, height=size)
    assert not torch.equal(sample(with_patch, spec, cfg=2.5, width=size, height=size), reference)
    assert_all_compute_is_identical(with_patch, spec, cfg=2.5, width=size, height=size)


def test_a_skipped_joint_attention_yields_both_streams_of_its_last_computed_step(qwen):
    spec, model = qwen
    size = spec.test_size
    layout = layout_of(model)
    bits = np.ones((6, layout.bits_per_step), dtype=bool)
    bits[[1, 2, 4, 5], layout.bit("transformer_blocks", 1, "attn")] = False  # computed at steps 0 and 3 only
    patched = apply(model, ScheduleChoice.of_mask("attn-reuse", Mask(layout, bits)))
    seen = []  # what block 1's attention gives at each step (a module hook sees the ECAD-patched forward's result)
    block = model.model.diffusion_model.transformer_blocks[1]
    handle = block.attn.register_forward_hook(lambda module, args, out: seen.append(tuple(t.clone() for t in out)))
    try:
        sample(patched, spec, cfg=4.0, width=size, height=size)
    finally:
        handle.remove()
    assert len(seen) == 6 and seen[0][0].shape[0] == 2  # cond and uncond rows in one batch
    for step, source in ((1, 0), (2, 0), (4, 3), (5, 3)):
        assert all(torch.equal(a, b) for a, b in zip(seen[step], seen[source]))
    assert not torch.equal(seen[3][0], seen[0][0]) and not torch.equal(seen[3][1], seen[0][1])


def with_reference(spec, seed: int, tokens: int | None = None) -> list:
    """Conditioning as TextEncodeQwenImageEdit makes it: the encoded image's latent as a reference latent."""
    cond = spec.conditioning(seed, tokens)
    latent = torch.randn(1, spec.latent_channels, 1, 8, 8, generator=torch.Generator().manual_seed(100 + seed))
    cond[0][1]["reference_latents"] = [latent]
    return cond


@pytest.mark.parametrize("cfg, negative_tokens", [(1.0, None), (3.5, None), (3.5, 5)],
                         ids=["cfg1", "cfg-batched", "cfg-separate-calls"])
def test_all_compute_is_bit_identical_with_reference_latents(qwen_edit, cfg, negative_tokens):
    from ecad_nodes.families.qwen_image import TinyQwenImageEdit2511
    spec, model = qwen_edit
    size = spec.test_size
    calls = []  # image tokens (with the reference's) and where timestep-zero tokens start, per block call
    handle = model.model.diffusion_model.transformer_blocks[0].register_forward_pre_hook(
        lambda module, args, kwargs: calls.append((kwargs["hidden_states"].shape[1], kwargs.get("timestep_zero_index"))),
        with_kwargs=True)
    try:
        assert_all_compute_is_identical(model, spec, steps=3, cfg=cfg, width=size, height=size,
                                        positive=with_reference(spec, 1), negative=with_reference(spec, 2, negative_tokens))
    finally:
        handle.remove()
    image_tokens = (size // spec.compression // 2) ** 2
    timestep_zero = image_tokens if isinstance(spec, TinyQwenImageEdit2511) else None
    assert set(calls) == {(2 * image_tokens, timestep_zero)}


def test_components_run_as_planned_and_caches_stay_untouched_with_reference_latents(qwen_edit, monkeypatch):
    spec, model = qwen_edit
    size = spec.test_size
    kwargs = dict(cfg=4.0, width=size, height=size, positive=with_reference(spec, 1), negative=with_reference(spec, 2, 5))
    assert_runs_as_planned(model, spec, **kwargs)
    assert_cached_outputs_stay_untouched(model, spec, monkeypatch, **kwargs)


def test_presets_and_the_benchmark_model():
    from ecad_nodes.registry import benchmark_models, preset
    real, tiny = preset("qwen-image"), preset("tiny-qwen-image")
    assert real.family == tiny.family == "qwen_image" and real.files is not None and real.cfg > 1
    assert real.extra == {"model_sampling": "AuraFlow", "shift": 3.1}
    [bench] = [b for b in benchmark_models() if b.name == "qwen_image"]
    latent = bench.spec.empty_latent(bench.height, bench.width)
    assert (latent.shape[-2] // 2) * (latent.shape[-1] // 2) == 1024  # image tokens

"""Qwen-Image inside real ComfyUI (COMFYUI_PATH): a tiny random-weight Qwen-Image built from ComfyUI's own classes."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from ecad_nodes.choice import ScheduleChoice
from ecad_nodes.schedule import Mask
from family_checks import (apply, assert_all_compute_is_identical, assert_cached_outputs_stay_untouched,
                           assert_flops_follow_the_cost_model, assert_fora2_behaviour, assert_runs_as_planned, layout_of)
from support import sample

pytestmark = pytest.mark.comfy

SIZE = 64  # 8×8 latent, 16 image tokens


@pytest.fixture(scope="module")
def qwen():
    from optimizer.presets.qwen_image import TinyQwenImage
    spec = TinyQwenImage()
    return spec, spec.build(seed=0)


def test_the_tiny_model_is_comfyuis_qwen_image_and_gets_the_qwen_adapter(qwen):
    from ecad_nodes.families import adapter_for
    spec, model = qwen
    dm = model.model.diffusion_model
    assert (type(dm).__module__, type(dm).__name__) == ("comfy.ldm.qwen_image.model", "QwenImageTransformer2DModel")
    assert type(model.model.model_config).__name__ == "QwenImage"
    adapter = adapter_for(model.model)
    assert adapter.family == "qwen_image" and adapter.variant(model.model) == "qwen-image"
    assert [(g.name, g.blocks, g.components) for g in layout_of(model).groups] == [
        ("transformer_blocks", spec.depth, ("attn", "img_mlp", "txt_mlp"))]


@pytest.mark.parametrize("cfg, negative_tokens", [(1.0, None), (3.5, None), (3.5, 5)],
                         ids=["cfg1", "cfg-batched", "cfg-separate-calls"])
def test_all_compute_is_bit_identical_to_the_unpatched_model(qwen, cfg, negative_tokens):
    spec, model = qwen
    negative = spec.conditioning(2, tokens=negative_tokens) if negative_tokens else None
    assert_all_compute_is_identical(model, spec, cfg=cfg, width=SIZE, height=SIZE, negative=negative)


@dataclass(frozen=True)
class AddAfterBlock:
    """A post-block patch like ComfyUI's DiffSynth ControlNet patch: shifts the image stream after each block."""

    amount: float

    def __call__(self, args: dict) -> dict:
        return {"img": args["img"] + self.amount * (args["block_index"] + 1), "txt": args["txt"]}


def test_all_compute_stays_identical_with_a_post_block_patch(qwen):
    spec, model = qwen
    with_patch = model.clone()
    with_patch.set_model_double_block_patch(AddAfterBlock(0.01))
    reference = sample(model, spec, cfg=2.5, width=SIZE, height=SIZE)
    assert not torch.equal(sample(with_patch, spec, cfg=2.5, width=SIZE, height=SIZE), reference)
    assert_all_compute_is_identical(with_patch, spec, cfg=2.5, width=SIZE, height=SIZE)


@pytest.mark.parametrize("negative_tokens", [None, 5], ids=["batched", "separate-calls"])
def test_components_run_exactly_where_the_mask_says_per_stream(qwen, negative_tokens):
    spec, model = qwen
    negative = spec.conditioning(2, tokens=negative_tokens) if negative_tokens else None
    assert_runs_as_planned(model, spec, cfg=4.0, width=SIZE, height=SIZE, negative=negative)


def test_skipped_components_really_skip_their_matmuls(qwen):
    spec, model = qwen
    assert_flops_follow_the_cost_model(model, spec, width=SIZE, height=SIZE)


def test_fora2_halves_the_component_calls_and_leaves_the_base_model_alone(qwen):
    spec, model = qwen
    assert_fora2_behaviour(model, spec, cfg=2.5, width=SIZE, height=SIZE)


def test_cached_outputs_are_never_written_into(qwen, monkeypatch):
    spec, model = qwen
    assert_cached_outputs_stay_untouched(model, spec, monkeypatch, cfg=2.5, width=SIZE, height=SIZE)


def test_a_skipped_joint_attention_yields_both_streams_of_its_last_computed_step(qwen):
    spec, model = qwen
    layout = layout_of(model)
    bits = np.ones((6, layout.bits_per_step), dtype=bool)
    attn_of_block_1 = 3 * 1 + 0
    bits[[1, 2, 4, 5], attn_of_block_1] = False  # computed at steps 0 and 3 only
    patched = apply(model, ScheduleChoice.of_mask("attn-reuse", Mask(layout, bits)))
    seen = []  # what block 1's attention gives at each step (a module hook sees the ECAD-patched forward's result)
    block = model.model.diffusion_model.transformer_blocks[1]
    handle = block.attn.register_forward_hook(lambda module, args, out: seen.append(tuple(t.clone() for t in out)))
    try:
        sample(patched, spec, cfg=4.0, width=SIZE, height=SIZE)
    finally:
        handle.remove()
    assert len(seen) == 6 and seen[0][0].shape[0] == 2  # cond and uncond rows in one batch
    for step, source in ((1, 0), (2, 0), (4, 3), (5, 3)):
        assert all(torch.equal(a, b) for a, b in zip(seen[step], seen[source]))
    assert not torch.equal(seen[3][0], seen[0][0]) and not torch.equal(seen[3][1], seen[0][1])


def test_presets_and_the_benchmark_model():
    from ecad_nodes.families import adapter_for
    from optimizer.presets import benchmark_models, preset
    real, tiny = preset("qwen-image"), preset("tiny-qwen-image")
    assert real.family == tiny.family == "qwen_image" and real.files is not None and real.cfg > 1
    assert adapter_for(tiny.tiny.build(seed=0).model).family == "qwen_image"
    [bench] = [b for b in benchmark_models() if b.name == "qwen_image"]
    latent = bench.spec.empty_latent(bench.height, bench.width)
    assert (latent.shape[-2] // 2) * (latent.shape[-1] // 2) == 1024  # image tokens

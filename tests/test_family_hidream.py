"""HiDream's own paths inside real ComfyUI (COMFYUI_PATH), beyond the family contract
(tests/test_family_contract.py): the cost of its mixture-of-experts feed-forwards, the joint attention as one
component of two outputs, and HiDream-E1's reference image (concatenated to the latent inside the model)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ecad_nodes.choice import ScheduleChoice
from ecad_nodes.schedule import Mask
from family_checks import apply, assert_all_compute_is_identical, assert_runs_as_planned, layout_of
from support import sample

pytestmark = pytest.mark.comfy


@pytest.fixture(scope="module")
def hidream():
    from ecad_nodes.families.hidream import TinyHiDream
    spec = TinyHiDream()
    return spec, spec.build(seed=0)


def test_the_cost_model_counts_the_routed_experts_each_token_runs_not_all_experts(hidream):
    """A token runs the gate, its top-k routed experts and the shared expert: the ``ff_i`` cost is that, from the
    layers' shapes, for the image tokens (double blocks) and for image and text tokens together (single blocks)."""
    from ecad_nodes.families import adapter_for
    from ecad_nodes.families.base import CallTokens
    spec, model = hidream
    dm = model.model.diffusion_model
    ff = dm.double_stream_blocks[0].block.ff_i
    assert type(ff).__name__ == "MOEFeedForwardSwiGLU"
    assert (len(ff.experts), ff.num_activated_experts) == (spec.experts, spec.active_experts)
    h, expert_width, shared_width = dm.inner_dim, ff.experts[0].w1.out_features, ff.shared_experts.w1.out_features
    layout = layout_of(model)
    costs = adapter_for(model.model).costs(dm, CallTokens(image=100, text=10))

    def expected(tokens: int) -> float:
        return tokens * h * (spec.experts + spec.active_experts * 3 * expert_width + 3 * shared_width)
    assert costs.per_bit[layout.bit("double_stream_blocks", 0, "ff_i")] == expected(100)
    # single blocks: image tokens + T5 + the last and the block's own Llama layer (Llama lengths taken as T5's)
    assert costs.per_bit[layout.bit("single_stream_blocks", 1, "ff_i")] == expected(100 + 3 * 10)
    every_expert = 100 * h * (spec.experts + spec.experts * 3 * expert_width + 3 * shared_width)
    assert costs.per_bit[layout.bit("double_stream_blocks", 0, "ff_i")] < every_expert


def test_a_skipped_joint_attention_yields_both_streams_of_its_last_computed_step(hidream):
    spec, model = hidream
    size = spec.test_size
    layout = layout_of(model)
    bits = np.ones((6, layout.bits_per_step), dtype=bool)
    bits[[1, 2, 4, 5], layout.bit("double_stream_blocks", 1, "attn")] = False  # computed at steps 0 and 3 only
    patched = apply(model, ScheduleChoice.of_mask("reuse", Mask(layout, bits)))
    seen = []  # a module hook sees the ECAD-patched forward's result
    handle = model.model.diffusion_model.double_stream_blocks[1].block.attn1.register_forward_hook(
        lambda module, args, out: seen.append(tuple(t.clone() for t in out)))
    try:
        sample(patched, spec, cfg=4.0, width=size, height=size)
    finally:
        handle.remove()
    assert len(seen) == 6 and len(seen[0]) == 2 and seen[0][0].shape[0] == 2  # image and text; cond and uncond rows
    for step, source in ((1, 0), (2, 0), (4, 3), (5, 3)):
        assert all(torch.equal(a, b) for a, b in zip(seen[step], seen[source]))
    assert all(not torch.equal(a, b) for a, b in zip(seen[3], seen[0]))


def with_reference_image(spec, seed: int, tokens: int | None = None) -> list:
    """HiDream-E1's conditioning: the image to edit as ``concat_latent_image`` (the model concatenates it to the
    latent along the width)."""
    cond = spec.conditioning(seed, tokens)
    size = spec.test_size // spec.compression
    cond[0][1]["concat_latent_image"] = torch.randn(1, spec.latent_channels, size, size,
                                                    generator=torch.Generator().manual_seed(100))
    return cond


@pytest.mark.parametrize("cfg, negative_tokens", [(1.0, None), (3.5, None), (3.5, 5)],
                         ids=["cfg1", "cfg-batched", "cfg-separate-calls"])
def test_hidream_e1_reference_image_stays_exact_and_runs_as_planned(hidream, cfg, negative_tokens):
    spec, model = hidream
    size = spec.test_size
    image_tokens = []
    handle = model.model.diffusion_model.double_stream_blocks[0].block.register_forward_pre_hook(
        lambda module, args: image_tokens.append(args[0].shape[1]))
    kwargs = dict(cfg=cfg, width=size, height=size, positive=with_reference_image(spec, 1),
                  negative=with_reference_image(spec, 2, negative_tokens))
    try:
        assert_all_compute_is_identical(model, spec, steps=3, **kwargs)
    finally:
        handle.remove()
    assert set(image_tokens) == {2 * (size // spec.compression // 2) ** 2}  # the reference doubles the image tokens
    if cfg != 1.0:
        assert_runs_as_planned(model, spec, **kwargs)


def test_presets_and_the_benchmark_model():
    from ecad_nodes.registry import benchmark_models, preset
    full, dev, tiny = preset("hidream-i1-full"), preset("hidream-i1-dev"), preset("tiny-hidream")
    assert full.family == dev.family == tiny.family == "hidream"
    assert full.files is not None and full.cfg > 1 and dev.cfg == 1
    [bench] = [b for b in benchmark_models() if b.name == "hidream"]
    latent = bench.spec.empty_latent(bench.height, bench.width)
    assert (latent.shape[-2] // 2) * (latent.shape[-1] // 2) == 1024  # image tokens

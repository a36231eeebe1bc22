"""HiDream inside real ComfyUI (COMFYUI_PATH): a tiny random-weight HiDream built from ComfyUI's own classes,
with its mixture-of-experts feed-forwards and per-block Llama conditioning."""
from __future__ import annotations

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
def hidream():
    from optimizer.presets.hidream import TinyHiDream
    spec = TinyHiDream()
    return spec, spec.build(seed=0)


def test_the_tiny_model_is_comfyuis_hidream_and_gets_the_hidream_adapter(hidream):
    from ecad_nodes.families import adapter_for
    spec, model = hidream
    dm = model.model.diffusion_model
    assert (type(dm).__module__, type(dm).__name__) == ("comfy.ldm.hidream.model", "HiDreamImageTransformer2DModel")
    assert type(model.model.model_config).__name__ == "HiDream"
    assert type(dm.double_stream_blocks[0].block.ff_i).__name__ == "MOEFeedForwardSwiGLU"
    adapter = adapter_for(model.model)
    assert adapter.family == "hidream" and adapter.variant(model.model) == "hidream-i1"
    assert [(g.name, g.blocks, g.components) for g in layout_of(model).groups] == [
        ("double_stream_blocks", spec.depth, ("attn", "ff_i", "ff_t")),
        ("single_stream_blocks", spec.depth_single, ("attn", "ff_i"))]


@pytest.mark.parametrize("cfg, negative_tokens", [(1.0, None), (3.5, None), (3.5, 5)],
                         ids=["cfg1", "cfg-batched", "cfg-separate-calls"])
def test_all_compute_is_bit_identical_to_the_unpatched_model(hidream, cfg, negative_tokens):
    spec, model = hidream
    negative = spec.conditioning(2, tokens=negative_tokens) if negative_tokens else None
    assert_all_compute_is_identical(model, spec, cfg=cfg, width=SIZE, height=SIZE, negative=negative)


@pytest.mark.parametrize("negative_tokens", [None, 5], ids=["batched", "separate-calls"])
def test_components_run_exactly_where_the_mask_says_per_stream(hidream, negative_tokens):
    spec, model = hidream
    negative = spec.conditioning(2, tokens=negative_tokens) if negative_tokens else None
    assert_runs_as_planned(model, spec, cfg=4.0, width=SIZE, height=SIZE, negative=negative)


def test_skipped_components_really_skip_their_matmuls(hidream):
    """PyTorch's FLOP count equals the cost model, whose expert feed-forwards count the top-k experts each token runs."""
    spec, model = hidream
    assert_flops_follow_the_cost_model(model, spec, width=SIZE, height=SIZE)


def test_the_cost_model_counts_routed_experts_per_token_not_all_experts(hidream):
    from ecad_nodes.families import adapter_for
    from ecad_nodes.families.base import CallTokens
    from ecad_nodes.families.hidream import HiDreamDims
    spec, model = hidream
    dm = model.model.diffusion_model
    dims = HiDreamDims.of(dm)
    assert (dims.experts, dims.active_experts) == (spec.experts, spec.active_experts)
    costs = adapter_for(model.model).costs(dm, CallTokens(image=100, text=10))
    ff_i_of_first_double_block = 1
    h = dims.hidden
    expected = 100 * h * spec.experts + spec.active_experts * 3 * 100 * h * dims.expert_hidden + 3 * 100 * h * dims.shared_hidden
    assert costs.per_bit[ff_i_of_first_double_block] == expected


def test_fora2_halves_the_component_calls_and_leaves_the_base_model_alone(hidream):
    spec, model = hidream
    assert_fora2_behaviour(model, spec, cfg=2.5, width=SIZE, height=SIZE)


def test_cached_outputs_are_never_written_into(hidream, monkeypatch):
    spec, model = hidream
    assert_cached_outputs_stay_untouched(model, spec, monkeypatch, cfg=2.5, width=SIZE, height=SIZE)


@pytest.mark.parametrize("group, component", [("double_stream_blocks", "attn"), ("single_stream_blocks", "ff_i")])
def test_a_skipped_component_yields_its_last_computed_output(hidream, group, component):
    """A reused double-block attention gives both streams of its last computed step; a reused single-block
    expert mixture gives the image and text tokens' outputs of its last computed step."""
    spec, model = hidream
    layout = layout_of(model)
    g = layout.group(group)
    bit = layout.offsets()[group] + len(g.components) * 1 + g.components.index(component)  # block 1
    bits = np.ones((6, layout.bits_per_step), dtype=bool)
    bits[[1, 2, 4, 5], bit] = False  # computed at steps 0 and 3 only
    patched = apply(model, ScheduleChoice.of_mask("reuse", Mask(layout, bits)))
    module = getattr(getattr(model.model.diffusion_model, group)[1].block, {"attn": "attn1"}.get(component, component))
    seen = []  # a module hook sees the ECAD-patched forward's result

    def keep(module, args, out):
        seen.append(tuple(t.clone() for t in out) if isinstance(out, tuple) else (out.clone(),))
    handle = module.register_forward_hook(keep)
    try:
        sample(patched, spec, cfg=4.0, width=SIZE, height=SIZE)
    finally:
        handle.remove()
    assert len(seen) == 6 and seen[0][0].shape[0] == 2  # cond and uncond rows in one batch
    assert len(seen[0]) == (2 if group == "double_stream_blocks" else 1)
    for step, source in ((1, 0), (2, 0), (4, 3), (5, 3)):
        assert all(torch.equal(a, b) for a, b in zip(seen[step], seen[source]))
    assert all(not torch.equal(a, b) for a, b in zip(seen[3], seen[0]))


def test_presets_and_the_benchmark_model():
    from ecad_nodes.families import adapter_for
    from optimizer.presets import benchmark_models, preset
    full, dev, tiny = preset("hidream-i1-full"), preset("hidream-i1-dev"), preset("tiny-hidream")
    assert full.family == dev.family == tiny.family == "hidream"
    assert full.files is not None and full.cfg > 1 and dev.cfg == 1
    assert adapter_for(tiny.tiny.build(seed=0).model).family == "hidream"
    [bench] = [b for b in benchmark_models() if b.name == "hidream"]
    latent = bench.spec.empty_latent(bench.height, bench.width)
    assert (latent.shape[-2] // 2) * (latent.shape[-1] // 2) == 1024  # image tokens

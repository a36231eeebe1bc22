"""AuraFlow inside real ComfyUI (COMFYUI_PATH): a tiny random-weight AuraFlow built from ComfyUI's own classes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ecad_nodes.choice import ScheduleChoice
from ecad_nodes.schedule import Mask
from family_checks import (apply, assert_all_compute_is_identical, assert_cached_outputs_stay_untouched,
                           assert_flops_follow_the_cost_model, assert_fora2_behaviour,
                           assert_internal_outputs_are_cached_only_for_their_consumers, assert_runs_as_planned, layout_of)
from support import sample

pytestmark = pytest.mark.comfy

SIZE = 64  # 8×8 latent, 16 image tokens


@pytest.fixture(scope="module")
def aura():
    from optimizer.presets.aura import TinyAuraFlow
    spec = TinyAuraFlow()
    return spec, spec.build(seed=0)


def test_the_tiny_model_is_comfyuis_auraflow_and_gets_the_auraflow_adapter(aura):
    from ecad_nodes.families import adapter_for
    spec, model = aura
    dm = model.model.diffusion_model
    assert (type(dm).__module__, type(dm).__name__) == ("comfy.ldm.aura.mmdit", "MMDiT")
    assert type(model.model.model_config).__name__ == "AuraFlow"
    adapter = adapter_for(model.model)
    assert adapter.family == "auraflow" and adapter.variant(model.model) == "auraflow"
    assert [(g.name, g.blocks, g.components) for g in layout_of(model).groups] == [
        ("double_layers", spec.depth_double, ("attn", "img_mlp", "txt_mlp")),
        ("single_layers", spec.depth_single, ("attn", "mlp"))]


@pytest.mark.parametrize("cfg, negative_tokens", [(1.0, None), (3.5, None), (3.5, 5)],
                         ids=["cfg1", "cfg-batched", "cfg-separate-calls"])
def test_all_compute_is_bit_identical_to_the_unpatched_model(aura, cfg, negative_tokens):
    spec, model = aura
    negative = spec.conditioning(2, tokens=negative_tokens) if negative_tokens else None
    assert_all_compute_is_identical(model, spec, cfg=cfg, width=SIZE, height=SIZE, negative=negative)


@pytest.mark.parametrize("negative_tokens", [None, 5], ids=["batched", "separate-calls"])
def test_components_run_exactly_where_the_mask_says_per_stream(aura, negative_tokens):
    spec, model = aura
    negative = spec.conditioning(2, tokens=negative_tokens) if negative_tokens else None
    assert_runs_as_planned(model, spec, cfg=3.5, width=SIZE, height=SIZE, negative=negative)


def test_skipped_components_really_skip_their_matmuls(aura):
    spec, model = aura
    assert_flops_follow_the_cost_model(model, spec, width=SIZE, height=SIZE)


def test_fora2_halves_the_component_calls_and_leaves_the_base_model_alone(aura):
    spec, model = aura
    assert_fora2_behaviour(model, spec, cfg=3.5, width=SIZE, height=SIZE)


def test_cached_outputs_are_never_written_into(aura, monkeypatch):
    spec, model = aura
    assert_cached_outputs_stay_untouched(model, spec, monkeypatch, cfg=3.5, width=SIZE, height=SIZE)


def test_reused_raw_outputs_still_get_the_current_steps_gates_and_norms(aura):
    """A reused joint attention yields both streams of its last computed step; the block's MLP input still changes."""
    spec, model = aura
    layout = layout_of(model)
    bits = np.ones((6, layout.bits_per_step), dtype=bool)
    attn_of_double_1 = 3 * 1 + 0
    bits[[1, 2, 4, 5], attn_of_double_1] = False  # computed at steps 0 and 3 only
    patched = apply(model, ScheduleChoice.of_mask("attn-reuse", Mask(layout, bits)))
    block = model.model.diffusion_model.double_layers[1]
    attn_out, mlp_in = [], []  # module hooks see the ECAD-patched forward's result
    handles = [block.attn.register_forward_hook(lambda m, a, out: attn_out.append(tuple(t.clone() for t in out))),
               block.mlpX.register_forward_pre_hook(lambda m, args: mlp_in.append(args[0].clone()))]
    try:
        sample(patched, spec, cfg=3.5, width=SIZE, height=SIZE)
    finally:
        for h in handles:
            h.remove()
    assert len(attn_out) == len(mlp_in) == 6 and attn_out[0][0].shape[0] == 2  # cond and uncond in one batch
    for step, source in ((1, 0), (2, 0), (4, 3), (5, 3)):
        assert all(torch.equal(a, b) for a, b in zip(attn_out[step], attn_out[source]))
        assert not torch.equal(mlp_in[step], mlp_in[source])  # current residual, gate and modulation
    assert not torch.equal(attn_out[3][0], attn_out[0][0]) and not torch.equal(attn_out[3][1], attn_out[0][1])


def test_presets_and_the_benchmark_model():
    from ecad_nodes.families import adapter_for
    from optimizer.presets import benchmark_models, preset
    real, tiny = preset("auraflow-0.3"), preset("tiny-auraflow")
    assert real.family == tiny.family == "auraflow" and real.files is not None and real.cfg > 1
    assert adapter_for(tiny.tiny.build(seed=0).model).family == "auraflow"
    [bench] = [b for b in benchmark_models() if b.name == "auraflow"]
    latent = bench.spec.empty_latent(bench.height, bench.width)
    assert (latent.shape[-2] // 2) * (latent.shape[-1] // 2) == 1024  # image tokens
    assert bench.spec.max_seq >= 1024  # no position-table interpolation at the benchmark size


def test_an_attention_is_cached_only_for_steps_at_which_an_mlp_computes(aura, monkeypatch):
    """AuraFlow's attention output reaches the residual only through the MLPs."""
    spec, model = aura
    assert_internal_outputs_are_cached_only_for_their_consumers(model, spec, monkeypatch, cfg=3.5, width=SIZE, height=SIZE)

"""Lumina Image 2.0 inside real ComfyUI (COMFYUI_PATH): a tiny random-weight NextDiT built from ComfyUI's own classes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ecad_nodes.choice import ScheduleChoice
from ecad_nodes.schedule import Mask
from family_checks import (apply, assert_all_compute_is_identical, assert_cached_outputs_stay_untouched,
                           assert_flops_follow_the_cost_model, assert_fora2_behaviour, assert_runs_as_planned, layout_of)
from support import last_report, sample

pytestmark = pytest.mark.comfy

SIZE = 64  # 8×8 latent, 16 image tokens


@pytest.fixture(scope="module")
def lumina():
    from optimizer.presets.lumina import TinyLumina2
    spec = TinyLumina2()
    return spec, spec.build(seed=0)


def test_the_tiny_model_is_comfyuis_lumina2_and_gets_the_lumina_adapter(lumina):
    from ecad_nodes.families import adapter_for
    spec, model = lumina
    dm = model.model.diffusion_model
    assert (type(dm).__module__, type(dm).__name__) == ("comfy.ldm.lumina.model", "NextDiT")
    assert type(model.model.model_config).__name__ == "Lumina2"
    assert dm.layers[0].attention.n_rep == spec.heads // spec.kv_heads > 1  # grouped-query attention, as released
    adapter = adapter_for(model.model)
    assert adapter.family == "lumina2" and adapter.variant(model.model) == "lumina-image-2.0"
    assert [(g.name, g.blocks, g.components) for g in layout_of(model).groups] == [
        ("context_refiner", spec.refiners, ("attn", "mlp")), ("noise_refiner", spec.refiners, ("attn", "mlp")),
        ("layers", spec.depth, ("attn", "mlp"))]


@pytest.mark.parametrize("cfg, negative", [(1.0, None), (4.0, None), (4.0, (7, 0)), (4.0, (16, 5))],
                         ids=["cfg1", "cfg-batched", "cfg-separate-calls", "cfg-padded-negative"])
def test_all_compute_is_bit_identical_to_the_unpatched_model(lumina, cfg, negative):
    spec, model = lumina
    negative = spec.conditioning(2, tokens=negative[0], padding=negative[1]) if negative else None
    assert_all_compute_is_identical(model, spec, cfg=cfg, width=SIZE, height=SIZE, negative=negative)


@pytest.mark.parametrize("negative_tokens", [None, 7], ids=["batched", "separate-calls"])
def test_components_run_exactly_where_the_mask_says_per_stream(lumina, negative_tokens):
    spec, model = lumina
    negative = spec.conditioning(2, tokens=negative_tokens) if negative_tokens else None
    assert_runs_as_planned(model, spec, cfg=4.0, width=SIZE, height=SIZE, negative=negative)


def test_skipped_components_really_skip_their_matmuls(lumina):
    spec, model = lumina
    assert_flops_follow_the_cost_model(model, spec, width=SIZE, height=SIZE)


def test_fora2_halves_the_component_calls_and_leaves_the_base_model_alone(lumina):
    spec, model = lumina
    assert_fora2_behaviour(model, spec, cfg=4.0, width=SIZE, height=SIZE)


def test_cached_outputs_are_never_written_into(lumina, monkeypatch):
    spec, model = lumina
    assert_cached_outputs_stay_untouched(model, spec, monkeypatch, cfg=4.0, width=SIZE, height=SIZE)


def group_only_mask(model, group: str, steps: int = 6) -> Mask:
    """Compute everything except ``group``'s components, which are computed at the first step only."""
    layout = layout_of(model)
    bits = np.ones((steps, layout.bits_per_step), dtype=bool)
    start = layout.offsets()[group]
    bits[1:, start:start + layout.group(group).bits] = False
    return Mask(layout, bits)


def test_reusing_the_context_refiner_is_exact_and_reusing_the_noise_refiner_is_not(lumina):
    """The context refiner sees only the prompt, the same at every step, so its cached outputs are its outputs."""
    spec, model = lumina
    reference = sample(model, spec, cfg=4.0, width=SIZE, height=SIZE)
    context_reused = apply(model, ScheduleChoice.of_mask("context", group_only_mask(model, "context_refiner")))
    assert torch.equal(sample(context_reused, spec, cfg=4.0, width=SIZE, height=SIZE), reference)
    report = last_report(context_reused)
    assert all(report.reused[s].sum() == 5 * 2 * spec.refiners for s in report.streams)
    noise_reused = apply(model, ScheduleChoice.of_mask("noise", group_only_mask(model, "noise_refiner")))
    out = sample(noise_reused, spec, cfg=4.0, width=SIZE, height=SIZE)
    assert torch.isfinite(out).all() and not torch.equal(out, reference)


def test_presets_and_the_benchmark_model():
    from ecad_nodes.families import adapter_for
    from optimizer.presets import benchmark_models, preset
    real, tiny = preset("lumina-image-2.0"), preset("tiny-lumina2")
    assert real.family == tiny.family == "lumina2" and real.files is not None and real.cfg > 1
    assert adapter_for(tiny.tiny.build(seed=0).model).family == "lumina2"
    [bench] = [b for b in benchmark_models() if b.name == "lumina2"]
    assert bench.spec.hidden == 512 and sum(bench.spec.axes_dims) == bench.spec.head_dim
    latent = bench.spec.empty_latent(bench.height, bench.width)
    assert (latent.shape[-2] // 2) * (latent.shape[-1] // 2) == 1024  # image tokens

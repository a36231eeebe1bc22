"""The engine inside real ComfyUI (COMFYUI_PATH): FLUX and PixArt built from ComfyUI's own classes."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from conftest import REFERENCE, requires_reference
from ecad_nodes.choice import ScheduleChoice
from ecad_nodes.heuristics import HEURISTICS, NO_CACHING, fora_bits
from ecad_nodes.schedule import Mask, ScheduleError
from ecad_nodes.schedule_io import load_schedule
from support import assert_ran_as_planned, last_report, sample

pytestmark = pytest.mark.comfy

FORA2, FORA3 = HEURISTICS[1], HEURISTICS[2]


@pytest.fixture(scope="module")
def flux():
    from ecad_nodes.families.flux import TinyFlux
    spec = TinyFlux()
    return spec, spec.build(seed=0)


@pytest.fixture(scope="module")
def pixart():
    from ecad_nodes.families.pixart import TinyPixArt
    spec = TinyPixArt()
    return spec, spec.build(seed=0)


SIZES = {"TinyFlux": 64, "TinyPixArt": 384}  # PixArt needs latents of at least ~48×48


@pytest.fixture(params=["flux", "pixart"])
def family(request, flux, pixart):
    spec, model = flux if request.param == "flux" else pixart
    return spec, model, SIZES[type(spec).__name__]


def apply(model, choice):
    from ecad_nodes.patching import apply_ecad
    return apply_ecad(model, choice)


def random_choice(model, steps, keep, seed):
    from ecad_nodes.families import adapter_for
    layout = adapter_for(model.model).layout(model.model.diffusion_model)
    bits = np.random.default_rng(seed).random((steps, layout.bits_per_step)) < keep
    bits[0] = True
    return ScheduleChoice.of_mask(f"random{seed}", Mask(layout, bits))


# ------------------------------------------------------------------ identity

# ------------------------------------------------------------------ reuse semantics

def test_a_skipped_component_yields_the_output_of_its_last_computed_step(pixart):
    spec, model = pixart
    layout = apply_layout(model)
    bits = np.ones((6, layout.bits_per_step), dtype=bool)
    mlp_of_block_1 = 3 * 1 + 2
    bits[[1, 2, 4, 5], mlp_of_block_1] = False  # computed at steps 0 and 3 only
    patched = apply(model, ScheduleChoice.of_mask("mlp-reuse", Mask(layout, bits)))
    outputs = []
    handle = model.model.diffusion_model.blocks[1].mlp.register_forward_hook(lambda m, a, out: outputs.append(out.clone()))
    try:
        sample(patched, spec, cfg=4.0, width=384, height=384)
    finally:
        handle.remove()
    assert len(outputs) == 6 and outputs[0].shape[0] == 2  # uncond and cond rows in one batch
    for step, source in ((1, 0), (2, 0), (4, 3), (5, 3)):
        assert torch.equal(outputs[step], outputs[source])
    assert not torch.equal(outputs[3], outputs[0])


def test_fora2_caches_exactly_one_hidden_state_per_block_output(flux):
    """Double blocks: joint attention (both streams) and the two MLPs; single blocks: the output projection."""
    spec, model = flux
    patched = apply(model, ScheduleChoice.of_heuristic(FORA2))
    sample(patched, spec, cfg=3.5, width=64, height=64)
    report = last_report(patched)
    dm = model.model.diffusion_model
    tokens = report.tokens.image + report.tokens.text
    hidden_states = 2 * len(dm.double_blocks) + len(dm.single_blocks)
    rows = 2  # cond and uncond
    assert report.peak_cache_bytes == hidden_states * rows * tokens * dm.hidden_size * 4  # float32


def test_a_full_cache_budget_recomputes_instead_of_reusing(flux):
    """Budget 0 caches nothing: every step computes, so the samples are the unpatched model's."""
    from ecad_nodes.patching import SETTINGS_KEY
    spec, model = flux
    reference = sample(model, spec, cfg=3.5, width=64, height=64)
    patched = apply(model, ScheduleChoice.of_heuristic(FORA2))
    sample(patched, spec, cfg=3.5, width=64, height=64)
    unlimited = last_report(patched)
    assert unlimited.uncached == 0 and unlimited.cache_budget_bytes > unlimited.peak_cache_bytes > 0  # automatic
    settings = patched.model_options["transformer_options"][SETTINGS_KEY]
    settings.cache_budget_bytes = 0
    assert torch.equal(sample(patched, spec, cfg=3.5, width=64, height=64), reference)
    starved = last_report(patched)
    assert starved.peak_cache_bytes == 0 and starved.compute_fraction() == 1.0 and starved.uncached > 0
    settings.cache_budget_bytes = unlimited.peak_cache_bytes // 2
    assert torch.isfinite(sample(patched, spec, cfg=3.5, width=64, height=64)).all()
    half = last_report(patched)
    assert 0 < half.peak_cache_bytes <= settings.cache_budget_bytes and 0.5 < half.compute_fraction() < 1.0


# ------------------------------------------------------------------ official schedules

@requires_reference
@pytest.mark.parametrize("name", ["flux_256/ours_fast.json", "flux_256/ours_faster.json",
                                  "pixart_alpha_256/ours_fast.json", "pixart_alpha_256/ours_faster.json",
                                  "pixart_alpha_256/ours_fastest.json", "pixart_sigma_256/ours_fast.json"])
def test_official_schedules_run_each_component_exactly_where_the_file_says_true(name):
    from ecad_nodes.families.flux import TinyFlux
    from ecad_nodes.families.pixart import TinyPixArt
    from ecad_nodes.library import choose  # noqa: F401  (the nodes' path: load file, pick its point)
    schedule = load_schedule(REFERENCE / "schedules_in_paper" / name)
    if schedule.family == "flux":
        spec, size = TinyFlux(depth=19, depth_single=38), 64
    else:
        spec, size = TinyPixArt(depth=28), 384
    model = spec.build(seed=1)
    choice = ScheduleChoice.of_point(name, schedule, schedule.points[0])
    patched = apply(model, choice)
    sample(patched, spec, steps=20, cfg=4.5 if schedule.family == "pixart" else 1.0, width=size, height=size,
           sampler="euler", scheduler="simple")
    report = last_report(patched)
    planned = schedule.points[0].mask.bits.copy()
    planned[0] = True  # nothing is cached before the first step: the official code recomputes too
    assert_ran_as_planned(report, planned, streams=2 if schedule.family == "pixart" else 1)


# ------------------------------------------------------------------ isolation

def test_the_base_model_and_other_clones_are_unaffected(family):
    spec, model, size = family
    kwargs = dict(cfg=3.0, width=size, height=size)
    before = sample(model, spec, **kwargs)
    fora = apply(model, ScheduleChoice.of_heuristic(FORA2))
    random_clone = apply(model, random_choice(model, 6, keep=0.5, seed=5))
    a1 = sample(fora, spec, **kwargs)
    b1 = sample(random_clone, spec, **kwargs)
    a2 = sample(fora, spec, **kwargs)
    base_between = sample(model, spec, **kwargs)
    b2 = sample(random_clone, spec, **kwargs)
    assert torch.equal(a1, a2) and torch.equal(b1, b2) and not torch.equal(a1, b1)
    assert torch.equal(base_between, before)
    assert torch.equal(sample(model, spec, **kwargs), before)
    assert last_report(fora).compute_fraction() == pytest.approx(0.5)


def test_applying_twice_replaces_the_first_schedule(pixart):
    spec, model = pixart
    twice = apply(apply(model, ScheduleChoice.of_heuristic(FORA3)), ScheduleChoice.of_heuristic(FORA2))
    once = apply(model, ScheduleChoice.of_heuristic(FORA2))
    assert torch.equal(sample(twice, spec, width=384, height=384), sample(once, spec, width=384, height=384))
    assert last_report(twice).compute_fraction() == pytest.approx(0.5)


# ------------------------------------------------------------------ samplers and step counts

@pytest.mark.parametrize("sampler, evaluations", [
    ("euler", [1] * 6), ("dpmpp_2m", [1] * 6), ("heun", [1] + [2] * 5)])
def test_sampler_evaluations_map_to_their_step(flux, sampler, evaluations):
    spec, model = flux
    choice = random_choice(model, 6, keep=0.4, seed=2)
    patched = apply(model, choice)
    sample(patched, spec, steps=6, sampler=sampler, width=64, height=64)
    report = last_report(patched)
    assert list(report.evaluations) == evaluations
    assert_ran_as_planned(report, choice.point.mask.bits, streams=1)


def test_a_schedule_for_another_step_count_is_mapped_by_relative_position(pixart, caplog):
    spec, model = pixart
    choice = random_choice(model, 10, keep=0.4, seed=4)
    patched = apply(model, choice)
    with caplog.at_level(logging.WARNING, logger="ComfyUI-ECAD"):
        sample(patched, spec, steps=15, sampler="dpmpp_2m", scheduler="normal", width=384, height=384)
    assert "made for 10 steps; the workflow runs 15" in caplog.text
    report = last_report(patched)
    from ecad_nodes.schedule import step_mapping
    np.testing.assert_array_equal(report.schedule_step_of, step_mapping(15, 10))
    planned = choice.point.mask.bits[step_mapping(15, 10)]
    planned[0] = True
    assert_ran_as_planned(report, planned, streams=1)


def test_denoise_below_one_runs_the_schedule_over_the_steps_actually_sampled(flux):
    spec, model = flux
    patched = apply(model, ScheduleChoice.of_heuristic(FORA2))
    sample(patched, spec, steps=8, denoise=0.5, width=64, height=64)
    report = last_report(patched)
    assert report.steps == 8 and list(report.evaluations) == [1] * 8


# ------------------------------------------------------------------ bad input

def test_a_schedule_for_another_family_or_block_count_is_refused(flux, pixart, tmp_path):
    from ecad_nodes.schedule import FrontierPoint, ScheduleFile
    from ecad_nodes.schedule_io import save_schedule
    _, flux_model = flux
    _, pixart_model = pixart
    layout = apply_layout(pixart_model)
    path = save_schedule(ScheduleFile("pixart", None, layout, 4, [FrontierPoint("p", Mask.full(layout, 4))]),
                         tmp_path / "pixart-2-blocks.json")
    schedule = load_schedule(path)
    choice = ScheduleChoice.of_point(path.name, schedule, schedule.points[0])
    with pytest.raises(ScheduleError, match=r"pixart-2-blocks\.json: cannot be applied to this model: it is for "
                                            r"model family 'pixart', but the model is 'flux'"):
        apply(flux_model, choice)
    from ecad_nodes.families.pixart import TinyPixArt
    deeper = TinyPixArt(depth=3).build(seed=0)
    with pytest.raises(ScheduleError, match=r"expects pixart \(blocks=2×.*model has pixart \(blocks=3×"):
        apply(deeper, choice)


# ------------------------------------------------------------------ torch.compile

@pytest.mark.parametrize("order", ["compile-then-ecad", "ecad-then-compile"])
def test_comfyui_torch_compile_and_ecad_work_together(family, order):
    """ComfyUI's TorchCompileModel wrapper traces the model with dynamo; ECAD's decisions stay eager."""
    from comfy_api.torch_helpers import set_torch_compile_wrapper
    spec, model, size = family
    kwargs = dict(steps=4, width=size, height=size)
    expected = sample(apply(model, ScheduleChoice.of_heuristic(FORA2)), spec, **kwargs)
    torch._dynamo.reset()
    if order == "compile-then-ecad":
        compiled = model.clone()
        set_torch_compile_wrapper(compiled, backend="eager")
        patched = apply(compiled, ScheduleChoice.of_heuristic(FORA2))
    else:
        patched = apply(model, ScheduleChoice.of_heuristic(FORA2)).clone()
        set_torch_compile_wrapper(patched, backend="eager")
    assert torch.equal(sample(patched, spec, **kwargs), expected)
    assert last_report(patched).compute_fraction() == pytest.approx(0.5)


# ------------------------------------------------------------------ FLUX weight slices

def test_single_block_weight_slices_respect_lowvram_lora_and_scaled_fp8(flux):
    """Computing only q/k/v or only the MLP input of ``linear1`` sees the weights ComfyUI would use."""
    import comfy.model_patcher
    import comfy.ops
    from ecad_nodes.families.flux import _linear_rows
    spec, model = flux
    layer = model.model.diffusion_model.single_blocks[0].linear1
    h3, total = 3 * spec.hidden, layer.out_features
    x = torch.randn(1, 7, spec.hidden, generator=torch.Generator().manual_seed(0))

    def check(lin):
        full = lin(x)
        for start, stop in ((0, h3), (h3, total)):
            torch.testing.assert_close(_linear_rows(lin, x, start, stop), full[..., start:stop], rtol=1e-5, atol=1e-5)
        return full

    with torch.inference_mode():
        plain = check(layer)
        # Low-VRAM mode applies LoRA on the fly through the layer's weight functions.
        key = "diffusion_model.single_blocks.0.linear1.weight"
        patcher = model.clone()
        patcher.add_patches({key: ("diff", (torch.randn(layer.weight.shape) * 0.1,))}, 1.0)
        layer.weight_function = [comfy.model_patcher.LowVramPatch(key, patcher.patches)]
        try:
            assert not torch.allclose(check(layer), plain)
        finally:
            layer.weight_function = []
        # Scaled fp8 checkpoints keep a per-layer scale next to the fp8 weight.
        fp8 = comfy.ops.scaled_fp8_ops().Linear(spec.hidden, total, bias=True, dtype=torch.float8_e4m3fn)
        fp8.weight = torch.nn.Parameter((layer.weight / 0.5).to(torch.float8_e4m3fn), requires_grad=False)
        fp8.bias = torch.nn.Parameter(layer.bias.clone(), requires_grad=False)
        fp8.scale_weight = torch.nn.Parameter(torch.tensor(0.5), requires_grad=False)
        torch.testing.assert_close(check(fp8), plain, rtol=0.1, atol=0.1)

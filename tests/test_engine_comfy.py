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


def apply_layout(model):
    from ecad_nodes.families import adapter_for
    return adapter_for(model.model).layout(model.model.diffusion_model)


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


def test_skip_layer_guidance_passes_keep_caches_of_their_own(flux):
    """SkipLayerGuidanceDiT predicts the prompt again at each step with a block replaced by the identity, under the
    same cond uuid. At a tiny scale its effect on the result is tiny; it must stay tiny under caching too (the prompt's
    caches must hold the prompt's own outputs, not the layer-skipped pass's)."""
    from comfy_extras.nodes_slg import SkipLayerGuidanceDiT
    spec, model = flux

    def slg(m):
        out = SkipLayerGuidanceDiT.execute(m, scale=1e-6, start_percent=0.0, end_percent=1.0, double_layers="0",
                                           single_layers="")
        return out.result[0] if hasattr(out, "result") else out[0]
    choice = ScheduleChoice.of_heuristic(FORA2)
    settings = dict(cfg=3.0, width=64, height=64, steps=6)
    cached = sample(apply(model, choice), spec, **settings)
    scale = cached.abs().max()
    for guided in (apply(slg(model), choice), slg(apply(model, choice))):  # either order of the two nodes
        assert (sample(guided, spec, **settings) - cached).abs().max() / scale < 1e-4
        assert len(last_report(guided).streams) == 3  # cond, uncond, and cond through the replaced block


def test_a_run_of_one_sigma_returns_the_latent_as_unpatched_comfyui_does(flux):
    """SplitSigmas at the last step leaves SamplerCustom one sigma: no step, nothing to cache, no error."""
    import comfy.sample
    import comfy.samplers
    spec, model = flux
    latent = comfy.sample.fix_empty_latent_channels(model, spec.empty_latent(64, 64, 1)) + 0.5
    noise = comfy.sample.prepare_noise(latent, 1)
    outputs = []
    for m in (model, apply(model, random_choice(model, 6, keep=0.4, seed=2))):
        with torch.inference_mode():
            outputs.append(comfy.sample.sample_custom(m, noise, 1.0, comfy.samplers.sampler_object("euler"),
                                                      torch.tensor([0.3]), spec.conditioning(1), spec.conditioning(2),
                                                      latent, seed=1, disable_pbar=True))
    assert torch.equal(outputs[0], outputs[1])


def test_heunpp2_evaluations_follow_their_noise_level_though_it_looks_two_steps_ahead(flux):
    """heunpp2 evaluates sigma_i, sigma_(i+1), sigma_(i+2), then sigma_(i+1) again: each evaluation takes the plan of its
    own step. Where it goes back, an output the plan did not keep for that order is computed (never a stale one)."""
    spec, model = flux
    choice = random_choice(model, 6, keep=0.4, seed=2)
    patched = apply(model, choice)
    sample(patched, spec, steps=6, sampler="heunpp2", width=64, height=64)
    report = last_report(patched)
    assert list(report.evaluations) == [1, 2, 3, 3, 3, 3]
    planned = choice.point.mask.bits
    (stream,) = report.streams
    computed, reused = report.computed[stream], report.reused[stream]
    np.testing.assert_array_equal(computed + reused, np.broadcast_to(report.evaluations[:, None], planned.shape))
    assert (computed[planned] == np.broadcast_to(report.evaluations[:, None], planned.shape)[planned]).all()
    assert not reused[planned].any() and reused[~planned].sum() > computed[~planned].sum()


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


# ------------------------------------------------------------------ FLUX weight slices and quantized checkpoints
# A FLUX single block that computes only its attention or only its MLP input uses those rows of ``linear1``'s weight
# alone (``flux.linear_rows``), as ComfyUI's layer would have them: cast, LoRA-patched, quantized.

#: Quantized checkpoint formats, each loaded through ComfyUI's own loader (``comfy.sd.load_diffusion_model``):
#: "scaled fp8" (fp8 weights, a per-layer ``scale_weight`` and a ``scaled_fp8`` marker; ComfyUI v0.3.x builds
#: scaled-fp8 layers from the marker, v0.4 and later convert the file to QuantizedTensor weights), and the formats
#: of ComfyUI's quantization metadata (v0.4 and later: QUANTIZATION.md), made with ComfyUI's own quantizers.
QUANTIZED = [("flux", "scaled fp8"), ("flux", "float8_e4m3fn"), ("flux", "float8_e5m2"),
             ("flux2-klein", "float8_e4m3fn")]


def _quantized_checkpoint(dm: torch.nn.Module, fmt: str) -> tuple[dict, dict]:
    """The state dict and file metadata of ``dm`` quantized as a checkpoint of ``fmt`` holds it."""
    import json
    sd = {k: v.detach().clone() for k, v in dm.state_dict().items()}
    linears = [name for name, m in dm.named_modules() if isinstance(m, torch.nn.Linear)]
    if fmt == "scaled fp8":  # every linear layer, one absmax scale each (what ComfyUI v0.3.x's scaled-fp8 ops load)
        for name in linears:
            weight = sd[f"{name}.weight"]
            scale = weight.abs().amax().float() / torch.finfo(torch.float8_e4m3fn).max
            sd[f"{name}.weight"], sd[f"{name}.scale_weight"] = (weight / scale).to(torch.float8_e4m3fn), scale
        sd["scaled_fp8"] = torch.empty(2, dtype=torch.float8_e4m3fn)  # 2 elements: no fp8 matmuls asked for
        return sd, {}
    from comfy.quant_ops import QUANT_ALGOS, QuantizedTensor
    layout = QUANT_ALGOS[fmt]["comfy_tensor_layout"]
    # the blocks' layers only, like the "fp8mixed" files of ComfyUI's templates
    blocks = [name for name in linears if name.startswith(("double_blocks.", "single_blocks."))]
    for name in blocks:
        weight = sd.pop(f"{name}.weight")
        sd.update(QuantizedTensor.from_float(weight, layout, scale="recalculate").state_dict(f"{name}.weight"))
    layers = {name: {"format": fmt} for name in blocks}
    return sd, {"_quantization_metadata": json.dumps({"format_version": "1.0", "layers": layers})}


@pytest.fixture(scope="module", ids=[f"{m}-{f.replace(' ', '-')}" for m, f in QUANTIZED],
                params=[pytest.param((m, f), marks=() if f == "scaled fp8" else pytest.mark.needs("comfy.ops.mixed_precision_ops"))
                        for m, f in QUANTIZED])
def quantized(request, tmp_path_factory):
    """(spec, float model, quantized model, format): a tiny model's weights saved in a quantized format and loaded by
    ``comfy.sd.load_diffusion_model``, with detection given the tiny model's ``overrides()`` as ``TinyModel.build``
    gives them (ComfyUI fixes FLUX's widths, or its head size, at the released size)."""
    import safetensors.torch
    import comfy.model_detection
    import comfy.ops
    import comfy.sd
    from ecad_nodes.registry import tiny_models
    name, fmt = request.param
    spec = tiny_models()[name].model
    float_model = spec.build(seed=0)
    sd, metadata = _quantized_checkpoint(float_model.model.diffusion_model, fmt)
    path = tmp_path_factory.mktemp("quantized") / f"tiny-{name}-{fmt.replace(' ', '-')}.safetensors"
    safetensors.torch.save_file(sd, str(path), metadata=metadata)
    detect = comfy.model_detection.detect_unet_config

    def detect_tiny(*args, **kwargs):
        config = detect(*args, **kwargs)
        return None if config is None else {**config, **spec.overrides()}

    # ComfyUI runs its loader nodes under inference mode; a quantized model loaded outside it fails to load onto the
    # device inside ComfyUI's sampling (ComfyUI v0.20: "Cannot set version_counter for inference tensor").
    with pytest.MonkeyPatch.context() as patch, torch.inference_mode():
        patch.setattr(comfy.model_detection, "detect_unet_config", detect_tiny)
        model = comfy.sd.load_diffusion_model(str(path))
    return spec, float_model, model, fmt


def _linear1_rows(spec, layer) -> list[tuple[int, int]]:
    h3 = 3 * spec.hidden
    return [(0, h3), (h3, layer.out_features)]


def _assert_rows_are_the_whole_layers(spec, layer, x) -> torch.Tensor:
    from ecad_nodes.families.flux import linear_rows
    full = layer(x)
    for start, stop in _linear1_rows(spec, layer):
        # float matmuls of another shape may round differently; quantized layers give exactly the same values
        torch.testing.assert_close(linear_rows(layer, x, start, stop), full[..., start:stop], rtol=1e-5, atol=1e-6)
    return full


def test_quantized_checkpoints_load_as_comfyui_loads_them_and_single_block_rows_match_the_whole_layer(quantized):
    import comfy.model_management
    import comfy.ops
    spec, float_model, model, fmt = quantized
    layer = model.model.diffusion_model.single_blocks[0].linear1
    if hasattr(comfy.ops, "mixed_precision_ops"):
        from comfy.quant_ops import QUANT_ALGOS, QuantizedTensor
        expected = QUANT_ALGOS["float8_e4m3fn" if fmt == "scaled fp8" else fmt]
        assert isinstance(layer.weight, QuantizedTensor) and layer.weight.storage_dtype == expected["storage_t"]
        # Without fp8 matmuls (CPUs) ComfyUI dequantizes the weight and runs a float matmul: what this test runs.
        assert not comfy.model_management.supports_fp8_compute(layer.weight.device) and layer._full_precision_mm
    else:  # ComfyUI v0.3.x: fp8 weights with their scale, multiplied in after casting
        assert layer.weight.dtype == torch.float8_e4m3fn and float(layer.scale_weight) > 0
    x = torch.randn(2, 7, spec.hidden, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():  # as ComfyUI samples
        full = _assert_rows_are_the_whole_layers(spec, layer, x)
        exact = float_model.model.diffusion_model.single_blocks[0].linear1(x)
    # the file holds the tiny model's own weights, to fp8 precision
    assert (full - exact).norm() / exact.norm() < 0.1


def _rows_only_schedule(model, steps: int = 6) -> ScheduleChoice:
    """Every single block computes its output projection at every step, its attention and MLP input in turns after
    the first step (the other one reused): so ``linear1`` runs only its q/k/v rows or only its MLP rows."""
    from family_checks import layout_of
    layout = layout_of(model)
    bits = np.ones((steps, layout.bits_per_step), dtype=bool)
    bits[1::2, layout.component_bits("single_blocks", "mlp_in")] = False
    bits[2::2, layout.component_bits("single_blocks", "attn")] = False
    return ScheduleChoice.of_mask("rows-only", Mask(layout, bits))


def test_quantized_single_blocks_sample_with_only_the_rows_they_need(quantized, monkeypatch):
    """Sampled under inference mode, single blocks that compute only q/k/v or only the MLP input give what the
    whole layer's rows give."""
    from ecad_nodes.families import flux
    spec, _, model, _ = quantized
    size = spec.test_size
    patched = apply(model, _rows_only_schedule(model))
    calls = []
    rows = flux.linear_rows

    def counted(layer, x, start, stop):
        calls.append((start, stop))
        return rows(layer, x, start, stop)

    monkeypatch.setattr(flux, "linear_rows", counted)
    out = sample(patched, spec, width=size, height=size)
    assert torch.isfinite(out).all()
    attn_rows, mlp_rows = _linear1_rows(spec, model.model.diffusion_model.single_blocks[0].linear1)
    depth = len(model.model.diffusion_model.single_blocks)
    assert sorted(calls) == sorted([attn_rows] * 3 * depth + [mlp_rows] * 2 * depth)  # steps 1, 3, 5 and 2, 4
    monkeypatch.setattr(flux, "linear_rows", lambda layer, x, start, stop: layer(x)[..., start:stop])
    torch.testing.assert_close(sample(patched, spec, width=size, height=size), out, rtol=1e-4, atol=1e-4)


def _assert_lowvram_lora_reaches_the_rows(spec, model) -> None:
    import comfy.model_management
    key = "diffusion_model.single_blocks.0.linear1.weight"
    layer = model.model.diffusion_model.single_blocks[0].linear1
    x = torch.randn(1, 7, spec.hidden, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        plain = layer(x)
    patcher = model.clone()
    delta = torch.randn(layer.weight.shape, generator=torch.Generator().manual_seed(2)) * 0.1
    assert patcher.add_patches({key: ("diff", (delta,))}, 1.0) == [key]
    try:
        with torch.inference_mode():  # as ComfyUI loads models for sampling
            patcher.load(comfy.model_management.get_torch_device(), lowvram_model_memory=1)  # nothing fits
            assert layer.weight_function, "low-VRAM loading did not leave the patch to a weight function"
            patched = _assert_rows_are_the_whole_layers(spec, layer, x)
        assert not torch.allclose(patched, plain)
    finally:
        with torch.inference_mode():
            patcher.detach()
    assert not layer.weight_function


def test_lowvram_lora_patches_reach_the_single_block_rows(flux):
    """Low-VRAM loading leaves LoRA patches to the layers' weight functions, applied at every cast: rows computed
    alone see the patched weight."""
    _assert_lowvram_lora_reaches_the_rows(*flux)


def test_lowvram_lora_patches_reach_the_rows_of_quantized_single_blocks(quantized):
    spec, _, model, _ = quantized
    _assert_lowvram_lora_reaches_the_rows(spec, model)


# ------------------------------------------------------------------ model sizes

def test_a_tiny_model_at_a_released_width_is_refused_and_a_released_size_model_builds():
    """The parameter guard catches a width the overrides missed; a model of a released size (the benchmarks'
    FLUX.1-dev shape) opts out of it and builds through the same detection, here on the meta device."""
    import dataclasses

    from ecad_nodes.families.flux import TinyFlux
    from ecad_nodes.tiny import DetectionError
    wide = TinyFlux(hidden=3072, heads=24, depth=4, depth_single=8, context_dim=256, vec_dim=128, mlp_ratio=4.0,
                    axes_dim=(16, 56, 56))
    with pytest.raises(DetectionError, match=r"TinyFlux\(hidden=3072.* built [\d,]+ parameters: a width detection fixes"):
        wide.build(device=torch.device("meta"))

    released = dataclasses.replace(wide, depth=19, depth_single=38, context_dim=4096, vec_dim=768, max_parameters=None)
    assert repr(released) == repr(dataclasses.replace(released, max_parameters=100))  # not part of its identity
    model = released.build(dtype=torch.bfloat16, device=torch.device("meta"))
    parameters = sum(p.numel() for p in model.model.diffusion_model.parameters())
    assert 11.8e9 < parameters < 12.0e9  # FLUX.1-dev's transformer
    assert {p.dtype for p in model.model.diffusion_model.parameters()} == {torch.bfloat16}


def test_random_weights_are_drawn_where_they_live_and_the_same_on_the_cpu_as_a_cpu_generator_draws():
    import math

    from ecad_nodes.tiny import randomize
    layers = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 4))
    randomize(layers, 3)
    gen = torch.Generator().manual_seed(3)
    for name, tensor in sorted(layers.named_parameters()):
        expected = (torch.randn(tensor.shape, generator=gen) / math.sqrt(tensor.shape[1]) if tensor.ndim == 2
                    else torch.randn(tensor.shape, generator=gen) * 0.02)
        assert torch.equal(tensor, expected), name

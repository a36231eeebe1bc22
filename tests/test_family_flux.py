"""The FLUX family's own paths inside real ComfyUI (COMFYUI_PATH), beyond the family contract
(tests/test_family_contract.py, which covers every variant's tiny model): variant names, and FLUX.2's
reference latents (ComfyUI's ReferenceLatent node), which add image tokens to every block and, with the
"index_timestep_zero" method, give them a modulation of their own (token-wise ``modulation_dims``)."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from family_checks import (apply, assert_all_compute_is_identical, assert_cached_outputs_stay_untouched,
                           assert_flops_follow_the_cost_model, assert_runs_as_planned, random_choice)
from support import assert_ran_as_planned, last_report, sample

pytestmark = pytest.mark.comfy


def _variants():
    from ecad_nodes.families.flux import TinyFlux, TinyFlux2, TinyFluxFill, TinyLongCatImage, TinyOvisImage
    klein_4b = TinyFlux2(hidden=3072, heads=24, depth=5, depth_single=20, context_dim=7680, axes_dim=(32, 32, 32, 32),
                         guidance_embed=False)
    klein_9b = TinyFlux2(hidden=4096, heads=32, depth=8, depth_single=24, context_dim=12288, axes_dim=(32, 32, 32, 32),
                         guidance_embed=False)
    dev = TinyFlux2(hidden=6144, heads=48, depth=8, depth_single=48, context_dim=15360, axes_dim=(32, 32, 32, 32))
    return [(TinyFlux(), "flux-dev"), (TinyFlux(guidance_embed=False), "flux-schnell"), (TinyFluxFill(), "flux-fill"),
            (dev, "flux2-dev"), (klein_4b, "flux2-klein-4b"), (klein_9b, "flux2-klein-9b"),
            (TinyFlux2(guidance_embed=False), "flux2-klein"), (TinyOvisImage(), "ovis-image"),
            (TinyLongCatImage(), "longcat-image")]


@pytest.mark.parametrize("index", [pytest.param(i, marks=pytest.mark.needs(spec)) for i, (spec, _) in enumerate(_variants())],
                         ids=[name for _, name in _variants()])
def test_variants_are_named_from_the_model_config_and_the_layers(index):
    """Released sizes (FLUX.2 dev and klein 4B/9B, on the meta device: shapes only) and tiny ones."""
    from ecad_nodes.families import adapter_for
    spec, name = _variants()[index]
    model = spec.meta_model()
    adapter = adapter_for(model)
    assert adapter.family == "flux" and adapter.variant(model) == name


def _template_texts() -> str:
    """Every workflow of ComfyUI's installed image templates, as one text."""
    import importlib.util
    spec = importlib.util.find_spec("comfyui_workflow_templates_media_image")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("ComfyUI's workflow templates (comfyui-workflow-templates) are not installed")
    folder = Path(next(iter(spec.submodule_search_locations))) / "templates"
    return "\n".join(path.read_text(encoding="utf-8") for path in sorted(folder.glob("*.json")))


@pytest.mark.needs("comfy.supported_models.Flux2")  # the templates of these models came with the same releases
@pytest.mark.parametrize("name", ["flux2-dev", "flux2-klein-4b", "flux2-klein-base-4b", "flux2-klein-base-9b",
                                  "ovis-image", "longcat-image"])
def test_presets_load_the_files_comfyui_templates_load(name):
    import comfy.sd
    from ecad_nodes.registry import preset
    p = preset(name)
    assert p.family == "flux" and p.files is not None and not p.is_tiny
    templates = _template_texts()
    for file in (p.files.diffusion_model, *p.files.text_encoders, p.files.vae):
        assert f'"{file}"' in templates, f"{file} is in no ComfyUI template"
    if hasattr(comfy.sd.CLIPType, "FLUX2"):  # (ComfyUI v0.3.x has none of these text encoders)
        assert hasattr(comfy.sd.CLIPType, p.files.clip_type)


def test_benchmark_models_run_1024_image_tokens_at_width_512():
    from ecad_nodes.registry import benchmark_models
    benches = {b.name: b for b in benchmark_models() if b.name in ("flux", "flux2", "ovis-image")}
    assert set(benches) == {"flux", "flux2", "ovis-image"}
    for bench in benches.values():
        patch = 1 if bench.name == "flux2" else 2
        latent = bench.spec.empty_latent(bench.height, bench.width)
        assert bench.spec.hidden == 512 and sum(bench.spec.axes_dim) == bench.spec.hidden // bench.spec.heads
        assert (latent.shape[-2] // patch) * (latent.shape[-1] // patch) == 1024


# ------------------------------------------------------------------ FLUX.2 reference latents

@pytest.fixture(scope="module", params=["flux2-dev", "flux2-klein"])
def flux2(request):
    from ecad_nodes.registry import tiny_models
    spec = tiny_models()[request.param].model
    return spec, spec.build(seed=0)


#: FLUX.2's default places references at their own rotary index; "index_timestep_zero" (what ComfyUI's Flux KV Cache
#: node selects) also modulates them as at timestep zero. The guidance-distilled dev model takes only the first:
#: ComfyUI's timestep-zero path doubles the timestep rows but not the guidance.
METHODS = {"flux2-dev": None, "flux2-klein": "index_timestep_zero"}


def with_references(spec, seed: int, shapes=((4, 8),), method=None, tokens=None) -> list:
    """A prompt with reference latents, as ComfyUI's ReferenceLatent (and FluxKontextMultiReferenceLatentMethod)
    nodes attach them."""
    from comfy_extras.nodes_edit_model import ReferenceLatent
    from comfy_extras.nodes_flux import FluxKontextMultiReferenceLatentMethod
    cond = spec.conditioning(seed, tokens)
    gen = torch.Generator().manual_seed(100 + seed)
    for h, w in shapes:
        latent = {"samples": torch.randn(1, spec.latent_channels, h, w, generator=gen)}
        cond = ReferenceLatent.execute(cond, latent=latent).args[0]
    if method is not None:
        cond = FluxKontextMultiReferenceLatentMethod.execute(cond, method).args[0]
    return cond


def _conditions(spec, name: str, separate: bool = False) -> dict:
    """Positive and negative prompts with references; references of other sizes cannot share a batch, so ComfyUI
    runs cond and uncond in separate calls."""
    method = METHODS[name]
    return {"positive": with_references(spec, 1, method=method),
            "negative": with_references(spec, 2, shapes=((6, 6),) if separate else ((4, 8),), method=method)}


def _name(spec) -> str:
    return "flux2-dev" if spec.guidance_embed else "flux2-klein"


@pytest.mark.parametrize("cfg, separate", [(1.0, False), (3.5, False), (3.5, True)],
                         ids=["cfg1", "cfg-batched", "cfg-separate-calls"])
def test_all_compute_is_bit_identical_with_reference_latents(flux2, cfg, separate):
    spec, model = flux2
    size = spec.test_size
    kwargs = _conditions(spec, _name(spec), separate)
    plain = sample(model, spec, cfg=cfg, width=size, height=size, positive=spec.conditioning(1),
                   negative=spec.conditioning(2))
    assert not torch.equal(sample(model, spec, cfg=cfg, width=size, height=size, **kwargs), plain)  # references used
    assert_all_compute_is_identical(model, spec, steps=4, cfg=cfg, width=size, height=size, **kwargs)


@pytest.mark.parametrize("separate", [False, True], ids=["batched", "separate-calls"])
def test_components_run_exactly_where_the_mask_says_per_stream_with_reference_latents(flux2, separate):
    spec, model = flux2
    size = spec.test_size
    assert_runs_as_planned(model, spec, cfg=4.0, width=size, height=size, **_conditions(spec, _name(spec), separate))


def test_cached_outputs_are_never_written_into_with_reference_latents(flux2, monkeypatch):
    """With "index_timestep_zero" ComfyUI's ``apply_mod`` gates in place, token-wise."""
    spec, model = flux2
    size = spec.test_size
    assert_cached_outputs_stay_untouched(model, spec, monkeypatch, cfg=3.0, width=size, height=size,
                                         **_conditions(spec, _name(spec)))


def test_reference_tokens_are_counted_and_the_flop_counter_agrees_with_the_cost_model(flux2):
    """Reference latents join the image tokens of every block and of the final layer: the run's token counts include
    them, so the MACs ECAD reports (and the FLOP counter) are those of what runs."""
    spec, model = flux2
    size = spec.test_size
    kwargs = _conditions(spec, _name(spec))
    assert_flops_follow_the_cost_model(model, spec, width=size, height=size, **kwargs)
    patched = apply(model, random_choice(model, 2, keep=1.0, seed=0))
    sample(patched, spec, steps=2, width=size, height=size, **kwargs)
    report = last_report(patched)
    latent_tokens = (size // spec.compression) ** 2
    assert report.tokens.image == latent_tokens + 4 * 8  # the generated image's 8×8 and the 4×8 reference
    assert report.tokens.text == 512  # ComfyUI pads FLUX.2's text to 512 tokens


def test_mirrors_match_comfyui_blocks_with_reference_latents_and_attention_patches(flux2, monkeypatch, caplog):
    """The copies of the block forwards, checked against ComfyUI's on their first call as on an unknown ComfyUI,
    agree bit for bit with token-wise modulation (timestep-zero references) and attention patches, and cache as
    planned."""
    from ecad_nodes.families import mirror as mirror_module
    spec, model = flux2
    size = spec.test_size
    patched_model = model.clone()
    patched_model.set_model_attn1_patch(lambda q, k, v, pe=None, attn_mask=None, extra_options=None: {"k": k * 1.25})
    patched_model.set_model_attn1_output_patch(lambda attn, extra_options: attn * 0.75)
    kwargs = dict(cfg=3.5, width=size, height=size, **_conditions(spec, _name(spec)))
    assert not torch.equal(sample(patched_model, spec, **kwargs), sample(model, spec, **kwargs))  # patches used
    monkeypatch.setattr(mirror_module, "is_known", lambda mirror, fingerprint: False)
    monkeypatch.setattr(mirror_module, "_VERIFIED", set())
    monkeypatch.setattr(mirror_module, "_FAILED", set())
    choice = random_choice(patched_model, 6, keep=0.5, seed=8)
    cached = apply(patched_model, choice)
    with caplog.at_level(logging.INFO, logger="ComfyUI-ECAD"):
        assert torch.isfinite(sample(cached, spec, **kwargs)).all()
    assert "does not match" not in caplog.text and "has no copy" not in caplog.text
    assert caplog.text.count("on its first call: identical") >= 2  # the double and the single block's copy
    assert_ran_as_planned(last_report(cached), choice.point.mask.bits, streams=2)


def test_a_mirror_check_that_runs_out_of_memory_is_not_a_mismatch(flux2, monkeypatch, caplog):
    """On an unknown ComfyUI the first call checks a copy by running the block twice more; out of device memory there
    says nothing about the copy: that call runs ComfyUI's own forward, a later call checks again, nothing is marked
    as failed for the rest of the process."""
    from ecad_nodes.families import mirror as mirror_module
    spec, model = flux2
    size = spec.test_size
    monkeypatch.setattr(mirror_module, "is_known", lambda mirror, fingerprint: False)
    monkeypatch.setattr(mirror_module, "_VERIFIED", set())
    monkeypatch.setattr(mirror_module, "_FAILED", set())
    clones, real_clone = [], mirror_module._clone_tensors

    def clone_once_out_of_memory(value):
        clones.append(1)
        if len(clones) == 3:  # the copy's inputs, in the first check
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (as the caching allocator raises it)")
        return real_clone(value)
    monkeypatch.setattr(mirror_module, "_clone_tensors", clone_once_out_of_memory)
    cached = apply(model, random_choice(model, 6, keep=0.5, seed=8))
    with caplog.at_level(logging.INFO, logger="ComfyUI-ECAD"):
        assert torch.isfinite(sample(cached, spec, cfg=3.5, width=size, height=size,
                                     **_conditions(spec, _name(spec)))).all()
    assert "no memory to check" in caplog.text and "does not match" not in caplog.text
    assert not mirror_module._FAILED and caplog.text.count("on its first call: identical") >= 2


def test_a_token_count_changed_by_the_flux_kv_cache_node_is_refused_by_name(flux2):
    """ComfyUI's Flux KV Cache node keeps the references' keys and values from the first step and drops their tokens
    afterwards: outputs cached at the first step no longer fit. ECAD says so instead of failing on a shape; with
    everything computed the run is ComfyUI's own."""
    from comfy_extras.nodes_flux import FluxKVCache
    from ecad_nodes.choice import ScheduleChoice
    from ecad_nodes.families import UnsupportedModelError
    from ecad_nodes.heuristics import NO_CACHING
    from family_checks import FORA2
    spec, model = flux2
    size = spec.test_size
    kwargs = dict(steps=4, width=size, height=size, positive=with_references(spec, 1))
    with_kv_cache = FluxKVCache.execute(model).args[0]  # (each node run keeps its own key/value cache)
    assert torch.equal(sample(apply(with_kv_cache, ScheduleChoice.of_heuristic(NO_CACHING)), spec, **kwargs),
                       sample(FluxKVCache.execute(model).args[0], spec, **kwargs))
    with pytest.raises(UnsupportedModelError, match="Flux KV Cache node drops the reference images' tokens"):
        sample(apply(FluxKVCache.execute(model).args[0], ScheduleChoice.of_heuristic(FORA2)), spec, **kwargs)

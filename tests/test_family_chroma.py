"""Chroma and Chroma Radiance inside real ComfyUI (COMFYUI_PATH): tiny random-weight models built from
ComfyUI's own classes."""
from __future__ import annotations

import pytest
import torch

from ecad_nodes.choice import ScheduleChoice
from ecad_nodes.heuristics import NO_CACHING
from family_checks import (apply, assert_all_compute_is_identical, assert_cached_outputs_stay_untouched,
                           assert_flops_follow_the_cost_model, assert_fora2_behaviour,
                           assert_internal_outputs_are_cached_only_for_their_consumers, assert_runs_as_planned, layout_of)

pytestmark = pytest.mark.comfy

SIZE = 64  # Chroma: 32×32 latent, 256 image tokens; Radiance: 64×64 pixels in 8×8 patches, 64 image tokens

CLASSES = {"chroma": ("comfy.ldm.chroma.model", "Chroma"),
           "chroma-radiance": ("comfy.ldm.chroma_radiance.model", "ChromaRadiance")}


def build_spec(name: str):
    from optimizer.presets.chroma import TinyChroma, TinyChromaRadiance
    return TinyChroma() if name == "chroma" else TinyChromaRadiance()


@pytest.fixture(scope="module", params=list(CLASSES))
def chroma(request):
    spec = build_spec(request.param)
    return spec, spec.build(seed=0)


def test_the_tiny_models_are_comfyuis_classes_and_get_the_chroma_adapter(chroma):
    from ecad_nodes.families import adapter_for
    spec, model = chroma
    dm = model.model.diffusion_model
    variant = "chroma-radiance" if spec.latent_channels == 3 else "chroma"
    assert (type(dm).__module__, type(dm).__name__) == CLASSES[variant]
    assert type(model.model.model_config).__name__ == CLASSES[variant][1]
    adapter = adapter_for(model.model)
    assert adapter.family == "chroma" and adapter.variant(model.model) == variant
    layout = layout_of(model)
    assert [(g.name, g.blocks, g.components) for g in layout.groups] == [
        ("double_blocks", spec.depth, ("attn", "img_mlp", "txt_mlp")),
        ("single_blocks", spec.depth_single, ("attn", "mlp_in", "out_proj"))]


@pytest.mark.parametrize("cfg, negative_tokens", [(1.0, None), (3.5, None), (3.5, 5)],
                         ids=["cfg1", "cfg-batched", "cfg-separate-calls"])
def test_all_compute_is_bit_identical_to_the_unpatched_model(chroma, cfg, negative_tokens):
    spec, model = chroma
    negative = spec.conditioning(2, tokens=negative_tokens) if negative_tokens else None
    assert_all_compute_is_identical(model, spec, cfg=cfg, width=SIZE, height=SIZE, negative=negative)


@pytest.mark.parametrize("negative_tokens", [None, 5], ids=["batched", "separate-calls"])
def test_components_run_exactly_where_the_mask_says_per_stream(chroma, negative_tokens):
    spec, model = chroma
    negative = spec.conditioning(2, tokens=negative_tokens) if negative_tokens else None
    assert_runs_as_planned(model, spec, cfg=4.0, width=SIZE, height=SIZE, negative=negative)


def test_skipped_components_really_skip_their_matmuls(chroma):
    spec, model = chroma
    assert_flops_follow_the_cost_model(model, spec, width=SIZE, height=SIZE)


def test_the_cost_model_counts_radiances_linear_nerf_head_untiled():
    from dataclasses import replace
    spec = replace(build_spec("chroma-radiance"), nerf_final_head="linear", nerf_tile_size=0)
    assert_flops_follow_the_cost_model(spec.build(seed=0), spec, width=SIZE, height=SIZE)


def test_fora2_halves_the_component_calls_and_leaves_the_base_model_alone(chroma):
    spec, model = chroma
    assert_fora2_behaviour(model, spec, cfg=3.0, width=SIZE, height=SIZE)


def test_cached_outputs_are_never_written_into(chroma, monkeypatch):
    """Chroma's blocks add residuals in place (``addcmul_``); the adapter must not do that to cached outputs."""
    spec, model = chroma
    assert_cached_outputs_stay_untouched(model, spec, monkeypatch, cfg=3.0, width=SIZE, height=SIZE)


def test_block_forwards_match_comfyuis_chroma_blocks(chroma):
    """Each reimplemented block, all components computed, equals ComfyUI's block on the same inputs."""
    from ecad_nodes.families.chroma import CHROMA_MATH
    from ecad_nodes.families.flux import double_block_forward, single_block_forward
    from ecad_nodes.runtime import CacheRuntime, CallShape
    from ecad_nodes.schedule import Mask
    spec, model = chroma
    dm = model.model.diffusion_model
    gen = torch.Generator().manual_seed(0)
    img, txt = torch.randn(2, 12, spec.hidden, generator=gen), torch.randn(2, 5, spec.hidden, generator=gen)
    mods = torch.randn(2, 344, spec.hidden, generator=gen)
    pe = dm.pe_embedder(torch.zeros(2, 17, 3))
    rt = CacheRuntime(Mask.full(layout_of(model), 1))
    rt.begin_evaluation()
    with torch.inference_mode(), rt.call(["a", "b"], CallShape((1,), 1, torch.float32, torch.device("cpu"))):
        double_mod = (dm.get_modulations(mods, "double_img", idx=1), dm.get_modulations(mods, "double_txt", idx=1))
        block = dm.double_blocks[1]
        expected = block(img=img.clone(), txt=txt.clone(), pe=pe, vec=double_mod)
        got = double_block_forward(rt, 3, block, img.clone(), txt.clone(), double_mod, pe, block_math=CHROMA_MATH)
        assert all(torch.equal(a, b) for a, b in zip(expected, got))
        single = dm.single_blocks[2]
        x = torch.cat([txt, img], 1)
        single_mod = dm.get_modulations(mods, "single", idx=2)
        got = single_block_forward(rt, 3 * spec.depth + 6, single, x.clone(), single_mod, pe, block_math=CHROMA_MATH)
        assert torch.equal(single(x.clone(), pe=pe, vec=single_mod), got)


def test_only_the_chroma_adapter_claims_chroma_and_it_installs_chroma_block_math(chroma):
    from ecad_nodes.families import all_adapters
    from ecad_nodes.families.chroma import CHROMA_MATH
    spec, model = chroma
    assert [a.family for a in all_adapters() if a.matches(model.model.diffusion_model)] == ["chroma"]
    patched = apply(model, ScheduleChoice.of_heuristic(NO_CACHING))
    replacements = patched.model_options["transformer_options"]["patches_replace"]["dit"]
    assert sorted(replacements) == sorted([("double_block", i) for i in range(spec.depth)]
                                          + [("single_block", i) for i in range(spec.depth_single)])
    assert all(r.block_math == CHROMA_MATH for r in replacements.values())


def test_presets_and_the_benchmark_model():
    from ecad_nodes.families import adapter_for
    from optimizer.presets import benchmark_models, preset
    real, tiny = preset("chroma1-hd"), preset("tiny-chroma")
    assert real.family == tiny.family == "chroma" and real.files is not None and real.cfg > 1
    assert adapter_for(tiny.tiny.build(seed=0).model).family == "chroma"
    [bench] = [b for b in benchmark_models() if b.name == "chroma"]
    latent = bench.spec.empty_latent(bench.height, bench.width)
    assert (latent.shape[-2] // 2) * (latent.shape[-1] // 2) == 1024  # image tokens


def test_single_block_attention_and_mlp_input_are_cached_only_for_the_output_projection(chroma, monkeypatch):
    spec, model = chroma
    assert_internal_outputs_are_cached_only_for_their_consumers(model, spec, monkeypatch, cfg=3.0, width=SIZE, height=SIZE)

"""SD3 / SD3.5 inside real ComfyUI (COMFYUI_PATH): tiny random-weight MMDiTs loaded through ComfyUI's
detection (``comfy.sd.load_diffusion_model_state_dict``): SD3-like (plain blocks) and SD3.5-Medium-like
(qk-norm, MMDiT-X second self-attention in some blocks). Both have the pre-only last block."""
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
def sd3():
    from optimizer.presets.sd3 import TinySD3
    spec = TinySD3()
    return spec, spec.build(seed=0)


@pytest.fixture(scope="module")
def sd35m():
    from optimizer.presets.sd3 import TinySD3
    spec = TinySD3(depth=4, qk_norm=True, mmdit_x_layers=(0, 1))
    return spec, spec.build(seed=1)


@pytest.fixture(params=["sd3", "sd3.5-medium"])
def any_model(request, sd3, sd35m):
    return sd3 if request.param == "sd3" else sd35m


@pytest.mark.parametrize("which, variant", [("sd3", "sd3-medium"), ("sd35m", "sd3.5-medium")])
def test_comfyui_detects_the_tiny_state_dict_and_the_layout_follows_its_blocks(request, which, variant):
    from ecad_nodes.families import adapter_for
    spec, model = request.getfixturevalue(which)
    dm = model.model.diffusion_model
    assert (type(dm).__module__, type(dm).__name__) == ("comfy.ldm.modules.diffusionmodules.mmdit",
                                                        "OpenAISignatureMMDITWrapper")
    assert type(model.model.model_config).__name__ == "SD3"
    assert dm.hidden_size == spec.hidden and len(dm.joint_blocks) == spec.depth
    assert dm.joint_blocks[-1].context_block.pre_only
    assert [i for i, b in enumerate(dm.joint_blocks) if b.x_block.x_block_self_attn] == list(spec.mmdit_x_layers)
    adapter = adapter_for(model.model)
    assert adapter.family == "sd3" and adapter.variant(model.model) == variant
    expected = [("joint_blocks", spec.depth - 1, ("attn", "img_mlp", "txt_mlp")), ("last_joint_block", 1, ("attn", "img_mlp"))]
    if spec.mmdit_x_layers:
        expected.append(("mmdit_x_blocks", len(spec.mmdit_x_layers), ("attn2",)))
    assert [(g.name, g.blocks, g.components) for g in layout_of(model).groups] == expected


@pytest.mark.parametrize("cfg, negative_tokens", [(1.0, None), (4.5, None), (4.5, 7)],
                         ids=["cfg1", "cfg-batched", "cfg-separate-calls"])
def test_all_compute_is_bit_identical_to_the_unpatched_model(any_model, cfg, negative_tokens):
    spec, model = any_model
    negative = spec.conditioning(2, tokens=negative_tokens) if negative_tokens else None
    assert_all_compute_is_identical(model, spec, cfg=cfg, width=SIZE, height=SIZE, negative=negative)


@pytest.mark.parametrize("negative_tokens", [None, 7], ids=["batched", "separate-calls"])
def test_components_run_exactly_where_the_mask_says_per_stream(any_model, negative_tokens):
    spec, model = any_model
    negative = spec.conditioning(2, tokens=negative_tokens) if negative_tokens else None
    assert_runs_as_planned(model, spec, cfg=4.5, width=SIZE, height=SIZE, negative=negative)


def test_skipped_components_really_skip_their_matmuls(any_model):
    spec, model = any_model
    assert_flops_follow_the_cost_model(model, spec, width=SIZE, height=SIZE)


def test_the_pre_only_last_block_costs_less_than_the_others(sd35m):
    """Its attention projects only the image stream's output, and it has no text MLP; attn2 only where it exists."""
    from ecad_nodes.families import adapter_for
    from ecad_nodes.families.base import CallTokens
    spec, model = sd35m
    dm = model.model.diffusion_model
    costs = adapter_for(model.model).costs(dm, CallTokens(image=16, text=16))
    layout, h = costs.layout, spec.hidden
    offsets = layout.offsets()
    joint_attn, last_attn = costs.per_bit[offsets["joint_blocks"]], costs.per_bit[offsets["last_joint_block"]]
    assert joint_attn - last_attn == 16 * h * h  # the text stream's output projection
    assert costs.per_bit[offsets["last_joint_block"] + 1] == costs.per_bit[offsets["joint_blocks"] + 1]  # img_mlp
    assert layout.bits_per_step == 3 * (spec.depth - 1) + 2 + len(spec.mmdit_x_layers)


def test_fora2_halves_the_component_calls_and_leaves_the_base_model_alone(any_model):
    spec, model = any_model
    assert_fora2_behaviour(model, spec, cfg=4.5, width=SIZE, height=SIZE)


def test_cached_outputs_are_never_written_into(any_model, monkeypatch):
    spec, model = any_model
    assert_cached_outputs_stay_untouched(model, spec, monkeypatch, cfg=4.5, width=SIZE, height=SIZE)


def test_a_controlnet_adding_to_the_image_stream_does_not_touch_the_cache(sd3, monkeypatch):
    """SD3's ControlNet path adds in place (``x += add``) to what each block returns; that must never be a cached tensor."""
    import comfy.ldm.modules.diffusionmodules.mmdit as mmdit
    spec, model = sd3
    calls = []
    original = mmdit.MMDiT.forward_core_with_concat

    def with_control(self, x, c_mod, context=None, control=None, transformer_options={}):
        calls.append(1)
        control = {"output": [torch.full_like(x, 0.01 * (i + 1)) for i in range(len(self.joint_blocks))]}
        return original(self, x, c_mod, context, control, transformer_options)

    monkeypatch.setattr(mmdit.MMDiT, "forward_core_with_concat", with_control)
    reference = sample(model, spec, cfg=4.5, width=SIZE, height=SIZE)
    assert_all_compute_is_identical(model, spec, cfg=4.5, width=SIZE, height=SIZE)
    assert_cached_outputs_stay_untouched(model, spec, monkeypatch, cfg=4.5, width=SIZE, height=SIZE)
    assert calls and torch.isfinite(reference).all()


def test_skipped_joint_attention_yields_both_streams_and_attn2_is_separate(sd35m):
    """Reusing block 0's joint attention keeps its text and image outputs; its attn2 still computes every step."""
    spec, model = sd35m
    layout = layout_of(model)
    offsets = layout.offsets()
    bits = np.ones((6, layout.bits_per_step), dtype=bool)
    bits[[1, 2, 4, 5], offsets["joint_blocks"]] = False  # block 0's joint attention: steps 0 and 3 only
    patched = apply(model, ScheduleChoice.of_mask("attn-reuse", Mask(layout, bits)))
    import comfy.ldm.modules.diffusionmodules.mmdit as mmdit
    seen: dict[str, list] = {"x": [], "context": [], "attn2": []}
    block = model.model.diffusion_model.joint_blocks[0]
    hooks = [(block.x_block.attn, "post_attention", "x"), (block.context_block.attn, "post_attention", "context"),
             (block.x_block.attn2, "post_attention", "attn2")]
    originals = []
    for module, name, key in hooks:  # record every real projection of block 0
        original = getattr(module, name)
        originals.append((module, name))
        setattr(module, name, lambda value, _o=original, _k=key: seen[_k].append(_o(value)) or seen[_k][-1])
    gate_inputs = []
    original_gate_cat = mmdit.gate_cat
    try:
        mmdit.gate_cat = lambda x, g1, g2, a1, a2: gate_inputs.append(a1.clone()) or original_gate_cat(x, g1, g2, a1, a2)
        sample(patched, spec, cfg=4.5, width=SIZE, height=SIZE)
    finally:
        mmdit.gate_cat = original_gate_cat
        for module, name in originals:
            delattr(module, name)
    assert len(seen["x"]) == len(seen["context"]) == 2 and len(seen["attn2"]) == 6
    # block 0's gate_cat is called first in each step: the image attention it gets is that of step 0 or 3
    block0 = gate_inputs[::len(spec.mmdit_x_layers)]
    assert len(block0) == 6
    for step, source in ((1, 0), (2, 0), (4, 3), (5, 3)):
        assert torch.equal(block0[step], block0[source])
    assert not torch.equal(block0[3], block0[0])


def test_a_wrong_schedule_names_the_groups(sd3, sd35m):
    """A schedule for the SD3-like layout cannot drive the MMDiT-X model: the error names both layouts."""
    from ecad_nodes.schedule import ScheduleError
    spec, model = sd3
    other_spec, other = sd35m
    choice = ScheduleChoice.of_mask("for-sd3", Mask(layout_of(model), np.ones((4, layout_of(model).bits_per_step), bool)))
    with pytest.raises(ScheduleError, match="mmdit_x_blocks"):
        apply(other, choice)


@pytest.mark.parametrize("option", ["scale_mod_only", "swiglu"])
def test_mmdit_options_comfyuis_loader_never_sets_are_refused_by_name(option):
    """The block replacement follows the modulation and MLP that detected checkpoints have; others get a clear error."""
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.mmdit import OpenAISignatureMMDITWrapper
    from ecad_nodes.families import UnsupportedModelError, adapter_named
    from optimizer.presets.sd3 import TinySD3
    dm = OpenAISignatureMMDITWrapper(operations=comfy.ops.disable_weight_init, **TinySD3(depth=2).params(), **{option: True})
    with pytest.raises(UnsupportedModelError, match="OpenAISignatureMMDITWrapper: MMDiT blocks with scale-only"):
        adapter_named("sd3").layout(dm)


def test_presets_and_the_benchmark_model():
    from ecad_nodes.families import adapter_for
    from optimizer.presets import benchmark_models, preset
    large, tiny = preset("sd3.5-large"), preset("tiny-sd3")
    assert large.family == tiny.family == "sd3" and large.files is not None and large.cfg > 1
    assert {preset(n).files.diffusion_model for n in ("sd3-medium", "sd3.5-medium")} == {"sd3_medium.safetensors",
                                                                                      "sd3.5_medium.safetensors"}
    model = tiny.tiny.build(seed=0)
    assert adapter_for(model.model).variant(model.model) == "sd3.5-medium"
    [bench] = [b for b in benchmark_models() if b.name == "sd3"]
    assert bench.spec.hidden == 512
    latent = bench.spec.empty_latent(bench.height, bench.width)
    assert (latent.shape[-2] // 2) * (latent.shape[-1] // 2) == 1024  # image tokens

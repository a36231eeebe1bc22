"""SD3 / SD3.5 paths inside real ComfyUI (COMFYUI_PATH), beyond the family contract
(tests/test_family_contract.py): the irregular layout (pre-only last block, MMDiT-X blocks in a group of
their own, routed by the same mirrored block forward), the costs of those blocks, the variants, ControlNet's
in-place additions, and the refusal of MMDiT options ComfyUI's loader never sets. Tiny models come from
the registry: ``sd3`` (SD3.5-Medium-like: qk-norm, MMDiT-X block 0) and ``sd3-medium`` (plain blocks)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ecad_nodes.choice import ScheduleChoice
from ecad_nodes.schedule import Mask
from family_checks import apply, assert_all_compute_is_identical, assert_cached_outputs_stay_untouched, layout_of
from support import built_tiny, sample

pytestmark = pytest.mark.comfy



def test_groups_follow_the_blocks_and_one_mirror_routes_each_block():
    """Blocks 0 (MMDiT-X) and 1 are joint blocks, block 2 (pre-only text) the last; block 0's mirror routes its
    joint-block bits and its attn2 bit from the MMDiT-X group."""
    from ecad_nodes.families import adapter_for
    spec, model = built_tiny("sd3")
    dm = model.model.diffusion_model
    adapter = adapter_for(model.model)
    layout = layout_of(model)
    assert [(g.name, g.blocks, g.components) for g in layout.groups] == [
        ("joint_blocks", 2, ("attn", "img_mlp", "txt_mlp")), ("last_joint_block", 1, ("attn", "img_mlp")),
        ("mmdit_x_blocks", 1, ("attn2",))]
    assert [spec_.block_paths(dm) for spec_ in adapter.groups] == [
        ["joint_blocks.0", "joint_blocks.1"], ["joint_blocks.2"], ["joint_blocks.0"]]
    blocks = adapter.mirrored_blocks(dm, layout)
    assert [b.path for b in blocks] == ["joint_blocks.0", "joint_blocks.1", "joint_blocks.2"]
    first = blocks[0]
    assert first.bits == {"attn": layout.bit("joint_blocks", 0, "attn"), "img_mlp": layout.bit("joint_blocks", 0, "img_mlp"),
                          "txt_mlp": layout.bit("joint_blocks", 0, "txt_mlp"), "attn2": layout.bit("mmdit_x_blocks", 0, "attn2")}
    assert first.forced == (layout.bit("joint_blocks", 0, "attn"), layout.bit("mmdit_x_blocks", 0, "attn2"))
    assert set(blocks[2].bits) == {"attn", "img_mlp"}


def test_variants_follow_qk_norm_and_mmdit_x_blocks():
    """ComfyUI has one SD3 config; the blocks tell SD3 Medium, SD3.5 Large and SD3.5 Medium apart (meta-device models)."""
    from ecad_nodes.families import adapter_named
    from ecad_nodes.families.sd3 import TinySD3
    adapter = adapter_named("sd3")
    for spec, variant in ((TinySD3(depth=2), "sd3-medium"), (TinySD3(depth=2, qk_norm=True), "sd3.5-large"),
                          (TinySD3(depth=3, qk_norm=True, mmdit_x_layers=(0, 1)), "sd3.5-medium")):
        assert adapter.variant(spec.meta_model()) == variant


def test_the_pre_only_last_block_costs_less_than_the_others():
    """Its attention projects only the image stream's output, and it has no text MLP; attn2 only where it exists."""
    from ecad_nodes.families import adapter_for
    from ecad_nodes.families.base import CallTokens
    spec, model = built_tiny("sd3")
    dm = model.model.diffusion_model
    costs = adapter_for(model.model).costs(dm, CallTokens(image=16, text=16))
    layout, h = costs.layout, spec.hidden
    joint_attn = costs.per_bit[layout.bit("joint_blocks", 0, "attn")]
    last_attn = costs.per_bit[layout.bit("last_joint_block", 0, "attn")]
    assert joint_attn - last_attn == 16 * h * h  # the text stream's output projection
    assert (costs.per_bit[layout.bit("last_joint_block", 0, "img_mlp")]
            == costs.per_bit[layout.bit("joint_blocks", 0, "img_mlp")])
    assert costs.per_bit[layout.bit("mmdit_x_blocks", 0, "attn2")] == 16 * h * 4 * h  # q/k/v and projection
    assert layout.bits_per_step == 3 * (spec.depth - 1) + 2 + len(spec.mmdit_x_layers)


def test_a_controlnet_adding_to_the_image_stream_does_not_touch_the_cache(monkeypatch):
    """SD3's ControlNet path adds in place (``x += add``) to what each block returns; that must never be a cached tensor."""
    import comfy.ldm.modules.diffusionmodules.mmdit as mmdit
    spec, model = built_tiny("sd3")
    calls = []
    original = mmdit.MMDiT.forward_core_with_concat

    def with_control(self, x, c_mod, context=None, control=None, transformer_options={}):
        calls.append(1)
        control = {"output": [torch.full_like(x, 0.01 * (i + 1)) for i in range(len(self.joint_blocks))]}
        return original(self, x, c_mod, context, control, transformer_options)

    monkeypatch.setattr(mmdit.MMDiT, "forward_core_with_concat", with_control)
    kwargs = dict(cfg=4.5, width=spec.test_size, height=spec.test_size)
    assert_all_compute_is_identical(model, spec, **kwargs)
    assert_cached_outputs_stay_untouched(model, spec, monkeypatch, **kwargs)
    assert calls


def test_a_reused_joint_attention_yields_both_streams_and_attn2_computes_on_its_own(monkeypatch):
    """Reusing block 0's joint attention keeps its text and image outputs; its attn2 still computes every step."""
    import comfy.ldm.modules.diffusionmodules.mmdit as mmdit
    spec, model = built_tiny("sd3")
    layout = layout_of(model)
    bits = np.ones((6, layout.bits_per_step), dtype=bool)
    bits[[1, 2, 4, 5], layout.bit("joint_blocks", 0, "attn")] = False  # block 0's joint attention: steps 0 and 3 only
    patched = apply(model, ScheduleChoice.of_mask("attn-reuse", Mask(layout, bits)))
    block = model.model.diffusion_model.joint_blocks[0]
    seen: dict[str, list] = {"x": [], "context": [], "attn2": []}
    for module, key in ((block.x_block.attn, "x"), (block.context_block.attn, "context"), (block.x_block.attn2, "attn2")):
        original = module.post_attention  # record every real output projection of block 0
        monkeypatch.setattr(module, "post_attention", lambda value, _o=original, _k=key: seen[_k].append(_o(value)) or seen[_k][-1])
    gate_inputs = []
    original_gate_cat = mmdit.gate_cat
    monkeypatch.setattr(mmdit, "gate_cat", lambda x, g1, g2, a1, a2: gate_inputs.append(a1.clone()) or original_gate_cat(x, g1, g2, a1, a2))
    sample(patched, spec, cfg=4.5, width=spec.test_size, height=spec.test_size)
    assert len(seen["x"]) == len(seen["context"]) == 2 and len(seen["attn2"]) == 6
    assert len(gate_inputs) == 6  # block 0 is the only MMDiT-X block: the image attention it mixes in, per step
    for step, source in ((1, 0), (2, 0), (4, 3), (5, 3)):
        assert torch.equal(gate_inputs[step], gate_inputs[source])
    assert not torch.equal(gate_inputs[3], gate_inputs[0])


def test_a_schedule_for_plain_blocks_cannot_drive_an_mmdit_x_model_and_the_error_names_the_groups():
    from ecad_nodes.schedule import ScheduleError
    _, plain = built_tiny("sd3-medium")
    _, mmdit_x = built_tiny("sd3")
    layout = layout_of(plain)
    choice = ScheduleChoice.of_mask("for-sd3-medium", Mask(layout, np.ones((4, layout.bits_per_step), bool)))
    with pytest.raises(ScheduleError, match="mmdit_x_blocks"):
        apply(mmdit_x, choice)


@pytest.mark.parametrize("option", ["scale_mod_only", "swiglu"])
def test_mmdit_options_comfyuis_loader_never_sets_are_refused_by_name(option):
    """The copied block forward follows the modulation and MLP that detected checkpoints have; others get a clear error."""
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.mmdit import OpenAISignatureMMDITWrapper
    from ecad_nodes.families import UnsupportedModelError, adapter_named
    from ecad_nodes.families.sd3 import TinySD3
    config = TinySD3(depth=2).detected_config()
    dm = OpenAISignatureMMDITWrapper(operations=comfy.ops.disable_weight_init, device="meta", **config, **{option: True})
    with pytest.raises(UnsupportedModelError, match="OpenAISignatureMMDITWrapper: MMDiT blocks with scale-only"):
        adapter_named("sd3").layout(dm)

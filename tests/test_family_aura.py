"""AuraFlow paths inside real ComfyUI (COMFYUI_PATH), beyond the family contract
(tests/test_family_contract.py): the register tokens in the text stream, the attention that feeds the
MLPs through the current step's gates and norms, and the refusal of double-layer-only models."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ecad_nodes.choice import ScheduleChoice
from ecad_nodes.registry import tiny_models
from ecad_nodes.schedule import Mask
from family_checks import apply, layout_of
from support import sample

pytestmark = pytest.mark.comfy


@pytest.fixture(scope="module")
def aura():
    spec = tiny_models()["auraflow"].model
    return spec, spec.build(seed=0)


def test_the_text_stream_counts_the_register_tokens(aura):
    """AuraFlow puts 8 learned register tokens before the prompt: the blocks (and the cost model) see them as text."""
    from ecad_nodes.families import adapter_named
    spec, model = aura
    dm = model.model.diffusion_model
    adapter = adapter_named("auraflow")
    prompt = spec.conditioning(1, tokens=5)[0][0]
    latent = spec.empty_latent(spec.test_size, spec.test_size)
    tokens = adapter.tokens(dm, latent, prompt)
    assert tokens.text == 5 + dm.register_tokens.shape[1] == 13
    seen = []
    handle = dm.single_layers[0].attn.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[1]))
    try:
        sample(model, spec, steps=1, width=spec.test_size, height=spec.test_size, positive=spec.conditioning(1, tokens=5))
    finally:
        handle.remove()
    assert seen == [tokens.text + tokens.image]


def test_reused_raw_outputs_still_get_the_current_steps_gates_and_norms(aura):
    """A reused joint attention yields both streams of its last computed step; the block's MLP input still changes."""
    spec, model = aura
    layout = layout_of(model)
    bits = np.ones((6, layout.bits_per_step), dtype=bool)
    bits[[1, 2, 4, 5], layout.bit("double_layers", 0, "attn")] = False  # computed at steps 0 and 3 only
    patched = apply(model, ScheduleChoice.of_mask("attn-reuse", Mask(layout, bits)))
    block = model.model.diffusion_model.double_layers[0]
    attn_out, mlp_in = [], []  # module hooks see the ECAD-patched forward's result
    handles = [block.attn.register_forward_hook(lambda m, a, out: attn_out.append(tuple(t.clone() for t in out))),
               block.mlpX.register_forward_pre_hook(lambda m, args: mlp_in.append(args[0].clone()))]
    try:
        sample(patched, spec, cfg=3.5, width=spec.test_size, height=spec.test_size)
    finally:
        for h in handles:
            h.remove()
    assert len(attn_out) == len(mlp_in) == 6 and attn_out[0][0].shape[0] == 2  # cond and uncond in one batch
    for step, source in ((1, 0), (2, 0), (4, 3), (5, 3)):
        assert all(torch.equal(a, b) for a, b in zip(attn_out[step], attn_out[source]))
        assert not torch.equal(mlp_in[step], mlp_in[source])  # current residual, gate and modulation
    assert not torch.equal(attn_out[3][0], attn_out[0][0]) and not torch.equal(attn_out[3][1], attn_out[0][1])


def test_a_model_of_double_layers_only_is_refused_by_name():
    import comfy.ops
    from comfy.ldm.aura.mmdit import MMDiT
    from ecad_nodes.families import UnsupportedModelError, adapter_named
    dm = MMDiT(dim=64, n_heads=2, global_conddim=64, n_layers=2, n_double_layers=2, max_seq=64,
               operations=comfy.ops.disable_weight_init, device="meta")
    with pytest.raises(UnsupportedModelError, match=r"comfy\.ldm\.aura\.mmdit\.MMDiT: a last double layer"):
        adapter_named("auraflow").layout(dm)

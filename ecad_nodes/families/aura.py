"""AuraFlow in ComfyUI's ``comfy.ldm.aura.mmdit``.

Components are real submodules, wrapped through ModelPatcher object patches on their ``forward``
(as for PixArt), so their raw outputs are cached:

* ``double_layers`` (``MMDiTBlock``): ``attn`` (the joint attention; its forward returns both
  streams' projected outputs, so one component covers both), ``img_mlp`` (``mlpX``), ``txt_mlp`` (``mlpC``);
* ``single_layers`` (``DiTBlock``, over ``cat(text, image)``): ``attn`` and ``mlp``.

AuraFlow's blocks feed the gated attention output through ``normC2``/``normX2`` into the MLP
instead of adding it to the residual, so a post-gate delta would mean nothing: the block re-applies
the current step's gates and norms to the raw outputs, out of place.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..costs import CostTable, attention_matmul_macs, linear_macs
from ..schedule import BlockGroup, Layout
from .base import CallTokens, FamilyAdapter, UnsupportedModelError, install_forward_hooks

DOUBLE_COMPONENTS = ("attn", "img_mlp", "txt_mlp")
SINGLE_COMPONENTS = ("attn", "mlp")
MODULE_OF = {"attn": "attn", "img_mlp": "mlpX", "txt_mlp": "mlpC", "mlp": "mlp"}
TIMESTEP_FEATURES = 256       # TimestepEmbedder input width


@dataclass(frozen=True)
class AuraFlowDims:
    hidden: int
    mlp_hidden: int
    global_cond: int
    depth_double: int
    depth_single: int
    registers: int            # register tokens put before the text
    patch_features: int       # init_x_linear fan-in (latent channels × patch²)
    out_features: int         # final_linear fan-out
    context_in: int           # cond_seq_linear fan-in

    @classmethod
    def of(cls, dm: torch.nn.Module) -> "AuraFlowDims":
        mlp = dm.double_layers[0].mlpX if len(dm.double_layers) else dm.single_layers[0].mlp
        return cls(hidden=dm.init_x_linear.out_features, mlp_hidden=mlp.c_fc1.out_features,
                   global_cond=dm.modF[1].in_features, depth_double=len(dm.double_layers),
                   depth_single=len(dm.single_layers), registers=dm.register_tokens.shape[1],
                   patch_features=dm.init_x_linear.in_features, out_features=dm.final_linear.out_features,
                   context_in=dm.cond_seq_linear.in_features)


def _joint_inputs(c, x, **kwargs):
    return c, x


def _single_input(cx, **kwargs):
    return cx


# An attention whose MLPs are all reused feeds nothing: the block gets its inputs back (same shapes) instead.
_ATTENTION_PLACEHOLDER = {"double_layers": _joint_inputs, "single_layers": _single_input}


def aura_layout(depth_double: int, depth_single: int) -> Layout:
    return Layout("auraflow", (BlockGroup("double_layers", depth_double, DOUBLE_COMPONENTS),
                           BlockGroup("single_layers", depth_single, SINGLE_COMPONENTS)))


def aura_costs(dims: AuraFlowDims, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
    """``tokens.text`` counts the text stream as the blocks see it: the prompt's tokens and the register tokens."""
    h, m, g, img, txt = dims.hidden, dims.mlp_hidden, dims.global_cond, tokens.image, tokens.text
    both = img + txt
    attn = linear_macs(both, h, 4 * h) + (attention_matmul_macs(both, both, h) if attention_matmuls else 0.0)
    per_group = {"double_layers": {"attn": attn, "img_mlp": 3 * linear_macs(img, h, m), "txt_mlp": 3 * linear_macs(txt, h, m)},
                 "single_layers": {"attn": attn, "mlp": 3 * linear_macs(both, h, m)}}
    constant = (linear_macs(img, dims.patch_features, h) + linear_macs(txt - dims.registers, dims.context_in, h)
                + TIMESTEP_FEATURES * g + g * g
                + (2 * dims.depth_double + dims.depth_single) * g * 6 * h      # modC, modX / modCX
                + g * 2 * h + linear_macs(img, h, dims.out_features))          # modF, final_linear
    return CostTable.from_components(aura_layout(dims.depth_double, dims.depth_single), per_group, constant)


class AuraFlowAdapter(FamilyAdapter):
    family = "auraflow"
    model_classes = (("comfy.ldm.aura.mmdit", "MMDiT"),)
    variants = {"AuraFlow": "auraflow"}
    # the attention output goes through norm2 into the MLP only, never to the residual
    internal = {"double_layers": {"attn": ("img_mlp", "txt_mlp")}, "single_layers": {"attn": ("mlp",)}}

    def layout(self, dm: torch.nn.Module) -> Layout:
        if any(block.is_last for block in dm.double_layers):  # a model of double layers only; ComfyUI cannot run it either
            raise UnsupportedModelError("comfy.ldm.aura.mmdit.MMDiT: a last double layer without a text MLP is not supported")
        return aura_layout(len(dm.double_layers), len(dm.single_layers))

    def install(self, patcher: Any, layout: Layout) -> None:
        offsets = layout.offsets()
        hooks = []
        for group in layout.groups:
            for i in range(group.blocks):
                for c, component in enumerate(group.components):
                    bit = offsets[group.name] + len(group.components) * i + c
                    placeholder = _ATTENTION_PLACEHOLDER[group.name] if component in self.internal.get(group.name, {}) else None
                    hooks.append((f"diffusion_model.{group.name}.{i}.{MODULE_OF[component]}", bit, placeholder))
        install_forward_hooks(patcher, hooks)

    def tokens(self, dm: torch.nn.Module, x: torch.Tensor, context: Optional[torch.Tensor]) -> CallTokens:
        p = dm.patch_size
        text = 0 if context is None else int(context.shape[1])
        return CallTokens(image=((x.shape[-2] + 1) // p) * ((x.shape[-1] + 1) // p),  # as MMDiT.patchify counts
                          text=text + dm.register_tokens.shape[1])

    def costs(self, dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
        return aura_costs(AuraFlowDims.of(dm), tokens, attention_matmuls)


ADAPTERS = (AuraFlowAdapter(),)

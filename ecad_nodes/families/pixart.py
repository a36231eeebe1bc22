"""PixArt-α and PixArt-Σ in ComfyUI's ``comfy.ldm.pixart``.

Each block has three real submodules, the ECAD genome's components: ``self_attn`` (``attn``),
``cross_attn`` and ``mlp``. Their ``forward`` is wrapped through ModelPatcher object patches (the
modules themselves stay, so LoRA keys still match); the block applies the current step's gate to
the raw outputs. PixArt passes no ``transformer_options`` to its blocks, so the wrapped forwards
find the run through ``active_runtime()``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..costs import CostTable, attention_matmul_macs, linear_macs
from ..schedule import BlockGroup, Layout
from .base import CallTokens, FamilyAdapter, install_forward_hooks

COMPONENTS = ("self_attn", "cross_attn", "mlp")
MODULE_OF = {"self_attn": "attn", "cross_attn": "cross_attn", "mlp": "mlp"}


@dataclass(frozen=True)
class PixArtDims:
    hidden: int
    mlp_hidden: int
    depth: int
    patch_channels: int      # x_embedder fan-in (channels × patch²)
    out_channels: int        # final layer fan-out
    caption_channels: int
    size_embed: int          # micro-conditioning embedders' width, 0 when absent

    @classmethod
    def of(cls, dm: torch.nn.Module) -> "PixArtDims":
        block = dm.blocks[0]
        conv = dm.x_embedder.proj
        return cls(hidden=dm.hidden_size, mlp_hidden=block.mlp.fc1.out_features, depth=len(dm.blocks),
                   patch_channels=conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1],
                   out_channels=dm.final_layer.linear.out_features,
                   caption_channels=dm.y_embedder.y_proj.fc1.in_features,
                   size_embed=dm.csize_embedder.outdim if getattr(dm, "micro_conditioning", False) else 0)


def pixart_layout(depth: int) -> Layout:
    return Layout("pixart", (BlockGroup("blocks", depth, COMPONENTS),))


def pixart_costs(dims: PixArtDims, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
    h, n, txt = dims.hidden, tokens.image, tokens.text
    per_block = {
        "self_attn": linear_macs(n, h, 4 * h) + (attention_matmul_macs(n, n, h) if attention_matmuls else 0.0),
        "cross_attn": 2 * linear_macs(n, h, h) + linear_macs(txt, h, 2 * h)
                      + (attention_matmul_macs(n, txt, h) if attention_matmuls else 0.0),
        "mlp": 2 * linear_macs(n, h, dims.mlp_hidden),
    }
    timestep_embed = 256 * h + h * h
    size_embeds = 3 * (256 * dims.size_embed + dims.size_embed * dims.size_embed) if dims.size_embed else 0
    constant = (linear_macs(n, dims.patch_channels, h) + timestep_embed + size_embeds + h * 6 * h
                + linear_macs(txt, dims.caption_channels, h) + linear_macs(txt, h, h)
                + linear_macs(n, h, dims.out_channels))
    return CostTable.from_components(pixart_layout(dims.depth), {"blocks": per_block}, constant)


class PixArtAdapter(FamilyAdapter):
    family = "pixart"
    model_classes = (("comfy.ldm.pixart.pixartms", "PixArtMS"),)
    variants = {"PixArtAlpha": "pixart-alpha", "PixArtSigma": "pixart-sigma"}

    def layout(self, dm: torch.nn.Module) -> Layout:
        return pixart_layout(len(dm.blocks))

    def install(self, patcher: Any, layout: Layout) -> None:
        install_forward_hooks(patcher, (
            (f"diffusion_model.blocks.{i}.{MODULE_OF[component]}", 3 * i + c)
            for i in range(layout.group("blocks").blocks) for c, component in enumerate(COMPONENTS)))

    def tokens(self, dm: torch.nn.Module, x: torch.Tensor, context: Optional[torch.Tensor]) -> CallTokens:
        p = dm.patch_size
        return CallTokens(image=(x.shape[-2] // p) * (x.shape[-1] // p),
                          text=0 if context is None else int(context.shape[-2]))

    def costs(self, dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
        return pixart_costs(PixArtDims.of(dm), tokens, attention_matmuls)


ADAPTERS = (PixArtAdapter(),)

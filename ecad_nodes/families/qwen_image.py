"""Qwen-Image (and Qwen-Image-Edit, the same class) in ComfyUI's ``comfy.ldm.qwen_image``.

Each ``transformer_blocks`` entry has three real submodules, the components: ``attn`` (the joint
attention; its forward returns both streams' projected outputs, so one component covers both),
``img_mlp`` and ``txt_mlp``. Their ``forward`` is wrapped through ModelPatcher object patches, as
for PixArt; the block gates the raw outputs with the current step's modulation and adds them out of
place (``hidden + gate * out``, ``torch.addcmul``), so cached outputs are never written into.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..costs import CostTable, attention_matmul_macs, linear_macs
from ..schedule import BlockGroup, Layout
from .base import CallTokens, FamilyAdapter, install_forward_hooks

COMPONENTS = ("attn", "img_mlp", "txt_mlp")
TIMESTEP_FEATURES = 256       # QwenTimestepProjEmbeddings input width


@dataclass(frozen=True)
class QwenImageDims:
    hidden: int
    mlp_hidden: int
    depth: int
    patch_features: int       # img_in fan-in (latent channels × patch²)
    out_features: int         # proj_out fan-out
    context_in: int

    @classmethod
    def of(cls, dm: torch.nn.Module) -> "QwenImageDims":
        block = dm.transformer_blocks[0]
        return cls(hidden=dm.inner_dim, mlp_hidden=block.img_mlp.net[0].proj.out_features,
                   depth=len(dm.transformer_blocks), patch_features=dm.img_in.in_features,
                   out_features=dm.proj_out.out_features, context_in=dm.txt_in.in_features)


def qwen_image_layout(depth: int) -> Layout:
    return Layout("qwen_image", (BlockGroup("transformer_blocks", depth, COMPONENTS),))


def qwen_image_costs(dims: QwenImageDims, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
    h, m, img, txt = dims.hidden, dims.mlp_hidden, tokens.image, tokens.text
    both = img + txt
    per_block = {
        "attn": linear_macs(both, h, 4 * h) + (attention_matmul_macs(both, both, h) if attention_matmuls else 0.0),
        "img_mlp": 2 * linear_macs(img, h, m),
        "txt_mlp": 2 * linear_macs(txt, h, m),
    }
    constant = (linear_macs(img, dims.patch_features, h) + linear_macs(txt, dims.context_in, h)
                + TIMESTEP_FEATURES * h + h * h          # timestep embedding
                + dims.depth * 2 * h * 6 * h             # img_mod and txt_mod of every block
                + h * 2 * h + linear_macs(img, h, dims.out_features))
    return CostTable.from_components(qwen_image_layout(dims.depth), {"transformer_blocks": per_block}, constant)


class QwenImageAdapter(FamilyAdapter):
    family = "qwen_image"
    model_classes = (("comfy.ldm.qwen_image.model", "QwenImageTransformer2DModel"),)
    variants = {"QwenImage": "qwen-image"}

    def layout(self, dm: torch.nn.Module) -> Layout:
        return qwen_image_layout(len(dm.transformer_blocks))

    def install(self, patcher: Any, layout: Layout) -> None:
        install_forward_hooks(patcher, (
            (f"diffusion_model.transformer_blocks.{i}.{component}", 3 * i + c)
            for i in range(layout.group("transformer_blocks").blocks) for c, component in enumerate(COMPONENTS)))

    def tokens(self, dm: torch.nn.Module, x: torch.Tensor, context: Optional[torch.Tensor]) -> CallTokens:
        # Reference latents of Qwen-Image-Edit add image tokens that ``x`` does not show; they are not counted.
        p = dm.patch_size
        return CallTokens(image=((x.shape[-2] + p - 1) // p) * ((x.shape[-1] + p - 1) // p),
                          text=0 if context is None else int(context.shape[1]))

    def costs(self, dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
        return qwen_image_costs(QwenImageDims.of(dm), tokens, attention_matmuls)


ADAPTERS = (QwenImageAdapter(),)

"""HunyuanVideo (and HunyuanImage 2.1, the same class) in ComfyUI's ``comfy.ldm.hunyuan_video``.

Its blocks are ComfyUI's FLUX blocks (double blocks with the image stream first in the joint
attention, ``flipped_img_txt``; single blocks over ``cat(img, txt)``), so the FLUX adapter's block
replacements serve as they are: they read HunyuanVideo's ``attention_mask`` argument and its
token-wise modulation (``modulation_dims_*``, used by image-to-video's guiding frame), and apply
gates to copies, never to cached outputs. Components are FLUX's: double ``attn`` (joint, both
streams), ``img_mlp``, ``txt_mlp``; single ``attn``, ``mlp_in``, ``out_proj``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..costs import CostTable, attention_matmul_macs, linear_macs
from ..schedule import Layout
from .base import CallTokens, FamilyAdapter
from .flux import FLUX_INTERNAL, flux_block_macs, flux_layout, install_flux_replacements

TOKEN_REFINER_BLOCKS = 2      # fixed in ComfyUI's TokenRefiner
TIMESTEP_FEATURES = 256       # time_in / guidance_in / time_r_in input width


@dataclass(frozen=True)
class HunyuanVideoDims:
    hidden: int
    mlp_hidden: int
    depth: int
    depth_single: int
    patch: tuple[int, ...]       # (t, h, w) for video, (h, w) for HunyuanImage 2.1
    in_channels: int
    out_features: int            # final layer fan-out (channels × patch area)
    context_in: int
    vec_in: int                  # 0 without a pooled-text vector (HunyuanImage 2.1)
    guidance_embed: bool
    meanflow: bool

    @classmethod
    def of(cls, dm: torch.nn.Module) -> "HunyuanVideoDims":
        p = dm.params
        return cls(hidden=p.hidden_size, mlp_hidden=int(p.hidden_size * p.mlp_ratio), depth=p.depth,
                   depth_single=p.depth_single_blocks, patch=tuple(p.patch_size), in_channels=p.in_channels,
                   out_features=dm.final_layer.linear.out_features, context_in=p.context_in_dim,
                   vec_in=p.vec_in_dim or 0, guidance_embed=bool(p.guidance_embed), meanflow=bool(p.meanflow))


def hunyuan_video_layout(depth: int, depth_single: int) -> Layout:
    return flux_layout(depth, depth_single, family="hunyuan_video")


def hunyuan_video_costs(dims: HunyuanVideoDims, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
    h, img, txt = dims.hidden, tokens.image, tokens.text
    embedder = TIMESTEP_FEATURES * h + h * h
    refiner_block = (2 * h * h + linear_macs(txt, h, 3 * h) + linear_macs(txt, h, h) + 2 * linear_macs(txt, h, 4 * h)
                     + (attention_matmul_macs(txt, txt, h) if attention_matmuls else 0.0))
    token_refiner = (linear_macs(txt, dims.context_in, h) + embedder + dims.context_in * h + h * h
                     + TOKEN_REFINER_BLOCKS * refiner_block)
    constant = (linear_macs(img, dims.in_channels * math.prod(dims.patch), h)
                + embedder * (1 + dims.guidance_embed + dims.meanflow)
                + (dims.vec_in * h + h * h if dims.vec_in else 0) + token_refiner
                + dims.depth * 2 * h * 6 * h + dims.depth_single * h * 3 * h
                + h * 2 * h + linear_macs(img, h, dims.out_features))
    return CostTable.from_components(hunyuan_video_layout(dims.depth, dims.depth_single),
                                     flux_block_macs(h, dims.mlp_hidden, tokens, attention_matmuls), constant)


class HunyuanVideoAdapter(FamilyAdapter):
    family = "hunyuan_video"
    model_classes = (("comfy.ldm.hunyuan_video.model", "HunyuanVideo"),)
    variants = {"HunyuanVideo": "hunyuan-video-t2v", "HunyuanVideoI2V": "hunyuan-video-i2v",
                "HunyuanVideoSkyreelsI2V": "skyreels-v1-i2v", "HunyuanImage21": "hunyuan-image-2.1",
                "HunyuanImage21Refiner": "hunyuan-image-2.1-refiner"}
    internal = FLUX_INTERNAL

    def layout(self, dm: torch.nn.Module) -> Layout:
        return hunyuan_video_layout(len(dm.double_blocks), len(dm.single_blocks))

    def install(self, patcher: Any, layout: Layout) -> None:
        install_flux_replacements(patcher, layout)

    def tokens(self, dm: torch.nn.Module, x: torch.Tensor, context: Optional[torch.Tensor]) -> CallTokens:
        patch = dm.patch_size
        sizes = x.shape[-len(patch):]
        return CallTokens(image=math.prod((n + p // 2) // p for n, p in zip(sizes, patch)),
                          text=0 if context is None else int(context.shape[1]))

    def costs(self, dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
        return hunyuan_video_costs(HunyuanVideoDims.of(dm), tokens, attention_matmuls)


ADAPTERS = (HunyuanVideoAdapter(),)

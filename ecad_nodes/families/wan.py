"""Wan 2.1 and Wan 2.2 (text-, image- and text+image-to-video) in ComfyUI's ``comfy.ldm.wan``.

Each ``blocks`` entry (``WanAttentionBlock``) has three real submodules, the components:
``self_attn``, ``cross_attn`` (text, plus CLIP-image keys for image-to-video; ungated) and ``ffn``.
Their ``forward`` is wrapped through ModelPatcher object patches, as for PixArt; the block applies
the current step's modulation to the raw outputs and adds them out of place (``torch.addcmul``,
``x + …``), so cached outputs are never written into. Wan 2.2's per-frame timesteps only change
that modulation, which stays the current step's.

Every Wan model class of ComfyUI runs its blocks through these submodules, so the VACE, camera,
HuMo, speech-to-video and Animate models are cached the same way; their own extra modules (VACE
blocks, audio and face adapters) always run. VACE blocks are in the cost model; the audio, face and
camera adapters are not (their inputs are optional and their sizes vary with the conditioning).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..costs import CostTable, attention_matmul_macs, linear_macs
from ..schedule import BlockGroup, Layout
from .base import CallTokens, FamilyAdapter, install_forward_hooks

COMPONENTS = ("self_attn", "cross_attn", "ffn")
CLIP_VISION_TOKENS = 257      # CLIP ViT-H penultimate states of one image (ComfyUI's CLIPVisionEncode)
CLIP_VISION_WIDTH = 1280


@dataclass(frozen=True)
class WanDims:
    hidden: int
    ffn_hidden: int
    depth: int
    patch_features: int       # patch_embedding fan-in (input channels × patch volume)
    out_features: int         # head fan-out (output channels × patch volume)
    text_in: int
    freq_dim: int
    image_context: int        # CLIP-image tokens the cross-attention reads (0 for text-only cross-attention)
    vace_depth: int = 0
    vace_patch_features: int = 0

    @classmethod
    def of(cls, dm: torch.nn.Module) -> "WanDims":
        conv = dm.patch_embedding
        image_context = 0
        if dm.img_emb is not None and hasattr(dm.blocks[0].cross_attn, "k_img"):
            emb_pos = dm.img_emb.emb_pos  # first-last-frame models read two images' tokens
            image_context = emb_pos.shape[1] if emb_pos is not None else CLIP_VISION_TOKENS
        vace_blocks = getattr(dm, "vace_blocks", None)
        vace_conv = getattr(dm, "vace_patch_embedding", None)
        return cls(hidden=dm.dim, ffn_hidden=dm.blocks[0].ffn[0].out_features, depth=len(dm.blocks),
                   patch_features=conv.in_channels * math.prod(conv.kernel_size),
                   out_features=dm.head.head.out_features, text_in=dm.text_embedding[0].in_features,
                   freq_dim=dm.freq_dim, image_context=image_context,
                   vace_depth=len(vace_blocks) if vace_blocks is not None else 0,
                   vace_patch_features=vace_conv.in_channels * math.prod(vace_conv.kernel_size) if vace_conv is not None else 0)


def wan_layout(depth: int) -> Layout:
    return Layout("wan", (BlockGroup("blocks", depth, COMPONENTS),))


def wan_block_macs(dims: WanDims, tokens: CallTokens, attention_matmuls: bool = False) -> dict[str, float]:
    h, n, txt, img = dims.hidden, tokens.image, tokens.text, dims.image_context
    cross = linear_macs(n, h, 2 * h) + linear_macs(txt, h, 2 * h) + linear_macs(img, h, 2 * h)
    if attention_matmuls:
        cross += attention_matmul_macs(n, txt, h) + (attention_matmul_macs(n, img, h) if img else 0.0)
    return {"self_attn": linear_macs(n, h, 4 * h) + (attention_matmul_macs(n, n, h) if attention_matmuls else 0.0),
            "cross_attn": cross,
            "ffn": 2 * linear_macs(n, h, dims.ffn_hidden)}


def wan_costs(dims: WanDims, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
    """MACs per batch row; one timestep per row (Wan 2.2's per-frame timesteps add a few per frame)."""
    h, n, txt, img = dims.hidden, tokens.image, tokens.text, dims.image_context
    per_block = wan_block_macs(dims, tokens, attention_matmuls)
    constant = (linear_macs(n, dims.patch_features, h)
                + dims.freq_dim * h + h * h + h * 6 * h          # time embedding and projection
                + linear_macs(txt, dims.text_in, h) + linear_macs(txt, h, h)
                + (linear_macs(img, CLIP_VISION_WIDTH, CLIP_VISION_WIDTH) + linear_macs(img, CLIP_VISION_WIDTH, h)
                   if img else 0.0)
                + linear_macs(n, h, dims.out_features))
    if dims.vace_depth:  # VACE blocks run every step on one control video: full blocks plus their projections
        constant += (linear_macs(n, dims.vace_patch_features, h) + linear_macs(n, h, h)
                     + dims.vace_depth * (sum(per_block.values()) + linear_macs(n, h, h)))
    return CostTable.from_components(wan_layout(dims.depth), {"blocks": per_block}, constant)


class WanAdapter(FamilyAdapter):
    family = "wan"
    model_classes = (("comfy.ldm.wan.model", "WanModel"), ("comfy.ldm.wan.model", "VaceWanModel"),
                     ("comfy.ldm.wan.model", "CameraWanModel"), ("comfy.ldm.wan.model", "HumoWanModel"),
                     ("comfy.ldm.wan.model", "WanModel_S2V"), ("comfy.ldm.wan.model_animate", "AnimateWanModel"))
    variants = {"WAN21_T2V": "wan-t2v", "WAN21_I2V": "wan2.1-i2v", "WAN21_FunControl2V": "wan2.1-fun-control",
                "WAN21_Vace": "wan-vace", "WAN21_Camera": "wan2.1-camera", "WAN22_Camera": "wan2.2-camera",
                "WAN21_HuMo": "wan-humo", "WAN22_S2V": "wan2.2-s2v", "WAN22_Animate": "wan2.2-animate",
                "WAN22_T2V": "wan2.2-ti2v-5b"}

    def variant(self, base_model: Any) -> Optional[str]:
        found = super().variant(base_model)
        dm = getattr(base_model, "diffusion_model", None)
        # Wan 2.2 A14B image-to-video has no CLIP-image branch, so ComfyUI configures it as text-to-video
        # with the image latent and mask concatenated to the input (36 channels).
        if found == "wan-t2v" and dm is not None and dm.patch_embedding.in_channels == 36:
            return "wan2.2-i2v-a14b"
        return found

    def layout(self, dm: torch.nn.Module) -> Layout:
        return wan_layout(len(dm.blocks))

    def install(self, patcher: Any, layout: Layout) -> None:
        install_forward_hooks(patcher, (
            (f"diffusion_model.blocks.{i}.{component}", 3 * i + c)
            for i in range(layout.group("blocks").blocks) for c, component in enumerate(COMPONENTS)))

    def tokens(self, dm: torch.nn.Module, x: torch.Tensor, context: Optional[torch.Tensor]) -> CallTokens:
        # Latent frames × height × width in patches (inputs are padded to whole patches). Reference
        # latents and extra frames some variants append are not counted.
        sizes = x.shape[-3:]
        return CallTokens(image=math.prod((s + p - 1) // p for s, p in zip(sizes, dm.patch_size)),
                          text=0 if context is None else int(context.shape[1]))

    def costs(self, dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
        return wan_costs(WanDims.of(dm), tokens, attention_matmuls)


ADAPTERS = (WanAdapter(),)

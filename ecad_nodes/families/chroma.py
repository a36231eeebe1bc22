"""Chroma in ComfyUI's ``comfy.ldm.chroma``, and Chroma Radiance (``comfy.ldm.chroma_radiance``, the same
blocks on pixel patches with a NeRF head instead of a VAE latent).

Chroma's blocks are FLUX's without a per-block ``Modulation``: one "distilled guidance"
approximator computes every block's shift/scale/gate up front, and ``forward_orig`` hands each block
its slice as ``vec``. The components are FLUX's (double: joint ``attn``, ``img_mlp``, ``txt_mlp``;
single: ``attn``, ``mlp_in``, ``out_proj``). ComfyUI v0.3.x has Chroma's own block classes
(``addcmul`` arithmetic, mirrored here); later versions run FLUX's blocks with ``modulation=False``,
which FLUX's mirrors follow. Residuals are added out of place, so no cached output is written into.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..costs import CostTable, linear_macs, module_linear_macs
from ..registry import BenchmarkModel, ModelFiles, Preset, tiny_preset
from ..tiny import TinyModel, text_states
from .base import CallTokens, Component, FamilyAdapter, Group
from .flux import (DOUBLE_MIRROR, SINGLE_MIRROR, _call_features, _forward_of, _heads, flux_block_macs,
                   routed_double_block, routed_single_output)
from .mirror import Mirror

#: Rows of the approximator's input, hard-coded in ``Chroma.forward_orig`` (enough for 19 + 38 blocks).
MODULATION_INDEX_LENGTH = 344


def _addcmul_modulated(x: torch.Tensor, mod) -> torch.Tensor:
    return torch.addcmul(mod.shift, 1 + mod.scale, x)


def chroma_double_forward(route, block, flags, img, txt, pe, vec, attn_mask=None, transformer_options={}):
    """``comfy.ldm.chroma.layers.DoubleStreamBlock.forward`` (ComfyUI v0.3.x) with its components routed."""
    from comfy.ldm.flux.math import attention
    (img_mod1, _), (txt_mod1, _) = vec

    def joint_attention():
        img_q, img_k, img_v = _heads(block.img_attn.qkv(_addcmul_modulated(block.img_norm1(img), img_mod1)), block.num_heads)
        img_q, img_k = block.img_attn.norm(img_q, img_k, img_v)
        txt_q, txt_k, txt_v = _heads(block.txt_attn.qkv(_addcmul_modulated(block.txt_norm1(txt), txt_mod1)), block.num_heads)
        txt_q, txt_k = block.txt_attn.norm(txt_q, txt_k, txt_v)
        attn = attention(torch.cat((txt_q, img_q), dim=2), torch.cat((txt_k, img_k), dim=2),
                         torch.cat((txt_v, img_v), dim=2), pe=pe, mask=attn_mask, transformer_options=transformer_options)
        txt_attn, img_attn = attn[:, :txt.shape[1]], attn[:, txt.shape[1]:]
        return block.img_attn.proj(img_attn), block.txt_attn.proj(txt_attn)

    return routed_double_block(route, block, img, txt, vec, joint_attention,
                               lambda x, mod, stream: _addcmul_modulated(x, mod),
                               lambda x, value, gate, stream: torch.addcmul(x, gate, value))  # Chroma's addcmul_


def chroma_single_forward(route, block, flags, x, pe, vec, attn_mask=None, transformer_options={}):
    """``comfy.ldm.chroma.layers.SingleStreamBlock.forward`` (ComfyUI v0.3.x) with its components routed."""
    from comfy.ldm.flux.math import attention
    mod = vec

    def attend(qkv):
        q, k, v = _heads(qkv, block.num_heads)
        q, k = block.norm(q, k, v)
        return attention(q, k, v, pe=pe, mask=attn_mask, transformer_options=transformer_options)

    output = routed_single_output(route, block, lambda: _addcmul_modulated(block.pre_norm(x), mod), attend,
                                  block.mlp_hidden_dim, block.mlp_act)
    x = torch.addcmul(x, mod.gate, output)
    if x.dtype == torch.float16:
        x = torch.nan_to_num(x, nan=0.0, posinf=65504, neginf=-65504)
    return x


CHROMA_DOUBLE_MIRROR = Mirror(
    "ECAD's copy of Chroma's DoubleStreamBlock.forward", ("comfy.ldm.chroma.layers.DoubleStreamBlock",),
    chroma_double_forward, _forward_of, known={"331115871f138161": "ComfyUI v0.3.64"}, features=_call_features)
CHROMA_SINGLE_MIRROR = Mirror(
    "ECAD's copy of Chroma's SingleStreamBlock.forward", ("comfy.ldm.chroma.layers.SingleStreamBlock",),
    chroma_single_forward, _forward_of, known={"8b7d3cc570373495": "ComfyUI v0.3.64"}, features=_call_features)

DOUBLE_BLOCKS = Group("double_blocks", "double_blocks", (
    Component("attn"),
    Component("img_mlp", module="img_mlp", written_by_block=True),
    Component("txt_mlp", module="txt_mlp", written_by_block=True)), mirrors=(CHROMA_DOUBLE_MIRROR, DOUBLE_MIRROR))
SINGLE_BLOCKS = Group("single_blocks", "single_blocks", (
    Component("attn", feeds=("out_proj",)),
    Component("mlp_in", feeds=("out_proj",)),
    Component("out_proj", module="linear2", written_by_block=True)), mirrors=(CHROMA_SINGLE_MIRROR, SINGLE_MIRROR))


def latent_image_io_macs(dm: torch.nn.Module, image_tokens: int) -> float:
    """Chroma: a linear patch embedding in, a final linear layer out."""
    return module_linear_macs(dm.img_in, image_tokens) + module_linear_macs(dm.final_layer.linear, image_tokens)


def pixel_image_io_macs(dm: torch.nn.Module, image_tokens: int) -> float:
    """Chroma Radiance: a patchifying convolution in, and out a NeRF head that runs per pixel, its MLP
    weights generated per patch from the patch's token."""
    p = dm.params
    pixels = p.patch_size ** 2
    nerf, inner = p.nerf_hidden_size, p.nerf_hidden_size * p.nerf_mlp_ratio
    patch_in = p.in_channels * pixels * p.hidden_size
    embedder = pixels * (p.in_channels + p.nerf_max_freqs ** 2) * nerf
    nerf_block = p.hidden_size * 3 * nerf * inner + pixels * 3 * nerf * inner   # weight generator, then the GLU MLP
    head = pixels * nerf * p.in_channels * (9 if p.nerf_final_head_type == "conv" else 1)
    return image_tokens * (patch_in + embedder + p.nerf_depth * nerf_block + head)


def chroma_costs(dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
    # the approximator runs once per modulation row (MODULATION_INDEX_LENGTH rows)
    approximator = module_linear_macs(dm.distilled_guidance_layer, MODULATION_INDEX_LENGTH)
    io = pixel_image_io_macs if hasattr(dm, "nerf_blocks") else latent_image_io_macs
    constant = linear_macs(tokens.text, dm.params.context_in_dim, dm.params.hidden_size) + approximator + io(dm, tokens.image)
    double = dm.double_blocks[0] if len(dm.double_blocks) else None
    single = dm.single_blocks[0] if len(dm.single_blocks) else None
    return CostTable.from_components(ChromaAdapter().layout(dm), flux_block_macs(double, single, tokens, attention_matmuls),
                                     constant)


class ChromaAdapter(FamilyAdapter):
    family = "chroma"
    model_classes = (("comfy.ldm.chroma.model", "Chroma"), ("comfy.ldm.chroma_radiance.model", "ChromaRadiance"))
    variants = {"Chroma": "chroma", "ChromaRadiance": "chroma-radiance"}
    groups = (DOUBLE_BLOCKS, SINGLE_BLOCKS)

    def tokens(self, dm: torch.nn.Module, x: torch.Tensor, context: Optional[torch.Tensor]) -> CallTokens:
        p = dm.patch_size  # 2 on latents (Chroma), 16 on pixels (Radiance); both pad to whole patches
        h, w = x.shape[-2], x.shape[-1]
        return CallTokens(image=((h + p - 1) // p) * ((w + p - 1) // p),
                          text=0 if context is None else int(context.shape[1]))

    def costs(self, dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
        return chroma_costs(dm, tokens, attention_matmuls)


ADAPTERS = (ChromaAdapter(),)


@dataclass(frozen=True)
class TinyChroma(TinyModel):
    """Chroma as its checkpoints look to ComfyUI's detection, at a small width."""

    hidden: int = 64
    heads: int = 2
    depth: int = 2
    depth_single: int = 4
    context_dim: int = 48
    mlp_ratio: float = 2.0
    axes_dim: tuple[int, ...] = (8, 12, 12)
    approximator_hidden: int = 32
    approximator_layers: int = 2
    latent_channels = 16

    def checkpoint(self) -> dict[str, tuple[int, ...]]:
        h, head = self.hidden, self.hidden // self.heads
        keys = {"img_in.weight": (h, 64), "txt_in.weight": (h, self.context_dim),
                "distilled_guidance_layer.norms.0.scale": (self.approximator_hidden,)}
        for i in range(self.depth):
            keys[f"double_blocks.{i}.img_attn.norm.key_norm.scale"] = (head,)
        for i in range(self.depth_single):
            keys[f"single_blocks.{i}.linear1.weight"] = (3 * h + int(h * self.mlp_ratio), h)
        return keys

    def overrides(self) -> dict[str, Any]:
        # Detection fixes Chroma's widths and the approximator's at the released size.
        return {"hidden_size": self.hidden, "num_heads": self.heads, "axes_dim": list(self.axes_dim),
                "context_in_dim": self.context_dim, "mlp_ratio": self.mlp_ratio, "out_dim": self.hidden,
                "hidden_dim": self.approximator_hidden, "n_layers": self.approximator_layers}

    def conditioning(self, seed: int, tokens: Optional[int] = None) -> list:
        # T5 only: ComfyUI's text encoders still set pooled_output (None for T5).
        gen = torch.Generator().manual_seed(seed)
        return [[text_states(gen, tokens or 16, self.context_dim), {"pooled_output": None}]]


@dataclass(frozen=True)
class TinyChromaRadiance(TinyChroma):
    """Chroma Radiance: Chroma's blocks on pixel patches, decoded by a NeRF head (no VAE)."""

    patch: int = 8                     # 16 in the released model
    nerf_hidden: int = 16
    nerf_mlp_ratio: int = 2
    nerf_depth: int = 2
    nerf_max_freqs: int = 4
    nerf_tile_size: int = 32           # patches per NeRF tile; 0 disables tiling
    latent_channels = 3
    compression = 1                    # pixel space

    def checkpoint(self) -> dict[str, tuple[int, ...]]:
        keys = {k: v for k, v in super().checkpoint().items() if k != "img_in.weight"}
        keys.update({"nerf_blocks.0.norm.scale": (self.nerf_hidden,), "img_in_patch.weight": (self.hidden, 3, self.patch, self.patch),
                     "nerf_final_layer_conv.norm.scale": (self.nerf_hidden,)})
        return keys

    def overrides(self) -> dict[str, Any]:
        return {**super().overrides(), "patch_size": self.patch, "nerf_hidden_size": self.nerf_hidden,
                "nerf_mlp_ratio": self.nerf_mlp_ratio, "nerf_depth": self.nerf_depth,
                "nerf_max_freqs": self.nerf_max_freqs, "nerf_tile_size": self.nerf_tile_size}


PRESETS = (
    # ComfyUI's Chroma template: SamplerCustomAdvanced with CFGGuider 3.5, beta schedule, ModelSamplingAuraFlow 1.
    Preset(name="chroma1-hd", family="chroma",
           description="Chroma1-HD (ComfyUI template: 1024², 26 steps, CFG 3.5, beta schedule)",
           files=ModelFiles("Chroma1-HD-fp8_scaled_rev2.safetensors", ("t5xxl_fp8_e4m3fn_scaled.safetensors",), "CHROMA",
                            "ae.safetensors"),
           steps=26, sampler="euler", scheduler="beta", cfg=3.5, width=1024, height=1024,
           population=24, generations=100, metric="image_reward",
           extra={"model_sampling": "AuraFlow", "shift": 1.0}),
    tiny_preset("chroma", TinyChroma(), "A small random-weight Chroma built through ComfyUI's detection; runs on a CPU "
                "in minutes", cfg=3.0),
)

# hidden 512, 4 double + 8 single blocks, 1024 image tokens (512² image); CFG batches cond and uncond
BENCHMARK_MODELS = (
    BenchmarkModel("chroma", TinyChroma(hidden=512, heads=4, depth=4, depth_single=8, context_dim=256, mlp_ratio=4.0,
                                        axes_dim=(16, 56, 56), approximator_hidden=256, approximator_layers=2),
                   width=512, height=512, cfg=4.0),
)

TINY_MODELS = {"chroma-radiance": TinyChromaRadiance()}

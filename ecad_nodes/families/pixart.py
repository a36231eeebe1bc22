"""PixArt-α and PixArt-Σ in ComfyUI's ``comfy.ldm.pixart``.

Each block has three real submodules, the ECAD genome's components: ``self_attn`` (``attn``),
``cross_attn`` and ``mlp``. Their ``forward`` is hooked through ModelPatcher object patches (the
modules themselves stay, so LoRA keys still match); the block applies the current step's gate to
the raw outputs. PixArt passes no ``transformer_options`` to its blocks, so the hooks find the run
through ``active_runtime()``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..costs import CostTable, attention_matmul_macs, linear_macs, module_linear_macs
from ..registry import BenchmarkModel, ModelFiles, Preset, tiny_preset
from ..schedule import Layout
from ..tiny import TinyModel, text_states
from .base import CallTokens, Component, FamilyAdapter, Group

BLOCKS = Group("blocks", "blocks", (Component("self_attn", module="attn"), Component("cross_attn", module="cross_attn"),
                                    Component("mlp", module="mlp")))


def pixart_costs(dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
    h, n, txt = dm.hidden_size, tokens.image, tokens.text
    block = dm.blocks[0]
    cross = block.cross_attn
    per_block = {
        "self_attn": module_linear_macs(block.attn, n) + (attention_matmul_macs(n, n, h) if attention_matmuls else 0.0),
        "cross_attn": module_linear_macs(cross.q_linear, n) + module_linear_macs(cross.kv_linear, txt)
                      + module_linear_macs(cross.proj, n) + (attention_matmul_macs(n, txt, h) if attention_matmuls else 0.0),
        "mlp": module_linear_macs(block.mlp, n),
    }
    # micro-conditioning: the image size (height and width, embedded one by one) and the aspect ratio
    size_embeds = (2 * module_linear_macs(dm.csize_embedder, 1) + module_linear_macs(dm.ar_embedder, 1)
                   if getattr(dm, "micro_conditioning", False) else 0.0)
    constant = (linear_macs(n, _patch_features(dm), h)
                + module_linear_macs(dm.t_embedder, 1) + size_embeds + module_linear_macs(dm.t_block, 1)
                + module_linear_macs(dm.y_embedder, txt) + module_linear_macs(dm.final_layer.linear, n))
    return CostTable.from_components(PixArtAdapter().layout(dm), {"blocks": per_block}, constant)


def _patch_features(dm: torch.nn.Module) -> int:
    conv = dm.x_embedder.proj
    return conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]


class PixArtAdapter(FamilyAdapter):
    family = "pixart"
    model_classes = (("comfy.ldm.pixart.pixartms", "PixArtMS"),)
    variants = {"PixArtAlpha": "pixart-alpha", "PixArtSigma": "pixart-sigma"}
    groups = (BLOCKS,)

    def tokens(self, dm: torch.nn.Module, x: torch.Tensor, context: Optional[torch.Tensor]) -> CallTokens:
        p = dm.patch_size
        return CallTokens(image=(x.shape[-2] // p) * (x.shape[-1] // p),
                          text=0 if context is None else int(context.shape[-2]))

    def costs(self, dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
        return pixart_costs(dm, tokens, attention_matmuls)


ADAPTERS = (PixArtAdapter(),)


def pixart_layout(depth: int) -> Layout:
    return PixArtAdapter().layout_of_sizes(blocks=depth)


@dataclass(frozen=True)
class TinyPixArt(TinyModel):
    """PixArt-α (or Σ) as its checkpoints look to ComfyUI's detection, at a small width."""

    hidden: int = 72  # divisible by 3 for PixArt-α's size embedders
    heads: int = 2
    depth: int = 2
    caption_channels: int = 32
    max_tokens: int = 8
    sigma: bool = False
    latent_channels = 4
    test_size = 384  # ComfyUI's PixArt cannot sample latents much below 48×48 (its position embedding's base size)

    def checkpoint(self) -> dict[str, tuple[int, ...]]:
        h = self.hidden
        keys = {"t_block.1.weight": (6 * h, h), "y_embedder.y_embedding": (self.max_tokens, self.caption_channels),
                "y_embedder.y_proj.fc1.weight": (h, self.caption_channels), "x_embedder.proj.weight": (h, 4, 2, 2)}
        if not self.sigma:
            keys["ar_embedder.mlp.0.weight"] = (h // 3, 256)  # PixArt-α's micro-conditioning
        for i in range(self.depth):
            keys[f"blocks.{i}.attn.qkv.weight"] = (3 * h, h)
        return keys

    def overrides(self) -> dict[str, Any]:
        # ComfyUI's detection fixes PixArt's width, heads and caption width at the released size.
        return {"hidden_size": self.hidden, "num_heads": self.heads, "caption_channels": self.caption_channels}

    def conditioning(self, seed: int, tokens: Optional[int] = None) -> list:
        gen = torch.Generator().manual_seed(seed)
        return [[text_states(gen, tokens or self.max_tokens, self.caption_channels), {}]]


PRESETS = (
    # The ECAD paper calibrated the 256-px checkpoints at 256². ComfyUI cannot sample PixArt at 256 px or below
    # (comfy/ldm/pixart/pixartms.py: base size round(c_res / 64) * 64 // patch is 0 there, a ZeroDivisionError),
    # so the presets use the 512-px checkpoints at 512², the smallest size their position embeddings know.
    Preset(name="pixart-alpha", family="pixart",
           description="PixArt-α 512 (ECAD paper: 20 steps, CFG 4.5; 512², as ComfyUI cannot sample PixArt at 256²)",
           files=ModelFiles("PixArt-XL-2-512x512.pth", ("t5xxl_fp16.safetensors",), "PIXART",
                            "sd-vae-ft-ema.safetensors"),
           steps=20, sampler="dpmpp_2m", scheduler="normal", cfg=4.5, width=512, height=512,
           population=72, generations=550, metric="image_reward"),
    Preset(name="pixart-sigma", family="pixart",
           description="PixArt-Σ 512 (ECAD paper: 20 steps, CFG 4.5; 512², as ComfyUI cannot sample PixArt at 256²)",
           files=ModelFiles("PixArt-Sigma-XL-2-512-MS.pth", ("t5xxl_fp16.safetensors",), "PIXART",
                            "sdxl_vae.safetensors"),
           steps=20, sampler="dpmpp_2m", scheduler="normal", cfg=4.5, width=512, height=512,
           population=72, generations=50, metric="image_reward"),
    # 320² is the smallest common size ComfyUI's PixArt samples (see above): 400 image tokens
    tiny_preset("pixart", TinyPixArt(), "A small random-weight PixArt-α built through ComfyUI's detection; runs on a "
                "CPU in minutes", sampler="dpmpp_2m", scheduler="normal", cfg=4.5, width=320, height=320),
)

BENCHMARK_MODELS = (
    BenchmarkModel("pixart", TinyPixArt(hidden=384, heads=6, depth=12, caption_channels=256, max_tokens=64),
                   width=512, height=512, cfg=4.5, sampler="dpmpp_2m", scheduler="normal"),
)

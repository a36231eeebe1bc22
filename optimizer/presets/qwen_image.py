"""Qwen-Image presets: the model as ComfyUI's template runs it, and a tiny random-weight Qwen-Image.

ComfyUI's detection reads only ``in_channels`` and the block count of Qwen-Image (its widths are
the constructor's defaults), so the tiny model is configured the way the loader configures a
detected one (``build_from_unet_config``) with small widths.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..tiny_models import _ImageLatent, build_from_unet_config
from . import BenchmarkModel, ModelFiles, Preset


@dataclass(frozen=True)
class TinyQwenImage(_ImageLatent):
    heads: int = 2
    head_dim: int = 32
    depth: int = 3
    context_dim: int = 48                       # Qwen2.5-VL hidden states in the real model (3584)
    axes_dim: tuple[int, ...] = (8, 12, 12)     # sums to head_dim
    latent_channels: int = 16

    @property
    def hidden(self) -> int:
        return self.heads * self.head_dim

    def unet_config(self) -> dict[str, Any]:
        return {"image_model": "qwen_image", "in_channels": 64, "out_channels": 16, "patch_size": 2,
                "num_layers": self.depth, "attention_head_dim": self.head_dim, "num_attention_heads": self.heads,
                "joint_attention_dim": self.context_dim, "axes_dims_rope": tuple(self.axes_dim)}

    def build(self, seed: int = 0, dtype: torch.dtype = torch.float32) -> Any:
        return build_from_unet_config(self.unet_config(), seed, dtype)

    def conditioning(self, seed: int, tokens: int | None = None) -> list:
        gen = torch.Generator().manual_seed(seed)
        return [[torch.randn(1, tokens or 16, self.context_dim, generator=gen), {}]]


PRESETS = (
    # ComfyUI's Qwen-Image template: KSampler 20 euler/simple steps, CFG 2.5, ModelSamplingAuraFlow 3.1.
    Preset(name="qwen-image", family="qwen_image",
           description="Qwen-Image (ComfyUI template: 1328², 20 steps, CFG 2.5, shift 3.1)",
           files=ModelFiles("qwen_image_fp8_e4m3fn.safetensors", ("qwen_2.5_vl_7b_fp8_scaled.safetensors",),
                            "QWEN_IMAGE", "qwen_image_vae.safetensors"),
           steps=20, sampler="euler", scheduler="simple", cfg=2.5, width=1328, height=1328,
           population=24, generations=50, metric="image_reward",
           extra={"model_sampling": "AuraFlow", "shift": 3.1}),
    Preset(name="tiny-qwen-image", family="qwen_image",
           description="A small random-weight Qwen-Image built from ComfyUI's classes; runs on a CPU in minutes",
           tiny=TinyQwenImage(), steps=10, sampler="euler", scheduler="simple", cfg=2.5,
           width=128, height=128, population=12, generations=8, metric="fidelity", prompts=8, images_per_prompt=1),
)

# hidden 512 (4 heads of 128), 8 blocks, 1024 image tokens (512² image); CFG batches cond and uncond
BENCHMARK_MODELS = (
    BenchmarkModel("qwen_image", TinyQwenImage(heads=4, head_dim=128, depth=8, context_dim=256, axes_dim=(16, 56, 56)),
                   width=512, height=512, cfg=2.5),
)

"""Chroma presets: Chroma1-HD as ComfyUI's workflow template runs it, and a tiny random-weight Chroma.

ComfyUI's detection hard-codes Chroma's real widths, so the tiny model is configured the way the
loader configures a detected one (``build_from_unet_config``) with small widths.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..tiny_models import _ImageLatent, build_from_unet_config
from . import BenchmarkModel, ModelFiles, Preset


@dataclass(frozen=True)
class TinyChroma(_ImageLatent):
    hidden: int = 64
    heads: int = 2
    depth: int = 2
    depth_single: int = 4
    context_dim: int = 48
    mlp_ratio: float = 2.0
    axes_dim: tuple[int, ...] = (8, 12, 12)
    approximator_hidden: int = 32
    approximator_layers: int = 2
    latent_channels: int = 16

    def unet_config(self) -> dict[str, Any]:
        return {"image_model": "chroma", "in_channels": 64, "out_channels": 64, "patch_size": 2,
                "context_in_dim": self.context_dim, "hidden_size": self.hidden, "mlp_ratio": self.mlp_ratio,
                "num_heads": self.heads, "depth": self.depth, "depth_single_blocks": self.depth_single,
                "axes_dim": list(self.axes_dim), "theta": 10000, "qkv_bias": True,
                # the approximator's input is 16 + 16 timestep/guidance features and a 32-wide block index
                "in_dim": 64, "out_dim": self.hidden, "hidden_dim": self.approximator_hidden,
                "n_layers": self.approximator_layers}

    def build(self, seed: int = 0, dtype: torch.dtype = torch.float32) -> Any:
        return build_from_unet_config(self.unet_config(), seed, dtype)

    def conditioning(self, seed: int, tokens: int | None = None) -> list:
        # T5 only: ComfyUI's text encoders still set pooled_output (None for T5).
        gen = torch.Generator().manual_seed(seed)
        return [[torch.randn(1, tokens or 16, self.context_dim, generator=gen), {"pooled_output": None}]]


@dataclass(frozen=True)
class TinyChromaRadiance(TinyChroma):
    """Chroma Radiance: Chroma's blocks on pixel patches, decoded by a NeRF head (no VAE)."""

    patch: int = 8                     # 16 in the released model
    nerf_hidden: int = 16
    nerf_mlp_ratio: int = 2
    nerf_depth: int = 2
    nerf_max_freqs: int = 4
    nerf_tile_size: int = 32           # patches per NeRF tile; 0 disables tiling
    nerf_final_head: str = "conv"
    latent_channels: int = 3

    def unet_config(self) -> dict[str, Any]:
        return {**super().unet_config(), "image_model": "chroma_radiance", "in_channels": 3, "out_channels": 3,
                "patch_size": self.patch, "nerf_hidden_size": self.nerf_hidden, "nerf_mlp_ratio": self.nerf_mlp_ratio,
                "nerf_depth": self.nerf_depth, "nerf_max_freqs": self.nerf_max_freqs,
                "nerf_tile_size": self.nerf_tile_size, "nerf_final_head_type": self.nerf_final_head,
                "nerf_embedder_dtype": torch.float32}

    def empty_latent(self, height: int, width: int, batch: int = 1) -> torch.Tensor:
        return torch.zeros(batch, self.latent_channels, height, width)  # pixel space


PRESETS = (
    # ComfyUI's Chroma template: SamplerCustomAdvanced with CFGGuider 3.5, beta schedule, ModelSamplingAuraFlow 1.
    Preset(name="chroma1-hd", family="chroma",
           description="Chroma1-HD (ComfyUI template: 1024², 26 steps, CFG 3.5, beta schedule)",
           files=ModelFiles("Chroma1-HD-fp8_scaled_rev2.safetensors", ("t5xxl_fp8_e4m3fn_scaled.safetensors",), "CHROMA",
                            "ae.safetensors"),
           steps=26, sampler="euler", scheduler="beta", cfg=3.5, width=1024, height=1024,
           population=24, generations=100, metric="image_reward",
           extra={"model_sampling": "AuraFlow", "shift": 1.0}),
    Preset(name="tiny-chroma", family="chroma",
           description="A small random-weight Chroma built from ComfyUI's classes; runs on a CPU in minutes",
           tiny=TinyChroma(), steps=10, sampler="euler", scheduler="simple", cfg=3.0,
           width=128, height=128, population=12, generations=8, metric="fidelity", prompts=8, images_per_prompt=1),
)

# hidden 512, 4 double + 8 single blocks, 1024 image tokens (512² image); CFG batches cond and uncond
BENCHMARK_MODELS = (
    BenchmarkModel("chroma", TinyChroma(hidden=512, heads=4, depth=4, depth_single=8, context_dim=256, mlp_ratio=4.0,
                                        axes_dim=(16, 56, 56), approximator_hidden=256, approximator_layers=2),
                   width=512, height=512, cfg=4.0),
)

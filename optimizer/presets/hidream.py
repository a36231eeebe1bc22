"""HiDream presets: HiDream-I1 full and dev as ComfyUI's templates run them, and a tiny random-weight HiDream.

ComfyUI's detection gives every HiDream checkpoint the released widths (20 heads of 128, 16 + 32
blocks), so the tiny model is configured the way the loader configures a detected one
(``build_from_unet_config``) with small widths. Its conditioning carries what HiDream's text
encoders give: T5 states as the cross-attention input, CLIP-L+G pooled output, and the hidden
states of every Llama layer (``conditioning_llama3``), one of which each block reads.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..tiny_models import _ImageLatent, build_from_unet_config
from . import BenchmarkModel, ModelFiles, Preset


@dataclass(frozen=True)
class TinyHiDream(_ImageLatent):
    heads: int = 2
    head_dim: int = 32
    depth: int = 2
    depth_single: int = 2
    t5_dim: int = 48                         # T5-XXL hidden states in the real model (4096)
    llama_dim: int = 40                      # Llama-3.1-8B hidden states (4096)
    llama_layers: int = 4                    # Llama layers in the conditioning (32 in the real model)
    pooled_dim: int = 32                     # CLIP-L + CLIP-G pooled output (2048)
    experts: int = 4
    active_experts: int = 2
    axes_dim: tuple[int, ...] = (16, 8, 8)   # sums to head_dim
    latent_channels: int = 16

    @property
    def hidden(self) -> int:
        return self.heads * self.head_dim

    def unet_config(self) -> dict[str, Any]:
        blocks = self.depth + self.depth_single
        return {"image_model": "hidream", "patch_size": 2, "in_channels": 16, "out_channels": 16,
                "num_layers": self.depth, "num_single_layers": self.depth_single,
                "attention_head_dim": self.head_dim, "num_attention_heads": self.heads,
                "caption_channels": [self.t5_dim, self.llama_dim], "text_emb_dim": self.pooled_dim,
                "num_routed_experts": self.experts, "num_activated_experts": self.active_experts,
                "axes_dims_rope": list(self.axes_dim), "max_resolution": [128, 128],
                # which Llama layer each block reads; the released model reads layers 0-31, then 31 again
                "llama_layers": [min(i, self.llama_layers - 1) for i in range(blocks)]}

    def build(self, seed: int = 0, dtype: torch.dtype = torch.float32) -> Any:
        return build_from_unet_config(self.unet_config(), seed, dtype)

    def conditioning(self, seed: int, tokens: Optional[int] = None) -> list:
        """T5 states, pooled CLIP output and per-layer Llama states, as ComfyUI's HiDream text encoder returns them."""
        gen = torch.Generator().manual_seed(seed)
        n = tokens or 16
        return [[torch.randn(1, n, self.t5_dim, generator=gen),
                 {"pooled_output": torch.randn(1, self.pooled_dim, generator=gen),
                  "conditioning_llama3": torch.randn(1, self.llama_layers, n, self.llama_dim, generator=gen)}]]


_TEXT_ENCODERS = ("clip_l_hidream.safetensors", "clip_g_hidream.safetensors", "t5xxl_fp8_e4m3fn_scaled.safetensors",
                  "llama_3.1_8b_instruct_fp8_scaled.safetensors")

PRESETS = (
    # ComfyUI's HiDream-I1 full example: 1024², 50 uni_pc steps, CFG 5, shift 3.
    Preset(name="hidream-i1-full", family="hidream",
           description="HiDream-I1 full (ComfyUI example: 1024², 50 steps, uni_pc, CFG 5, shift 3)",
           files=ModelFiles("hidream_i1_full_fp16.safetensors", _TEXT_ENCODERS, "HIDREAM", "ae.safetensors"),
           steps=50, sampler="uni_pc", scheduler="simple", cfg=5.0, width=1024, height=1024,
           population=24, generations=50, metric="image_reward", extra={"model_sampling": "SD3", "shift": 3.0}),
    # ComfyUI's HiDream-I1 dev example: 1024², 28 lcm steps, normal scheduler, CFG 1, shift 6.
    Preset(name="hidream-i1-dev", family="hidream",
           description="HiDream-I1 dev (ComfyUI example: 1024², 28 steps, lcm, CFG 1, shift 6)",
           files=ModelFiles("hidream_i1_dev_bf16.safetensors", _TEXT_ENCODERS, "HIDREAM", "ae.safetensors"),
           steps=28, sampler="lcm", scheduler="normal", cfg=1.0, width=1024, height=1024,
           population=24, generations=50, metric="image_reward", extra={"model_sampling": "SD3", "shift": 6.0}),
    Preset(name="tiny-hidream", family="hidream",
           description="A small random-weight HiDream built from ComfyUI's classes; runs on a CPU in minutes",
           tiny=TinyHiDream(), steps=10, sampler="euler", scheduler="simple", cfg=3.0,
           width=128, height=128, population=12, generations=8, metric="fidelity", prompts=8, images_per_prompt=1),
)

# hidden 512 (4 heads of 128), 2 double + 2 single blocks with 4 routed experts (top 2) + a shared one
# (each expert feed-forward costs about 3× a FLUX MLP), 1024 image tokens (512² image); no CFG, as dev and fast run
BENCHMARK_MODELS = (
    BenchmarkModel("hidream", TinyHiDream(heads=4, head_dim=128, depth=2, depth_single=2, t5_dim=256, llama_dim=256,
                                          axes_dim=(64, 32, 32)), width=512, height=512),
)

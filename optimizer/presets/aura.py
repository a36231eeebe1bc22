"""AuraFlow presets: AuraFlow 0.3 as ComfyUI's example runs it, and a tiny random-weight AuraFlow.

ComfyUI's detection reads only AuraFlow's position table, text width and block counts (its width
is the constructor's default, 3072), so the tiny model is configured the way the loader configures
a detected one (``build_from_unet_config``) with small widths. ComfyUI's ``AuraFlow`` config needs
the real text width (Pile-T5-XL, 2048), so the tiny model keeps it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..tiny_models import _ImageLatent, build_from_unet_config
from . import BenchmarkModel, ModelFiles, Preset

TEXT_DIM = 2048          # ComfyUI's AuraFlow config matches only this text width


@dataclass(frozen=True)
class TinyAuraFlow(_ImageLatent):
    hidden: int = 64
    heads: int = 2
    depth_double: int = 2
    depth_single: int = 2
    max_seq: int = 256                 # position table of 16×16 patches (9216 = 96² in AuraFlow 0.3)
    latent_channels: int = 4

    def unet_config(self) -> dict[str, Any]:
        return {"cond_seq_dim": TEXT_DIM, "max_seq": self.max_seq, "n_double_layers": self.depth_double,
                "n_layers": self.depth_double + self.depth_single, "dim": self.hidden, "n_heads": self.heads,
                "global_conddim": self.hidden, "in_channels": self.latent_channels,
                "out_channels": self.latent_channels, "patch_size": 2}

    def build(self, seed: int = 0, dtype: torch.dtype = torch.float32) -> Any:
        return build_from_unet_config(self.unet_config(), seed, dtype)

    def conditioning(self, seed: int, tokens: int | None = None) -> list:
        gen = torch.Generator().manual_seed(seed)
        return [[torch.randn(1, tokens or 16, TEXT_DIM, generator=gen), {}]]


PRESETS = (
    # ComfyUI's AuraFlow example: the all-in-one checkpoint (models/checkpoints: diffusion model, Pile-T5-XL and
    # SDXL VAE in one file), 1024², 25 uni_pc/normal steps, CFG 3.5, ModelSamplingAuraFlow shift 1.73.
    Preset(name="auraflow-0.3", family="auraflow",
           description="AuraFlow 0.3 (ComfyUI example: 1024², 25 steps, CFG 3.5, shift 1.73)",
           files=ModelFiles("aura_flow_0.3.safetensors", (), "STABLE_DIFFUSION", "", checkpoint=True),
           steps=25, sampler="uni_pc", scheduler="normal", cfg=3.5, width=1024, height=1024,
           population=24, generations=50, metric="image_reward",
           extra={"model_sampling": "AuraFlow", "shift": 1.73}),
    Preset(name="tiny-auraflow", family="auraflow",
           description="A small random-weight AuraFlow built from ComfyUI's classes; runs on a CPU in minutes",
           tiny=TinyAuraFlow(), steps=10, sampler="euler", scheduler="normal", cfg=3.5,
           width=128, height=128, population=12, generations=8, metric="fidelity", prompts=8, images_per_prompt=1),
)

# hidden 512 (4 heads of 128), 2 double + 6 single layers, 1024 image tokens (512² image); CFG batches cond and uncond
BENCHMARK_MODELS = (
    BenchmarkModel("auraflow", TinyAuraFlow(hidden=512, heads=4, depth_double=2, depth_single=6, max_seq=1024),
                   width=512, height=512, cfg=3.5),
)

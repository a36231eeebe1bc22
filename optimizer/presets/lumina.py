"""Lumina Image 2.0 presets: the model as ComfyUI's example runs it, and a tiny random-weight NextDiT.

ComfyUI's detection reads only Lumina 2's text width and block count (its width, heads and rope
axes are fixed to the released model's), so the tiny model is configured the way the loader
configures a detected one (``build_from_unet_config``) with small widths; it keeps the grouped-query
attention (fewer key/value heads than query heads) and qk-norm of the real model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..tiny_models import _ImageLatent, build_from_unet_config
from . import BenchmarkModel, ModelFiles, Preset


@dataclass(frozen=True)
class TinyLumina2(_ImageLatent):
    heads: int = 2
    kv_heads: int = 1
    head_dim: int = 32
    depth: int = 3
    refiners: int = 2                            # context and noise refiner blocks each (2 in the real model)
    caption_dim: int = 32                        # Gemma-2-2B hidden states in the real model (2304)
    axes_dims: tuple[int, ...] = (8, 12, 12)     # sums to head_dim
    latent_channels: int = 16

    @property
    def hidden(self) -> int:
        return self.heads * self.head_dim

    def unet_config(self) -> dict[str, Any]:
        return {"image_model": "lumina2", "patch_size": 2, "in_channels": self.latent_channels, "dim": self.hidden,
                "cap_feat_dim": self.caption_dim, "n_layers": self.depth, "n_refiner_layers": self.refiners,
                "n_heads": self.heads, "n_kv_heads": self.kv_heads, "qk_norm": True,
                "axes_dims": list(self.axes_dims), "axes_lens": [300, 512, 512]}

    def build(self, seed: int = 0, dtype: torch.dtype = torch.float32) -> Any:
        return build_from_unet_config(self.unet_config(), seed, dtype)

    def conditioning(self, seed: int, tokens: int | None = None, padding: int = 0) -> list:
        """Gemma's hidden states and attention mask; ``padding`` masks that many trailing tokens out."""
        gen = torch.Generator().manual_seed(seed)
        n = tokens or 16
        mask = torch.ones(1, n, dtype=torch.long)
        if padding:
            mask[:, n - padding:] = 0
        return [[torch.randn(1, n, self.caption_dim, generator=gen), {"attention_mask": mask}]]


PRESETS = (
    # ComfyUI's Lumina Image 2.0 example: 1024², 25 res_multistep/simple steps, CFG 4, ModelSamplingAuraFlow shift 6
    # (the model's default); split files from Comfy-Org's repackaging.
    Preset(name="lumina-image-2.0", family="lumina2",
           description="Lumina Image 2.0 (ComfyUI example: 1024², 25 steps, CFG 4, shift 6)",
           files=ModelFiles("lumina_2_model_bf16.safetensors", ("gemma_2_2b_fp16.safetensors",), "LUMINA2",
                            "ae.safetensors"),
           steps=25, sampler="res_multistep", scheduler="simple", cfg=4.0, width=1024, height=1024,
           population=24, generations=50, metric="image_reward", extra={"model_sampling": "AuraFlow", "shift": 6.0}),
    Preset(name="tiny-lumina2", family="lumina2",
           description="A small random-weight Lumina 2 built from ComfyUI's classes; runs on a CPU in minutes",
           tiny=TinyLumina2(), steps=10, sampler="euler", scheduler="simple", cfg=4.0,
           width=128, height=128, population=12, generations=8, metric="fidelity", prompts=8, images_per_prompt=1),
)

# hidden 512 (4 query heads of 128, 2 key/value heads), 2 + 2 refiners and 8 blocks, 1024 image tokens (512² image);
# no CFG: Lumina's norms and rotary embeddings do more elementwise work per token than FLUX's; with one batch row a
# step takes about as long as the FLUX benchmark model's
BENCHMARK_MODELS = (
    BenchmarkModel("lumina2", TinyLumina2(heads=4, kv_heads=2, head_dim=128, depth=8, caption_dim=256,
                                          axes_dims=(32, 48, 48)),
                   width=512, height=512),
)

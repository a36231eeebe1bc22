"""HunyuanVideo presets: the text-to-video model as ComfyUI's template runs it, and a tiny random-weight one.

ComfyUI detects HunyuanVideo's width from its weights (heads = hidden / 128), so the tiny model goes
through the real loader: a random state dict of ComfyUI's own ``HunyuanVideo`` class, loaded with
``comfy.sd.load_diffusion_model_state_dict``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..tiny_models import _randomize
from . import BenchmarkModel, ModelFiles, Preset

HEAD_DIM = 128          # ComfyUI's detection: num_heads = hidden_size // 128
POOLED_DIM = 768        # CLIP-L pooled output; detection assumes it whenever vector_in exists


@dataclass(frozen=True)
class TinyHunyuanVideo:
    hidden: int = 128                # a multiple of HEAD_DIM
    depth: int = 2
    depth_single: int = 2
    context_dim: int = 64            # llava-llama-3 hidden states in the real model (4096)
    frames: int = 5                  # video frames; the latent has (frames - 1) // 4 + 1 of them
    guidance_embed: bool = True
    latent_channels: int = 16

    def params(self) -> dict[str, Any]:
        """The constructor arguments ComfyUI's detection derives from this model's weights."""
        return {"image_model": "hunyuan_video", "in_channels": self.latent_channels, "out_channels": self.latent_channels,
                "vec_in_dim": POOLED_DIM, "context_in_dim": self.context_dim, "hidden_size": self.hidden,
                "mlp_ratio": 4.0, "num_heads": self.hidden // HEAD_DIM, "depth": self.depth,
                "depth_single_blocks": self.depth_single, "axes_dim": [16, 56, 56], "theta": 256,
                "patch_size": [1, 2, 2], "qkv_bias": True, "guidance_embed": self.guidance_embed,
                "byt5": False, "meanflow": False}

    def state_dict(self, seed: int = 0) -> dict[str, torch.Tensor]:
        """Seeded random weights of ComfyUI's HunyuanVideo class, as a checkpoint holds them."""
        import comfy.ops
        from comfy.ldm.hunyuan_video.model import HunyuanVideo
        if self.hidden % HEAD_DIM:
            raise ValueError(f"HunyuanVideo's hidden size must be a multiple of {HEAD_DIM}, not {self.hidden}")
        model = HunyuanVideo(operations=comfy.ops.disable_weight_init, dtype=torch.float32, **self.params())
        _randomize(model, seed)
        return model.state_dict()

    def build(self, seed: int = 0, dtype: torch.dtype = torch.float32) -> Any:
        import comfy.sd
        patcher = comfy.sd.load_diffusion_model_state_dict(self.state_dict(seed), model_options={"dtype": dtype})
        if patcher is None:
            raise RuntimeError("ComfyUI did not detect the tiny HunyuanVideo state dict")
        return patcher

    def conditioning(self, seed: int, tokens: int | None = None, guidance: float = 6.0) -> list:
        gen = torch.Generator().manual_seed(seed)
        return [[torch.randn(1, tokens or 16, self.context_dim, generator=gen),
                 {"pooled_output": torch.randn(1, POOLED_DIM, generator=gen), "guidance": guidance}]]

    def empty_latent(self, height: int, width: int, batch: int = 1) -> torch.Tensor:
        """As ComfyUI's EmptyHunyuanLatentVideo makes it."""
        return torch.zeros(batch, self.latent_channels, (self.frames - 1) // 4 + 1, height // 8, width // 8)


@dataclass(frozen=True)
class TinyHunyuanImage21(TinyHunyuanVideo):
    """HunyuanImage 2.1: the same class on 2-D latents (64 channels, 1×1 patches), without a pooled-text vector."""

    latent_channels: int = 64

    def params(self) -> dict[str, Any]:
        return {**super().params(), "vec_in_dim": None, "axes_dim": [64, 64], "patch_size": [1, 1]}

    def conditioning(self, seed: int, tokens: int | None = None, guidance: float = 3.5) -> list:
        gen = torch.Generator().manual_seed(seed)
        return [[torch.randn(1, tokens or 16, self.context_dim, generator=gen), {"guidance": guidance}]]

    def empty_latent(self, height: int, width: int, batch: int = 1) -> torch.Tensor:
        return torch.zeros(batch, self.latent_channels, height // 32, width // 32)  # a 32× VAE


PRESETS = (
    # ComfyUI's HunyuanVideo template: 848×480, 73 frames, 20 euler steps, FluxGuidance 6, no CFG, shift 7.
    Preset(name="hunyuan-video-t2v", family="hunyuan_video",
           description="HunyuanVideo t2v 720p (ComfyUI template: 848×480, 73 frames, 20 steps, guidance 6)",
           files=ModelFiles("hunyuan_video_t2v_720p_bf16.safetensors",
                            ("clip_l.safetensors", "llava_llama3_fp8_scaled.safetensors"), "HUNYUAN_VIDEO",
                            "hunyuan_video_vae_bf16.safetensors"),
           steps=20, sampler="euler", scheduler="simple", cfg=1.0, guidance=6.0, width=848, height=480, frames=73,
           population=24, generations=50, metric="fidelity", prompts=50, images_per_prompt=1),
    Preset(name="tiny-hunyuan-video", family="hunyuan_video",
           description="A small random-weight HunyuanVideo loaded through ComfyUI's detection; 2 latent frames on a CPU",
           tiny=TinyHunyuanVideo(), steps=10, sampler="euler", scheduler="simple", cfg=1.0, guidance=6.0,
           width=128, height=128, frames=5, population=12, generations=8, metric="fidelity", prompts=8,
           images_per_prompt=1),
)

# hidden 512 (4 heads), 4 double + 8 single blocks, 2 latent frames × 16 × 32 patches = 1024 image tokens
BENCHMARK_MODELS = (
    BenchmarkModel("hunyuan_video", TinyHunyuanVideo(hidden=512, depth=4, depth_single=8, context_dim=256, frames=5),
                   width=512, height=256),
)

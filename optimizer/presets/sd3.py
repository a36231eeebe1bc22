"""Stable Diffusion 3 / 3.5 presets: the released checkpoints with their model cards' settings, and a
tiny random-weight MMDiT.

ComfyUI detects MMDiT's width from its weights (hidden = 64 · depth, heads = depth, blocks = depth),
its qk-norm (SD3.5) and its MMDiT-X blocks (SD3.5 Medium), so the tiny model goes through the real
loader: a random state dict of ComfyUI's own ``OpenAISignatureMMDITWrapper``, loaded with
``comfy.sd.load_diffusion_model_state_dict``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..tiny_models import _ImageLatent, _randomize
from . import BenchmarkModel, ModelFiles, Preset

HEAD_DIM = 64           # ComfyUI's MMDiT: hidden = 64 · depth


@dataclass(frozen=True)
class TinySD3(_ImageLatent):
    depth: int = 3                        # blocks; hidden = 64 · depth, heads = depth
    context_dim: int = 48                 # CLIP-L/G + T5 features in the real model (4096)
    pooled_dim: int = 32                  # CLIP-L + CLIP-G pooled outputs in the real model (2048)
    pos_embed_max_size: int = 16          # patches per side of the learned position table (192 in SD3)
    qk_norm: bool = False                 # SD3.5: RMSNorm on queries and keys
    mmdit_x_layers: tuple[int, ...] = ()  # SD3.5 Medium: blocks with a second image self-attention
    latent_channels: int = 16

    @property
    def hidden(self) -> int:
        return HEAD_DIM * self.depth

    def params(self) -> dict[str, Any]:
        """The constructor arguments ComfyUI's detection derives from this model's weights."""
        return {"in_channels": self.latent_channels, "out_channels": self.latent_channels, "patch_size": 2,
                "depth": self.depth, "input_size": None, "adm_in_channels": self.pooled_dim,
                "context_embedder_config": {"target": "torch.nn.Linear",
                                            "params": {"in_features": self.context_dim, "out_features": self.hidden}},
                "num_patches": self.pos_embed_max_size ** 2, "pos_embed_max_size": self.pos_embed_max_size,
                "pos_embed_scaling_factor": None, "qk_norm": "rms" if self.qk_norm else None,
                "x_block_self_attn_layers": list(self.mmdit_x_layers)}

    def state_dict(self, seed: int = 0) -> dict[str, torch.Tensor]:
        """Seeded random weights of ComfyUI's MMDiT class, as a checkpoint holds them."""
        import comfy.ops
        from comfy.ldm.modules.diffusionmodules.mmdit import OpenAISignatureMMDITWrapper
        model = OpenAISignatureMMDITWrapper(operations=comfy.ops.disable_weight_init, dtype=torch.float32, **self.params())
        _randomize(model, seed)
        return model.state_dict()

    def build(self, seed: int = 0, dtype: torch.dtype = torch.float32) -> Any:
        import comfy.sd
        patcher = comfy.sd.load_diffusion_model_state_dict(self.state_dict(seed), model_options={"dtype": dtype})
        if patcher is None:
            raise RuntimeError("ComfyUI did not detect the tiny SD3 state dict")
        return patcher

    def conditioning(self, seed: int, tokens: int | None = None) -> list:
        gen = torch.Generator().manual_seed(seed)
        return [[torch.randn(1, tokens or 16, self.context_dim, generator=gen),
                 {"pooled_output": torch.randn(1, self.pooled_dim, generator=gen)}]]


_SD3_TEXT = ("clip_g.safetensors", "clip_l.safetensors", "t5xxl_fp16.safetensors")
# The stabilityai repositories ship the VAE as vae/diffusion_pytorch_model.safetensors; ComfyUI loads it under any name.
_SD3_VAE = "sd3_vae.safetensors"

PRESETS = (
    # Model cards: SD3.5 Large 28 steps CFG 3.5, SD3.5 Medium 40 steps CFG 4.5, SD3 Medium 28 steps CFG 7; 1024².
    Preset(name="sd3.5-large", family="sd3", description="SD3.5 Large (model card: 1024², 28 steps, CFG 3.5)",
           files=ModelFiles("sd3.5_large.safetensors", _SD3_TEXT, "SD3", _SD3_VAE),
           steps=28, sampler="euler", scheduler="sgm_uniform", cfg=3.5, width=1024, height=1024,
           population=24, generations=50, metric="image_reward"),
    Preset(name="sd3.5-medium", family="sd3", description="SD3.5 Medium (model card: 1024², 40 steps, CFG 4.5)",
           files=ModelFiles("sd3.5_medium.safetensors", _SD3_TEXT, "SD3", _SD3_VAE),
           steps=40, sampler="euler", scheduler="sgm_uniform", cfg=4.5, width=1024, height=1024,
           population=24, generations=50, metric="image_reward"),
    Preset(name="sd3-medium", family="sd3", description="SD3 Medium (model card: 1024², 28 steps, CFG 7)",
           files=ModelFiles("sd3_medium.safetensors", _SD3_TEXT, "SD3", _SD3_VAE),
           steps=28, sampler="euler", scheduler="sgm_uniform", cfg=7.0, width=1024, height=1024,
           population=24, generations=50, metric="image_reward"),
    Preset(name="tiny-sd3", family="sd3",
           description="A small random-weight SD3.5-Medium-like MMDiT loaded through ComfyUI's detection; runs on a CPU",
           tiny=TinySD3(qk_norm=True, mmdit_x_layers=(0,)), steps=10, sampler="euler", scheduler="sgm_uniform",
           cfg=4.5, width=128, height=128, population=12, generations=8, metric="fidelity", prompts=8,
           images_per_prompt=1),
)

# hidden 512 (8 heads of 64), 8 blocks, 1024 image tokens (512² image); CFG batches cond and uncond
BENCHMARK_MODELS = (
    BenchmarkModel("sd3", TinySD3(depth=8, context_dim=256, pooled_dim=128, pos_embed_max_size=32),
                   width=512, height=512, cfg=4.5),
)

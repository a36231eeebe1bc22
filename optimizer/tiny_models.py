"""Small random-weight models built from ComfyUI's own classes, for CPU demos, tests and benchmarks.

ComfyUI's detection hard-codes the real widths of FLUX and PixArt, so these models are configured
the way ``comfy.sd.load_diffusion_model_state_dict`` configures a detected model (a
``supported_models`` config picked by ``model_config_from_unet_config``, ``get_model``, a
``ModelPatcher``), with the width given here instead of detected. Families whose detection reads
the width from the weights (SD3, Wan, HunyuanVideo) may instead build a random state dict and load
it through ``comfy.sd.load_diffusion_model_state_dict``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch


class TinyModelSpec(Protocol):
    """What demos, tests and the optimizer's tiny presets need from a small model."""

    latent_channels: int

    def build(self, seed: int = 0, dtype: torch.dtype = torch.float32) -> Any:
        """A ComfyUI ModelPatcher with seeded random weights."""

    def conditioning(self, seed: int, tokens: int | None = None) -> list:
        """ComfyUI CONDITIONING standing in for one encoded prompt."""

    def empty_latent(self, height: int, width: int, batch: int = 1) -> torch.Tensor:
        """An empty latent for an image (or video) of this size."""


def _randomize(module: torch.nn.Module, seed: int) -> None:
    """Seeded weights of sensible scale (ComfyUI's layers are created uninitialised)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in sorted(list(module.named_parameters()) + list(module.named_buffers())):
            if not tensor.is_floating_point():
                continue
            if tensor.ndim >= 2:
                fan_in = math.prod(tensor.shape[1:])
                values = torch.randn(tensor.shape, generator=gen) / math.sqrt(fan_in)
            elif name.endswith("scale") or "norm" in name:
                values = torch.ones(tensor.shape)
            else:
                values = torch.randn(tensor.shape, generator=gen) * 0.02
            tensor.copy_(values.to(tensor.dtype))


def build_from_unet_config(unet_config: dict[str, Any], seed: int = 0, dtype: torch.dtype = torch.float32) -> Any:
    """A ModelPatcher configured as ComfyUI's loader would configure a detected model of this config."""
    import comfy.model_detection
    import comfy.model_management
    import comfy.model_patcher

    model_config = comfy.model_detection.model_config_from_unet_config(unet_config)
    if model_config is None:
        raise RuntimeError(f"ComfyUI matched no model config for {unet_config}")
    model_config.set_inference_dtype(dtype, None)
    model = model_config.get_model({}, "")
    _randomize(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=comfy.model_management.get_torch_device(),
                                            offload_device=comfy.model_management.unet_offload_device())


def empty_latent(spec: TinyModelSpec, height: int, width: int, batch: int = 1) -> torch.Tensor:
    return spec.empty_latent(height, width, batch)


class _ImageLatent:
    latent_channels: int

    def empty_latent(self, height: int, width: int, batch: int = 1) -> torch.Tensor:
        return torch.zeros(batch, self.latent_channels, height // 8, width // 8)


@dataclass(frozen=True)
class TinyFlux(_ImageLatent):
    hidden: int = 64
    heads: int = 2
    depth: int = 2
    depth_single: int = 4
    context_dim: int = 48
    vec_dim: int = 32
    mlp_ratio: float = 2.0
    axes_dim: tuple[int, ...] = (8, 12, 12)
    guidance_embed: bool = True
    latent_channels: int = 16

    def unet_config(self) -> dict[str, Any]:
        return {"image_model": "flux", "in_channels": 16, "patch_size": 2, "out_channels": 16,
                "vec_in_dim": self.vec_dim, "context_in_dim": self.context_dim, "hidden_size": self.hidden,
                "mlp_ratio": self.mlp_ratio, "num_heads": self.heads, "depth": self.depth,
                "depth_single_blocks": self.depth_single, "axes_dim": list(self.axes_dim), "theta": 10000,
                "qkv_bias": True, "guidance_embed": self.guidance_embed}

    def build(self, seed: int = 0, dtype: torch.dtype = torch.float32) -> Any:
        return build_from_unet_config(self.unet_config(), seed, dtype)

    def conditioning(self, seed: int, tokens: int | None = None, guidance: float = 3.5) -> list:
        gen = torch.Generator().manual_seed(seed)
        return [[torch.randn(1, tokens or 16, self.context_dim, generator=gen),
                 {"pooled_output": torch.randn(1, self.vec_dim, generator=gen), "guidance": guidance}]]


@dataclass(frozen=True)
class TinyPixArt(_ImageLatent):
    hidden: int = 72  # divisible by 3 for PixArt-α's size embedders
    heads: int = 2
    depth: int = 2
    caption_channels: int = 32
    max_tokens: int = 8
    sigma: bool = False
    latent_channels: int = 4

    def unet_config(self) -> dict[str, Any]:
        return {"image_model": "pixart_sigma" if self.sigma else "pixart_alpha", "num_heads": self.heads,
                "patch_size": 2, "hidden_size": self.hidden, "in_channels": 4, "depth": self.depth,
                "model_max_length": self.max_tokens, "caption_channels": self.caption_channels,
                "micro_condition": not self.sigma}

    def build(self, seed: int = 0, dtype: torch.dtype = torch.float32) -> Any:
        return build_from_unet_config(self.unet_config(), seed, dtype)

    def conditioning(self, seed: int, tokens: int | None = None) -> list:
        gen = torch.Generator().manual_seed(seed)
        return [[torch.randn(1, tokens or self.max_tokens, self.caption_channels, generator=gen), {}]]

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

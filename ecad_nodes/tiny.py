"""Small random-weight models of every family, built through ComfyUI's own detection.

A tiny model is described the way ComfyUI meets a real one: as a checkpoint. Its ``checkpoint()``
lists the keys and shapes a released checkpoint of the family has, at a small size (what
``comfy.model_detection`` reads); detection turns them into the model's configuration, so fields
a ComfyUI release adds come from that release. Where detection fixes a width at the released size
instead of reading it from the weights, or leaves it at the constructor's released-size default,
``overrides()`` sets the small one. Then the model is built as ComfyUI's loader builds it (``model_config_from_unet_config``,
``get_model``, a ``ModelPatcher``) with seeded random weights. No weight data is allocated for the
checkpoint: its tensors live on the meta device.

The family modules define their tiny models (``TinyModel`` subclasses) next to their adapters;
presets, benchmarks and tests take them from ``ecad_nodes.registry``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

import torch

#: A tiny model with more parameters than this was not made small: a width the overrides missed.
MAX_TINY_PARAMETERS = 200_000_000


def randomize(module: torch.nn.Module, seed: int) -> None:
    """Seeded weights of sensible scale (ComfyUI's layers are created uninitialised), drawn on the device the weights
    are on (a released-size model on a GPU in seconds, not minutes)."""
    generators: dict[torch.device, torch.Generator] = {}
    with torch.no_grad():
        for name, tensor in sorted(list(module.named_parameters()) + list(module.named_buffers())):
            if not tensor.is_floating_point() or tensor.is_meta:
                continue
            device = tensor.device
            if device not in generators:
                generators[device] = torch.Generator(device).manual_seed(seed)
            gen = generators[device]
            if tensor.ndim >= 2:
                fan_in = math.prod(tensor.shape[1:])
                values = torch.randn(tensor.shape, generator=gen, device=device) / math.sqrt(fan_in)
            elif name.endswith("scale") or "norm" in name:
                values = torch.ones(tensor.shape, device=device)
            else:
                values = torch.randn(tensor.shape, generator=gen, device=device) * 0.02
            tensor.copy_(values.to(tensor.dtype))


def comfyui_has(dotted: str) -> bool:
    """Whether ``module.attribute`` exists in the ComfyUI in use."""
    import importlib
    module, _, name = dotted.rpartition(".")
    try:
        return hasattr(importlib.import_module(module), name)
    except ImportError:
        return False


class DetectionError(RuntimeError):
    pass


@dataclass(frozen=True)
class TinyModel:
    """Base of the family modules' tiny models: a synthetic checkpoint, its conditioning and its latents."""

    #: Latent channels the model samples (before ``fix_empty_latent_channels``).
    latent_channels = 16
    #: Pixels per latent pixel.
    compression = 8
    #: Image size (square) the tests sample at: small, and large enough for the family's position embeddings.
    test_size = 64
    #: The guard against widths detection fixed at the released size; None for a model of a released size
    #: (benchmarks: ``replace(spec, hidden=3072, …, max_parameters=None)``). Not part of the model's identity.
    max_parameters: Optional[int] = field(default=MAX_TINY_PARAMETERS, repr=False, compare=False, kw_only=True)

    def checkpoint(self) -> dict[str, tuple[int, ...]]:
        """Keys and shapes of the synthetic checkpoint (what ComfyUI's detection reads)."""
        raise NotImplementedError

    def overrides(self) -> dict[str, Any]:
        """Configuration fields ComfyUI's detection fixes (or leaves to the constructor) at the released size, set small."""
        return {}

    def detected_config(self) -> dict[str, Any]:
        """The model configuration ComfyUI derives from ``checkpoint()``, with ``overrides()`` applied."""
        import comfy.model_detection
        config = comfy.model_detection.detect_unet_config(self.meta_state_dict(), "")
        if config is None:
            raise DetectionError(f"ComfyUI's detection does not recognise the synthetic checkpoint of {self!r}")
        config.update(self.overrides())
        return config

    def model_config(self, config: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> Any:
        """ComfyUI's model config (a ``supported_models`` class) for ``config``, as its loader matches it."""
        import comfy.model_detection
        return comfy.model_detection.model_config_from_unet_config(config, state_dict)

    #: Dotted names (``module.attribute``) the ComfyUI in use must have to build this model, e.g. its model config
    #: class for a model newer than some ComfyUI releases.
    requires: ClassVar[tuple[str, ...]] = ()

    def unavailable(self) -> Optional[str]:
        """Why the ComfyUI in use cannot build this model (a release older than the model), or None."""
        missing = next((name for name in self.requires if not comfyui_has(name)), None)
        return None if missing is None else f"this ComfyUI has no {missing}"

    def meta_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: torch.empty(shape, device="meta") for k, shape in self.checkpoint().items()}

    def build(self, seed: int = 0, dtype: torch.dtype = torch.float32, device: Optional[torch.device] = None) -> Any:
        """A ComfyUI ModelPatcher, configured as ComfyUI's loader configures a detected checkpoint, random weights
        (created on ``device``, default the CPU)."""
        import comfy.model_detection
        import comfy.model_management
        import comfy.model_patcher
        state_dict = self.meta_state_dict()
        config = self.detected_config()
        model_config = self.model_config(config, state_dict)
        if model_config is None:
            raise DetectionError(f"ComfyUI matched no model config for {self!r} (detected {config})")
        model_config.set_inference_dtype(dtype, None)
        model = model_config.get_model(state_dict, "", device=device)
        parameters = sum(p.numel() for p in model.diffusion_model.parameters())
        if self.max_parameters is not None and parameters > self.max_parameters:
            raise DetectionError(f"{self!r} built {parameters:,} parameters: a width detection fixes is not in overrides() "
                                 f"(detected {config})")
        randomize(model.diffusion_model, seed)
        return comfy.model_patcher.ModelPatcher(model, load_device=comfy.model_management.get_torch_device(),
                                                offload_device=comfy.model_management.unet_offload_device())

    def meta_model(self) -> Any:
        """The ComfyUI BaseModel with every weight on the meta device (shapes only, no memory): for cost models
        of real-size configurations."""
        state_dict = self.meta_state_dict()
        model_config = self.model_config(self.detected_config(), state_dict)
        model_config.set_inference_dtype(torch.bfloat16, None)
        return model_config.get_model(state_dict, "", device=torch.device("meta"))

    def conditioning(self, seed: int, tokens: Optional[int] = None) -> list:
        """ComfyUI CONDITIONING standing in for one encoded prompt."""
        raise NotImplementedError

    def empty_latent(self, height: int, width: int, batch: int = 1) -> torch.Tensor:
        """An empty latent for an image of this size (video models add frames)."""
        return torch.zeros(batch, self.latent_channels, height // self.compression, width // self.compression)


def text_states(gen: torch.Generator, tokens: int, width: int) -> torch.Tensor:
    return torch.randn(1, tokens, width, generator=gen)

"""Optimizer presets: which model files, sampling settings and search settings a run uses.

Each module in this package lists its presets in ``PRESETS``; adding a family adds one module.
Real presets name the files they expect under ComfyUI's ``models/`` folders; tiny presets build a
small random-weight model from ComfyUI's classes and run anywhere, on the CPU.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Optional


@dataclass(frozen=True)
class ModelFiles:
    """Files under ComfyUI's model folders (``folder_paths`` names), overridable on the command line."""

    diffusion_model: str                  # models/diffusion_models (or unet); models/checkpoints if ``checkpoint``
    text_encoders: tuple[str, ...]        # models/text_encoders (or clip)
    clip_type: str                        # a comfy.sd.CLIPType member name, e.g. "FLUX", "PIXART"
    vae: str                              # models/vae
    checkpoint: bool = False              # one all-in-one file (model, text encoder, VAE) as CheckpointLoaderSimple loads


@dataclass(frozen=True)
class Preset:
    name: str
    family: str
    description: str
    steps: int
    sampler: str                          # a ComfyUI sampler name
    scheduler: str                        # a ComfyUI scheduler name
    cfg: float
    width: int
    height: int
    population: int
    generations: int
    metric: str                           # "image_reward" or "fidelity"
    files: Optional[ModelFiles] = None    # real checkpoints the user supplies
    tiny: Any = None                      # an optimizer.tiny_models spec, for tiny presets
    guidance: Optional[float] = None      # distilled guidance (FLUX), passed in the conditioning
    frames: int = 1                       # video models
    prompts: int = 100                    # calibration prompts used by default
    images_per_prompt: int = 10
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_tiny(self) -> bool:
        return self.tiny is not None


@dataclass(frozen=True)
class BenchmarkModel:
    """A moderate-size random-weight model of a family for ``benchmarks/`` (listed in ``BENCHMARK_MODELS``)."""

    name: str
    spec: Any                             # an optimizer.tiny_models-style spec (build, conditioning, empty_latent)
    width: int
    height: int
    steps: int = 8
    cfg: float = 1.0
    sampler: str = "euler"
    scheduler: str = "simple"


def _modules():
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        yield importlib.import_module(f"{__name__}.{info.name}")


def benchmark_models() -> list[BenchmarkModel]:
    return [b for module in _modules() for b in getattr(module, "BENCHMARK_MODELS", ())]


@lru_cache(maxsize=None)
def all_presets() -> dict[str, Preset]:
    found: dict[str, Preset] = {}
    for module in _modules():
        for preset in getattr(module, "PRESETS", ()):
            if preset.name in found:
                raise RuntimeError(f"two presets are named {preset.name!r}")
            found[preset.name] = preset
    return found


def preset(name: str) -> Preset:
    presets = all_presets()
    if name not in presets:
        raise KeyError(f"unknown preset {name!r}; known presets: {', '.join(sorted(presets))}")
    return presets[name]

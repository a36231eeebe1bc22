"""The models ECAD knows: presets of released checkpoints, tiny random-weight models and benchmark models.

Each family module in ``ecad_nodes.families`` lists its entries next to its adapter (``PRESETS``,
``BENCHMARK_MODELS``); optimizer presets, benchmarks and tests all read them here. A preset names
a released checkpoint's files (under ComfyUI's ``models/`` folders) and how ComfyUI's template
samples it; a tiny preset carries a ``TinyModel`` instead and runs anywhere, on the CPU.
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
    population: int = 24
    generations: int = 50
    metric: str = "image_reward"          # "image_reward" or "fidelity"
    files: Optional[ModelFiles] = None    # real checkpoints the user supplies
    tiny: Any = None                      # a TinyModel, for tiny presets
    guidance: Optional[float] = None      # distilled guidance (FLUX), passed in the conditioning
    frames: int = 1                       # video models
    prompts: int = 100                    # calibration prompts used by default
    images_per_prompt: int = 10
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_tiny(self) -> bool:
        return self.tiny is not None


def tiny_preset(family: str, tiny: Any, description: str, **settings: Any) -> Preset:
    """``tiny-<family>``: the family's tiny model with a small search that runs on a CPU in minutes."""
    defaults = dict(steps=10, sampler="euler", scheduler="simple", cfg=1.0, width=128, height=128, population=12,
                    generations=8, metric="fidelity", prompts=8, images_per_prompt=1)
    return Preset(name=f"tiny-{family.replace('_', '-')}", family=family, description=description, tiny=tiny, **{**defaults, **settings})


@dataclass(frozen=True)
class BenchmarkModel:
    """A moderate-size random-weight model of a family for ``benchmarks/``."""

    name: str
    spec: Any                             # a TinyModel
    width: int
    height: int
    steps: int = 8
    cfg: float = 1.0
    sampler: str = "euler"
    scheduler: str = "simple"


def _modules():
    import ecad_nodes.families as families
    for info in sorted(pkgutil.iter_modules(families.__path__), key=lambda m: m.name):
        if info.name not in ("base", "mirror") and not info.name.startswith("_"):
            yield importlib.import_module(f"{families.__name__}.{info.name}")


def benchmark_models() -> list[BenchmarkModel]:
    return [b for module in _modules() for b in getattr(module, "BENCHMARK_MODELS", ())]


@lru_cache(maxsize=None)
def all_presets() -> dict[str, Preset]:
    found: dict[str, Preset] = {}
    for module in _modules():
        for p in getattr(module, "PRESETS", ()):
            if p.name in found:
                raise RuntimeError(f"two presets are named {p.name!r}")
            found[p.name] = p
    return found


def tiny_presets() -> list[Preset]:
    return [p for p in all_presets().values() if p.is_tiny]


@dataclass(frozen=True)
class TinyEntry:
    family: str
    model: Any                            # a TinyModel

    def unavailable(self) -> Optional[str]:
        """Why the ComfyUI in use cannot build this model (its class or config is newer than the release), or None."""
        from .families import adapter_named
        from .tiny import comfyui_has
        classes = adapter_named(self.family).model_classes
        if not any(comfyui_has(f"{module}.{name}") for module, name in classes):
            return f"this ComfyUI has none of {', '.join(f'{m}.{c}' for m, c in classes)}"
        return self.model.unavailable()


@lru_cache(maxsize=None)
def tiny_models() -> dict[str, TinyEntry]:
    """Every tiny model the contract tests cover: each tiny preset's and each family module's further variants
    (``TINY_MODELS``, e.g. image-to-video), by name."""
    found: dict[str, TinyEntry] = {}
    for module in _modules():
        family = module.ADAPTERS[0].family
        named = [(p.name.removeprefix("tiny-"), p.tiny) for p in getattr(module, "PRESETS", ()) if p.is_tiny]
        for name, tiny in named + list(getattr(module, "TINY_MODELS", {}).items()):
            if name in found:
                raise RuntimeError(f"two tiny models are named {name!r}")
            found[name] = TinyEntry(family, tiny)
    return found


def preset(name: str, presets: Optional[dict[str, Preset]] = None) -> Preset:
    """The preset named ``name`` among ``presets`` (default: the registry's); a KeyError lists the known ones."""
    presets = all_presets() if presets is None else presets
    if name not in presets:
        raise KeyError(f"unknown preset {name!r}; known presets: {', '.join(sorted(presets))}")
    return presets[name]

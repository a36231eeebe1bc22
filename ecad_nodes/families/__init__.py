"""Family adapters, found by scanning this package: each module lists its adapters in ``ADAPTERS``."""
from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache
from typing import Any

import torch

from .base import CallTokens, FamilyAdapter, UnsupportedModelError

__all__ = ["CallTokens", "FamilyAdapter", "UnsupportedModelError", "all_adapters", "adapter_for", "adapter_named"]


@lru_cache(maxsize=None)
def all_adapters() -> tuple[FamilyAdapter, ...]:
    found = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name in ("base", "mirror") or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        found.extend(getattr(module, "ADAPTERS", ()))
    return tuple(found)


def adapter_named(family: str) -> FamilyAdapter:
    for a in all_adapters():
        if a.family == family:
            return a
    raise KeyError(family)


def supported_families() -> list[str]:
    return sorted({a.family for a in all_adapters()})


def adapter_for(base_model: Any) -> FamilyAdapter:
    """The adapter for a ComfyUI BaseModel (or a bare diffusion model); a clear error if none fits."""
    dm: torch.nn.Module = getattr(base_model, "diffusion_model", base_model)
    for a in all_adapters():
        if a.matches(dm):
            return a
    inner = getattr(dm, "_orig_mod", dm)
    raise UnsupportedModelError(
        f"ECAD has no adapter for the model class {type(inner).__module__}.{type(inner).__name__}"
        f" (ComfyUI model type {type(base_model).__name__}). Supported families: {', '.join(supported_families())}. "
        "UNet models such as SD1.5/SDXL have no transformer blocks to cache.")

"""Optimizer presets: the model registry's (``ecad_nodes.registry``) and the toy preset.

Presets of ComfyUI models live next to their family adapters (``ecad_nodes/families/<family>.py``);
this package adds what only the optimizer has: the plain-PyTorch toy model.
"""
from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache

from ecad_nodes import registry
from ecad_nodes.registry import BenchmarkModel, ModelFiles, Preset

__all__ = ["BenchmarkModel", "ModelFiles", "Preset", "all_presets", "benchmark_models", "preset"]


def _legacy_modules():
    # Families not yet moved next to their adapters.
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        yield importlib.import_module(f"{__name__}.{info.name}")


def benchmark_models() -> list[BenchmarkModel]:
    return registry.benchmark_models() + [b for m in _legacy_modules() for b in getattr(m, "BENCHMARK_MODELS", ())]


@lru_cache(maxsize=None)
def all_presets() -> dict[str, Preset]:
    found = dict(registry.all_presets())
    for module in _legacy_modules():
        for p in getattr(module, "PRESETS", ()):
            if p.name in found:
                raise RuntimeError(f"two presets are named {p.name!r}")
            found[p.name] = p
    return found


def preset(name: str) -> Preset:
    presets = all_presets()
    if name not in presets:
        raise KeyError(f"unknown preset {name!r}; known presets: {', '.join(sorted(presets))}")
    return presets[name]

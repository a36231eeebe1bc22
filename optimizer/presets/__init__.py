"""Optimizer presets: the model registry's (``ecad_nodes.registry``, next to each family's adapter) and the
toy preset, which only the optimizer has (a plain-PyTorch model, no ComfyUI)."""
from __future__ import annotations

from functools import lru_cache

from ecad_nodes import registry
from ecad_nodes.registry import BenchmarkModel, ModelFiles, Preset, benchmark_models

__all__ = ["BenchmarkModel", "ModelFiles", "Preset", "all_presets", "benchmark_models", "preset"]


@lru_cache(maxsize=None)
def all_presets() -> dict[str, Preset]:
    from .toy import PRESETS as TOY
    found = dict(registry.all_presets())
    for p in TOY:
        if p.name in found:
            raise RuntimeError(f"two presets are named {p.name!r}")
        found[p.name] = p
    return found


def preset(name: str) -> Preset:
    return registry.preset(name, all_presets())

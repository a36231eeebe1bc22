"""What a model family adapter provides.

An adapter names a family's cacheable components (its ``Layout``), hooks them into a ModelPatcher
clone so that each component call goes through ``CacheRuntime.component``, and counts their MACs.
Adding a family means adding one module in this package that defines ``ADAPTERS``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable, Optional

import torch

from ..costs import CostTable
from ..runtime import active_runtime
from ..schedule import Layout


@dataclass(frozen=True)
class CallTokens:
    """Token counts of one model call, as the cost model needs them."""

    image: int
    text: int


class FamilyAdapter(ABC):
    family: ClassVar[str]
    #: ``(module, class name)`` of the ComfyUI diffusion models this adapter handles.
    model_classes: ClassVar[tuple[tuple[str, str], ...]]
    #: ComfyUI model-config class name -> variant name used in schedule files and presets.
    variants: ClassVar[dict[str, str]] = {}
    #: Internal components per block group: component -> the components of the same block that read its
    #: output (it reaches the block output only through them), e.g. FLUX single blocks' ``attn`` -> ``out_proj``.
    internal: ClassVar[dict[str, dict[str, tuple[str, ...]]]] = {}

    def consumers(self, layout: Layout) -> dict[int, tuple[int, ...]]:
        """``internal`` in bits of ``layout``: each internal component's bit -> its consumers' bits."""
        out: dict[int, tuple[int, ...]] = {}
        offsets = layout.offsets()
        for group in layout.groups:
            for component, users in self.internal.get(group.name, {}).items():
                c, n = group.components.index(component), len(group.components)
                for i in range(group.blocks):
                    first = offsets[group.name] + n * i
                    out[first + c] = tuple(first + group.components.index(u) for u in users)
        return out

    def matches(self, diffusion_model: torch.nn.Module) -> bool:
        cls = type(getattr(diffusion_model, "_orig_mod", diffusion_model))
        return (cls.__module__, cls.__name__) in self.model_classes

    def variant(self, base_model: Any) -> Optional[str]:
        config = getattr(base_model, "model_config", None)
        return self.variants.get(type(config).__name__) if config is not None else None

    @abstractmethod
    def layout(self, diffusion_model: torch.nn.Module) -> Layout:
        """The block groups and components of this model instance."""

    @abstractmethod
    def install(self, patcher: Any, layout: Layout) -> None:
        """Route every component of ``patcher``'s model through the active runtime (the clone only)."""

    @abstractmethod
    def tokens(self, diffusion_model: torch.nn.Module, x: torch.Tensor, context: Optional[torch.Tensor]) -> CallTokens:
        """Token counts of a call with latent ``x`` and text ``context``."""

    @abstractmethod
    def costs(self, diffusion_model: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
        """MACs per batch row for a call with these token counts."""


class UnsupportedModelError(ValueError):
    pass


@dataclass
class ForwardHook:
    """Stands in for a submodule's ``forward`` through a ModelPatcher object patch.

    Object patches are shallow-copied between clones, so holding the original bound method is
    fine; patching ``forward`` (not the module) keeps the weights' keys, so LoRA patches apply.
    Outside an ECAD run it is the original forward.
    """

    original: Callable
    bit: int
    #: For an internal component: what to return when no consumer reads the output (same shapes, any values).
    placeholder: Optional[Callable] = None

    @torch.compiler.disable  # caching decisions are Python control flow: keep torch.compile out of them
    def __call__(self, *args, **kwargs):
        rt = active_runtime()
        if rt is None:
            return self.original(*args, **kwargs)
        out = rt.component_if_needed(self.bit, lambda: self.original(*args, **kwargs))
        return self.placeholder(*args, **kwargs) if out is None else out


def install_forward_hooks(patcher: Any, hooks: Iterable[tuple]) -> None:
    """Object-patch ``forward`` of each ``diffusion_model.…`` module path, routing it to component ``bit``;
    ``hooks`` holds ``(path, bit)`` or ``(path, bit, placeholder)`` for internal components."""
    for path, bit, *placeholder in hooks:
        key = f"{path}.forward"
        original = patcher.get_model_object(key)
        if isinstance(original, ForwardHook):  # ECAD applied twice: wrap the real forward, not the old hook
            original = original.original
        patcher.add_object_patch(key, ForwardHook(original, bit, *placeholder))

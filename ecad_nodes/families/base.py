"""What a model family adapter declares, and the one installer that acts on it.

An adapter declares its block groups and each group's components: which submodule of a block
computes a component (hooked through a ModelPatcher object patch on its ``forward``), which
components read another's output (internal components), and, where a component has no submodule of
its own (FLUX's joint attention, the parts of its fused ``linear1``), a mirrored block forward that
routes every component (``mirror.Mirror``). ``Layout`` owns the bit of every component; the
adapter adds token counts and MACs. Adding a family means adding one module in this package that
defines ``ADAPTERS`` (and its models' ``SPECS``, see ``ecad_nodes.registry``).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Optional, Sequence

import torch

from ..costs import CostTable
from ..runtime import active_runtime
from ..schedule import BlockGroup, Layout


@dataclass(frozen=True)
class CallTokens:
    """Token counts of one model call, as the cost model needs them."""

    image: int
    text: int


@dataclass(frozen=True)
class Component:
    """One cacheable part of a block: what one bit of the schedule switches."""

    name: str
    #: Path from the block to the submodule whose ``forward`` computes exactly this component (raw output, before
    #: the block's gate). None: no submodule of its own, so only the group's mirror can skip it; without a mirror
    #: (or when the mirror is untrusted) it is computed at every step.
    module: Optional[str] = None
    #: Internal component: the components of the same block that read its output (it reaches the block output only
    #: through them), e.g. FLUX single blocks' ``attn`` -> ``out_proj``.
    feeds: tuple[str, ...] = ()
    #: For a hooked internal component: what the hook returns when no consumer reads the output (same shapes).
    placeholder: Optional[Callable] = None
    #: The block writes into this submodule's output in place (e.g. FLUX's ``apply_mod`` with ``modulation_dims``):
    #: the hook hands out copies, so a cached output is never written into.
    written_by_block: bool = False


def all_blocks(modules: torch.nn.ModuleList, dm: torch.nn.Module) -> range:
    return range(len(modules))


@dataclass(frozen=True)
class Group:
    """A list of alike blocks in the diffusion model: one ``Layout`` block group."""

    name: str
    path: str                                   # the ModuleList in the diffusion model, e.g. "double_blocks"
    components: tuple[Component, ...]
    block: str = ""                             # from a list entry to the block (HiDream: "block")
    #: mirror.Mirror copies of the block class's forward (one per upstream block class), for finer granularity
    mirrors: tuple = ()
    #: Which entries of the list belong to this group (SD3: all but the last joint block); default all.
    indices: Callable[[torch.nn.ModuleList, torch.nn.Module], Sequence[int]] = all_blocks

    def mirror_for(self, block: torch.nn.Module) -> Any:
        """The mirror of this block's class, or None (then ComfyUI's own forward runs, see ``mirror``)."""
        cls = type(block)
        return next((m for m in self.mirrors if f"{cls.__module__}.{cls.__qualname__}" in m.classes), None)

    def component_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.components)

    def block_paths(self, dm: torch.nn.Module) -> list[str]:
        """Module paths (below ``diffusion_model``) of this group's blocks, in layout order."""
        modules = _get(dm, self.path)
        suffix = f".{self.block}" if self.block else ""
        return [f"{self.path}.{i}{suffix}" for i in self.indices(modules, dm)]


def _get(root: torch.nn.Module, path: str) -> Any:
    for part in path.split("."):
        root = getattr(root, part)
    return root


class FamilyAdapter(ABC):
    family: ClassVar[str]
    #: ``(module, class name)`` of the ComfyUI diffusion models this adapter handles.
    model_classes: ClassVar[tuple[tuple[str, str], ...]]
    #: ComfyUI model-config class name -> variant name used in schedule files and presets.
    variants: ClassVar[dict[str, str]] = {}
    #: The block groups, in bit order.
    groups: ClassVar[tuple[Group, ...]] = ()

    def matches(self, diffusion_model: torch.nn.Module) -> bool:
        cls = type(getattr(diffusion_model, "_orig_mod", diffusion_model))
        return (cls.__module__, cls.__name__) in self.model_classes

    def variant(self, base_model: Any) -> Optional[str]:
        config = getattr(base_model, "model_config", None)
        return self.variants.get(type(config).__name__) if config is not None else None

    def check_supported(self, dm: torch.nn.Module) -> None:
        """Raise UnsupportedModelError for a model of a claimed class that the adapter cannot cache."""

    def group_spec(self, name: str) -> Group:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(name)

    def layout(self, dm: torch.nn.Module) -> Layout:
        """The block groups and components of this model instance (groups without blocks are left out)."""
        self.check_supported(dm)
        found = []
        for g in self.groups:
            blocks = len(g.block_paths(dm))
            if blocks:
                found.append(BlockGroup(g.name, blocks, g.component_names()))
        return Layout(self.family, tuple(found))

    def layout_of_sizes(self, **blocks: int) -> Layout:
        """The layout of a model with these block counts per group (e.g. for a schedule file, without a model)."""
        return Layout(self.family, tuple(BlockGroup(g.name, blocks[g.name], g.component_names())
                                         for g in self.groups if blocks.get(g.name)))

    def consumers(self, layout: Layout) -> dict[int, tuple[int, ...]]:
        """Each internal component's bit -> the bits of the components that read its output."""
        out: dict[int, tuple[int, ...]] = {}
        for group in layout.groups:
            for component in self.group_spec(group.name).components:
                for i in range(group.blocks) if component.feeds else ():
                    out[layout.bit(group.name, i, component.name)] = tuple(
                        layout.bit(group.name, i, user) for user in component.feeds)
        return out

    def mirrored_blocks(self, dm: torch.nn.Module, layout: Layout) -> list["MirroredBlock"]:
        """Every block a mirror runs, one entry per block module."""
        out = []
        for group in layout.groups:
            spec = self.group_spec(group.name)
            if not spec.mirrors:
                continue
            for i, path in enumerate(spec.block_paths(dm)):
                bits = {c.name: layout.bit(group.name, i, c.name) for c in spec.components}
                out.append(MirroredBlock(path, spec.mirror_for(_get(dm, path)), bits,
                                         tuple(bits[c.name] for c in spec.components if c.module is None)))
        return out

    def install(self, patcher: Any, layout: Layout) -> None:
        """Route every component of ``patcher``'s model through the active runtime (the clone only)."""
        from .mirror import MirroredForward
        dm = patcher.get_model_object("diffusion_model")
        hooks: list[tuple[str, int, Component]] = []
        for group in layout.groups:
            spec = self.group_spec(group.name)
            for i, path in enumerate(spec.block_paths(dm)):
                for component in spec.components:
                    if component.module is not None:
                        hooks.append((f"diffusion_model.{path}.{component.module}",
                                      layout.bit(group.name, i, component.name), component))
        install_forward_hooks(patcher, hooks)
        for block in self.mirrored_blocks(dm, layout):
            key = f"diffusion_model.{block.path}.forward"
            patcher.add_object_patch(key, MirroredForward(_unwrapped(patcher.get_model_object(key)), block))

    @abstractmethod
    def tokens(self, diffusion_model: torch.nn.Module, x: torch.Tensor, context: Optional[torch.Tensor]) -> CallTokens:
        """Token counts of a call with latent ``x`` and text ``context``."""

    def call_tokens(self, diffusion_model: torch.nn.Module, x: torch.Tensor, context: Optional[torch.Tensor],
                    extra_conds: dict) -> CallTokens:
        """Token counts of a model call from everything it gets: ``tokens`` unless the call's other conditioning
        (``extra_conds``, e.g. image-to-video's vision states, LTX-2's packed audio latent) adds tokens."""
        return self.tokens(diffusion_model, x, context)

    def stream_variant(self, extra_conds: dict) -> Any:
        """What of a call's conditioning, besides its cond uuid, changes what the blocks compute on, or None. Calls that
        differ in it keep separate caches (LTX-2's identity guidance predicts a prompt again without its reference
        audio, at the same step, under the same uuid)."""
        return None

    @abstractmethod
    def costs(self, diffusion_model: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
        """MACs per batch row for a call with these token counts."""


class UnsupportedModelError(ValueError):
    pass


@dataclass(frozen=True)
class MirroredBlock:
    """One block whose forward a mirror runs."""

    path: str                       # below ``diffusion_model``
    mirror: Any                     # mirror.Mirror, None where ECAD has no copy of the block class's forward
    bits: dict[str, int]            # component name (as the mirror knows it) -> bit
    forced: tuple[int, ...]         # bits only the mirror can skip (components without a submodule of their own)


def _clone(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.clone()
    return type(value)(_clone(v) for v in value)


def _unwrapped(forward: Callable) -> Callable:
    """The model's own forward under an ECAD hook (ECAD applied twice wraps the real forward, not the old hook)."""
    while hasattr(forward, "ecad_original"):
        forward = forward.ecad_original
    return forward


@dataclass
class ForwardHook:
    """Stands in for a submodule's ``forward`` through a ModelPatcher object patch.

    Object patches are shallow-copied between clones, so holding the original bound method is
    fine; patching ``forward`` (not the module) keeps the weights' keys, so LoRA patches apply.
    Outside an ECAD run, and while a mirrored block forward routes its components itself, it is the
    original forward.
    """

    original: Callable
    bit: int
    component: Component = field(default_factory=lambda: Component("?"))

    @property
    def ecad_original(self) -> Callable:
        return self.original

    @torch.compiler.disable  # caching decisions are Python control flow: keep torch.compile out of them
    def __call__(self, *args, **kwargs):
        rt = active_runtime()
        if rt is None or rt.hooks_pass_through or rt.step_plain:
            return self.original(*args, **kwargs)
        out = rt.component_if_needed(self.bit, lambda: self.original(*args, **kwargs))
        if out is None:
            return self.component.placeholder(*args, **kwargs)
        return _clone(out) if self.component.written_by_block else out


def install_forward_hooks(patcher: Any, hooks: Sequence[tuple[str, int, Component]]) -> None:
    """Object-patch ``forward`` of each ``diffusion_model.…`` module path, routing it to its component's bit."""
    for path, bit, component in hooks:
        key = f"{path}.forward"
        patcher.add_object_patch(key, ForwardHook(_unwrapped(patcher.get_model_object(key)), bit, component))

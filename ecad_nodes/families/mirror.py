"""Mirrored block forwards: ECAD's copies of upstream block forwards, and how they stay honest.

Hooks on a block's submodules can skip only what a submodule computes. Where a component has no
submodule of its own (FLUX's joint attention inside ``DoubleStreamBlock.forward``, the attention and
MLP halves of its fused ``linear1``), a copy of the block's forward routes each component through
the runtime instead. A copy drifts when ComfyUI changes the original, so every mirror:

* knows the upstream functions it follows and the fingerprints (the AST of their source) of the
  versions it was verified against; those it trusts;
* on any other source, checks itself on the first call: the upstream forward and the copy (every
  component computed) run on the same inputs and must agree bit for bit;
* on a mismatch (or an exception) is never used again in the process: one warning names the
  ComfyUI version, the block runs ComfyUI's own forward, the components with a submodule stay
  cached through their hooks, and those without one are computed at every step. Slower, and the
  images are what ComfyUI's code computes.

A block that computes everything and stores nothing always runs the upstream forward (the
all-compute fast path).
"""
from __future__ import annotations

import ast
import contextlib
import hashlib
import inspect
import logging
import textwrap
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Mapping, Optional

import torch

from ..runtime import CacheRuntime, active_runtime

log = logging.getLogger("ComfyUI-ECAD")


def _no_features(block: torch.nn.Module, args: tuple, kwargs: dict) -> Hashable:
    return ()


@dataclass(frozen=True)
class Mirror:
    """A copy of an upstream block forward that routes each named component through a ``Route``."""

    name: str
    #: Qualified names of the upstream block classes whose forward this copies, e.g. "comfy.ldm.flux.layers.DoubleStreamBlock".
    classes: tuple[str, ...]
    #: ``(route, block, flags, *args, **kwargs)`` -> what the upstream forward returns for ``(*args, **kwargs)``.
    forward: Callable
    #: The upstream functions the copy follows, for a block of a given class.
    sources: Callable[[type], tuple[Callable, ...]]
    #: Fingerprints verified to be mirrored exactly -> where (e.g. "ComfyUI v0.20.1").
    known: Mapping[str, str] = field(default_factory=dict)
    #: Words whose presence in the upstream source switches a feature of the copy (``flags``), e.g. "attn1_patch".
    markers: tuple[str, ...] = ()
    #: What of a call selects code paths of the forward (checked separately on unknown sources).
    features: Callable[[torch.nn.Module, tuple, dict], Hashable] = _no_features

    def fingerprint(self, block_class: type) -> str:
        return _fingerprint(self, block_class)

    def flags(self, block_class: type) -> frozenset[str]:
        return _flags(self, block_class)

    def trusted(self, block: torch.nn.Module, original: Callable, args: tuple, kwargs: dict) -> bool:
        """Whether the copy computes what ``original`` computes for this call (see the module docstring)."""
        cls = type(block)
        fp = self.fingerprint(cls)
        if is_known(self, fp):
            return True
        if (self.name, fp) in _FAILED:
            return False
        key = (self.name, fp, self.features(block, args, kwargs))
        if key not in _VERIFIED:
            try:
                why = self._check(block, original, args, kwargs)
            except OUT_OF_MEMORY:  # the check runs the block twice more on copies of its inputs; no room for that now
                log.info("ECAD: no memory to check %s against this ComfyUI's block forward on this call; ComfyUI's "
                         "own forward runs, and a later call checks again", self.name)
                return False
            if why is not None:
                _FAILED.add((self.name, fp))
                names = ", ".join(_qualname(f) for f in self.sources(cls))
                log.warning("ECAD: %s does not match %s of %s (%s). ECAD runs ComfyUI's own block forward instead: "
                            "components without a submodule of their own are computed at every step (slower; the "
                            "images are what ComfyUI's code computes). Please report this with your ComfyUI version.",
                            self.name, names, comfyui_version(), why)
                return False
            _VERIFIED.add(key)
            log.info("ECAD: %s checked against %s of %s on its first call: identical", self.name,
                     ", ".join(_qualname(f) for f in self.sources(cls)), comfyui_version())
        return True

    def _check(self, block: torch.nn.Module, original: Callable, args: tuple, kwargs: dict) -> Optional[str]:
        """None if the copy, computing every component, equals ``original`` on clones of this call's inputs."""
        rt = active_runtime()
        with rt.passthrough() if rt is not None else contextlib.nullcontext():
            expected = original(*_clone_tensors(args), **_clone_tensors(kwargs))
            try:
                got = self.forward(COMPUTE_ALL, block, self.flags(type(block)),
                                   *_clone_tensors(args), **_clone_tensors(kwargs))
            except OUT_OF_MEMORY:
                raise
            except Exception as e:  # a copy that no longer fits upstream's attributes or arguments
                return f"the copy raised {type(e).__name__}: {e}"
        return _difference(expected, got)


def is_known(mirror: Mirror, fingerprint: str) -> bool:
    return fingerprint in mirror.known


#: Not a mismatch: a check that ran out of device memory says nothing about the copy.
OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)

_VERIFIED: set[tuple] = set()
_FAILED: set[tuple] = set()
_FINGERPRINTS: dict[tuple[str, type], str] = {}
_FLAGS: dict[tuple[str, type], frozenset[str]] = {}


def _source(fn: Callable) -> str:
    try:
        return textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        return ""


def function_fingerprint(functions: tuple[Callable, ...]) -> str:
    """The AST of the functions' source (comments and layout do not count); "" parts where there is no source."""
    digest = hashlib.sha256()
    for fn in functions:
        source = _source(fn)
        digest.update((ast.dump(ast.parse(source)) if source else f"<no source: {_qualname(fn)}>").encode())
    return digest.hexdigest()[:16]


def _fingerprint(mirror: Mirror, block_class: type) -> str:
    key = (mirror.name, block_class)
    if key not in _FINGERPRINTS:
        _FINGERPRINTS[key] = function_fingerprint(mirror.sources(block_class))
    return _FINGERPRINTS[key]


def _flags(mirror: Mirror, block_class: type) -> frozenset[str]:
    key = (mirror.name, block_class)
    if key not in _FLAGS:
        text = "".join(_source(f) for f in mirror.sources(block_class))
        _FLAGS[key] = frozenset(m for m in mirror.markers if m in text)
    return _FLAGS[key]


def _qualname(fn: Callable) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def comfyui_version() -> str:
    try:
        from comfyui_version import __version__
        return f"ComfyUI {__version__}"
    except ImportError:
        return "this ComfyUI (version unknown)"


def _clone_tensors(value: Any) -> Any:
    """Tensors cloned (upstream forwards add residuals in place), containers rebuilt, everything else shared."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, tuple):
        return tuple(_clone_tensors(v) for v in value)
    if isinstance(value, list):
        return [_clone_tensors(v) for v in value]
    if isinstance(value, dict):
        return {k: _clone_tensors(v) for k, v in value.items()}
    return value


def _difference(expected: Any, got: Any) -> Optional[str]:
    if isinstance(expected, torch.Tensor):
        if not isinstance(got, torch.Tensor) or got.shape != expected.shape or got.dtype != expected.dtype:
            return f"the copy returned {type(got).__name__} {getattr(got, 'shape', '')} instead of a tensor {tuple(expected.shape)}"
        if not torch.equal(got, expected):
            return f"outputs differ by up to {(got.float() - expected.float()).abs().max().item():.3g}"
        return None
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            return f"the copy returned {type(got).__name__} instead of {len(expected)} outputs"
        for e, g in zip(expected, got):
            why = _difference(e, g)
            if why:
                return why
        return None
    if isinstance(expected, dict):
        if not isinstance(got, dict) or set(got) != set(expected):
            return "the copy returned other keys"
        for k in expected:
            why = _difference(expected[k], got[k])
            if why:
                return why
        return None
    return None if expected == got else "outputs differ"


class _ComputeAll:
    """A route that computes every component and caches nothing (the first-call check)."""

    @staticmethod
    def component(name: str, compute: Callable):
        return compute()

    component_if_needed = component

    @staticmethod
    def needed(name: str) -> bool:
        return True

    @staticmethod
    def will_compute(name: str) -> bool:
        return True


COMPUTE_ALL = _ComputeAll()


class Route:
    """One block's components, by name, for a mirrored forward: the runtime's decisions on the block's bits."""

    __slots__ = ("rt", "bits")

    def __init__(self, rt: CacheRuntime, bits: Mapping[str, int]):
        self.rt, self.bits = rt, bits

    def component(self, name: str, compute: Callable):
        return self.rt.component(self.bits[name], compute)

    def component_if_needed(self, name: str, compute: Callable):
        return self.rt.component_if_needed(self.bits[name], compute)

    def needed(self, name: str) -> bool:
        return self.rt.needed(self.bits[name])

    def will_compute(self, name: str) -> bool:
        return self.rt.will_compute(self.bits[name])


class MirroredForward:
    """Stands in for a block's ``forward`` (a ModelPatcher object patch); outside ECAD runs it is the original."""

    def __init__(self, original: Callable, block: Any):
        self.original = original          # the block module's own bound forward
        self.block = block                # base.MirroredBlock
        self.all_bits = tuple(block.bits.values())

    @property
    def ecad_original(self) -> Callable:
        return self.original

    @torch.compiler.disable  # caching decisions are Python control flow: keep torch.compile out of them
    def __call__(self, *args, **kwargs):
        rt = active_runtime()
        if rt is None or rt.hooks_pass_through or rt.step_plain:
            return self.original(*args, **kwargs)
        if rt.computes_all_and_keeps_none(self.all_bits):
            rt.count_computed(self.all_bits)
            with rt.passthrough():
                return self.original(*args, **kwargs)
        module, mirror = self.original.__self__, self.block.mirror
        if mirror is not None and mirror.trusted(module, self.original, args, kwargs):
            with rt.passthrough():
                return mirror.forward(Route(rt, self.block.bits), module, mirror.flags(type(module)), *args, **kwargs)
        if mirror is None:
            _warn_unmirrored(type(module))
        if self.block.forced:
            rt.force_compute(self.block.forced, f"ECAD's copy of {type(module).__name__}.forward is not used on "
                             f"{comfyui_version()}")
            rt.count_computed(self.block.forced)
        return self.original(*args, **kwargs)


_UNMIRRORED: set[type] = set()


def _warn_unmirrored(cls: type) -> None:
    if cls not in _UNMIRRORED:
        _UNMIRRORED.add(cls)
        log.warning("ECAD: %s has no copy of %s.%s.forward, so it runs ComfyUI's own forward: components without a "
                    "submodule of their own are computed at every step (slower). Please report this with your ComfyUI "
                    "version.", comfyui_version(), cls.__module__, cls.__qualname__)

"""Caching schedules: which component of which block is computed at which sampling step.

A schedule is a boolean mask of shape (steps, bits), where the bits of one step enumerate the
model's block groups in order, each group block-major and component-minor, exactly as the ECAD
genome does. ``True`` means "compute and refresh the cache", ``False`` "reuse the cached output".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np


class ScheduleError(ValueError):
    """A schedule that cannot be used, with the file it came from (when there is one)."""

    def __init__(self, message: str, path: Optional[Path | str] = None):
        self.path = str(path) if path is not None else None
        self.reason = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


@dataclass(frozen=True)
class BlockGroup:
    """A list of identical transformer blocks, e.g. FLUX's 19 double-stream blocks."""

    name: str
    blocks: int
    components: tuple[str, ...]

    @property
    def bits(self) -> int:
        return self.blocks * len(self.components)


@dataclass(frozen=True)
class Layout:
    """The cacheable structure of one model: its family and block groups."""

    family: str
    groups: tuple[BlockGroup, ...]

    @property
    def bits_per_step(self) -> int:
        return sum(g.bits for g in self.groups)

    def offsets(self) -> dict[str, int]:
        out, pos = {}, 0
        for g in self.groups:
            out[g.name] = pos
            pos += g.bits
        return out

    def group(self, name: str) -> BlockGroup:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(name)

    # Bit addressing: every other module asks the layout; nothing else computes a bit index.

    def bit(self, group: str, block: int, component: str) -> int:
        """The bit of ``component`` of block ``block`` of ``group`` within one step."""
        g = self.group(group)
        if not 0 <= block < g.blocks:
            raise IndexError(f"{group} has {g.blocks} blocks, not block {block}")
        return self.offsets()[group] + len(g.components) * block + g.components.index(component)

    def block_bits(self, group: str, block: int) -> tuple[int, ...]:
        """The bits of one block, in the group's component order."""
        return tuple(self.bit(group, block, c) for c in self.group(group).components)

    def group_slice(self, group: str) -> slice:
        """The contiguous bits of one group."""
        start = self.offsets()[group]
        return slice(start, start + self.group(group).bits)

    def component_bits(self, group: str, component: str) -> np.ndarray:
        """The bits of one component in every block of ``group``, in block order."""
        g = self.group(group)
        return self.offsets()[group] + len(g.components) * np.arange(g.blocks) + g.components.index(component)

    def addresses(self) -> Iterator[tuple[str, int, str, int]]:
        """``(group, block, component, bit)`` for every bit, in bit order."""
        bit = 0
        for g in self.groups:
            for block in range(g.blocks):
                for component in g.components:
                    yield g.name, block, component, bit
                    bit += 1

    def describe(self) -> str:
        parts = [f"{g.name}={g.blocks}×[{', '.join(g.components)}]" for g in self.groups]
        return f"{self.family} ({'; '.join(parts)})"

    def mismatch(self, other: "Layout") -> Optional[str]:
        """Why a schedule made for ``self`` cannot drive a model with layout ``other``; None if it can."""
        if self.family != other.family:
            return f"it is for model family '{self.family}', but the model is '{other.family}'"
        if self.groups != other.groups:
            return f"it expects {self.describe()}, but the model has {other.describe()}"
        return None

    def to_json(self) -> list[dict[str, Any]]:
        return [{"name": g.name, "blocks": g.blocks, "components": list(g.components)} for g in self.groups]


@dataclass
class Mask:
    """A (steps × bits) boolean schedule for one layout."""

    layout: Layout
    bits: np.ndarray  # bool, shape (steps, layout.bits_per_step)

    def __post_init__(self) -> None:
        self.bits = np.asarray(self.bits, dtype=bool)
        if self.bits.ndim != 2 or self.bits.shape[1] != self.layout.bits_per_step:
            raise ValueError(f"mask shape {self.bits.shape} does not fit {self.layout.describe()}")

    @property
    def steps(self) -> int:
        return self.bits.shape[0]

    def group(self, name: str) -> np.ndarray:
        """View of one group's bits as (steps, blocks, components)."""
        g = self.layout.group(name)
        return self.bits[:, self.layout.group_slice(name)].reshape(self.steps, g.blocks, len(g.components))

    def groups(self) -> Iterator[tuple[BlockGroup, np.ndarray]]:
        for g in self.layout.groups:
            yield g, self.group(g.name)

    def compute_fraction(self) -> float:
        return float(self.bits.mean()) if self.bits.size else 1.0

    def resampled(self, steps: int) -> "Mask":
        """The schedule mapped onto another step count by relative position (first and last step kept)."""
        if steps == self.steps:
            return self
        return Mask(self.layout, self.bits[step_mapping(steps, self.steps)])

    def with_first_step_computed(self) -> "Mask":
        bits = self.bits.copy()
        bits[0] = True
        return Mask(self.layout, bits)

    @classmethod
    def full(cls, layout: Layout, steps: int) -> "Mask":
        return cls(layout, np.ones((steps, layout.bits_per_step), dtype=bool))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mask) and self.layout == other.layout and np.array_equal(self.bits, other.bits)


def step_mapping(workflow_steps: int, schedule_steps: int) -> np.ndarray:
    """For each workflow step, the schedule step at the same relative position."""
    if workflow_steps <= 1 or schedule_steps <= 1:
        return np.zeros(max(workflow_steps, 0), dtype=np.int64)
    pos = np.arange(workflow_steps) * (schedule_steps - 1) / (workflow_steps - 1)
    return np.floor(pos + 0.5).astype(np.int64)


@dataclass
class PointMetrics:
    """What is known about a frontier point. Every field is optional: heuristics know little."""

    quality_metric: Optional[str] = None
    quality: Optional[float] = None
    macs: Optional[float] = None          # total MACs of one generation with this schedule
    full_macs: Optional[float] = None     # the same without caching
    latency_ms: Optional[float] = None
    speedup: Optional[float] = None       # measured latency speedup over no caching
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mac_speedup(self) -> Optional[float]:
        if self.macs and self.full_macs:
            return self.full_macs / self.macs
        return None

    @property
    def best_speedup(self) -> Optional[float]:
        """Measured speedup where known, else the MAC ratio."""
        return self.speedup if self.speedup is not None else self.mac_speedup


@dataclass
class FrontierPoint:
    name: str
    mask: Mask
    metrics: PointMetrics = field(default_factory=PointMetrics)


@dataclass
class ScheduleFile:
    """One schedule file: a model, a step count and a Pareto frontier of points."""

    family: str
    variant: Optional[str]
    layout: Layout
    steps: int
    points: list[FrontierPoint]
    provenance: dict[str, Any] = field(default_factory=dict)
    baselines: list[FrontierPoint] = field(default_factory=list)  # e.g. FORA-N measured by the optimizer
    path: Optional[Path] = None

    def point(self, name: str) -> FrontierPoint:
        for p in self.points:
            if p.name == name:
                return p
        known = ", ".join(p.name for p in self.points)
        raise ScheduleError(f"has no point named '{name}' (points: {known})", self.path)

"""What the search needs from a model: render the calibration images under a schedule, and price it.

Two backends implement it: ``comfy_backend.ComfyBackend`` (real or tiny models through ComfyUI's
own sampling) and ``toy_backend.ToyBackend`` (the plain-PyTorch toy DiT, so CI can test the search,
database and resume logic without ComfyUI). Everything above this interface is shared.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, Sequence

import numpy as np
from PIL import Image

from ecad_nodes.costs import CostTable
from ecad_nodes.schedule import Layout, Mask

from .calibration import CalibrationItem


@dataclass
class Rendered:
    """The images of one schedule for a list of calibration items, in the items' order."""

    images: list[Image.Image]
    model_seconds: float      # inside the sampler (the diffusion model, the sampler's own arithmetic)
    decode_seconds: float     # latent -> RGB


@dataclass(frozen=True)
class ImageCost:
    """MACs of generating one image under a schedule: every model evaluation of every step, for every
    conditioning stream (2 with classifier-free guidance)."""

    table: CostTable                # MACs per batch row and model evaluation
    evaluations: np.ndarray         # model evaluations per step (2 for Heun-like samplers)
    streams: int
    convention: str                 # "linear layers only" or "linear layers + attention products"

    def macs(self, mask: Mask) -> float:
        return float(self.streams * (self.evaluations.astype(np.float64) @ self.table.step_macs(mask)))

    def full_macs(self, steps: int) -> float:
        return self.macs(Mask.full(self.table.layout, steps))

    def macs_of_many(self, bits: np.ndarray) -> np.ndarray:
        """``macs`` of many masks at once: ``bits`` of shape (masks, steps, bits per step)."""
        step_macs = bits.astype(np.float64) @ self.table.per_bit + self.table.per_step_constant
        return self.streams * (step_macs @ self.evaluations.astype(np.float64))

    def to_json(self) -> dict:
        """Exact (floats as JSON numbers round-trip): a run directory keeps the cost model with its references."""
        return {"per_bit": [float(v) for v in self.table.per_bit], "per_step_constant": float(self.table.per_step_constant),
                "evaluations": [int(v) for v in self.evaluations], "streams": int(self.streams),
                "convention": self.convention}

    @classmethod
    def from_json(cls, layout: Layout, data: dict) -> "ImageCost":
        table = CostTable(layout, np.asarray(data["per_bit"], dtype=np.float64), float(data["per_step_constant"]))
        return cls(table, np.asarray(data["evaluations"], dtype=np.int64), int(data["streams"]), data["convention"])


class Backend(Protocol):
    family: str
    variant: Optional[str]
    layout: Layout
    steps: int

    def render(self, mask: Optional[Mask], items: Sequence[CalibrationItem]) -> Rendered:
        """The images of ``items`` with ``mask`` (None: full computation, the reference)."""
        ...

    def image_cost(self, attention_matmuls: bool) -> ImageCost:
        """The cost model of one image; valid once a full-computation render has run (shapes are known)."""
        ...

    def describe(self) -> str:
        """One line for the log: model, device, sizes."""
        ...

    def close(self) -> None:
        """Drop the model (ComfyUI's objects must go before the interpreter shuts down)."""
        ...


def average_tables(tables: Sequence[CostTable]) -> CostTable:
    """One table for calls whose token counts differ (prompts of different lengths): the mean cost."""
    first = tables[0]
    return CostTable(first.layout, np.mean([t.per_bit for t in tables], axis=0),
                     float(np.mean([t.per_step_constant for t in tables])))


"""The search's genome: a schedule's mask flattened (step-major, then the layout's bit order), without
the first step, which always computes (nothing is cached before it).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ecad_nodes.schedule import Layout, Mask


@dataclass(frozen=True)
class GenomeCodec:
    layout: Layout
    steps: int

    def __post_init__(self) -> None:
        if self.steps < 2:
            raise ValueError(f"a schedule needs at least 2 steps to cache anything (got {self.steps})")

    @property
    def n_var(self) -> int:
        return (self.steps - 1) * self.layout.bits_per_step

    def mask(self, genome: np.ndarray) -> Mask:
        bits = np.ones((self.steps, self.layout.bits_per_step), dtype=bool)
        bits[1:] = np.asarray(genome, dtype=bool).reshape(self.steps - 1, -1)
        return Mask(self.layout, bits)

    def genome(self, mask: Mask) -> np.ndarray:
        if mask.layout != self.layout or mask.steps != self.steps:
            raise ValueError("the mask does not fit this search's layout and step count")
        return mask.bits[1:].reshape(-1).copy()

    @staticmethod
    def caches_something(genome: np.ndarray) -> bool:
        """The search's constraint (as in the ECAD paper): a candidate must differ from no caching."""
        return not bool(np.all(genome))


def genome_hash(genome: np.ndarray) -> str:
    """The database key of a genome."""
    bits = np.asarray(genome, dtype=bool)
    return hashlib.sha256(len(bits).to_bytes(8, "big") + np.packbits(bits).tobytes()).hexdigest()[:32]


def pack(genome: np.ndarray) -> bytes:
    return np.packbits(np.asarray(genome, dtype=bool)).tobytes()


def unpack(blob: bytes, n_var: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(blob, dtype=np.uint8))[:n_var].astype(bool)

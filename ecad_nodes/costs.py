"""Multiply-accumulate (MAC) costs of a schedule.

Every family adapter describes the MACs of one block's components for given token counts; a
``CostTable`` turns that into the cost of any mask. Two conventions exist: with
``attention_matmuls=False`` only the linear layers count (as calflops does, and as the MACs stored in
the official ECAD schedules do); with ``True`` the QKᵀ and AV products of attention are added.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .schedule import Layout, Mask


@dataclass(frozen=True)
class CostTable:
    """MACs for one batch row: per bit of a step, plus what every step runs regardless."""

    layout: Layout
    per_bit: np.ndarray          # float64, shape (layout.bits_per_step,)
    per_step_constant: float

    @classmethod
    def from_components(cls, layout: Layout, per_component: dict[str, dict[str, float]], per_step_constant: float) -> "CostTable":
        """Build from the MACs of each component of one block of each group (blocks of a group are alike)."""
        parts = []
        for g in layout.groups:
            costs = [float(per_component[g.name][c]) for c in g.components]
            parts.append(np.tile(np.asarray(costs, dtype=np.float64), g.blocks))
        return cls(layout, np.concatenate(parts) if parts else np.zeros(0), float(per_step_constant))

    def step_macs(self, mask: Mask) -> np.ndarray:
        """MACs of each step of ``mask``."""
        return mask.bits.astype(np.float64) @ self.per_bit + self.per_step_constant

    def mask_macs(self, mask: Mask) -> float:
        return float(self.step_macs(mask).sum())

    def full_macs(self, steps: int) -> float:
        return steps * (float(self.per_bit.sum()) + self.per_step_constant)

    def speedup_bound(self, mask: Mask) -> float:
        """How much faster the mask is than full computation if time were proportional to MACs."""
        return self.full_macs(mask.steps) / self.mask_macs(mask)


def attention_matmul_macs(query_tokens: int, key_tokens: int, hidden: int) -> float:
    """QKᵀ plus attention×V for all heads together."""
    return 2.0 * query_tokens * key_tokens * hidden


def linear_macs(tokens: int, fan_in: int, fan_out: int) -> float:
    return float(tokens) * fan_in * fan_out


def fit_full_macs_from_steps(mask: Mask, step_macs: np.ndarray) -> Optional[float]:
    """Recover the no-caching MACs of a schedule from its per-step MACs.

    Each step's MACs are a constant plus one cost per component kind (blocks of a group are alike),
    so a least-squares fit over the steps recovers those costs, and with them the full cost. Returns
    None when the steps do not determine the costs or the fit is not exact.
    """
    mask = mask.with_first_step_computed()  # what runs: nothing is cached before the first step
    columns = []
    for g, bits in mask.groups():
        for c in range(len(g.components)):
            columns.append(bits[:, :, c].sum(axis=1))
    design = np.column_stack(columns + [np.ones(mask.steps)]).astype(np.float64)
    if np.linalg.matrix_rank(design) < design.shape[1]:
        return None
    coef, *_ = np.linalg.lstsq(design, step_macs.astype(np.float64), rcond=None)
    if not np.allclose(design @ coef, step_macs, rtol=1e-3):
        return None
    full_counts = [g.blocks for g, _ in mask.groups() for _ in g.components] + [1]
    return float(np.dot(coef, full_counts) * mask.steps)


def module_linear_macs(module, tokens: int) -> float:
    """MACs of every linear layer inside ``module`` applied to ``tokens`` tokens (each layer once)."""
    import torch
    return float(tokens) * sum(m.in_features * m.out_features for m in module.modules() if isinstance(m, torch.nn.Linear))

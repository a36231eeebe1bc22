"""Schedule files for the web extension's tests: random masks with plausible figures, written with save_schedule.

Never the official reference schedules: these are made up, so they can live in temporary folders and screenshots.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ecad_nodes.families.flux import flux_layout
from ecad_nodes.families.pixart import pixart_layout
from ecad_nodes.heuristics import fora_bits
from ecad_nodes.schedule import FrontierPoint, Layout, Mask, PointMetrics, ScheduleFile
from ecad_nodes.schedule_io import save_schedule

FULL_MACS = 9.93e13


def _metrics(computed: float, rng: np.random.Generator, metric: str, measured: bool) -> PointMetrics:
    mac_ratio = 1.0 / computed
    speedup = 1.0 / (0.12 + 0.88 * computed) if measured else None  # latency gains less than MACs
    quality = (1.1 - 0.3 * (mac_ratio - 1.0) + rng.normal(0, 0.02)) if metric == "image_reward" else \
        (40.0 - 5.0 * (mac_ratio - 1.0) + rng.normal(0, 0.3))
    return PointMetrics(metric, round(float(quality), 4), macs=FULL_MACS * computed, full_macs=FULL_MACS,
                        latency_ms=round(2600.0 / speedup, 1) if speedup else None, speedup=speedup)


def frontier(layout: Layout, steps: int, names: list[str], *, seed: int = 0, metric: str = "image_reward",
             measured: bool = True, variant: str | None = None, baselines: tuple[int, ...] = (2, 3)) -> ScheduleFile:
    """A frontier of ``len(names)`` points from most to least computation, and FORA-N baselines."""
    rng = np.random.default_rng(seed)
    points = []
    for i, name in enumerate(names):
        keep = 0.85 - 0.55 * i / max(1, len(names) - 1)  # fraction of component calls computed
        bits = rng.random((steps, layout.bits_per_step)) < keep
        bits[0] = True
        mask = Mask(layout, bits)
        points.append(FrontierPoint(name, mask, _metrics(mask.compute_fraction(), rng, metric, measured)))
    extra = []
    for every in baselines:
        mask = Mask(layout, fora_bits(layout, steps, every))
        m = _metrics(mask.compute_fraction(), rng, metric, measured)
        m.quality -= 0.25 if metric == "image_reward" else 3.0  # heuristics sit below the learned frontier
        extra.append(FrontierPoint(f"FORA every {every} steps", mask, m))
    return ScheduleFile(layout.family, variant, layout, steps, points,
                        {"tool": "ComfyUI-ECAD tests", "note": "random masks, made-up figures"}, extra)


def write_flux(path: Path, names=("gen40-a", "gen40-b", "gen40-c", "gen40-d", "gen40-e"), seed: int = 0) -> ScheduleFile:
    schedule = frontier(flux_layout(19, 38), 20, list(names), seed=seed, variant="flux-dev")
    save_schedule(schedule, path)
    return schedule


def write_pixart(path: Path, names=("safe", "gen40-b", "quick"), seed: int = 1, measured: bool = False) -> ScheduleFile:
    schedule = frontier(pixart_layout(28), 20, list(names), seed=seed, metric="psnr", measured=measured,
                        variant="pixart-alpha", baselines=(2,))
    save_schedule(schedule, path)
    return schedule

"""The settings that decide what an evaluation means. A run directory keeps them; ``--resume`` with any
of them changed is refused, because its stored evaluations would no longer be comparable.

Settings that do not change evaluations (generations, output file, frontier size, held-out check)
may differ between a run and its resumption.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any, Optional

TOOL_VERSION = "0.1.0"


@dataclass(frozen=True)
class RunSettings:
    preset: str
    family: str
    model: dict[str, Any]              # file identities (real weights) or the tiny spec
    device: str
    steps: int
    sampler: str
    scheduler: str
    cfg: float
    guidance: Optional[float]
    width: int
    height: int
    frames: int
    prompts_source: str
    calibration_hash: str              # the prompt × seed set (calibration.items_hash)
    num_prompts: int
    images_per_prompt: int
    batch_size: int
    metric: str
    metric_files: dict[str, Any]       # identities of the metric's weight files, if any
    cost: str
    population: int
    seed: int
    crossover_points: int
    crossover_prob: float
    mutation_prob: float
    mutation_bits: float
    step_move_prob: float
    paired: bool                       # racing's estimates relative to the uncached images
    racing: Optional[dict[str, Any]]   # screen images, margin, steering cap; None: every candidate on every image
    surrogate: Optional[dict[str, Any]]  # pool, evaluations, agreement threshold; None: plain NSGA-II offspring
    warm_start: Optional[dict[str, Any]]  # the seeding file's name and digest
    calibration_seeds: bool            # quick calibration's greedy schedules in the first generation
    extra_seeds: Optional[str]         # digest of seeds a caller added (e.g. quick calibration's schedules)

    @classmethod
    def of(cls, spec, model: dict[str, Any], device: str, calibration_hash: str, metric_files: dict[str, Any],
           extra_seeds: Optional[str] = None) -> "RunSettings":
        """The settings of a run spec (``optimizer.spec.RunSpec``) on this model and device."""
        from .warm_start import identity
        images = len(spec.prompts) * spec.images_per_prompt
        return cls(preset=spec.preset.name, family=spec.preset.family, model=model, device=device, steps=spec.steps,
                   sampler=spec.sampler, scheduler=spec.scheduler, cfg=spec.cfg, guidance=spec.guidance,
                   width=spec.width, height=spec.height, frames=spec.frames, prompts_source=spec.prompts_source,
                   calibration_hash=calibration_hash, num_prompts=len(spec.prompts),
                   images_per_prompt=spec.images_per_prompt, batch_size=spec.batch_size, metric=spec.metric,
                   metric_files=metric_files, cost=spec.cost, population=spec.population, seed=spec.seed,
                   crossover_points=4, crossover_prob=0.9, mutation_prob=spec.mutation_prob,
                   mutation_bits=spec.mutation_bits, step_move_prob=spec.step_move_prob, paired=spec.paired,
                   racing={"screen_images": spec.race_images, "margin": spec.race_margin,
                           # only where it steers: runs made before steering existed resume as they were
                           **({"steer_images": spec.steer_images} if spec.steer_images < images else {})}
                   if spec.racing and spec.race_images < images else None,
                   surrogate={"pool": spec.surrogate_pool, "evaluations": spec.surrogate_evaluations,
                              "min_tau": spec.surrogate_min_tau} if spec.surrogate else None,
                   warm_start=identity(spec.warm_start, spec.run_dir if spec.resume else None)
                   if spec.warm_start else None,
                   calibration_seeds=spec.calibration_seeds, extra_seeds=extra_seeds)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:16]


def _show(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False) if isinstance(value, (dict, list)) else repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """One line per setting that differs, e.g. "steps: the run has 10, now 12"."""
    lines = []
    for key in sorted(set(stored) | set(current)):
        if json.dumps(stored.get(key), sort_keys=True) != json.dumps(current.get(key), sort_keys=True):
            lines.append(f"{key}: the run has {_show(stored.get(key))}, now {_show(current.get(key))}")
    return lines

"""The value that travels on an ECAD_SCHEDULE wire: one frontier point of a file, or a heuristic."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .heuristics import Heuristic
from .schedule import FrontierPoint, Layout, Mask, PointMetrics, ScheduleError, ScheduleFile, step_mapping


@dataclass(frozen=True)
class Resolved:
    """A schedule laid onto one run: the mask in workflow steps and where each step came from."""

    mask: Mask
    schedule_step_of: np.ndarray
    schedule_steps: int
    note: Optional[str] = None


@dataclass
class ScheduleChoice:
    source: str                                  # file name as listed, or "heuristics"
    name: str                                    # point or heuristic name
    point: Optional[FrontierPoint] = None
    schedule: Optional[ScheduleFile] = None
    heuristic: Optional[Heuristic] = None

    @classmethod
    def of_point(cls, source: str, schedule: ScheduleFile, point: FrontierPoint) -> "ScheduleChoice":
        return cls(source, point.name, point=point, schedule=schedule)

    @classmethod
    def of_mask(cls, name: str, mask: Mask, variant: Optional[str] = None) -> "ScheduleChoice":
        """A one-off schedule (e.g. an optimizer candidate) made for ``mask.steps`` steps."""
        point = FrontierPoint(name, mask)
        schedule = ScheduleFile(mask.layout.family, variant, mask.layout, mask.steps, [point])
        return cls(name, name, point=point, schedule=schedule)

    @classmethod
    def of_heuristic(cls, heuristic: Heuristic) -> "ScheduleChoice":
        return cls("heuristics", heuristic.name, heuristic=heuristic)

    @property
    def label(self) -> str:
        return f"{self.source} / {self.name}"

    @property
    def metrics(self) -> PointMetrics:
        return self.point.metrics if self.point else PointMetrics()

    def check(self, layout: Layout) -> None:
        """Raise a ScheduleError if this schedule cannot drive a model with ``layout``."""
        if self.schedule is None:
            return
        why = self.schedule.layout.mismatch(layout)
        if why:
            raise ScheduleError(f"cannot be applied to this model: {why}", self.schedule.path or self.source)

    def resolve(self, layout: Layout, steps: int) -> Resolved:
        if self.heuristic is not None:
            return Resolved(self.heuristic.mask(layout, steps), np.arange(steps), steps)
        self.check(layout)
        mask, made_for = self.point.mask, self.schedule.steps
        if steps == made_for:
            return Resolved(mask, np.arange(steps), made_for)
        mapping = step_mapping(steps, made_for)
        note = (f"schedule '{self.label}' was made for {made_for} steps; the workflow runs {steps}, "
                "so steps are mapped by relative position")
        return Resolved(Mask(layout, mask.bits[mapping]), mapping, made_for, note)

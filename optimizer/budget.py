"""Counting rendered images and capping them (``--budget-images``).

Every image a run renders goes through ``MeteredBackend.render``, which asks the ``ImageLedger`` first:
the uncached references, every candidate at every fidelity, the baselines, the held-out check and the
latency rounds. An image the ledger cannot pay for is never rendered: ``BudgetExhausted`` is raised
before, and the search stops cleanly with what it has measured.

The count survives kills: the run's database knows what every stored evaluation rendered, and the
checkpoint records the count the search had reached, so a resumed run continues from the same count
(see ``Search``), renders what was lost with the kill and, whatever the kills, spends its budget on the
same evaluations as an uninterrupted run.
"""
from __future__ import annotations

from typing import Optional, Sequence


class BudgetExhausted(RuntimeError):
    """Rendering ``wanted`` more images would exceed the budget."""

    def __init__(self, used: int, wanted: int, limit: int):
        self.used, self.wanted, self.limit = used, wanted, limit
        # ``limit`` is what this part of the run may use (the search leaves the verification and measurements theirs),
        # so a resumed run can have rendered more than it
        super().__init__(f"the image budget is spent: {wanted} more images needed, {used} rendered of the {limit} this "
                         "part of the run may use")


class ImageLedger:
    """Images rendered so far, against an optional limit."""

    def __init__(self, limit: Optional[int] = None, used: int = 0):
        self.limit, self.used = limit, used
        self.listeners: list = []             # called with the number of images each time some are counted

    def capped(self, total: float) -> int:
        """``total`` images (a run's expected count), or the limit where that is fewer."""
        return int(total if self.limit is None else min(total, self.limit))

    def affordable(self, wanted: int) -> bool:
        return self.limit is None or self.used + wanted <= self.limit

    def spend(self, wanted: int) -> None:
        """Count ``wanted`` images about to be rendered; ``BudgetExhausted`` (and nothing counted) if they do not fit."""
        if not self.affordable(wanted):
            raise BudgetExhausted(self.used, wanted, self.limit)
        self.count(wanted)

    def count(self, images: int) -> None:
        """Count images rendered earlier (an evaluation found in the database, replayed after a kill)."""
        self.used += images
        for listener in self.listeners:
            listener(images)


class MeteredBackend:
    """A backend whose every render is paid for by the ledger first; everything else passes through."""

    def __init__(self, backend, ledger: ImageLedger):
        self._backend, self.ledger = backend, ledger

    def render(self, mask, items: Sequence):
        self.ledger.spend(len(items))
        return self._backend.render(mask, items)

    def __getattr__(self, name: str):
        return getattr(self._backend, name)


def final_measurement_images(images: int, holdout_images: int, latency_repeats: int, frontier_size: int,
                             baselines: int, latency_images: int) -> int:
    """The most images the measurements after the search can render: the held-out references and every written
    point and baseline on the held-out images; ``latency_repeats`` + 1 timed rounds of no caching, points and
    baselines on ``latency_images`` images. At most max(K, 2 + baselines) points are written (the frontier's ends and
    the best point within each baseline's cost are kept even beyond K)."""
    points = max(frontier_size, 2 + baselines)
    schedules = 1 + points + baselines
    latency = (latency_repeats + 1) * schedules * min(latency_images, images) if latency_repeats else 0
    return holdout_images * schedules + latency


def verification_images(images: int, steer_images: Optional[int], frontier_size: int, baselines: int) -> int:
    """The images a steered search keeps for verifying its frontier (``Search.verify``): one round of the points a
    file keeps, which are verified first (at most max(K, 2 + baselines), as above), each on the images its last
    screen lacks; 0 without steering (``steer_images`` None or every image). The rest of the frontier is verified
    with what the budget has left."""
    if steer_images is None or steer_images >= images:
        return 0
    return max(frontier_size, 2 + baselines) * (images - steer_images)

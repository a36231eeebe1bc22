"""What one worker process does (``optimizer/workers.py`` starts them as Ray actors): load the model and the quality
metric once, through the same backends as a run in one process, then render and score calibration images on request.

Every request is a pure function of its arguments (a mask, calibration items, and the uncached images of those items
for metrics that compare with them): the driver decides what is rendered and merges the results in its own order, so
they do not depend on which worker ran what, or when. Images travel as uint8 arrays (Ray hands numpy arrays over
without copying them). Nothing here imports Ray.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from PIL import Image

from .comfy_env import PACK_ROOT

CODE_FOLDERS = ("optimizer", "ecad_nodes")   # what a worker runs; the same on every node, or results may differ


def code_digest(root: Path = PACK_ROOT) -> str:
    """A digest of the pack's Python code, to check that every worker runs the driver's code."""
    digest = hashlib.sha256()
    for folder in CODE_FOLDERS:
        for path in sorted((root / folder).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def to_arrays(images: Sequence[Image.Image]) -> list[np.ndarray]:
    return [np.asarray(image.convert("RGB")) for image in images]


def to_images(arrays: Sequence[np.ndarray]) -> list[Image.Image]:
    return [Image.fromarray(np.asarray(a)) for a in arrays]


class WorkerSetupError(RuntimeError):
    """What stops a worker from loading the model (files missing on its node, ComfyUI not found there, ...): the
    problems a run in one process reports, and where."""

    def __init__(self, problems: Sequence[str], where: str):
        self.problems, self.where = list(problems), where
        super().__init__(f"{where}: " + "; ".join(self.problems))

    def __reduce__(self):  # Ray sends it to the driver pickled; the default would call __init__ with the message
        return type(self), (self.problems, self.where)


@dataclass(frozen=True)
class WorkerInfo:
    """Who a worker is and what it loaded; the driver checks that every worker agrees with it."""

    pid: int
    node: str
    device: str                 # as a run's settings store it: "cuda:0", "cpu (1 threads)"
    identity: dict              # the model files' identities on the worker's node
    code: str                   # code_digest() there
    comfyui: Optional[str]      # ComfyUI's version there (None for the toy model)
    family: str
    variant: Optional[str]
    layout: Any                 # ecad_nodes.schedule.Layout
    steps: int
    description: str            # the backend's line for the log
    metric: tuple               # the metric's name, short name and whether it compares with the uncached images
    load_seconds: float

    @property
    def where(self) -> str:
        return f"pid {self.pid} on {self.node}"


@dataclass
class RenderedReferences:
    """The uncached images of some calibration items, as ``evaluate.References`` holds them, images as arrays, with
    the linear-layer cost model (what quick calibration's greedy prices with) and the recorded runs, if asked for."""

    images: list[np.ndarray]
    scores: np.ndarray
    latency_ms: float
    image_cost: Any             # backend.ImageCost of the run's cost objective
    linear_cost: Any            # backend.ImageCost, linear layers only
    timings: Any                # evaluate.Timings
    recorded: list              # ecad_nodes.calibration.RecordingReport, one per sampled batch


class ModelWorker:
    """One process's model and metric. ``spec``: the run's ``RunSpec`` (paths as on the driver's node, which every node
    must share); ``cpu``: run on the CPU even where CUDA is available."""

    def __init__(self, spec, cpu: bool):
        self.spec = replace(spec, cpu=cpu)
        self.backend = self.metric = None

    def load(self) -> WorkerInfo:
        """Check the model files on this node as a run in one process checks them, then load the model and metric."""
        from .metrics import MetricUnavailable, make_metric
        from .pipeline import device_label, set_threads
        from .spec import model_kind
        started = time.perf_counter()
        where = f"pid {os.getpid()} on {socket.gethostname()}"
        models = model_kind(self.spec.preset)
        problems, resolved = models.check(self.spec)
        if problems:
            raise WorkerSetupError(problems, where)
        spec = self.spec = replace(self.spec, **resolved)
        if spec.metric == "image_reward":
            from .metrics.image_reward import find_files
            try:
                find_files(comfyui=spec.comfy_root, **spec.metric_options)
            except MetricUnavailable as e:
                raise WorkerSetupError([str(e)], where) from None
        set_threads(spec)
        self.backend = models.open(spec)
        try:
            self.metric = make_metric(spec.metric, **spec.metric_kwargs())
        except MetricUnavailable as e:
            raise WorkerSetupError([str(e)], where) from None
        comfyui = None
        if spec.comfy_root is not None:
            from ecad_nodes.families.mirror import comfyui_version
            comfyui = comfyui_version()
        b, m = self.backend, self.metric
        return WorkerInfo(os.getpid(), socket.gethostname(), device_label(spec), models.identity(spec), code_digest(),
                          comfyui, b.family, b.variant, b.layout, b.steps, b.describe(),
                          (m.name, m.short_name, m.needs_reference), time.perf_counter() - started)

    def _mask(self, bits: Optional[np.ndarray]):
        from ecad_nodes.schedule import Mask
        return None if bits is None else Mask(self.backend.layout, np.asarray(bits, dtype=bool))

    def render_and_score(self, mask_bits: Optional[np.ndarray], items: Sequence, *references: np.ndarray):
        """(scores, timings) of ``items`` rendered with the mask (its bits; None: no caching); ``references``: the
        uncached images of the items, for metrics that compare with them."""
        from .evaluate import render_and_score
        return render_and_score(self.backend, self.metric, self._mask(mask_bits), items,
                                to_images(references) if references else None)

    def render_references(self, items: Sequence, cost: str, record_lags: Optional[int]) -> RenderedReferences:
        """The uncached images of ``items``, scored, with the cost models; ``record_lags``: record the render as quick
        calibration does (``ChangeRecorder(lags)``), None: not."""
        from .evaluate import render_references
        recorder = None
        if record_lags is not None:
            from ecad_nodes.calibration import ChangeRecorder
            recorder = ChangeRecorder(record_lags)
        with recorder.recording() if recorder is not None else contextlib.nullcontext():
            made = render_references(self.backend, self.metric, items, cost)
        linear = self.backend.image_cost(attention_matmuls=False) if cost == "macs-attention" else made.image_cost
        return RenderedReferences(to_arrays(made.images), made.scores, made.latency_ms, made.image_cost, linear,
                                  made.timings, list(recorder.reports) if recorder is not None else [])

    def render(self, mask_bits: Optional[np.ndarray], items: Sequence):
        """``backend.render``, images as arrays."""
        rendered = self.backend.render(self._mask(mask_bits), items)
        rendered.images = to_arrays(rendered.images)
        return rendered

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()
            self.backend = None

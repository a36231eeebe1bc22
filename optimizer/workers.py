"""Rendering and scoring on Ray workers: one actor per GPU (or CPU process), each loading the model once, on this
machine (``--workers N``) or on a cluster (``--ray-address``).

The driver (this process) keeps everything that decides: the pymoo ask/tell loop, racing and surrogate decisions, the
image budget, the database and the checkpoints. The workers (``optimizer/model_worker.py``) compute pure functions of
(mask, calibration items, uncached images of those items). An evaluation goes out in the batches a run in one process
samples (``calibration.sampling_batches``), each batch to whichever worker is free
(``optimizer/ray_pool.py``), and its scores are merged in the evaluation's order: the same numbers, and so the same
frontier, whatever the number of workers and the order they finish in (bit for bit on CPUs, and with metrics that
score each image alone). The uncached references of a set of items are rendered on one worker, as one process renders
them (the cost model averages that render's batches; quick calibration records it).

Images are paid for before they are sent out (the ledger of ``budget.MeteredBackend``), once: a worker that dies has
its batch rendered again by another, not counted again. A worker that finds a problem on its node (model files
missing, ComfyUI not there) stops the run with the message a run in one process gives, naming the worker; one whose
model files, code, ComfyUI or device differ from the driver's is refused.
"""
from __future__ import annotations

import logging
import os
from dataclasses import replace
from typing import Optional, Sequence

import numpy as np
import ray
from ray.exceptions import RayTaskError

from .backend import ImageCost, Rendered
from .calibration import CalibrationItem, sampling_batches
from .comfy_env import PACK_ROOT
from .evaluate import Evaluator, References, Timings
from .model_worker import ModelWorker, WorkerInfo, WorkerSetupError, code_digest, to_arrays, to_images
from .ray_pool import ActorPool, Slot
from .spec import RunSpec, SetupError, model_kind


class RemoteMetric:
    """The driver's view of the metric the workers score with: what it is called and whether it compares with the
    uncached images; its weights stay on the workers."""

    def __init__(self, name: str, short_name: str, needs_reference: bool):
        self.name, self.short_name, self.needs_reference = name, short_name, needs_reference

    def score(self, *args, **kwargs):
        raise RuntimeError(f"the {self.name} metric scores on the workers (PooledEvaluator), not here")


def _problems(problems: Sequence[str]) -> str:
    return "\n  - " + "\n  - ".join(p.replace("\n", "\n    ") for p in problems)


class PooledEvaluator(Evaluator):
    """An ``Evaluator`` whose images are rendered and scored on the workers: an evaluation's images in the batches a
    run in one process samples, to whichever worker is free, scores merged in the evaluation's order. Images are paid
    for (``budget.MeteredBackend``'s ledger) before they are sent out."""

    def __init__(self, backend, metric, items: Sequence[CalibrationItem], cost: str = "macs", paired: bool = True):
        super().__init__(backend, metric, items, cost, paired)
        self.ledger = getattr(backend, "ledger", None)   # a MeteredBackend's: every image counted once
        self._shared: Optional[list] = None

    def _pay(self, images: int) -> None:
        if self.ledger is not None:
            self.ledger.spend(images)

    def _render_references(self, recorder=None) -> References:
        self._pay(len(self.items))
        return self.backend.render_references(self.items, self.cost_kind, recorder)

    def _render_and_score(self, mask, indices: Sequence[int]) -> tuple[np.ndarray, Timings]:
        self._pay(len(indices))
        batches, start = [], 0
        for batch in sampling_batches([self.items[i] for i in indices], self.backend.batch_size):
            batches.append(list(indices[start:start + len(batch)]))
            start += len(batch)
        references = None
        if self.metric.needs_reference:
            if self._shared is None:
                self._shared = self.backend.share(self.references)
            references = [[self._shared[i] for i in batch] for batch in batches]
        results = self.backend.render_and_score(mask, [[self.items[i] for i in b] for b in batches], references)
        timings = Timings()
        for _, t in results:
            timings.add(t)
        return np.concatenate([scores for scores, _ in results]), timings


class WorkerPool:
    """The workers, seen by a run as one backend (``backend.Backend``) whose evaluations are rendered and scored on
    them (``evaluator_type``). ``connect`` joins or starts Ray and plans the workers (before the run directory is
    checked: the device is one of the run's settings); ``open`` starts them and waits until each has loaded the
    model; ``close`` ends them (and the Ray instance it started)."""

    def __init__(self, spec: RunSpec, say=print):
        self.spec, self.say = spec, say
        self.actors: Optional[ActorPool] = None
        self.infos: list[WorkerInfo] = []
        self._ray_initialized_here = False   # ray.init was this pool's: close() calls ray.shutdown()
        self._costs: dict[bool, ImageCost] = {}
        self.family = self.variant = self.layout = self.metric = None
        self.steps = spec.steps
        self.batch_size = max(1, spec.batch_size)

    # ------------------------------------------------------------ connecting and planning

    @classmethod
    def connect(cls, spec: RunSpec, say=print) -> "WorkerPool":
        pool = cls(spec, say)
        try:
            pool._connect()
        except BaseException:
            pool.close()
            raise
        return pool

    def _connect(self) -> None:
        from .toy_backend import ToyModels
        spec = self.spec
        cpu_only = spec.cpu or isinstance(model_kind(spec.preset), ToyModels)  # the toy model runs on the CPU only
        local_gpus = 0
        if spec.ray_address is None and not cpu_only:
            import torch
            local_gpus = torch.cuda.device_count()
        self.threads = spec.threads or 1                        # per CPU worker; GPU workers: PyTorch's default
        if ray.is_initialized():  # a Ray this process already joined (a notebook, a test): used as it is
            self.where = "the Ray instance this process joined"
        elif spec.ray_address is not None:
            try:
                ray.init(address=spec.ray_address, log_to_driver=False, logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise SetupError(f"--ray-address {spec.ray_address}: cannot join a Ray cluster there ({e})") from None
            self._ray_initialized_here = True
            self.where = f"the Ray cluster at {spec.ray_address}"
        else:
            wanted = spec.workers * (1 if local_gpus else self.threads)
            ray.init(address="local", num_cpus=wanted, num_gpus=local_gpus, include_dashboard=False,
                     log_to_driver=False, logging_level=logging.WARNING)
            self._ray_initialized_here = True
            self.where = "this machine"
        resources = ray.cluster_resources()
        gpus = 0 if cpu_only else int(resources.get("GPU", 0))
        self.gpu = gpus > 0
        if self.gpu:
            self.size = spec.workers or gpus
            if self.size > gpus:
                raise SetupError(f"--workers {self.size}: {self.where} has {gpus} GPU(s), one worker each; ask for "
                                 f"at most {gpus}, or run CPU workers with --cpu")
            self.device = "cuda:0"  # what each worker's ComfyUI calls the one GPU Ray gives it
        else:
            if spec.workers is None:
                raise SetupError(f"{self.where} has no GPU: give --workers N to run N CPU workers there")
            self.size = spec.workers
            cpus = int(resources.get("CPU", 0))
            if self.size * self.threads > cpus:
                raise SetupError(f"--workers {self.size} with {self.threads} thread(s) each needs "
                                 f"{self.size * self.threads} CPUs; {self.where} has {cpus}")
            self.device = f"cpu ({self.threads} threads)"

    # ------------------------------------------------------------ starting the workers

    def open(self) -> "WorkerPool":
        """Start the workers and wait until every one has loaded the model and the metric."""
        spec = self.spec
        worker_spec = replace(spec, comfyui=str(spec.comfy_root) if spec.comfy_root else spec.comfyui,
                              threads=None if self.gpu else self.threads)
        env = {"PYTHONPATH": os.pathsep.join(p for p in (str(PACK_ROOT), os.environ.get("PYTHONPATH")) if p)}
        options = {"num_cpus": 1 if self.gpu else self.threads, "num_gpus": 1 if self.gpu else 0,
                   "max_restarts": 0, "runtime_env": {"env_vars": env}}
        self.actors = ActorPool(ray.remote(ModelWorker), (worker_spec, not self.gpu), options, self.size,
                                say=self.say, describe=self._name)
        try:
            self.infos = self.actors.start()
        except RayTaskError as e:
            if isinstance(e.cause, WorkerSetupError):
                raise SetupError(f"cannot start: a worker ({e.cause.where}) found problems on its machine:"
                                 + _problems(e.cause.problems)) from None
            raise
        self._check(self.infos)
        first = self.infos[0]
        self.family, self.variant, self.layout, self.steps = first.family, first.variant, first.layout, first.steps
        self.metric = RemoteMetric(*first.metric)
        for slot in self.actors.slots:
            if slot.info is not None:
                self.say(f"{self._name(slot)}: {slot.info.device}, loaded in {slot.info.load_seconds:.1f} s")
        return self

    def _name(self, slot: Slot) -> str:
        return f"worker {slot.index}" + (f" ({slot.info.where})" if slot.info is not None else "")

    def _check(self, infos: Sequence[WorkerInfo]) -> None:
        """Every worker must compute what the driver would: its device, model files, code and ComfyUI."""
        spec = self.spec
        identity = model_kind(spec.preset).identity(spec)
        comfyui = None
        if spec.comfy_root is not None:
            from ecad_nodes.families.mirror import comfyui_version
            comfyui = comfyui_version()
        code = code_digest()
        problems = []
        for info in infos:
            for what, theirs, ours in (("device", info.device, self.device), ("model files", info.identity, identity),
                                       ("code of this pack", info.code, code), ("ComfyUI", info.comfyui, comfyui)):
                if theirs != ours:
                    problems.append(f"worker {info.where}: its {what} differ(s) from the driver's: {theirs} "
                                    f"instead of {ours}")
        if problems:
            raise SetupError("cannot start: the workers must compute what this machine would (the same ComfyUI, pack "
                             "and model files on every node):" + _problems(problems))

    # ------------------------------------------------------------ the backend

    evaluator_type = PooledEvaluator

    def describe(self) -> str:
        return f"{self.infos[0].description}; on {self.size} workers on {self.where} (Ray {ray.__version__})"

    def image_cost(self, attention_matmuls: bool) -> ImageCost:
        cost = self._costs.get(attention_matmuls)
        if cost is None:
            raise RuntimeError("the cost model needs one full-computation render first (it reads the model's shapes)")
        return cost

    def render(self, mask, items: Sequence[CalibrationItem]) -> Rendered:
        """All of it on one worker (the first free one: latency rounds are timed on one device); images come back."""
        rendered = self.actors.call("render", None if mask is None else mask.bits, list(items))
        rendered.images = to_images(rendered.images)
        return rendered

    def render_references(self, items: Sequence[CalibrationItem], cost: str, recorder=None) -> References:
        """The uncached images of ``items`` on one worker, as one process renders them; ``recorder`` (a
        ``ChangeRecorder``) gets the recorded runs."""
        made = self.actors.call("render_references", list(items), cost, recorder.lags if recorder else None)
        self._costs = {cost == "macs-attention": made.image_cost, False: made.linear_cost}
        if recorder is not None:
            recorder.reports.extend(made.recorded)
        return References(to_images(made.images), made.scores, made.latency_ms, made.image_cost, made.timings)

    def share(self, images) -> list:
        """Images the workers will read (the uncached references), put into Ray's object store once."""
        return [ray.put(a) for a in to_arrays(images)]

    def render_and_score(self, mask, batches: Sequence[Sequence[CalibrationItem]],
                         references: Optional[Sequence[Sequence]]) -> list[tuple[np.ndarray, Timings]]:
        """Each batch rendered with ``mask`` and scored, on whichever worker is free; ``references``: per batch, the
        shared uncached images of its items (None: the metric needs none)."""
        bits = None if mask is None else mask.bits
        return self.actors.map([("render_and_score", (bits, list(batch), *(references[k] if references else ())))
                                for k, batch in enumerate(batches)])

    @property
    def waiting_seconds(self) -> float:
        """Time the driver spent waiting for the workers (the rest of a search's wall time is its own work)."""
        return self.actors.waiting_seconds if self.actors else 0.0

    def close(self) -> None:
        if self.actors is not None:
            self.actors.close()
            self.actors = None
        if self._ray_initialized_here:
            ray.shutdown()
            self._ray_initialized_here = False

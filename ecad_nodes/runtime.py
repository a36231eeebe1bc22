"""The caching engine of one sampling run, independent of ComfyUI.

A ``CacheRuntime`` is created when a sampling run starts and dropped when it ends, so nothing
carries over between runs. It knows the schedule mapped onto the run's steps and decides, per
component call, whether to compute or to reuse. Family adapters call
``runtime.component(bit, compute)`` from inside the model; everything else (which step it is, which
conditioning streams the batch holds, what is cached) lives here.

Caches are kept per conditioning stream (ComfyUI's cond ``uuid``), so cond and uncond may run in
one batch or in separate calls, and in another grouping at the reusing step than at the computing
step. A component's output is stored only if the next step reuses it, and dropped as soon as a step
recomputes it, so the cache holds exactly what the schedule still needs.
"""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterator, Mapping, Optional, Sequence, TypeVar

import numpy as np
import torch

from .costs import CostTable
from .schedule import Layout, Mask

T = TypeVar("T")

_ACTIVE: contextvars.ContextVar[Optional["CacheRuntime"]] = contextvars.ContextVar("ecad_active_runtime", default=None)


def active_runtime() -> Optional["CacheRuntime"]:
    """The runtime of the model call in progress on this thread, or None outside ECAD runs."""
    return _ACTIVE.get()


@dataclass(frozen=True)
class CallShape:
    """What must stay the same for cached outputs to be reusable."""

    input_shape: tuple[int, ...]    # latent shape without the batch dimension
    rows_per_stream: int
    dtype: torch.dtype
    device: torch.device


class _Entry:
    """One computed output for a batch of streams; rows are split evenly between the streams."""

    __slots__ = ("value", "streams", "nbytes")

    def __init__(self, value: Any, streams: tuple, nbytes: int):
        self.value, self.streams, self.nbytes = value, streams, nbytes


def _nbytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    return sum(_nbytes(v) for v in value)


def _compact(value: Any) -> Any:
    """A tensor that owns just its own memory: a stored view must not pin the larger tensor it views."""
    if isinstance(value, torch.Tensor):
        if value.untyped_storage().nbytes() > value.numel() * value.element_size():
            return value.clone(memory_format=torch.contiguous_format)
        return value
    return type(value)(_compact(v) for v in value)


def _rows(value: Any, start: int, stop: int) -> Any:
    if isinstance(value, torch.Tensor):
        return value[start:stop]
    return type(value)(_rows(v, start, stop) for v in value)


def _cat(parts: list) -> Any:
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(parts, dim=0)
    return type(parts[0])(_cat([p[i] for p in parts]) for i in range(len(parts[0])))


def _batch_size(value: Any) -> int:
    return value.shape[0] if isinstance(value, torch.Tensor) else _batch_size(value[0])


@dataclass
class RunReport:
    """What a finished run did, for logs, tests and benchmarks."""

    layout: Layout
    steps: int
    schedule_steps: int
    schedule_step_of: np.ndarray                 # workflow step -> schedule step
    planned: np.ndarray                          # (steps, bits) bool: the mask as run (first step forced)
    computed: dict[Hashable, np.ndarray]         # stream -> (steps, bits) count of computations
    reused: dict[Hashable, np.ndarray]           # stream -> (steps, bits) count of reuses
    evaluations: np.ndarray                      # model evaluations per step
    peak_cache_bytes: int
    resets: int
    uncached: int = 0                            # outputs not stored for the cache budget (recomputed instead)
    cache_budget_bytes: Optional[int] = None
    costs: Optional[CostTable] = None
    tokens: Any = None                           # the adapter's token counts of the run (for cost models)
    notes: list[str] = field(default_factory=list)

    @property
    def streams(self) -> list[Hashable]:
        return list(self.computed)

    def compute_fraction(self) -> float:
        done = sum(int(a.sum()) for a in self.computed.values())
        total = done + sum(int(a.sum()) for a in self.reused.values())
        return done / total if total else 1.0

    def mac_speedup_bound(self) -> Optional[float]:
        """Full MACs over the MACs this run's schedule needs (per stream, first step forced)."""
        if self.costs is None:
            return None
        return self.costs.speedup_bound(Mask(self.layout, self.planned))

    def summary(self) -> str:
        parts = [f"computed {100 * self.compute_fraction():.1f}% of component calls over {self.steps} steps"]
        bound = self.mac_speedup_bound()
        if bound is not None:
            parts.append(f"{bound:.2f}x fewer MACs in the model")
        parts.append(f"peak cache {self.peak_cache_bytes / 2**20:.1f} MiB")
        if self.uncached:
            parts.append(f"{self.uncached} output(s) over the cache budget of {self.cache_budget_bytes / 2**20:.0f} MiB "
                         "recomputed instead of reused")
        if self.resets:
            parts.append(f"{self.resets} stream cache reset(s) on shape/dtype/device change")
        return ", ".join(parts)


def keep_plan(compute: np.ndarray, consumers: Mapping[int, Sequence[int]]) -> np.ndarray:
    """(steps × bits): whether an output computed at that step must be stored for a later step.

    An output is read while the component is reused, until it is computed again. An internal output
    (a bit in ``consumers``) is read only at those steps at which one of its consumers computes.
    """
    keep = np.zeros_like(compute)
    keep[:-1] = ~compute[1:]
    for bit, users in consumers.items():
        read = ~compute[:, bit] & compute[:, list(users)].any(axis=1)
        read_later = False    # read at some step of the reuse run that starts after step s
        for s in range(compute.shape[0] - 1, -1, -1):
            keep[s, bit] = read_later
            read_later = bool(not compute[s, bit] and (read[s] or read_later))
    return keep


class CacheRuntime:
    def __init__(self, mask: Mask, sample_sigmas: Optional[Sequence[float]] = None,
                 schedule_step_of: Optional[np.ndarray] = None, schedule_steps: Optional[int] = None,
                 consumers: Optional[Mapping[int, Sequence[int]]] = None, cache_budget_bytes: Optional[int] = None):
        """``mask`` is already in workflow steps; ``sample_sigmas`` are the run's sigmas (steps + 1);
        ``consumers`` maps each internal component's bit to the bits of the components that read its output;
        ``cache_budget_bytes`` caps the cache (None: no cap); an output that does not fit is not stored, so
        the steps that would reuse it compute it instead: slower, never wrong, never out of memory."""
        mask = mask.with_first_step_computed()
        self.layout = mask.layout
        self.compute = mask.bits
        self.steps = mask.steps
        nbits = mask.layout.bits_per_step
        self.consumers = {int(b): tuple(int(u) for u in users) for b, users in (consumers or {}).items()}
        self.keep = keep_plan(self.compute, self.consumers)
        self.sigmas = None if sample_sigmas is None else np.asarray(
            [float(s) for s in sample_sigmas], dtype=np.float64)
        self.schedule_step_of = schedule_step_of if schedule_step_of is not None else np.arange(self.steps)
        self.schedule_steps = schedule_steps or self.steps

        self.step = 0
        self._entries: list[dict[Hashable, _Entry]] = [dict() for _ in range(nbits)]
        self._cache_bytes = 0
        self.peak_cache_bytes = 0
        self.cache_budget_bytes = cache_budget_bytes
        self.uncached = 0
        self.resets = 0
        self._stream_shapes: dict[Hashable, CallShape] = {}
        self._streams: tuple = ()
        self.hooks_pass_through = False
        self._computed: dict[Hashable, np.ndarray] = {}
        self._reused: dict[Hashable, np.ndarray] = {}
        self.evaluations = np.zeros(self.steps, dtype=np.int64)
        self.step_plain = self._plain(0)
        self.costs: Optional[CostTable] = None
        self.tokens: Any = None
        self.model: Optional[torch.nn.Module] = None  # the diffusion model being run, for adapters
        self.notes: list[str] = []

    # ------------------------------------------------------------ steps

    def step_of_sigma(self, sigma: Optional[float]) -> int:
        """The step whose noise level an evaluation at ``sigma`` belongs to.

        Step k covers sigmas from its own σ_k down to, not including, σ_(k+1): a midpoint
        evaluation (dpm_2) follows step k, and Heun's corrector for step k, evaluated at σ_(k+1),
        follows step k+1 like the predictor evaluated there. Samplers call their per-step callback
        after the first evaluation of a step, so it cannot tell the two apart; the noise level can.
        """
        if sigma is None or self.sigmas is None:
            return self.step
        at_or_above = int(np.count_nonzero(self.sigmas[:-1] >= sigma * (1 - 1e-4)))
        return min(max(at_or_above - 1, 0), self.steps - 1)

    def begin_evaluation(self, sigma: Optional[float] = None) -> int:
        """Start one model evaluation (all cond batches of it follow the same step's plan): the step of its noise level,
        also where that is an earlier step than the last evaluation's (heunpp2 evaluates σ_(i+2) before σ_(i+1) of its
        next iteration; a sampler that re-noises goes back to the steps of its noise levels). Going back is safe: an
        output the cache lacks is computed."""
        step = self.step_of_sigma(sigma)
        if step != self.step:
            self._enter_step(step)
        self.evaluations[step] += 1
        return step

    def _plain(self, step: int) -> bool:
        """Whether ``step`` computes every component and stores none: then the model runs exactly as unpatched
        (every hook calls straight through; the call is counted as a whole)."""
        return bool(self.compute[step].all()) and not self.keep[step].any()

    def _enter_step(self, step: int) -> None:
        self.step = step
        self.step_plain = self._plain(step)
        # Whatever this step recomputes is stale now: free it before the new outputs arrive.
        for bit in np.flatnonzero(self.compute[step]):
            if self._entries[bit]:
                self._drop(bit)

    # ------------------------------------------------------------ calls

    @contextlib.contextmanager
    def call(self, streams: Sequence[Hashable], shape: CallShape) -> Iterator["CacheRuntime"]:
        """One model call on a batch holding ``shape.rows_per_stream`` rows for each stream in order."""
        self._streams = tuple(streams)
        for s in self._streams:
            known = self._stream_shapes.get(s)
            if known is not None and known != shape:
                # Only this stream's outputs are stale; other streams (e.g. other context windows) keep theirs.
                self._forget_stream(s)
                self.resets += 1
                self.notes.append(f"step {self.step}: input of stream {s!r} changed from {known} to {shape}; "
                                  "its caches were reset")
            self._stream_shapes[s] = shape
            if s not in self._computed:
                self._computed[s] = np.zeros(self.compute.shape, dtype=np.int32)
                self._reused[s] = np.zeros(self.compute.shape, dtype=np.int32)
        token = _ACTIVE.set(self)
        try:
            yield self
            if self.step_plain:  # no component was routed: every one of them computed, for every stream
                for s in self._streams:
                    self._computed[s][self.step] += 1
        finally:
            _ACTIVE.reset(token)

    @contextlib.contextmanager
    def passthrough(self) -> Iterator[None]:
        """Component hooks run their original forward (a mirrored block forward routes its components itself)."""
        previous, self.hooks_pass_through = self.hooks_pass_through, True
        try:
            yield
        finally:
            self.hooks_pass_through = previous

    def computes_all_and_keeps_none(self, bits: Sequence[int]) -> bool:
        """Whether the current call computes every one of ``bits`` and stores none of them: a block can then
        run as the unpatched model runs it."""
        step = self.step
        return bool(self.compute[step, bits].all()) and not self.keep[step, bits].any()

    def count_computed(self, bits: Sequence[int]) -> None:
        for s in self._streams:
            self._computed[s][self.step, bits] += 1

    def force_compute(self, bits: Sequence[int], why: str) -> None:
        """From the current step on, always compute ``bits`` (a granularity that cannot skip them)."""
        bits = np.asarray(bits, dtype=np.int64)
        if self.compute[self.step:, bits].all():
            return
        self.compute[self.step:, bits] = True
        self.keep = keep_plan(self.compute, self.consumers)
        self.step_plain = self._plain(self.step)
        self.notes.append(f"step {self.step}: {len(bits)} component(s) computed at every step from here on: {why}")

    def will_compute(self, bit: int) -> bool:
        """Whether ``component(bit, ...)`` would compute in the current call."""
        return bool(self.compute[self.step, bit]) or not all(s in self._entries[bit] for s in self._streams)

    def needed(self, bit: int) -> bool:
        """Whether the current call must produce component ``bit``: the mask computes it here (refreshing
        its cache), or it is internal and one of its consumers computes."""
        users = self.consumers.get(bit)
        return users is None or bool(self.compute[self.step, bit]) or any(self.will_compute(u) for u in users)

    def component_if_needed(self, bit: int, compute: Callable[[], T]) -> Optional[T]:
        """``component(bit, compute)``, or None (counted as reused) when nothing in this call reads it."""
        if self.needed(bit):
            return self.component(bit, compute)
        for s in self._streams:
            self._reused[s][self.step, bit] += 1
        return None

    def component(self, bit: int, compute: Callable[[], T]) -> T:
        """The output of component ``bit`` for the current call: computed or taken from the cache."""
        step, streams = self.step, self._streams
        entries = self._entries[bit]
        if self.compute[step, bit] or not all(s in entries for s in streams):
            value = compute()
            if self.keep[step, bit]:
                self._store(bit, streams, value)
            for s in streams:
                self._computed[s][step, bit] += 1
            return value
        for s in streams:
            self._reused[s][step, bit] += 1
        return self._load(bit, streams)

    # ------------------------------------------------------------ storage

    def _store(self, bit: int, streams: tuple, value: Any) -> None:
        nbytes = _nbytes(value)
        if self.cache_budget_bytes is not None and self._cache_bytes + nbytes > self.cache_budget_bytes:
            if not self.uncached:
                self.notes.append(f"step {self.step}: the cache budget of {self.cache_budget_bytes / 2**20:.0f} MiB "
                                  "is full; outputs that do not fit are recomputed instead of reused")
            self.uncached += 1
            return
        entries = self._entries[bit]
        value = _compact(value)
        entry = _Entry(value, streams, nbytes)
        for s in streams:
            old = entries.get(s)
            entries[s] = entry
            if old is not None and old is not entry and not any(entries.get(t) is old for t in old.streams):
                self._cache_bytes -= old.nbytes
        self._cache_bytes += entry.nbytes
        self.peak_cache_bytes = max(self.peak_cache_bytes, self._cache_bytes)

    def _load(self, bit: int, streams: tuple) -> Any:
        entries = self._entries[bit]
        first = entries[streams[0]]
        if first.streams == streams and all(entries[s] is first for s in streams):
            return first.value
        parts = []
        for s in streams:
            e = entries[s]
            rows = _batch_size(e.value) // len(e.streams)
            i = e.streams.index(s)
            parts.append(_rows(e.value, i * rows, (i + 1) * rows))
        return _cat(parts)

    def _drop(self, bit: int) -> None:
        unique = {id(e): e for e in self._entries[bit].values()}
        self._cache_bytes -= sum(e.nbytes for e in unique.values())
        self._entries[bit].clear()

    def _forget_stream(self, stream: Hashable) -> None:
        for entries in self._entries:
            old = entries.pop(stream, None)
            if old is not None and not any(entries.get(t) is old for t in old.streams):
                self._cache_bytes -= old.nbytes

    def reset_caches(self) -> None:
        for bit, entries in enumerate(self._entries):
            if entries:
                self._drop(bit)

    @property
    def cache_bytes(self) -> int:
        return self._cache_bytes

    # ------------------------------------------------------------ end of run

    def report(self) -> RunReport:
        return RunReport(
            layout=self.layout, steps=self.steps, schedule_steps=self.schedule_steps,
            schedule_step_of=self.schedule_step_of, planned=self.compute.copy(),
            computed=dict(self._computed), reused=dict(self._reused), evaluations=self.evaluations.copy(),
            peak_cache_bytes=self.peak_cache_bytes, resets=self.resets, uncached=self.uncached,
            cache_budget_bytes=self.cache_budget_bytes, costs=self.costs, tokens=self.tokens,
            notes=list(self.notes))

    def close(self) -> RunReport:
        report = self.report()
        self.reset_caches()
        return report


# ------------------------------------------------------------ which runtime a sampling run gets

RuntimeFactory = Callable[..., CacheRuntime]
_FACTORY: contextvars.ContextVar[Optional[RuntimeFactory]] = contextvars.ContextVar("ecad_runtime_factory", default=None)


@contextlib.contextmanager
def runtimes_from(factory: RuntimeFactory) -> Iterator[None]:
    """Sampling runs started on this thread inside the block get their runtime from ``factory`` (called as
    ``CacheRuntime`` is) instead of a plain ``CacheRuntime``: how quick calibration records an uncached run
    through the same patching, hooks and mirrors as every cached run (``ecad_nodes.calibration``)."""
    token = _FACTORY.set(factory)
    try:
        yield
    finally:
        _FACTORY.reset(token)


def new_runtime(mask: Mask, **kwargs: Any) -> CacheRuntime:
    """The runtime of one sampling run: a ``CacheRuntime``, or what ``runtimes_from`` installed."""
    factory = _FACTORY.get()
    return (factory or CacheRuntime)(mask, **kwargs)

"""Recording how much every component's output changes from one sampling step to the next.

Quick calibration starts from uncached sampling runs. During such a run a ``RecordingRuntime``
computes every component at every step, like an all-compute schedule, but routes each of them
through the runtime (no all-compute fast path: hooks and mirrored block forwards call
``component``/``component_if_needed`` for every component, internal ones included). Each output is
compared with the same component's outputs at the ``lags`` steps before, per conditioning stream
(the rows the call holds for that stream):

    change(lag k, step s, component) = ‖y_s − y_(s−k)‖₁ / ‖y_(s−k)‖₁        (relative L1)

This is what reusing at step s the output computed at step s−k gets wrong, relative to the
output's size (several steps apart it is measured, not summed from one-step changes, which would
overstate it wherever outputs move back and forth). Only the last ``lags`` steps' outputs of each
component and stream are kept, and of each a fixed, evenly strided subset of at most
``SAMPLE_ELEMENTS`` values (float32, 128 KiB): with the default 4 lags about 110 MiB for FLUX.1-dev
without CFG, 215 MiB with, whatever the image size. Changes are summed on the model's device and
read back once, when the run ends, so recording adds no device synchronisation per component.

Components that never go through the runtime (a block whose mirrored forward is not trusted on
this ComfyUI computes its components without a submodule of their own unrouted) have no recorded
change: NaN, and ``ecad_nodes.greedy`` never reuses them.

Use it through any sampling code that builds its runtime with ``runtime.new_runtime`` (ECAD's
patching for ComfyUI models, the optimizer's toy sampler)::

    recorder = ChangeRecorder()
    with recorder.recording():
        ...sample the model patched with an all-compute schedule...
    changes = recorder.changes()     # ComponentChanges: mean change per (lag, step, bit) over runs and streams
    staleness = changes.staleness()  # (bit, from step, to step), what ``ecad_nodes.greedy`` takes
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Hashable, Iterator, Optional

import numpy as np
import torch

from .runtime import CacheRuntime, RunReport, runtimes_from
from .schedule import Layout, Mask

#: Values of one output (one stream's rows) compared between steps; larger outputs are subsampled with a fixed stride.
SAMPLE_ELEMENTS = 1 << 15
#: How many steps back outputs are compared (each kept output costs at most SAMPLE_ELEMENTS float32 values).
DEFAULT_LAGS = 4


def _tensors(value: Any) -> list[torch.Tensor]:
    """The tensors of a component's output (a tensor, or nested tuples/lists such as FLUX's (img, txt) attention)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return []


def _stride(elements: int) -> int:
    """An odd stride that keeps at most SAMPLE_ELEMENTS of ``elements`` values. Odd, so that with the power-of-two
    widths of transformer layers it walks through every channel instead of always landing on the same few."""
    stride = max(1, math.ceil(elements / SAMPLE_ELEMENTS))
    return stride if stride % 2 else stride + 1


def _sample(parts: list[torch.Tensor]) -> torch.Tensor:
    """One stream's output as a float32 vector of at most SAMPLE_ELEMENTS values, the same positions at every step."""
    flat = torch.cat([p.reshape(-1) for p in parts]) if len(parts) > 1 else parts[0].reshape(-1)
    return flat[::_stride(flat.numel())].float().clone()


@dataclass
class RecordingReport(RunReport):
    """A recorded run: the usual run report plus, per conditioning stream, the (steps × bits) relative L1 change
    of each component's output from the previous step (mean over the step's evaluations; NaN where not observed:
    the first step, components that were never routed)."""

    lags: int = 1
    changes: dict[Hashable, np.ndarray] = field(default_factory=dict)
    sizes: dict[Hashable, np.ndarray] = field(default_factory=dict)   # stream -> (steps, bits) mean |output|


def _means(sums: dict[Hashable, torch.Tensor], counts: dict[Hashable, np.ndarray]) -> dict[Hashable, np.ndarray]:
    """Per stream, sums over counts read back from the device; NaN where nothing was counted."""
    out = {}
    for stream, total in sums.items():
        n = counts[stream]
        out[stream] = np.where(n > 0, total.cpu().double().numpy() / np.maximum(n, 1), np.nan)
    return out


class RecordingRuntime(CacheRuntime):
    """A runtime that computes every component at every step and records each output's change (module docstring)."""

    def __init__(self, mask: Mask, lags: int = DEFAULT_LAGS, on_close: Optional[Callable[[RecordingReport], None]] = None,
                 **kwargs: Any):
        kwargs.pop("cache_budget_bytes", None)  # nothing is cached
        super().__init__(Mask.full(mask.layout, mask.steps), **kwargs)
        if lags < 1:
            raise ValueError(f"lags must be at least 1, got {lags}")
        self.lags = lags
        self._on_close = on_close
        # (bit, stream) -> [(step, output sample)] of the last ``lags`` earlier steps, oldest first
        self._history: dict[tuple[int, Hashable], list[tuple[int, torch.Tensor]]] = {}
        self._current: dict[tuple[int, Hashable], torch.Tensor] = {}    # last output of the step in progress
        self._sums: dict[Hashable, torch.Tensor] = {}                    # stream -> (lags, steps, bits) on the device
        self._counts: dict[Hashable, np.ndarray] = {}                    # stream -> (lags, steps, bits) comparisons
        self._sizes: dict[Hashable, torch.Tensor] = {}                   # stream -> (steps, bits) mean |output|
        self._size_counts: dict[Hashable, np.ndarray] = {}

    # Every component goes through ``component``: never the all-compute fast paths of the step or of a block.
    def _plain(self, step: int) -> bool:
        return False

    def computes_all_and_keeps_none(self, bits) -> bool:
        return False

    def _enter_step(self, step: int) -> None:
        done = self.step
        for key, sample in self._current.items():
            history = self._history.setdefault(key, [])
            history.append((done, sample))
            del history[:-self.lags]
        self._current = {}
        super()._enter_step(step)

    def component(self, bit: int, compute):
        value = super().component(bit, compute)  # the mask computes everything and stores nothing
        self._record(bit, value)
        return value

    def _record(self, bit: int, value: Any) -> None:
        parts = _tensors(value)
        if not parts:
            return
        streams = self._streams
        rows = parts[0].shape[0] if parts[0].ndim else 0
        if streams and rows and rows % len(streams) == 0 and all(p.ndim and p.shape[0] == rows for p in parts):
            per = rows // len(streams)
            by_stream = [(s, [p[i * per:(i + 1) * per] for p in parts]) for i, s in enumerate(streams)]
        else:  # an output whose rows are not the call's batch: one record for the streams together
            by_stream = [(tuple(streams), parts)]
        for stream, stream_parts in by_stream:
            sample = _sample(stream_parts)
            key = (bit, stream)
            sizes = self._sizes.get(stream)
            if sizes is None:
                sizes = self._sizes[stream] = torch.zeros(self.compute.shape, dtype=torch.float32, device=sample.device)
                self._size_counts[stream] = np.zeros(self.compute.shape, dtype=np.int64)
            sizes[self.step, bit] += sample.abs().mean()
            self._size_counts[stream][self.step, bit] += 1
            for earlier, previous in self._history.get(key, ()):
                lag = self.step - earlier
                if not 1 <= lag <= self.lags or previous.shape != sample.shape:
                    continue
                change = (sample - previous).abs().sum() / previous.abs().sum().clamp_min(torch.finfo(torch.float32).tiny)
                sums = self._sums.get(stream)
                if sums is None:
                    shape = (self.lags, *self.compute.shape)
                    sums = self._sums[stream] = torch.zeros(shape, dtype=torch.float32, device=sample.device)
                    self._counts[stream] = np.zeros(shape, dtype=np.int64)
                sums[lag - 1, self.step, bit] += change
                self._counts[stream][lag - 1, self.step, bit] += 1
            self._current[key] = sample

    def report(self) -> RecordingReport:
        base = super().report()
        return RecordingReport(**{f.name: getattr(base, f.name) for f in fields(RunReport)}, lags=self.lags,
                               changes=_means(self._sums, self._counts), sizes=_means(self._sizes, self._size_counts))

    def close(self) -> RecordingReport:
        report = super().close()
        self._history.clear()
        self._current.clear()
        if self._on_close is not None:
            self._on_close(report)
        return report


@dataclass
class ComponentChanges:
    """Recorded changes, averaged over every recorded run and stream: ``change[k − 1, s, b]`` is the mean relative L1
    difference between component ``b``'s outputs at steps s and s − k (NaN where never observed, e.g. s < k)."""

    layout: Layout
    change: np.ndarray          # (lags, steps, bits) float64
    runs: int
    size: Optional[np.ndarray] = None    # (steps, bits): mean absolute value of each output
    reports: list[RecordingReport] = field(default_factory=list, repr=False)

    @property
    def steps(self) -> int:
        return self.change.shape[1]

    @property
    def lags(self) -> int:
        return self.change.shape[0]

    @property
    def step_change(self) -> np.ndarray:
        """(steps, bits): the change from the previous step (0 at the first step, which nothing precedes)."""
        out = self.change[0].copy()
        out[0] = 0.0
        return out

    def staleness(self) -> np.ndarray:
        """(bits, steps, steps): ``S[b, a, u]``, how far component b's output at step u is from its output at step a < u
        (what reusing at u the output computed at a gets wrong), relative to the output's size at a. Measured up to
        ``lags`` steps apart; farther, the distance to step u − 1 plus the change from u − 1 to u. NaN where unknown;
        0 for u ≤ a."""
        lags, steps, bits = self.change.shape
        s = np.zeros((bits, steps, steps))
        for u in range(1, steps):
            for a in range(u - 1, -1, -1):
                lag = u - a
                measured = self.change[lag - 1, u] if lag <= lags else np.full(bits, np.nan)
                extended = s[:, a, u - 1] + self.change[0, u] if lag > 1 else np.full(bits, np.nan)
                s[:, a, u] = np.where(np.isnan(measured), extended, measured)
        return s


class ChangeRecorder:
    """Makes every sampling run started inside ``recording()`` a recording run (see the module docstring) and keeps
    their reports. It is the runtime factory ``runtime.runtimes_from`` takes."""

    def __init__(self, lags: int = DEFAULT_LAGS) -> None:
        self.lags = lags
        self.reports: list[RecordingReport] = []

    def __call__(self, mask: Mask, **kwargs: Any) -> RecordingRuntime:
        return RecordingRuntime(mask, lags=self.lags, on_close=self.reports.append, **kwargs)

    @contextlib.contextmanager
    def recording(self) -> Iterator["ChangeRecorder"]:
        with runtimes_from(self):
            yield self

    def changes(self) -> ComponentChanges:
        if not self.reports:
            raise RuntimeError("no sampling run was recorded: sample inside ChangeRecorder.recording() with a model "
                               "patched by ECAD")
        first = self.reports[0]
        for r in self.reports:
            if r.layout != first.layout or r.steps != first.steps or r.lags != first.lags:
                raise ValueError(f"recorded runs differ: {first.layout.describe()} over {first.steps} steps, then "
                                 f"{r.layout.describe()} over {r.steps} steps")
        shape = (first.steps, first.layout.bits_per_step)
        change = _nan_mean([c for r in self.reports for c in r.changes.values()], (first.lags, *shape))
        size = _nan_mean([c for r in self.reports for c in r.sizes.values()], shape)
        return ComponentChanges(first.layout, change, len(self.reports), size, list(self.reports))


def _nan_mean(arrays: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """Element-wise mean over the arrays that observed each element; NaN where none did."""
    if not arrays:
        return np.full(shape, np.nan)
    stack = np.stack(arrays)
    seen = ~np.isnan(stack)
    return np.where(seen.any(axis=0), np.nansum(stack, axis=0) / np.maximum(seen.sum(axis=0), 1), np.nan)

"""Checks every family adapter must pass, shared by the ``test_family_*`` modules (ComfyUI tests).

Each takes a ComfyUI ModelPatcher built from the family's own classes and its tiny spec, samples
through ``comfy.sample.sample`` and asserts; the family modules choose sizes, cfg and conditioning.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import pytest
import torch

from ecad_nodes.choice import ScheduleChoice
from ecad_nodes.heuristics import HEURISTICS, NO_CACHING
from ecad_nodes.runtime import CacheRuntime
from ecad_nodes.schedule import Layout, Mask
from support import assert_ran_as_planned, last_report, sample

FORA2, FORA3 = HEURISTICS[1], HEURISTICS[2]


def apply(model: Any, choice: ScheduleChoice) -> Any:
    from ecad_nodes.patching import apply_ecad
    return apply_ecad(model, choice)


def layout_of(model: Any) -> Layout:
    from ecad_nodes.families import adapter_for
    return adapter_for(model.model).layout(model.model.diffusion_model)


def random_choice(model: Any, steps: int, keep: float, seed: int) -> ScheduleChoice:
    layout = layout_of(model)
    bits = np.random.default_rng(seed).random((steps, layout.bits_per_step)) < keep
    bits[0] = True
    return ScheduleChoice.of_mask(f"random{seed}", Mask(layout, bits))


def assert_all_compute_is_identical(model: Any, spec: Any, **kwargs) -> None:
    """The all-compute schedule gives exactly the unpatched model's samples."""
    reference = sample(model, spec, **kwargs)
    patched = apply(model, ScheduleChoice.of_heuristic(NO_CACHING))
    out = sample(patched, spec, **kwargs)
    assert torch.equal(out, reference), f"max difference {(out - reference).abs().max().item():.3g}"
    report = last_report(patched)
    assert report.compute_fraction() == 1.0
    assert len(report.streams) == (2 if kwargs.get("cfg", 1.0) != 1.0 else 1)


def assert_runs_as_planned(model: Any, spec: Any, steps: int = 6, seed: int = 11, **kwargs) -> None:
    """A random mask (first step full): every component of each stream computes exactly where it says."""
    choice = random_choice(model, steps, keep=0.35, seed=seed)
    patched = apply(model, choice)
    out = sample(patched, spec, steps=steps, **kwargs)
    assert torch.isfinite(out).all()
    report = last_report(patched)
    assert list(report.evaluations) == [1] * steps
    assert report.reused[report.streams[0]].sum() > 0
    assert_ran_as_planned(report, choice.point.mask.bits, streams=2 if kwargs.get("cfg", 1.0) != 1.0 else 1)


def assert_internal_outputs_are_cached_only_for_their_consumers(model: Any, spec: Any, monkeypatch: Any,
                                                                 seeds=(5, 6, 7), **kwargs) -> None:
    """An internal component (its output reaches the block output only through another component) is read,
    and kept, only for steps at which a consumer computes: samples are bit-identical to keeping every output
    the next step reuses, the cache is smaller, and FORA-2 keeps no internal output at all."""
    from ecad_nodes.families import adapter_for
    adapter = adapter_for(model.model)
    consumers = adapter.consumers(layout_of(model))
    assert consumers, f"{adapter.family} declares no internal components"
    choices = [random_choice(model, 6, keep=0.5, seed=seed) for seed in seeds] + [ScheduleChoice.of_heuristic(FORA2)]
    lean, lean_peaks = [], []
    for choice in choices:
        patched = apply(model, choice)
        lean.append(sample(patched, spec, **kwargs))
        lean_peaks.append(last_report(patched).peak_cache_bytes)
    fora2_bits = last_report(patched).planned
    monkeypatch.setattr(type(adapter), "consumers", lambda self, layout: {})  # every reused output kept, none internal
    for choice, out, peak in zip(choices, lean, lean_peaks):
        patched = apply(model, choice)
        assert torch.equal(sample(patched, spec, **kwargs), out), choice.label
        assert peak <= last_report(patched).peak_cache_bytes
    assert lean_peaks[-1] < last_report(patched).peak_cache_bytes  # FORA-2: internal outputs were all dropped
    assert not fora2_bits[1].any()  # (FORA-2's second step reuses everything)


def assert_flops_follow_the_cost_model(model: Any, spec: Any, **kwargs) -> list[float]:
    """PyTorch's FLOP count equals the adapter's MACs (attention products included) for what each schedule computes.

    Returns the measured MACs of no caching, FORA-2 and FORA-3.
    """
    from torch.utils.flop_counter import FlopCounterMode
    measured, predicted = [], []
    for heuristic in (NO_CACHING, FORA2, FORA3):
        patched = apply(model, ScheduleChoice.of_heuristic(heuristic))
        with FlopCounterMode(display=False) as counter:
            sample(patched, spec, steps=6, **kwargs)
        report = last_report(patched)
        measured.append(counter.get_total_flops() / 2)
        predicted.append(report.costs.mask_macs(Mask(report.layout, report.planned)))
    for m, p in zip(measured, predicted):
        assert m == pytest.approx(p, rel=0.01)
    # The savings themselves are measured too, not only totals (the per-step constant can dominate tiny models).
    block_macs_per_step = float(report.costs.per_bit.sum())
    assert block_macs_per_step > 0
    assert measured[0] - measured[1] == pytest.approx(3 * block_macs_per_step, rel=0.01)  # FORA-2 skips steps 1, 3, 5
    assert measured[0] - measured[2] == pytest.approx(4 * block_macs_per_step, rel=0.01)  # FORA-3 skips 1, 2, 4, 5
    return measured


def assert_fora2_behaviour(model: Any, spec: Any, steps: int = 6, **kwargs) -> None:
    """FORA-2 computes every component on even steps only, changes the output, stays finite, leaves the base model alone."""
    before = sample(model, spec, steps=steps, **kwargs)
    patched = apply(model, ScheduleChoice.of_heuristic(FORA2))
    out = sample(patched, spec, steps=steps, **kwargs)
    report = last_report(patched)
    assert torch.isfinite(out).all()
    assert not torch.equal(out, before)
    bits = layout_of(model).bits_per_step
    for stream in report.streams:
        per_step = report.computed[stream].sum(axis=1)
        assert list(per_step) == [bits if s % 2 == 0 else 0 for s in range(steps)]
        assert report.computed[stream].sum() == report.reused[stream].sum() == bits * steps // 2
    assert torch.equal(sample(model, spec, steps=steps, **kwargs), before)


def _tensors(value: Any) -> list[torch.Tensor]:
    return [value] if isinstance(value, torch.Tensor) else [t for v in value for t in _tensors(v)]


@contextmanager
def cache_write_guard(monkeypatch: Any) -> Iterator[list[int]]:
    """Fails if anything writes into a cached output between its storing and each reuse or its release.

    Yields a list that receives one entry per checked reuse, so a test can assert reuses happened.
    """
    snapshots: dict[int, list[torch.Tensor]] = {}
    checked: list[int] = []
    original_store, original_load, original_drop = CacheRuntime._store, CacheRuntime._load, CacheRuntime._drop

    def check(rt: CacheRuntime, bit: int) -> None:
        for entry in {id(e): e for e in rt._entries[bit].values()}.values():
            kept = snapshots[id(entry.value)]
            now = _tensors(entry.value)
            assert all(torch.equal(a, b) for a, b in zip(now, kept)), \
                f"the cached output of bit {bit} was written into after it was stored (step {rt.step})"

    def store(rt, bit, streams, value):
        original_store(rt, bit, streams, value)
        entry = rt._entries[bit][streams[0]]
        snapshots[id(entry.value)] = [t.clone() for t in _tensors(entry.value)]

    def load(rt, bit, streams):
        check(rt, bit)
        checked.append(bit)
        return original_load(rt, bit, streams)

    def drop(rt, bit):
        check(rt, bit)
        original_drop(rt, bit)

    monkeypatch.setattr(CacheRuntime, "_store", store)
    monkeypatch.setattr(CacheRuntime, "_load", load)
    monkeypatch.setattr(CacheRuntime, "_drop", drop)
    try:
        yield checked
    finally:
        monkeypatch.setattr(CacheRuntime, "_store", original_store)
        monkeypatch.setattr(CacheRuntime, "_load", original_load)
        monkeypatch.setattr(CacheRuntime, "_drop", original_drop)


def assert_cached_outputs_stay_untouched(model: Any, spec: Any, monkeypatch: Any, **kwargs) -> None:
    """FORA-3 reuses every cached output twice (steps 1, 2 and 4, 5); none may change meanwhile."""
    patched = apply(model, ScheduleChoice.of_heuristic(FORA3))
    with cache_write_guard(monkeypatch) as checked:
        out = sample(patched, spec, steps=6, **kwargs)
    assert torch.isfinite(out).all()
    from ecad_nodes.families import adapter_for
    layout = layout_of(model)
    read = layout.bits_per_step - len(adapter_for(model.model).consumers(layout))  # internal outputs: never read by FORA
    assert len(checked) >= 4 * read  # each bit reused at steps 1, 2, 4 and 5 (per call)

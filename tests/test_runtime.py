"""The caching engine on plain PyTorch (no ComfyUI): steps, streams, reuse, liveness, accounting."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ecad_nodes.heuristics import HEURISTICS, fora_bits
from ecad_nodes.runtime import CacheRuntime, CallShape, active_runtime, keep_plan
from ecad_nodes.schedule import BlockGroup, Layout, Mask
from optimizer.toy_dit import ToyConfig, ToyDiT, random_inputs, random_mask, sample

LAYOUT = Layout("toy", (BlockGroup("blocks", 2, ("a", "b")),))
SHAPE = CallShape((4, 8, 8), 1, torch.float32, torch.device("cpu"))


def runtime_for(bits, layout=LAYOUT) -> CacheRuntime:
    """A runtime over evenly spaced sigmas; evaluation k of a test happens at sigma k."""
    bits = np.asarray(bits, dtype=bool)
    return CacheRuntime(Mask(layout, bits), sample_sigmas=np.linspace(1.0, 0.0, bits.shape[0] + 1).tolist())


def at_step(rt: CacheRuntime, step: int) -> None:
    assert rt.begin_evaluation(float(rt.sigmas[step])) == step


def marker_output(rt: CacheRuntime, streams, bit):
    """What a component 'computes': one row per stream, tagged with (step, stream, bit)."""
    return torch.tensor([[rt.step, hash(s) % 1000, bit] for s in streams], dtype=torch.float32)


def run_component(rt, streams, bit, shape=SHAPE):
    calls = []

    def compute():
        calls.append(bit)
        return marker_output(rt, streams, bit)
    with rt.call(streams, shape):
        assert active_runtime() is rt
        out = rt.component(bit, compute)
    assert active_runtime() is None
    return out, bool(calls)


def test_reuse_returns_the_output_of_the_last_computed_step_for_the_same_stream_and_rows():
    bits = np.array([[1, 1, 1, 1], [0, 1, 0, 1], [0, 0, 1, 1], [1, 0, 0, 1]], dtype=bool)
    rt = runtime_for(bits)
    last_computed = {}
    for step in range(4):
        at_step(rt, step)
        # Cond and uncond share a batch at even steps and run separately at odd steps.
        groupings = [("u", "c")] if step % 2 == 0 else [("c",), ("u",)]
        for streams in groupings:
            for bit in range(4):
                out, computed = run_component(rt, streams, bit)
                assert computed == bool(bits[step, bit])
                for row, s in enumerate(streams):
                    if computed:
                        last_computed[(s, bit)] = step
                    expected_step = last_computed[(s, bit)]
                    assert out[row].tolist() == [expected_step, hash(s) % 1000, bit]


def test_a_missing_stream_is_computed_even_at_a_reuse_step():
    rt = runtime_for([[1, 1, 1, 1], [0, 0, 0, 0]])
    at_step(rt, 0)
    run_component(rt, ("c",), 0)
    at_step(rt, 1)
    _, computed_c = run_component(rt, ("c",), 0)
    _, computed_u = run_component(rt, ("u", "c"), 0)  # "u" never ran: nothing to reuse
    assert not computed_c and computed_u
    report = rt.close()
    assert report.computed["u"][1, 0] == 1 and report.reused["c"][1, 0] == 1


def test_outputs_are_kept_only_while_a_later_step_reuses_them():
    # bit 0: computed, reused, reused, computed; bit 1: computed every step (never stored)
    bits = np.array([[1, 1], [0, 1], [0, 1], [1, 1]], dtype=bool)
    layout = Layout("toy", (BlockGroup("blocks", 1, ("a", "b")),))
    rt = runtime_for(bits, layout)
    live = []
    for step in range(4):
        at_step(rt, step)
        for bit in range(2):
            run_component(rt, ("c",), bit)
        live.append(rt.cache_bytes)
    one_entry = marker_output(rt, ("c",), 0).numel() * 4
    # Stored at step 0 for steps 1-2; dropped when step 3 recomputes it; nothing stored at step 3.
    assert live == [one_entry, one_entry, one_entry, 0]
    assert rt.peak_cache_bytes == one_entry
    assert rt.close().peak_cache_bytes == one_entry and rt.cache_bytes == 0


def test_an_internal_output_is_kept_only_until_the_last_step_a_consumer_reads_it():
    compute = np.array([[1, 1], [0, 0], [0, 1], [0, 0], [1, 0], [0, 0]], dtype=bool)  # bit 0 feeds bit 1
    keep = keep_plan(compute, {0: (1,)})
    # bit 0 from step 0 (or computed at step 1 for a stream that was missing) is read at step 2, where
    # bit 1 computes with bit 0 reused; computed later than that, it is never read
    assert keep[:, 0].tolist() == [True, True, False, False, False, False]
    assert keep[:, 1].tolist() == [True, False, True, True, True, False]  # no consumers: kept while reused
    fora2 = np.array([[1, 1], [0, 0]] * 3, dtype=bool)
    assert not keep_plan(fora2, {0: (1,)})[:, 0].any()


def test_an_internal_component_is_skipped_while_its_consumer_is_reused():
    """A block whose output is ``out(inner(x))``, as FLUX single blocks run it."""
    layout = Layout("toy", (BlockGroup("blocks", 1, ("inner", "out")),))
    bits = np.array([[1, 1], [0, 0], [0, 1], [1, 0], [0, 1]], dtype=bool)
    rt = CacheRuntime(Mask(layout, bits), sample_sigmas=np.linspace(1.0, 0.0, 6).tolist(), consumers={0: (1,)})
    inner_runs, results, live = [], [], []
    for step in range(5):
        at_step(rt, step)
        with rt.call(("c",), SHAPE):
            x = torch.tensor([float(step)])
            inner = rt.component_if_needed(0, lambda: (inner_runs.append(step), x * 10)[1])
            results.append(rt.component(1, lambda: inner + 1).item())
        live.append(rt.cache_bytes)
    assert inner_runs == [0, 3]               # the mask's steps, and not at step 2 (its cache is read there)
    assert results == [1.0, 1.0, 1.0, 1.0, 31.0]  # step 2 reads inner of step 0; step 3 reuses out of step 2
    # bytes: inner from step 0 lives until step 3 recomputes it and is kept then for step 4; out is kept
    # from steps 0 and 2 for the next step, not from step 4 (the last)
    assert live == [8, 8, 8, 8, 4]
    report = rt.close()
    np.testing.assert_array_equal(report.computed["c"], bits.astype(np.int32))
    np.testing.assert_array_equal(report.reused["c"], (~bits).astype(np.int32))


def test_outputs_past_the_cache_budget_are_recomputed_instead_of_reused():
    bits = np.array([[1, 1], [0, 0], [0, 0], [1, 1]], dtype=bool)
    layout = Layout("toy", (BlockGroup("blocks", 1, ("a", "b")),))
    one_entry = marker_output(runtime_for(bits, layout), ("c",), 0).numel() * 4
    rt = CacheRuntime(Mask(layout, bits), sample_sigmas=np.linspace(1.0, 0.0, 5).tolist(), cache_budget_bytes=one_entry)
    computed = []
    for step in range(4):
        at_step(rt, step)
        computed.append([run_component(rt, ("c",), bit)[1] for bit in range(2)])
        assert rt.cache_bytes <= one_entry
    # bit 0 fits and is reused; bit 1 does not fit at step 0, so steps 1 and 2 compute it (step 1's
    # output does not fit either, while bit 0's entry holds the budget; step 2's is not needed later)
    assert computed == [[True, True], [False, True], [False, True], [True, True]]
    report = rt.close()
    assert report.uncached == 2 and report.peak_cache_bytes == one_entry
    assert "cache budget" in report.notes[0] and "recomputed instead of reused" in report.summary()


def test_a_stored_view_does_not_pin_the_tensor_it_views():
    layout = Layout("toy", (BlockGroup("blocks", 1, ("a",)),))
    rt = runtime_for([[1], [0]], layout)
    at_step(rt, 0)
    big = torch.zeros(1, 1000)
    with rt.call(("c",), SHAPE):
        rt.component(0, lambda: big[:, :10])
    assert rt.cache_bytes == 10 * 4
    big.fill_(7)  # the cache holds its own copy
    at_step(rt, 1)
    with rt.call(("c",), SHAPE):
        assert torch.equal(rt.component(0, lambda: None), torch.zeros(1, 10))


def test_a_changed_input_shape_resets_the_caches():
    rt = runtime_for([[1, 1, 1, 1], [0, 0, 0, 0]])
    at_step(rt, 0)
    run_component(rt, ("c",), 0)
    at_step(rt, 1)
    larger = CallShape((4, 16, 16), 1, torch.float32, torch.device("cpu"))
    _, computed = run_component(rt, ("c",), 0, shape=larger)
    assert computed
    report = rt.close()
    assert report.resets == 1 and "caches were reset" in report.notes[0]


def test_a_shape_change_in_one_stream_keeps_the_other_streams_caches():
    """Context windows of different lengths are separate streams: one window's shape says nothing about another's."""
    rt = runtime_for([[1, 1, 1, 1], [0, 0, 0, 0]])
    smaller = CallShape((4, 4, 8), 1, torch.float32, torch.device("cpu"))
    at_step(rt, 0)
    run_component(rt, ("window-a",), 0)
    run_component(rt, ("window-b",), 0, shape=smaller)
    at_step(rt, 1)
    reused_a, computed_a = run_component(rt, ("window-a",), 0)
    reused_b, computed_b = run_component(rt, ("window-b",), 0, shape=smaller)
    assert not computed_a and not computed_b
    assert reused_a[0, 0] == reused_b[0, 0] == 0  # both from step 0
    _, recomputed = run_component(rt, ("window-a",), 0, shape=smaller)  # window a changes shape: only a resets
    assert recomputed and rt.close().resets == 1


def test_each_evaluation_follows_the_step_of_its_noise_level():
    sigmas = [1.0, 0.75, 0.5, 0.25, 0.0]
    rt = CacheRuntime(Mask.full(LAYOUT, 4), sample_sigmas=sigmas)
    # Heun: predictor at sigma_i, corrector at sigma_(i+1) (no corrector into sigma 0); dpm_2-style
    # midpoints stay in their step.
    heun = [rt.begin_evaluation(s) for s in (1.0, 0.75, 0.75, 0.5, 0.5, 0.25, 0.25)]
    assert heun == [0, 1, 1, 2, 2, 3, 3]
    assert list(rt.evaluations) == [1, 2, 2, 2]
    midpoints = CacheRuntime(Mask.full(LAYOUT, 4), sample_sigmas=sigmas)
    assert [midpoints.begin_evaluation(s) for s in (1.0, 0.9, 0.75, 0.6, 0.5000001, 0.3)] == [0, 0, 1, 1, 2, 2]
    # heunpp2 evaluates sigma_(i+2) before its next iteration's sigma_(i+1); a re-noising sampler goes back too
    lookahead = CacheRuntime(Mask.full(LAYOUT, 4), sample_sigmas=sigmas)
    assert [lookahead.begin_evaluation(s) for s in (1.0, 0.75, 0.5, 0.75, 0.5, 0.25, 0.5, 0.25)] == [0, 1, 2, 1, 2, 3, 2, 3]
    assert midpoints.begin_evaluation(5.0) == 0


# ------------------------------------------------------------------ the toy DiT end to end

@pytest.fixture(scope="module")
def toy():
    return ToyDiT(ToyConfig(), seed=0)


@pytest.mark.parametrize("cfg, split, batch", [(1.0, False, 1), (3.0, False, 1), (3.0, True, 1), (3.0, False, 2)])
def test_the_all_compute_schedule_is_bit_identical(toy, cfg, split, batch):
    noise, cond, uncond = random_inputs(toy.config, 1, batch=batch)
    reference, _ = sample(toy, noise, cond, uncond, cfg=cfg, steps=6, split_streams=split)
    cached, rt = sample(toy, noise, cond, uncond, cfg=cfg, steps=6, mask=Mask.full(toy.layout, 6), split_streams=split)
    assert torch.equal(reference, cached)
    assert rt.report().compute_fraction() == 1.0


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_components_run_exactly_where_the_mask_says_per_stream(toy, split, sampler):
    mask = random_mask(toy.layout, 8, keep=0.4, seed=3)
    noise, cond, uncond = random_inputs(toy.config, 2, batch=2)
    _, rt = sample(toy, noise, cond, uncond, cfg=4.0, steps=8, mask=mask, sampler=sampler, split_streams=split)
    report = rt.close()
    expected_evals = [1] + [2] * 7 if sampler == "heun" else [1] * 8
    assert list(report.evaluations) == expected_evals
    assert sorted(report.streams) == ["cond", "uncond"]
    for stream in report.streams:
        np.testing.assert_array_equal(report.computed[stream], mask.bits * np.array(expected_evals)[:, None])
        np.testing.assert_array_equal(report.reused[stream], ~mask.bits * np.array(expected_evals)[:, None])


def test_skipped_components_do_not_run_their_layers(toy):
    mask = Mask(toy.layout, fora_bits(toy.layout, 6, 3))
    calls = {"qkv": 0, "fc1": 0, "kv": 0}
    hooks = [getattr(b, name).register_forward_hook(lambda *_, n=name: calls.__setitem__(n, calls[n] + 1))
             for b in toy.blocks for name in calls]
    try:
        noise, cond, _ = random_inputs(toy.config, 1)
        sample(toy, noise, cond, steps=6, mask=mask)
    finally:
        for h in hooks:
            h.remove()
    computed_steps = 2  # steps 0 and 3
    assert calls == {name: computed_steps * toy.config.depth for name in calls}


def test_caching_changes_the_output_but_fora_stays_close(toy):
    noise, cond, uncond = random_inputs(toy.config, 4)
    reference, _ = sample(toy, noise, cond, uncond, cfg=2.0, steps=8)
    fora2, rt = sample(toy, noise, cond, uncond, cfg=2.0, steps=8, mask=HEURISTICS[1].mask(toy.layout, 8))
    error = (fora2 - reference).abs().max().item()
    assert 0 < error < 0.2 * reference.abs().max().item()
    report = rt.close()
    assert report.compute_fraction() == pytest.approx(0.5)
    assert report.mac_speedup_bound() == pytest.approx(toy.costs(64, 6).speedup_bound(HEURISTICS[1].mask(toy.layout, 8)))
    assert 1.5 < report.mac_speedup_bound() < 2.0


def test_runs_do_not_leak_state(toy):
    noise, cond, uncond = random_inputs(toy.config, 5)
    mask = HEURISTICS[2].mask(toy.layout, 6)
    first, rt1 = sample(toy, noise, cond, uncond, cfg=2.0, steps=6, mask=mask)
    rt1.close()
    other_noise, other_cond, _ = random_inputs(toy.config, 6)
    sample(toy, other_noise, other_cond, uncond, cfg=2.0, steps=6, mask=mask)
    again, _ = sample(toy, noise, cond, uncond, cfg=2.0, steps=6, mask=mask)
    assert torch.equal(first, again)

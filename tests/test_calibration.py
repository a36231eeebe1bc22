"""Quick calibration's engine: recording component changes during an uncached run (every family routes the same way;
FLUX through mirrored forwards, PixArt, Wan and Lumina through hooks, the toy model without ComfyUI) and the greedy
schedules built from them (budgets met, first step computed, nested in budget, internal components consistent)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ecad_nodes.calibration import ChangeRecorder, ComponentChanges
from ecad_nodes.greedy import COMPONENTS, MIXED, STEPS, calibrated_schedules, component_schedules, step_schedules
from ecad_nodes.schedule import BlockGroup, Layout, Mask

STEPS_RUN = 6


# ---------------------------------------------------------------- recording through ComfyUI's sampling

def record_tiny(name: str, cfg: float = 3.0):
    """An uncached run of a registry tiny model recorded through ECAD's patching; also the unpatched model's output."""
    from ecad_nodes.choice import ScheduleChoice
    from ecad_nodes.families import adapter_for
    from ecad_nodes.patching import apply_ecad
    from ecad_nodes.registry import tiny_models
    from support import last_report, sample

    spec = tiny_models()[name].model
    model = spec.build(seed=0)
    layout = adapter_for(model.model).layout(model.get_model_object("diffusion_model"))
    patched = apply_ecad(model, ScheduleChoice.of_mask("uncached", Mask.full(layout, STEPS_RUN)))
    size = spec.test_size
    recorder = ChangeRecorder()
    with recorder.recording():
        recorded = sample(patched, spec, steps=STEPS_RUN, cfg=cfg, width=size, height=size)
    unpatched = sample(model, spec, steps=STEPS_RUN, cfg=cfg, width=size, height=size)
    return recorder.changes(), recorded, unpatched, last_report(patched), layout


def _registry_tiny_models() -> list[str]:
    from ecad_nodes.registry import tiny_models
    return sorted(tiny_models())


@pytest.mark.comfy
@pytest.mark.parametrize("name", _registry_tiny_models())
def test_recording_routes_every_component_per_stream_and_leaves_the_output_unchanged(name):
    """Every family (FLUX, SD3, CogVideoX through mirrored forwards; the others through hooks): the recorded run is
    the model's own result, and every component of every stream went through the recorder."""
    changes, recorded, unpatched, report, layout = record_tiny(name)
    assert torch.equal(recorded, unpatched)  # everything computed: exactly the model's own result
    assert len(report.streams) >= 2 and set(report.changes) == set(report.streams)  # cond and uncond, each recorded
    for stream, change in report.changes.items():
        one_step = change[0, 1:]
        assert not np.isnan(one_step).any(), f"{name}, stream {stream}: components not routed through the recorder"
        assert (one_step >= 0).all() and (one_step > 0).any()
        assert np.isnan(change[0, 0]).all()  # nothing precedes the first step
    assert changes.change.shape == (changes.lags, STEPS_RUN, layout.bits_per_step) and changes.runs == 1
    assert report.computed[report.streams[0]].sum() == STEPS_RUN * layout.bits_per_step
    assert not any(r.any() for r in report.reused.values())


@pytest.mark.comfy
def test_a_component_whose_input_does_not_change_records_zero_change():
    """Lumina's context refiner reads only the prompt, so its outputs are the same at every step; everything else
    reads the latent and changes."""
    changes, _, _, _, layout = record_tiny("lumina2")
    step_change = changes.step_change[1:]
    refiner = layout.group_slice("context_refiner")
    assert (step_change[:, refiner] == 0.0).all()
    others = np.ones(layout.bits_per_step, dtype=bool)
    others[refiner] = False
    assert (step_change[:, others] > 0).all()
    staleness = changes.staleness()
    assert (staleness[refiner] == 0.0).all()  # reusing it is free at any distance


@pytest.mark.comfy
def test_recorded_changes_make_flux_schedules_that_run_as_planned():
    from ecad_nodes.choice import ScheduleChoice
    from ecad_nodes.families import adapter_named
    from ecad_nodes.patching import apply_ecad
    from ecad_nodes.registry import tiny_models
    from support import assert_ran_as_planned, last_report, sample

    changes, _, _, report, layout = record_tiny("flux")
    macs = report.costs.per_bit
    schedules = calibrated_schedules(changes.staleness(), macs, layout, consumers=adapter_named("flux").consumers(layout))
    assert {s.kind for s in schedules} == {STEPS, COMPONENTS, MIXED}
    spec = tiny_models()["flux"].model
    model = spec.build(seed=0)
    chosen = next(s for s in schedules if s.kind == MIXED)
    patched = apply_ecad(model, ScheduleChoice.of_mask("mixed", chosen.mask))
    sample(patched, spec, steps=STEPS_RUN, cfg=3.0, width=spec.test_size, height=spec.test_size)
    assert_ran_as_planned(last_report(patched), chosen.mask.bits, streams=2)


# ---------------------------------------------------------------- recording without ComfyUI (the toy model)

def test_the_toy_sampler_records_through_the_same_runtime_factory():
    from optimizer.toy_dit import ToyConfig, ToyDiT, random_inputs, sample
    model = ToyDiT(ToyConfig(), seed=0)
    noise, cond, uncond = random_inputs(model.config, seed=3)
    plain, _ = sample(model, noise, cond, uncond, cfg=2.0, steps=5)
    recorder = ChangeRecorder(lags=2)
    with recorder.recording():
        recorded, runtime = sample(model, noise, cond, uncond, cfg=2.0, steps=5, mask=Mask.full(model.layout, 5))
    runtime.close()
    assert torch.equal(plain, recorded)
    changes = recorder.changes()
    assert changes.lags == 2 and changes.runs == 1
    assert (changes.step_change[1:] > 0).all() and (changes.step_change[0] == 0).all()
    assert np.isnan(changes.change[1, :2]).all() and not np.isnan(changes.change[1, 2:]).any()


def test_staleness_is_measured_up_to_the_lags_and_summed_beyond():
    layout = Layout("toy", (BlockGroup("blocks", 1, ("mlp",)),))
    change = np.full((2, 5, 1), np.nan)
    change[0, 1:, 0] = [0.1, 0.2, 0.3, 0.4]    # one step apart
    change[1, 2:, 0] = [0.25, 0.45, 0.5]       # two steps apart: measured, not the sum
    s = ComponentChanges(layout, change, runs=1).staleness()[0]
    assert s[0, 1] == pytest.approx(0.1) and s[0, 2] == pytest.approx(0.25) and s[2, 4] == pytest.approx(0.5)
    assert s[0, 3] == pytest.approx(0.25 + 0.3)          # three apart: two measured, then one more step
    assert s[0, 4] == pytest.approx(0.25 + 0.3 + 0.4)
    assert (np.tril(s) == 0).all()


# ---------------------------------------------------------------- greedy schedules

def flux_like(steps: int = 10, seed: int = 0):
    """A FLUX-shaped layout with single blocks' attn and mlp_in internal (read by out_proj), random changes."""
    layout = Layout("flux", (BlockGroup("double_blocks", 2, ("attn", "img_mlp", "txt_mlp")),
                             BlockGroup("single_blocks", 3, ("attn", "mlp_in", "out_proj"))))
    consumers = {}
    for block in range(3):
        out = layout.bit("single_blocks", block, "out_proj")
        consumers[layout.bit("single_blocks", block, "attn")] = (out,)
        consumers[layout.bit("single_blocks", block, "mlp_in")] = (out,)
    rng = np.random.default_rng(seed)
    change = np.full((3, steps, layout.bits_per_step), np.nan)
    for lag in range(1, 4):
        change[lag - 1, lag:] = rng.uniform(0.05, 0.5, (steps - lag, layout.bits_per_step)) * lag ** 0.5
    macs = rng.uniform(1.0, 5.0, layout.bits_per_step)
    return layout, consumers, ComponentChanges(layout, change, runs=1).staleness(), macs


BUDGETS = (0.95, 0.85, 0.7, 0.55, 0.45, 0.35, 0.25)


@pytest.mark.parametrize("make", [step_schedules, component_schedules])
def test_greedy_schedules_meet_their_budgets_compute_the_first_step_and_are_nested(make):
    layout, consumers, staleness, macs = flux_like()
    kwargs = {"consumers": consumers} if make is component_schedules else {}
    schedules = make(staleness, macs, layout, BUDGETS, **kwargs)
    assert [s.budget for s in schedules] == list(BUDGETS)
    full = macs.sum() * 10
    largest_move = (macs.sum() if make is step_schedules else 3 * macs.max()) / full
    for s in schedules:
        fraction = float((s.mask.bits * macs).sum() / full)
        assert fraction == pytest.approx(s.mac_fraction)
        assert s.budget - largest_move - 1e-9 <= fraction <= s.budget + 1e-9
        assert s.mask.bits[0].all()
    for larger, smaller in zip(schedules, schedules[1:]):
        assert (smaller.mask.bits <= larger.mask.bits).all()  # a smaller budget reuses all a larger one reuses


def test_whole_step_schedules_reuse_whole_steps():
    layout, _, staleness, macs = flux_like()
    for s in step_schedules(staleness, macs, layout, BUDGETS):
        assert all(row.all() or not row.any() for row in s.mask.bits)


def test_internal_components_compute_only_where_a_consumer_does():
    layout, consumers, staleness, macs = flux_like()
    schedules = calibrated_schedules(staleness, macs, layout, BUDGETS, consumers)
    assert {s.kind for s in schedules} == {STEPS, COMPONENTS, MIXED}
    for s in schedules:
        bits = s.mask.bits
        for internal, readers in consumers.items():
            assert (bits[1:, internal] <= bits[1:, list(readers)].any(axis=1)).all(), s.kind
    masks = [s.mask.bits.tobytes() for s in schedules]
    assert len(set(masks)) == len(masks)


def test_components_that_do_not_change_are_reused_first_and_unobserved_ones_never():
    layout, consumers, staleness, macs = flux_like()
    still = layout.bit("double_blocks", 1, "txt_mlp")
    unseen = layout.bit("double_blocks", 0, "img_mlp")
    staleness[still] = 0.0
    staleness[unseen] = np.nan
    schedules = component_schedules(staleness, macs, layout, BUDGETS, consumers)
    assert not schedules[0].mask.bits[1:, still].any()  # reused at every step from the largest budget on
    for s in schedules:
        assert s.mask.bits[:, unseen].all()
    for s in step_schedules(staleness, macs, layout, BUDGETS):
        assert s.mask.bits[:, unseen].all()


def test_a_budget_the_never_reused_components_exceed_is_left_out():
    layout = Layout("toy", (BlockGroup("blocks", 1, ("a", "b")),))
    staleness = np.zeros((2, 4, 4))
    staleness[1] = np.nan  # b is never reused: half the MACs
    schedules = component_schedules(staleness, np.ones(2), layout, (0.8, 0.7, 0.6))
    assert [s.budget for s in schedules] == [0.8, 0.7]
    assert schedules[-1].mac_fraction == pytest.approx(0.625)  # a at the first step only, b everywhere

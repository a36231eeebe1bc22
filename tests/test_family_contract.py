"""The contract every family adapter keeps, on the ComfyUI in COMFYUI_PATH (CI runs it on every tree).

One test per guarantee, parametrized over every tiny model of the registry (``ecad_nodes.registry.tiny_models``):
ComfyUI builds each from a synthetic checkpoint through its own detection, samples it with
``comfy.sample.sample`` (what KSampler runs), and ECAD must

* claim it with the right adapter and variant, and lay out every block;
* give the unpatched model's samples bit for bit when everything computes (cond and uncond batched,
  in separate calls, batch 2);
* compute each component of each conditioning stream exactly where a random mask says;
* skip the matmuls it skips (PyTorch's FLOP counter equals the adapter's cost model);
* reuse with FORA-2 and leave the base model alone; never write into a cached output;
* cache internal components only for their consumers;
* keep LoRA weight patches working;
* run mirrored block forwards only where they are known or checked on this ComfyUI.
"""
from __future__ import annotations

import logging

import pytest
import torch

from ecad_nodes.choice import ScheduleChoice
from ecad_nodes.heuristics import NO_CACHING
from ecad_nodes.registry import tiny_models
from family_checks import (FORA2, apply, assert_all_compute_is_identical, assert_cached_outputs_stay_untouched,
                           assert_flops_follow_the_cost_model, assert_fora2_behaviour,
                           assert_internal_outputs_are_cached_only_for_their_consumers, assert_runs_as_planned,
                           layout_of, random_choice)
from support import assert_ran_as_planned, built_tiny, last_report, packed, sample

pytestmark = pytest.mark.comfy

def _models_with(declares, has) -> list[str]:
    """Tiny models whose family ``declares`` something and whose layout ``has`` it (decided on a meta-device model,
    no memory; where the model cannot be built here it is kept and deselected or skipped like the others)."""
    from conftest import COMFYUI_ROOT
    from ecad_nodes.families import adapter_named
    found = []
    for name, entry in sorted(tiny_models().items()):
        adapter = adapter_named(entry.family)
        if not declares(adapter):
            continue
        if COMFYUI_ROOT is not None and entry.unavailable() is None:
            dm = entry.model.meta_model().diffusion_model
            if not has(adapter, dm, adapter.layout(dm)):
                continue
        found.append(name)
    return found


NAMES = sorted(tiny_models())
WITH_INTERNAL = _models_with(lambda a: any(c.feeds for g in a.groups for c in g.components),
                             lambda a, dm, layout: bool(a.consumers(layout)))
WITH_MIRRORS = _models_with(lambda a: any(g.mirrors for g in a.groups),
                            lambda a, dm, layout: bool(a.mirrored_blocks(dm, layout)))


def _tiny(name: str):
    """(name, spec, model, size), each model built once per session."""
    spec, model = built_tiny(name)
    return name, spec, model, spec.test_size


@pytest.fixture(params=NAMES)
def tiny(request):
    return _tiny(request.param)


def kwargs_for(spec, size: int, cfg: float, negative_tokens=None, batch: int = 1) -> dict:
    kwargs = dict(cfg=cfg, width=size, height=size, batch=batch)
    if negative_tokens:
        # Prompts of different lengths cannot share a batch: ComfyUI runs cond and uncond in separate calls.
        kwargs["negative"] = spec.conditioning(2, tokens=negative_tokens)
    return kwargs


def test_comfyui_detects_the_tiny_checkpoint_and_ecad_claims_it(tiny):
    from ecad_nodes.families import adapter_for
    name, spec, model, size = tiny
    adapter = adapter_for(model.model)
    assert adapter.family == tiny_models()[name].family
    assert adapter.variant(model.model) is not None, f"no variant for {type(model.model.model_config).__name__}"
    layout = layout_of(model)
    assert layout.bits_per_step > 0 and all(g.blocks > 0 for g in layout.groups)
    import comfy.sample
    latent = comfy.sample.fix_empty_latent_channels(model, spec.empty_latent(size, size))
    assert sample(model, spec, steps=2, width=size, height=size).shape == packed(latent).shape


@pytest.mark.parametrize("cfg, negative_tokens, batch", [(1.0, None, 1), (3.5, None, 1), (3.5, 5, 1), (3.5, None, 2)],
                         ids=["cfg1", "cfg-batched", "cfg-separate-calls", "batch2"])
def test_all_compute_is_bit_identical_to_the_unpatched_model(tiny, cfg, negative_tokens, batch):
    name, spec, model, size = tiny
    assert_all_compute_is_identical(model, spec, steps=4, **kwargs_for(spec, size, cfg, negative_tokens, batch))


@pytest.mark.parametrize("negative_tokens", [None, 5], ids=["batched", "separate-calls"])
def test_components_run_exactly_where_the_mask_says_per_stream(tiny, negative_tokens):
    name, spec, model, size = tiny
    assert_runs_as_planned(model, spec, **kwargs_for(spec, size, 4.0, negative_tokens))


def test_skipped_components_really_skip_their_matmuls(tiny):
    name, spec, model, size = tiny
    assert_flops_follow_the_cost_model(model, spec, width=size, height=size)


def test_fora2_reuses_every_other_step_and_leaves_the_base_model_alone(tiny):
    name, spec, model, size = tiny
    assert_fora2_behaviour(model, spec, cfg=3.0, width=size, height=size)


def test_cached_outputs_are_never_written_into(tiny, monkeypatch):
    name, spec, model, size = tiny
    assert_cached_outputs_stay_untouched(model, spec, monkeypatch, cfg=3.0, width=size, height=size)


@pytest.mark.parametrize("name", WITH_INTERNAL)
def test_internal_outputs_are_cached_only_for_their_consumers(name, monkeypatch):
    name, spec, model, size = _tiny(name)
    assert_internal_outputs_are_cached_only_for_their_consumers(model, spec, monkeypatch, cfg=3.0, width=size, height=size)


def _hooked_weight_key(model) -> str:
    """The first linear weight inside the first block's first hooked component (what a LoRA would patch)."""
    from ecad_nodes.families import adapter_for
    adapter = adapter_for(model.model)
    dm = model.model.diffusion_model
    for group in adapter.groups:
        paths = group.block_paths(dm)
        for component in group.components:
            if component.module is not None and paths:
                module = dm.get_submodule(f"{paths[0]}.{component.module}")
                name = next(n for n, m in module.named_modules() if isinstance(m, torch.nn.Linear))
                return f"diffusion_model.{paths[0]}.{component.module}{'.' + name if name else ''}.weight"
    raise AssertionError("no hooked component")


def test_lora_weight_patches_apply_before_and_after_ecad(tiny):
    """ECAD hooks ``forward`` of submodules, never replaces them, so weight keys stay and LoRA patches apply."""
    name, spec, model, size = tiny
    key = _hooked_weight_key(model)
    weight = model.model.state_dict()[key]
    delta = torch.randn(weight.shape, generator=torch.Generator().manual_seed(3)) * 0.5
    kwargs = dict(steps=4, cfg=3.0, width=size, height=size)
    with_lora = model.clone()
    assert with_lora.add_patches({key: ("diff", (delta,))}, 1.0) == [key]
    reference = sample(with_lora, spec, **kwargs)
    assert not torch.equal(reference, sample(model, spec, **kwargs)), f"the patch on {key} changed nothing"
    assert torch.equal(sample(apply(with_lora, ScheduleChoice.of_heuristic(NO_CACHING)), spec, **kwargs), reference)
    ecad_then_lora = apply(model, ScheduleChoice.of_heuristic(NO_CACHING)).clone()
    ecad_then_lora.add_patches({key: ("diff", (delta,))}, 1.0)
    assert torch.equal(sample(ecad_then_lora, spec, **kwargs), reference)
    cached = sample(apply(model, ScheduleChoice.of_heuristic(FORA2)), spec, **kwargs)
    assert not torch.equal(sample(apply(with_lora, ScheduleChoice.of_heuristic(FORA2)), spec, **kwargs), cached)


@pytest.mark.parametrize("name", WITH_MIRRORS)
def test_mirrored_forwards_are_known_on_this_comfyui_and_pass_their_own_check(name, monkeypatch, caplog):
    """Every mirror of this model recognises this ComfyUI's block forward; with its fingerprints forgotten it checks
    itself on the first call, finds the copy identical, and caches as planned."""
    from ecad_nodes.families import adapter_for
    from ecad_nodes.families import mirror as mirror_module
    name, spec, model, size = _tiny(name)
    dm = model.model.diffusion_model
    blocks = adapter_for(model.model).mirrored_blocks(dm, layout_of(model))
    assert blocks
    for block in blocks:
        module = dm.get_submodule(block.path)
        assert block.mirror is not None, f"no mirror for {type(module).__qualname__}"
        assert block.mirror.fingerprint(type(module)) in block.mirror.known, (
            f"{block.mirror.name}: this ComfyUI's {type(module).__qualname__}.forward is not a known version")
    monkeypatch.setattr(mirror_module, "is_known", lambda mirror, fingerprint: False)
    monkeypatch.setattr(mirror_module, "_VERIFIED", set())
    monkeypatch.setattr(mirror_module, "_FAILED", set())
    with caplog.at_level(logging.INFO, logger="ComfyUI-ECAD"):
        choice = random_choice(model, 6, keep=0.5, seed=4)
        patched = apply(model, choice)
        sample(patched, spec, cfg=3.5, width=size, height=size, negative=spec.conditioning(2, tokens=5))
    assert "does not match" not in caplog.text and "has no copy" not in caplog.text
    assert caplog.text.count("on its first call: identical") >= len({b.mirror.name for b in blocks})
    assert_ran_as_planned(last_report(patched), choice.point.mask.bits, streams=2)

"""Hooking the engine into a ComfyUI ModelPatcher clone.

``apply_ecad`` returns a clone carrying three keyed wrappers and the family adapter's component
hooks; the model it came from, and every other clone, stays untouched.

* OUTER_SAMPLE: one ``CacheRuntime`` per sampling run, built from the schedule laid onto the run's
  sigmas; it is freed (and reported) in ``finally``.
* CALC_COND_BATCH: one call per model evaluation; its sigma fixes the step every cond batch of it
  follows, so samplers with several evaluations per step map by noise level.
* APPLY_MODEL: one call per cond batch; tells the runtime which conditioning streams (cond uuids)
  the batch holds, so caches are kept per stream however ComfyUI groups cond and uncond.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Optional

from .choice import ScheduleChoice
from .families import adapter_for, adapter_named
from .runtime import CacheRuntime, CallShape, RunReport, new_runtime
from .schedule import Layout

log = logging.getLogger("ComfyUI-ECAD")

WRAPPER_KEY = "ecad"
SETTINGS_KEY = "ecad"          # model_options["transformer_options"][...]: the node's settings
RUNTIME_KEY = "ecad_run"       # the same, for the duration of one sampling run


@dataclass
class EcadSettings:
    """What "ECAD Apply Cache" stored on its model. Deep-copied with every clone, so kept small."""

    choice: ScheduleChoice
    layout: Layout
    family: str
    cache_budget_bytes: Optional[int] = None  # None: what the device has free at the run's first call, less a reserve
    last_report: Optional[RunReport] = field(default=None, repr=False)  # diagnostics of the latest run


def apply_ecad(model: Any, choice: ScheduleChoice) -> Any:
    """A clone of ``model`` (a ModelPatcher) that caches according to ``choice``."""
    adapter = adapter_for(model.model)
    layout = adapter.layout(model.get_model_object("diffusion_model"))
    choice.check(layout)

    import comfy.patcher_extension as pe

    patched = model.clone()
    options = patched.model_options.setdefault("transformer_options", {})
    if SETTINGS_KEY in options:
        log.info("ECAD: the model already had an ECAD schedule; the new one (%s) replaces it", choice.label)
    options[SETTINGS_KEY] = EcadSettings(choice, layout, adapter.family)
    adapter.install(patched, layout)
    for kind, wrapper in ((pe.WrappersMP.OUTER_SAMPLE, outer_sample_wrapper),
                          (pe.WrappersMP.CALC_COND_BATCH, calc_cond_batch_wrapper),
                          (pe.WrappersMP.APPLY_MODEL, apply_model_wrapper)):
        patched.remove_wrappers_with_key(kind, WRAPPER_KEY)
        patched.add_wrapper_with_key(kind, WRAPPER_KEY, wrapper)
    return patched


def automatic_cache_budget(base_model: Any, x: Any) -> int:
    """Bytes the cache may take: the device's free memory once the model is loaded, less what ComfyUI
    reserves for inference and estimates a call of this size needs. Video models at full size can
    need more cache than any GPU has; past the budget ECAD recomputes instead of running out of memory."""
    import comfy.model_management as mm
    free = mm.get_free_memory(x.device)
    reserve = mm.minimum_inference_memory() + base_model.memory_required(x.shape)
    return max(0, int(free - reserve))


def _arg(args: tuple, kwargs: dict, index: int, name: str, default=None):
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def outer_sample_wrapper(executor, *args, **kwargs):
    # args: noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed
    import comfy.model_patcher

    guider = executor.class_obj
    settings: Optional[EcadSettings] = guider.model_options.get("transformer_options", {}).get(SETTINGS_KEY)
    if settings is None:
        return executor(*args, **kwargs)
    sigmas = _arg(args, kwargs, 3, "sigmas")
    steps = int(sigmas.shape[-1]) - 1
    if steps < 1:  # one sigma (SplitSigmas at the last step): the sampler evaluates nothing, there is nothing to cache
        return executor(*args, **kwargs)
    resolved = settings.choice.resolve(settings.layout, steps)
    if resolved.note:
        log.warning("ECAD: %s", resolved.note)
    runtime = new_runtime(resolved.mask, sample_sigmas=sigmas.tolist(),
                          schedule_step_of=resolved.schedule_step_of, schedule_steps=resolved.schedule_steps,
                          consumers=adapter_named(settings.family).consumers(settings.layout))
    original_options = guider.model_options
    guider.model_options = comfy.model_patcher.create_model_options_clone(original_options)
    guider.model_options["transformer_options"][RUNTIME_KEY] = runtime
    try:
        return executor(*args, **kwargs)
    finally:
        guider.model_options = original_options
        report = runtime.close()
        settings.last_report = report
        (log.warning if report.uncached else log.info)("ECAD [%s]: %s", settings.choice.label, report.summary())


def calc_cond_batch_wrapper(executor, *args, **kwargs):
    # args: model, conds, x_in, timestep, model_options
    model_options = _arg(args, kwargs, 4, "model_options", {})
    runtime: Optional[CacheRuntime] = model_options.get("transformer_options", {}).get(RUNTIME_KEY)
    if runtime is not None:
        timestep = _arg(args, kwargs, 3, "timestep")
        runtime.begin_evaluation(float(timestep.flatten()[0]) if timestep is not None else None)
    return executor(*args, **kwargs)


def replaced_blocks(transformer_options: dict) -> tuple:
    """The blocks other nodes replace in this call (``patches_replace``), as a sorted key. SkipLayerGuidanceDiT predicts
    a prompt again, at the same step and under the same cond uuid, with some blocks replaced by the identity: what
    that pass computes must not be cached as the prompt's own outputs."""
    replaced = transformer_options.get("patches_replace") or {}
    return tuple(sorted((str(kind), repr(key)) for kind, patches in replaced.items() for key in (patches or {})))


def apply_model_wrapper(executor, *args, **kwargs):
    # args: x, t, c_concat, c_crossattn, control, transformer_options, **extra_conds
    transformer_options = _arg(args, kwargs, 5, "transformer_options", {}) or {}
    runtime: Optional[CacheRuntime] = transformer_options.get(RUNTIME_KEY)
    if runtime is None:
        return executor(*args, **kwargs)
    x = args[0] if args else kwargs["x"]
    uuids = list(transformer_options.get("uuids") or [None])
    window = transformer_options.get("context_window")
    if window is not None:  # context windows: one call per window at the same step, with the same cond uuids
        frames = tuple(int(i) for i in window.index_list)
        uuids = [(u, frames) for u in uuids]
    variant = adapter_named(transformer_options[SETTINGS_KEY].family).stream_variant(kwargs)
    if variant is not None:  # the same prompts with other conditioning (e.g. without LTX-2's reference audio)
        uuids = [(u, variant) for u in uuids]
    replaced = replaced_blocks(transformer_options)
    if replaced:  # the same prompts through other blocks (SkipLayerGuidance's extra pass, at the same step)
        uuids = [(u, replaced) for u in uuids]
    if runtime.model is None:
        base_model = executor.class_obj
        runtime.model = base_model.diffusion_model
        settings: EcadSettings = transformer_options[SETTINGS_KEY]
        adapter = adapter_named(settings.family)
        runtime.tokens = adapter.call_tokens(runtime.model, x, _arg(args, kwargs, 3, "c_crossattn"), kwargs)
        runtime.costs = adapter.costs(runtime.model, runtime.tokens, attention_matmuls=True)
        runtime.cache_budget_bytes = (settings.cache_budget_bytes if settings.cache_budget_bytes is not None
                                      else automatic_cache_budget(base_model, x))
    shape = CallShape(tuple(x.shape[1:]), x.shape[0] // len(uuids), x.dtype, x.device)
    with runtime.call(uuids, shape):
        return executor(*args, **kwargs)

"""Helpers shared by the ComfyUI tests: sampling tiny models headlessly and checking run reports."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from ecad_nodes.patching import SETTINGS_KEY
from ecad_nodes.runtime import RunReport


def sample(model: Any, spec: Any, *, steps: int = 6, cfg: float = 1.0, sampler: str = "euler",
           scheduler: str = "simple", batch: int = 1, width: int = 128, height: int = 128, seed: int = 42,
           positive: Optional[list] = None, negative: Optional[list] = None, denoise: float = 1.0,
           noise_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Sample with ComfyUI's own ``comfy.sample.sample`` (what KSampler runs); ``noise_mask`` as a latent's
    (e.g. LTX-Video's image-to-video). Several latents sampled together (LTX-2's video and audio) come back packed."""
    import comfy.sample
    positive = positive if positive is not None else spec.conditioning(1)
    negative = negative if negative is not None else spec.conditioning(2)
    latent = comfy.sample.fix_empty_latent_channels(model, spec.empty_latent(height, width, batch))
    noise = comfy.sample.prepare_noise(latent, seed)
    with torch.inference_mode():
        return packed(comfy.sample.sample(model, noise, steps, cfg, sampler, scheduler, positive, negative, latent,
                                          denoise=denoise, seed=seed, disable_pbar=True, noise_mask=noise_mask))


def packed(latent: Any) -> torch.Tensor:
    """A latent as one tensor: ComfyUI's NestedTensor of several latents (LTX-2) flattened and joined per batch row."""
    if isinstance(latent, torch.Tensor) or not getattr(latent, "is_nested", False):
        return latent
    return torch.cat([t.reshape(t.shape[0], -1) for t in latent.unbind()], dim=1)


def last_report(patched: Any) -> RunReport:
    report = patched.model_options["transformer_options"][SETTINGS_KEY].last_report
    assert report is not None, "the patched model has not run"
    return report


def assert_ran_as_planned(report: RunReport, planned: np.ndarray, streams: int, evaluations_per_step=None) -> None:
    """Every component of every stream computed exactly where ``planned`` (steps × bits) says, reused elsewhere."""
    assert len(report.streams) == streams, f"expected {streams} conditioning streams, saw {report.streams}"
    evals = report.evaluations if evaluations_per_step is None else np.asarray(evaluations_per_step)
    for stream in report.streams:
        computed = report.computed[stream]
        reused = report.reused[stream]
        expected = planned.astype(np.int64) * evals[:, None]
        np.testing.assert_array_equal(computed, expected, err_msg=f"stream {stream}: computations differ from the plan")
        np.testing.assert_array_equal(reused, (~planned).astype(np.int64) * evals[:, None],
                                      err_msg=f"stream {stream}: reuses differ from the plan")


_BUILT: dict[str, tuple] = {}


def built_tiny(name: str) -> tuple:
    """``(spec, model)`` of the registry's tiny model ``name``, built once per test session (seed 0)."""
    from ecad_nodes.registry import tiny_models
    if name not in _BUILT:
        spec = tiny_models()[name].model
        _BUILT[name] = spec, spec.build(seed=0)
    return _BUILT[name]

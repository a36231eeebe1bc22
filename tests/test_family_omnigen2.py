"""OmniGen2 inside real ComfyUI (COMFYUI_PATH), beyond the family contract (tests/test_family_contract.py):
image editing (reference latents, as ComfyUI's ReferenceLatent node adds them: the reference-image
refiner runs, uncached, and the layers read the reference tokens too), and the context refiner, whose
output depends on the prompt alone, reused exactly."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ecad_nodes.choice import ScheduleChoice
from ecad_nodes.schedule import Mask
from family_checks import (apply, assert_all_compute_is_identical, assert_flops_follow_the_cost_model,
                           assert_runs_as_planned, layout_of)
from support import last_report, sample

pytestmark = pytest.mark.comfy

SIZE = 64  # 8×8 latent, 16 image tokens


@pytest.fixture(scope="module")
def omnigen2():
    from ecad_nodes.families.omnigen2 import TinyOmniGen2
    spec = TinyOmniGen2()
    return spec, spec.build(seed=0)


def editing(spec, seed: int, tokens=None) -> list:
    cond = spec.conditioning(seed, tokens)
    reference = torch.randn(1, spec.latent_channels, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(9))
    cond[0][1]["reference_latents"] = [reference]
    return cond


@pytest.fixture
def reference_refiner_calls(omnigen2):
    spec, model = omnigen2
    calls: list[int] = []
    handle = model.model.diffusion_model.ref_image_refiner[0].register_forward_hook(lambda *args: calls.append(1))
    yield calls
    handle.remove()


@pytest.mark.parametrize("negative_tokens", [None, 5], ids=["cfg-batched", "cfg-separate-calls"])
def test_all_compute_is_bit_identical_when_editing(omnigen2, reference_refiner_calls, negative_tokens):
    spec, model = omnigen2
    assert_all_compute_is_identical(model, spec, steps=4, cfg=5.0, width=SIZE, height=SIZE, positive=editing(spec, 1),
                                    negative=editing(spec, 2, negative_tokens))
    assert reference_refiner_calls


def test_components_run_exactly_where_the_mask_says_when_editing(omnigen2, reference_refiner_calls):
    spec, model = omnigen2
    assert_runs_as_planned(model, spec, cfg=5.0, width=SIZE, height=SIZE, positive=editing(spec, 1),
                           negative=editing(spec, 2, tokens=5))
    assert reference_refiner_calls


def test_the_cost_model_counts_the_reference_tokens(omnigen2):
    """The layers read 16 reference tokens besides the image's 16, and the reference refiner runs on them: PyTorch's
    FLOP counter agrees with the cost model."""
    spec, model = omnigen2
    assert_flops_follow_the_cost_model(model, spec, width=SIZE, height=SIZE, positive=editing(spec, 1))


def test_reusing_the_context_refiner_is_exact(omnigen2):
    """Its input is the prompt's projected text states, the same at every step: its cached outputs are what it would
    compute, so a schedule that reuses only the context refiner gives the unpatched model's samples."""
    spec, model = omnigen2
    kwargs = dict(steps=6, cfg=5.0, width=SIZE, height=SIZE, negative=spec.conditioning(2, tokens=5))
    layout = layout_of(model)
    bits = np.ones((6, layout.bits_per_step), dtype=bool)
    bits[1:, layout.group_slice("context_refiner")] = False
    patched = apply(model, ScheduleChoice.of_mask("reuse the context refiner", Mask(layout, bits)))
    assert torch.equal(sample(patched, spec, **kwargs), sample(model, spec, **kwargs))
    report = last_report(patched)
    assert all(report.reused[s][1:, layout.group_slice("context_refiner")].all() for s in report.streams)

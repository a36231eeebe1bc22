"""Anima inside real ComfyUI (COMFYUI_PATH), beyond the family contract (tests/test_family_contract.py):
conditioning as Anima's text encoder makes it (Qwen3 states plus T5 token ids and weights), which
ComfyUI runs through the model's LLM adapter once per prompt before sampling; the blocks then read
the adapter's 512 tokens at every step."""
from __future__ import annotations

import pytest

from ecad_nodes.choice import ScheduleChoice
from ecad_nodes.heuristics import NO_CACHING
from family_checks import apply, assert_all_compute_is_identical, assert_runs_as_planned
from support import last_report, sample

pytestmark = [pytest.mark.comfy, pytest.mark.needs("anima")]

SIZE = 64  # 8×8 latent, 16 image tokens


@pytest.fixture(scope="module")
def anima():
    from ecad_nodes.families.anima import TinyAnima
    spec = TinyAnima()
    return spec, spec.build(seed=0)


def prompts(spec, negative_tokens=None) -> dict:
    return {"positive": spec.conditioning_with_t5_ids(1), "negative": spec.conditioning_with_t5_ids(2, negative_tokens)}


@pytest.fixture
def adapter_calls(anima):
    """How often the LLM adapter runs."""
    spec, model = anima
    calls: list[int] = []
    handle = model.model.diffusion_model.llm_adapter.register_forward_hook(lambda *args: calls.append(1))
    yield calls
    handle.remove()


@pytest.mark.parametrize("negative_tokens", [None, 5], ids=["same-length-prompts", "different-length-prompts"])
def test_all_compute_is_bit_identical_with_the_llm_adapter(anima, adapter_calls, negative_tokens):
    spec, model = anima
    assert_all_compute_is_identical(model, spec, steps=4, cfg=3.5, width=SIZE, height=SIZE,
                                    **prompts(spec, negative_tokens))
    assert len(adapter_calls) == 4  # once per prompt and sampling run (unpatched, then patched): not per step
    patched = apply(model, ScheduleChoice.of_heuristic(NO_CACHING))
    sample(patched, spec, steps=2, cfg=3.5, width=SIZE, height=SIZE, **prompts(spec, negative_tokens))
    assert last_report(patched).tokens.text == 512  # the adapter's output, padded to 512 tokens


def test_components_run_exactly_where_the_mask_says_with_the_llm_adapter(anima):
    spec, model = anima
    assert_runs_as_planned(model, spec, cfg=4.0, width=SIZE, height=SIZE, **prompts(spec, negative_tokens=5))

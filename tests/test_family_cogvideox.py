"""CogVideoX inside real ComfyUI (COMFYUI_PATH), beyond the family contract (tests/test_family_contract.py):
where ECAD's copy of ``CogVideoXBlock.forward`` is not trusted (a ComfyUI whose block differs), the
block runs ComfyUI's own forward; the joint attention (inline, no submodule) is then computed at
every step, while the feed-forward stays cached through its hook on ``ff_out``."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from ecad_nodes.choice import ScheduleChoice
from family_checks import FORA2, apply, layout_of
from support import last_report, sample

pytestmark = [pytest.mark.comfy, pytest.mark.needs("cogvideox")]

SIZE = 64  # 8×8 latent per frame, 2 latent frames, 32 video tokens


@pytest.fixture(scope="module")
def cogvideox():
    from ecad_nodes.families.cogvideox import TinyCogVideoX
    spec = TinyCogVideoX()
    return spec, spec.build(seed=0)


@pytest.fixture
def untrusted_copy(monkeypatch):
    """ECAD's copy of the block forward as if this ComfyUI's block had changed: unknown, and failing its check."""
    from ecad_nodes.families import mirror
    monkeypatch.setattr(mirror, "is_known", lambda m, fingerprint: False)
    monkeypatch.setattr(mirror, "_VERIFIED", set())
    monkeypatch.setattr(mirror, "_FAILED", set())
    monkeypatch.setattr(mirror.Mirror, "_check", lambda self, *args: "a simulated upstream change")


def test_without_a_trusted_copy_attention_computes_every_step_and_the_feed_forward_stays_cached(
        cogvideox, untrusted_copy, caplog):
    spec, model = cogvideox
    patched = apply(model, ScheduleChoice.of_heuristic(FORA2))
    with caplog.at_level(logging.WARNING, logger="ComfyUI-ECAD"):
        out = sample(patched, spec, steps=6, cfg=3.0, width=SIZE, height=SIZE)
    assert torch.isfinite(out).all()
    assert caplog.text.count("does not match") == 1  # one warning, naming the copy and the ComfyUI version
    layout = layout_of(model)
    attn, ff = layout.component_bits("blocks", "attn"), layout.component_bits("blocks", "ff")
    report = last_report(patched)
    for stream in report.streams:
        computed = report.computed[stream]
        assert np.all(computed[:, attn] == 1)                              # every step
        assert [int(computed[s, ff].sum()) for s in range(6)] == [len(ff) if s % 2 == 0 else 0 for s in range(6)]
        assert np.all(report.reused[stream][1::2, ff] == 1)                # FORA-2's reuse, through the ff_out hook

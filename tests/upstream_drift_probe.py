"""Run by tests/test_upstream_drift.py in a fresh process, against a ComfyUI copy whose FLUX block forward was edited.

Prints one JSON object: what the unpatched model, ECAD and an independent reference computed, and
what ECAD logged. The reference caches the same submodules with plain PyTorch forward hooks, so it
does not share ECAD's code.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from optimizer.comfy_env import import_comfy  # noqa: E402

import_comfy(cpu=True)

import torch  # noqa: E402

from ecad_nodes.choice import ScheduleChoice  # noqa: E402
from ecad_nodes.families.flux import TinyFlux  # noqa: E402
from ecad_nodes.heuristics import HEURISTICS, NO_CACHING  # noqa: E402
from ecad_nodes.patching import apply_ecad  # noqa: E402
from support import last_report, sample  # noqa: E402

STEPS = 6
FORA2 = HEURISTICS[1]


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages: list[tuple[str, str]] = []

    def emit(self, record):
        self.messages.append((record.levelname, record.getMessage()))


def reference_fora2(model, spec) -> torch.Tensor:
    """FORA-2 on the blocks' own submodules (double blocks' MLPs, single blocks' linear2) with torch forward hooks:
    at odd steps each returns what it computed at the step before. Everything else runs as ComfyUI runs it."""
    dm = model.model.diffusion_model
    modules = [m for b in dm.double_blocks for m in (b.img_mlp, b.txt_mlp)] + [b.linear2 for b in dm.single_blocks]
    calls = {id(m): 0 for m in modules}
    cache: dict[int, torch.Tensor] = {}

    def hook(module, args, output):
        step = calls[id(module)]
        calls[id(module)] += 1
        if step % 2 == 0:
            cache[id(module)] = output.clone()
            return output
        return cache[id(module)].clone()

    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        return sample(model, spec, steps=STEPS)
    finally:
        for h in handles:
            h.remove()


def main() -> None:
    records = Records()
    logging.getLogger("ComfyUI-ECAD").addHandler(records)
    logging.getLogger("ComfyUI-ECAD").setLevel(logging.INFO)
    spec = TinyFlux()
    model = spec.build(seed=0)
    plain = sample(model, spec, steps=STEPS)
    all_compute = sample(apply_ecad(model, ScheduleChoice.of_heuristic(NO_CACHING)), spec, steps=STEPS)
    fora2 = apply_ecad(model, ScheduleChoice.of_heuristic(FORA2))
    cached = sample(fora2, spec, steps=STEPS)
    report = last_report(fora2)
    cached_again = sample(fora2, spec, steps=STEPS)
    reference = reference_fora2(model, spec)
    stream = report.streams[0]
    print(json.dumps({
        "all_compute_equals_unpatched": torch.equal(all_compute, plain),
        "fora2_equals_reference": torch.equal(cached, reference),
        "fora2_again_equals_first": torch.equal(cached_again, cached),
        "fora2_differs_from_unpatched": not torch.equal(cached, plain),
        "reused": int(report.reused[stream].sum()),
        "planned_fraction": float(report.planned.mean()),
        "notes": report.notes,
        "warnings": [m for level, m in records.messages if level == "WARNING" and "does not match" in m],
        "checked_identical": [m for level, m in records.messages if "on its first call: identical" in m],
    }))


if __name__ == "__main__":
    main()

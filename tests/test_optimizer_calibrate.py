"""``python -m optimizer.calibrate``: the written frontier (non-dominated, FORA baselines, images counted), on the toy
preset without ComfyUI and on tiny-flux through ComfyUI (listed and loaded by the nodes); ``calibration_masks`` for
seeding the full search; errors before any work."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ecad_nodes.schedule_io import load_schedule

ROOT = Path(__file__).resolve().parent.parent


def calibrate_cli(*args: str, comfy: bool = False, timeout: float = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ) if comfy else {k: v for k, v in os.environ.items() if k != "COMFYUI_PATH"}
    return subprocess.run([sys.executable, "-m", "optimizer.calibrate", *args, "--no-progress"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def assert_written_frontier(path: Path, steps: int, images: int) -> None:
    """Points non-dominated among themselves and the baselines, FORA-N for every N below the step count among the
    baselines, first steps computed, and the images the run rendered recorded."""
    schedule = load_schedule(path)
    assert schedule.steps == steps
    assert [b.name for b in schedule.baselines] == [f"FORA-{n}" for n in (2, 3, 4, 5) if n < steps]
    measured = [(p.metrics.quality, p.metrics.macs) for p in [*schedule.points, *schedule.baselines]]
    for p in schedule.points:
        q, m = p.metrics.quality, p.metrics.macs
        assert not any(q2 >= q and m2 <= m and (q2, m2) != (q, m) for q2, m2 in measured), f"{p.name} is dominated"
        assert p.mask.bits[0].all()
        assert p.metrics.extra["origin"].startswith(("greedy", "FORA-"))
    search = schedule.provenance["search"]
    assert search["algorithm"].startswith("quick calibration") and search["images"] == images
    assert any(p.metrics.extra["origin"].startswith("greedy") for p in schedule.points)


def test_toy_calibration_writes_a_non_dominated_frontier_with_fora_baselines(tmp_path):
    out = tmp_path / "toy.json"
    done = calibrate_cli("--model", "toy", "--run-dir", str(tmp_path / "run"), "--out", str(out))
    assert done.returncode == 0, done.stderr
    schedule = load_schedule(out)
    verified = schedule.provenance["search"]["schedules_verified"]
    images = 6 * (1 + verified + 4)  # the toy preset's 6 prompts, one image each: references, greedy, FORA-2..5
    assert_written_frontier(out, steps=8, images=images)
    assert f"{images} images rendered" in done.stdout
    assert (tmp_path / "run" / "frontier.png").stat().st_size > 0
    changes = np.load(tmp_path / "run" / "changes.npz")
    assert changes["change"].shape == (4, 8, schedule.layout.bits_per_step)


def test_the_seed_picks_other_images(tmp_path):
    runs = {}
    for seed in ("0", "1"):
        out = tmp_path / f"toy-{seed}.json"
        done = calibrate_cli("--model", "toy", "--run-dir", str(tmp_path / f"run-{seed}"), "--out", str(out),
                             "--seed", seed, "--num-prompts", "2", "--budgets", "0.5")
        assert done.returncode == 0, done.stderr
        runs[seed] = load_schedule(out).provenance["calibration"]["seeds"]
    assert runs == {"0": "0..1", "1": "2..3"}


def test_bad_budgets_and_unknown_presets_fail_before_any_work(tmp_path):
    done = calibrate_cli("--model", "toy", "--budgets", "0.5,1.5", "--run-dir", str(tmp_path))
    assert done.returncode == 2 and "budgets are fractions of the block MACs" in done.stderr
    done = calibrate_cli("--model", "no-such-model", "--run-dir", str(tmp_path))
    assert done.returncode == 2 and "unknown preset 'no-such-model'" in done.stderr
    assert not list(tmp_path.iterdir())


def test_calibration_masks_seed_a_search_from_one_recorded_render():
    from optimizer.budget import ImageLedger, MeteredBackend
    from optimizer.calibrate import calibration_masks
    from optimizer.calibration import calibration_items
    from optimizer.presets import preset
    from optimizer.toy_backend import ToyBackend

    p = preset("toy")
    ledger = ImageLedger()
    backend = MeteredBackend(ToyBackend(p.tiny, p.steps, p.cfg, p.sampler, p.width, 1, "toy"), ledger)
    items = calibration_items(["a red fox", "a blue car"], 1)
    masks = calibration_masks(backend, items, budgets=(0.7, 0.4))
    assert ledger.used == len(items)  # the uncached renders it recorded, nothing else
    assert 2 <= len(masks) <= 6 and all(m.bits[0].all() and m.steps == p.steps for m in masks)
    assert len({m.bits.tobytes() for m in masks}) == len(masks)


@pytest.mark.comfy
def test_tiny_flux_calibration_is_listed_and_loaded_by_the_nodes(tmp_path, monkeypatch):
    out = tmp_path / "tiny-flux-calibrated.json"
    done = calibrate_cli("--model", "tiny-flux", "--run-dir", str(tmp_path / "run"), "--out", str(out), comfy=True)
    assert done.returncode == 0, done.stderr
    schedule = load_schedule(out)
    verified = schedule.provenance["search"]["schedules_verified"]
    assert_written_frontier(out, steps=10, images=8 * (1 + verified + 4))
    assert schedule.family == "flux" and schedule.variant == "tiny-flux"

    from ecad_nodes import library
    monkeypatch.setattr(library, "PACK_SCHEDULES", tmp_path)  # as if written to the pack's schedules/
    assert out.name in library.list_sources()
    labels = library.labels_for(out.name)
    assert all(" · PSNR " in label for label in labels)
    choice = library.choose(out.name, labels[0])
    assert choice.point.mask == schedule.points[0].mask

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


def raced_images(schedule, per_schedule: int) -> tuple[int, int]:
    """The fewest and most images a calibration on ``per_schedule`` images can have rendered: the references and
    FORA-2…5 on every image, the greedy schedules verified on every image too, the others dropped after a screen of
    2 images or the next one of 4."""
    search = schedule.provenance["search"]
    verified, dropped = search["schedules_verified"], search["schedules_raced"] - search["schedules_verified"]
    assert 0 < verified <= search["schedules_raced"]
    full = per_schedule * (1 + 4 + verified)
    return full + 2 * dropped, full + 4 * dropped


def assert_written_frontier(path: Path, steps: int, images: tuple[int, int]) -> None:
    """Points non-dominated among themselves and the baselines, FORA-N for every N below the step count among the
    baselines, first steps computed, and the images the run rendered recorded (within ``images``' bounds)."""
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
    assert search["algorithm"].startswith("quick calibration") and images[0] <= search["images"] <= images[1]
    assert any(p.metrics.extra["origin"].startswith("greedy") for p in schedule.points)


def test_toy_calibration_writes_a_non_dominated_frontier_with_fora_baselines(tmp_path):
    out = tmp_path / "toy.json"
    done = calibrate_cli("--model", "toy", "--run-dir", str(tmp_path / "run"), "--out", str(out))
    assert done.returncode == 0, done.stderr
    schedule = load_schedule(out)
    assert_written_frontier(out, steps=8, images=raced_images(schedule, 6))  # the toy preset's 6 prompts, 1 image each
    assert f"{schedule.provenance['search']['images']} images rendered" in done.stdout
    assert schedule.provenance["search"]["budgets"][0] == 0.99
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


def test_racing_verifies_on_every_image_only_what_could_reach_the_measured_frontier():
    """Real toy model and fidelity metric: schedules that keep some components as step 0 made them (far below FORA-3
    at more cost) are dropped after a screen, the kept ones are scored on every image, every image rendered is
    counted, and a race run again decides alike."""
    from optimizer.budget import ImageLedger, MeteredBackend
    from optimizer.calibrate import Verified, calibration_masks, race
    from optimizer.calibration import calibration_items
    from optimizer.evaluate import make_evaluator
    from optimizer.genome import GenomeCodec
    from optimizer.metrics import make_metric
    from optimizer.pipeline import BASELINE_EVERY
    from optimizer.presets import preset
    from optimizer.seeding import fora_seeds
    from optimizer.toy_backend import ToyBackend
    from ecad_nodes.schedule import Mask

    p = preset("toy")
    items = calibration_items([f"prompt {i}" for i in range(8)], 1)
    kinds = ("self_attn", "cross_attn", "mlp")

    def stale_mask(layout, keep):
        """Every component at step 0, then only the ``keep`` kinds: the others stay as step 0 made them."""
        bits = np.zeros((p.steps, layout.bits_per_step), dtype=bool)
        bits[0] = True
        for kind in keep:
            bits[:, kind::3] = True
        return Mask(layout, bits)

    def raced(seed: int):
        ledger = ImageLedger()
        backend = MeteredBackend(ToyBackend(p.tiny, p.steps, p.cfg, p.sampler, p.width, 1, "toy"), ledger)
        evaluator = make_evaluator(backend, make_metric("fidelity"), items)
        evaluator.prepare()
        codec = GenomeCodec(backend.layout, p.steps)
        fora = [Verified(s.origin, codec.mask(s.genome), evaluator.evaluate(codec.mask(s.genome)))
                for s in fora_seeds(codec) if int(s.origin.split("-")[1]) in BASELINE_EVERY]
        greedy = [(f"greedy {k}", m) for k, m in enumerate(calibration_masks(backend, items[:2], budgets=(0.9, 0.6)))]
        assert backend.layout.groups[0].components == kinds
        stale = [(f"stale: only {'+'.join(kinds[c] for c in keep)} after step 0", stale_mask(backend.layout, keep))
                 for keep in ((2,), (0, 1))]
        before = ledger.used
        kept = race(evaluator, greedy + stale, fora, seed)
        return kept, ledger.used - before, len(greedy + stale)

    kept, images, raced_count = raced(seed=0)
    assert kept and all(not v.evaluation.items and len(v.evaluation.scores) == len(items) for v in kept)
    # 48 and 65 % of the MACs, 6 and 3 dB below FORA-3 (38 %) on the calibration images: dropped after a screen
    assert not any(v.origin.startswith("stale") for v in kept)
    dropped = raced_count - len(kept)
    assert 8 * len(kept) + 2 * dropped <= images <= 8 * len(kept) + 4 * dropped
    again, images_again, _ = raced(seed=0)
    assert [(v.origin, v.evaluation.quality) for v in again] == [(v.origin, v.evaluation.quality) for v in kept]
    assert images_again == images


@pytest.mark.comfy
def test_tiny_flux_calibration_is_listed_and_loaded_by_the_nodes(tmp_path, monkeypatch):
    out = tmp_path / "tiny-flux-calibrated.json"
    done = calibrate_cli("--model", "tiny-flux", "--run-dir", str(tmp_path / "run"), "--out", str(out), comfy=True)
    assert done.returncode == 0, done.stderr
    schedule = load_schedule(out)
    assert_written_frontier(out, steps=10, images=raced_images(schedule, 8))
    assert schedule.family == "flux" and schedule.variant == "tiny-flux"

    from ecad_nodes import library
    monkeypatch.setattr(library, "PACK_SCHEDULES", tmp_path)  # as if written to the pack's schedules/
    assert out.name in library.list_sources()
    labels = library.labels_for(out.name)
    assert all(" · PSNR " in label for label in labels)
    choice = library.choose(out.name, labels[0])
    assert choice.point.mask == schedule.points[0].mask

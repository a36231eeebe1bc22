"""The optimizer against real ComfyUI (COMFYUI_PATH): tiny presets end to end, the written frontier used by the
nodes, held-out dominance over FORA, resume after SIGKILL, and real-weight presets failing cleanly."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ecad_nodes.schedule_io import load_schedule
from test_optimizer_cli import frontier_of, sigkill_mid_generation

pytestmark = pytest.mark.comfy
ROOT = Path(__file__).resolve().parent.parent


def optimizer(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "optimizer.run", *args, "--no-progress"], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module", params=["tiny-flux", "tiny-pixart"])
def tiny_run(request, tmp_path_factory):
    """A run with the preset's default settings, plus a check on 8 held-out prompts with unseen seeds."""
    tmp = tmp_path_factory.mktemp(request.param)
    out = tmp / f"{request.param}.json"
    done = optimizer("--model", request.param, "--run-dir", str(tmp / "run"), "--out", str(out), "--holdout", "8")
    assert done.returncode == 0, done.stderr[-3000:]
    return request.param, out, done


def test_frontier_is_listed_and_drives_the_model(tiny_run, monkeypatch):
    name, out, _ = tiny_run
    from ecad_nodes import library
    from ecad_nodes.patching import apply_ecad
    from optimizer.presets import preset
    from support import assert_ran_as_planned, last_report, sample

    monkeypatch.setattr(library, "PACK_SCHEDULES", out.parent)  # as if written to the pack's schedules/
    assert out.name in library.list_sources()
    labels = library.labels_for(out.name)
    assert len(labels) >= 4
    schedule = load_schedule(out)
    assert schedule.family == preset(name).family and schedule.variant == name
    choice = library.choose(out.name, labels[len(labels) // 2])
    p = preset(name)
    model = p.tiny.build(seed=0)
    patched = apply_ecad(model, choice)
    kwargs = dict(steps=p.steps, cfg=p.cfg, sampler=p.sampler, scheduler=p.scheduler, width=p.width, height=p.height)
    cached = sample(patched, p.tiny, **kwargs)
    full = sample(model, p.tiny, **kwargs)
    assert cached.shape == full.shape and not np.array_equal(cached.numpy(), full.numpy())
    assert_ran_as_planned(last_report(patched), choice.point.mask.bits, streams=2 if p.cfg != 1.0 else 1)


def test_learned_frontier_beats_fora_on_held_out_prompts(tiny_run):
    """For FORA-2/3/4: a frontier point that costs no more MACs and has a higher PSNR on held-out prompts and seeds."""
    _, out, done = tiny_run
    schedule = load_schedule(out)
    first_held, _ = schedule.provenance["holdout"]["seeds"].split("..")
    _, last_searched = schedule.provenance["calibration"]["seeds"].split("..")
    assert int(last_searched) < int(first_held) == 1_000_000  # seeds the search never saw
    baselines = {b.name: b for b in schedule.baselines}
    for name in ("FORA-2", "FORA-3", "FORA-4"):
        fora = baselines[name].metrics
        better = [p for p in schedule.points if p.metrics.macs <= fora.macs
                  and p.metrics.extra["holdout_quality"] > fora.extra["holdout_quality"]]
        assert better, (f"{name} ({fora.macs / 1e9:.4g} GMACs, held-out PSNR {fora.extra['holdout_quality']:.2f}) "
                        f"is not beaten:\n{done.stdout[-2500:]}")


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path):
    args = ["--model", "tiny-flux", "--population", "6", "--generations", "3", "--num-prompts", "2", "--no-progress"]
    whole = optimizer(*args, "--run-dir", str(tmp_path / "whole"), "--out", str(tmp_path / "whole.json"))
    assert whole.returncode == 0, whole.stderr[-3000:]
    run_dir = tmp_path / "killed"
    code = sigkill_mid_generation([*args, "--run-dir", str(run_dir), "--out", str(tmp_path / "killed.json")],
                                  run_dir, timeout=900)
    assert code == -signal.SIGKILL
    resumed = optimizer(*args, "--run-dir", str(run_dir), "--out", str(tmp_path / "killed.json"), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert frontier_of(tmp_path / "killed.json") == frontier_of(tmp_path / "whole.json")


@pytest.mark.parametrize("name, files", [
    ("flux-dev", ["flux1-dev.safetensors", "clip_l.safetensors", "t5xxl_fp16.safetensors", "ae.safetensors"]),
    ("flux-schnell", ["flux1-schnell.safetensors", "clip_l.safetensors", "t5xxl_fp16.safetensors", "ae.safetensors"]),
    ("pixart-alpha", ["PixArt-XL-2-512x512.pth", "t5xxl_fp16.safetensors"]),
    ("pixart-sigma", ["PixArt-Sigma-XL-2-512-MS.pth", "t5xxl_fp16.safetensors", "sdxl_vae.safetensors"]),
])
def test_real_weight_presets_name_every_missing_file(name, files, tmp_path, capsys):
    from optimizer.run import main
    comfy_models = Path(os.environ["COMFYUI_PATH"]).resolve() / "models"
    assert main(["--model", name, "--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "out.json")]) == 2
    err = capsys.readouterr().err
    assert "model files are missing (nothing was loaded)" in err
    for f in files:
        assert f"'{f}': not found" in err
    assert str(comfy_models / "diffusion_models") in err and str(comfy_models / "text_encoders") in err
    assert "--diffusion-model PATH" in err and not (tmp_path / "run" / "run.sqlite").exists()


def test_file_overrides_are_looked_up_as_paths(tmp_path, capsys):
    from optimizer.run import main
    missing = tmp_path / "my-flux.safetensors"
    assert main(["--model", "flux-dev", "--diffusion-model", str(missing), "--text-encoder", "a.safetensors",
                 "--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "out.json")]) == 2
    err = capsys.readouterr().err
    assert f"diffusion model '{missing}': not found" in err and "text encoder 'a.safetensors'" in err
    assert "clip_l.safetensors" not in err  # replaced by --text-encoder


def test_pixart_at_256_pixels_is_refused_before_loading(tmp_path, capsys):
    from optimizer.run import main
    assert main(["--model", "tiny-pixart", "--width", "256", "--height", "256", "--run-dir", str(tmp_path / "run"),
                 "--out", str(tmp_path / "out.json")]) == 2
    assert "ComfyUI's PixArt cannot sample at 256×256" in capsys.readouterr().err


def test_all_in_one_checkpoint_presets_look_in_checkpoints(tmp_path, capsys):
    from optimizer.run import main
    comfy_models = Path(os.environ["COMFYUI_PATH"]).resolve() / "models"
    assert main(["--model", "auraflow-0.3", "--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "out.json")]) == 2
    err = capsys.readouterr().err
    assert "checkpoint (model, text encoder and VAE in one file) 'aura_flow_0.3.safetensors': not found" in err
    assert str(comfy_models / "checkpoints") in err and "text_encoders" not in err


@pytest.mark.parametrize("upscale", [8, 16])
def test_empty_latents_follow_the_vae_compression(upscale):
    from optimizer.loading import _vae_latent, tiny_vae
    from optimizer.presets import preset
    model = preset("tiny-flux").tiny.build(seed=0)
    latent = _vae_latent(model, tiny_vae(16, upscale), width=256, height=128, frames=1)(2)
    assert latent.shape == (2, 16, 128 // upscale, 256 // upscale) and not latent.any()


def _tiny_preset_models() -> list[str]:
    from ecad_nodes.registry import tiny_presets
    return sorted(p.name.removeprefix("tiny-") for p in tiny_presets())


def _mean_abs_difference(a, b) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).mean())


@pytest.mark.parametrize("model", _tiny_preset_models())   # a tiny model's name: deselected where ComfyUI lacks it
def test_prompts_sampled_in_one_batch_give_each_prompt_its_own_images(model, tmp_path):
    """The optimizer samples images of several prompts in one batch (their conditionings stacked row by row): with a
    caching schedule, each row must be what its prompt sampled alone gives, on every family's model."""
    from dataclasses import replace

    from ecad_nodes.heuristics import fora_bits
    from ecad_nodes.schedule import Mask
    from optimizer.calibration import calibration_items
    from optimizer.comfy_backend import COMFY_MODELS, stack_conditioning
    from optimizer.run import build_parser
    from optimizer.spec import spec_from_args

    args = build_parser().parse_args(["--model", f"tiny-{model}", "--steps", "4", "--cpu", "--no-progress",
                                      "--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "out.json")])
    spec = spec_from_args(args)
    problems, resolved = COMFY_MODELS.check(spec)
    assert not problems
    backend = COMFY_MODELS.open(replace(spec, **resolved))
    try:
        items = calibration_items(["a red fox in fresh snow", "a blue boat on a calm lake at dawn"], 1)
        assert stack_conditioning([backend.loaded.encode(item.prompt) for item in items]) is not None
        mask = Mask(backend.layout, fora_bits(backend.layout, backend.steps, 2))
        backend.batch_size = 2
        together = backend.render(mask, items).images
        backend.batch_size = 1
        alone = backend.render(mask, items).images
    finally:
        backend.close()
    apart = _mean_abs_difference(alone[0], alone[1])
    assert apart > 2.0, f"the two prompts' images differ by only {apart:.2f} levels: a mix-up would not show"
    for row, (t, a) in enumerate(zip(together, alone)):
        assert _mean_abs_difference(t, a) < 0.5, f"row {row} of the batch is not its prompt's own image"


def test_cheap_search_on_tiny_flux_warm_started_from_another_step_count_within_a_budget(tmp_path):
    """Racing, the surrogate, a warm start mapped from 6 to 10 steps and a quality the uncached image does not
    maximise (random_critic), within --budget-images, on ComfyUI's FLUX: the file counts every image."""
    small = ["--population", "4", "--num-prompts", "2", "--images-per-prompt", "1"]
    source = optimizer("--model", "tiny-flux", *small, "--generations", "0", "--steps", "6",
                       "--run-dir", str(tmp_path / "six"), "--out", str(tmp_path / "six.json"))
    assert source.returncode == 0, source.stderr[-3000:]
    budget = 90
    done = optimizer("--model", "tiny-flux", "--population", "6", "--generations", "20", "--num-prompts", "4",
                     "--images-per-prompt", "2", "--metric", "random_critic", "--warm-start", str(tmp_path / "six.json"),
                     "--budget-images", str(budget), "--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "out.json"))
    assert done.returncode == 0, done.stderr[-3000:]
    schedule = load_schedule(tmp_path / "out.json")
    search = schedule.provenance["search"]
    assert search["images"] <= budget and "the budget ended the search early" in done.stdout
    assert search["warm_start"]["name"] == "six.json" and search["racing"] and search["surrogate"]
    assert schedule.points and all(p.metrics.quality_metric == "random_critic" for p in schedule.points)
    import sqlite3
    db = sqlite3.connect(tmp_path / "run" / "run.sqlite")
    origins = [o for (o,) in db.execute("SELECT origin FROM evaluations WHERE origin LIKE 'warm start%'")]
    screens = db.execute("SELECT COUNT(*) FROM evaluations WHERE full = 0").fetchone()[0]
    db.close()
    assert origins and all(o.endswith("6 steps mapped to 10") for o in origins) and screens

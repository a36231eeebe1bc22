"""Optimizer benchmark: how many candidate schedules a minute, and how much of the time is the optimizer's own.

    python benchmarks/bench_optimizer.py [--model tiny-flux] [--generations 3] [--population 12] [--threads 1]
                                         [--no-racing] [--no-surrogate]

Runs the search of ``python -m optimizer.run`` (same backend, evaluator, database and checkpoints; racing and
the surrogate on, as the run's defaults, unless switched off) in a temporary run directory and splits its wall
time into: sampling inside the model, decoding latents, scoring, the per-candidate overhead (``apply_ecad``,
noise, image conversion, database commit) and the search's overhead (pymoo ask/tell, the surrogate's pool and
fits, racing decisions, checkpoints, frontier bookkeeping). Target: the optimizer's own overhead (the last two)
≤ 5 % of the wall time. ``--model toy`` runs without ComfyUI.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

OVERHEAD_TARGET = 0.05


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny-flux", help="a tiny preset (or toy) (default tiny-flux)")
    p.add_argument("--comfyui", help="ComfyUI checkout (default: $COMFYUI_PATH)")
    p.add_argument("--generations", type=int, default=3, help="offspring generations after the initial one")
    p.add_argument("--population", type=int, default=None, help="default: the preset's")
    p.add_argument("--prompts", type=int, default=None, help="calibration prompts (default: the preset's)")
    p.add_argument("--threads", type=int, default=1, help="PyTorch CPU threads (the optimizer's default for tiny presets)")
    p.add_argument("--racing", action=argparse.BooleanOptionalAction, default=True,
                   help="screen candidates on an eighth of the images first (the run's default)")
    p.add_argument("--surrogate", action=argparse.BooleanOptionalAction, default=True,
                   help="surrogate pre-screening of offspring (the run's default)")
    return p.parse_args(argv)


def build_backend(preset, args):
    if preset.family == "toy":
        from optimizer.toy_backend import ToyBackend
        return ToyBackend(preset.tiny, preset.steps, preset.cfg, preset.sampler, preset.width, preset.images_per_prompt,
                          preset.name), "cpu"
    from optimizer.comfy_env import import_comfy
    import_comfy(args.comfyui)
    import comfy.model_management
    from optimizer.comfy_backend import ComfyBackend, Sampling
    from optimizer.loading import build_tiny
    loaded = build_tiny(preset, preset.width, preset.height)
    backend = ComfyBackend(loaded, Sampling(preset.steps, preset.sampler, preset.scheduler, preset.cfg),
                           min(preset.images_per_prompt, 16), preset.name)
    return backend, str(comfy.model_management.get_torch_device())


def main(argv=None) -> int:
    args = parse(argv)
    import torch

    from optimizer.calibration import calibration_items, items_hash
    from optimizer.database import RunDatabase
    from optimizer.evaluate import Evaluator
    from optimizer.genome import GenomeCodec
    from optimizer.metrics import make_metric
    from optimizer.presets import preset as get_preset
    from optimizer.prompts import load_prompts
    from optimizer.racing import RacingConfig
    from optimizer.search import Search, SearchConfig
    from optimizer.surrogate import SurrogateConfig

    preset = get_preset(args.model)
    if not preset.is_tiny:
        print(f"{args.model} needs real weights; benchmark a tiny preset (tiny-flux, tiny-pixart, toy)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    population = args.population or preset.population
    prompts = load_prompts()[:args.prompts or preset.prompts]
    items = calibration_items(prompts, preset.images_per_prompt)
    backend, device = build_backend(preset, args)
    try:
        evaluator = Evaluator(backend, make_metric(preset.metric), items, "macs")
        setup = time.perf_counter()
        evaluator.prepare()
        setup = time.perf_counter() - setup
        codec = GenomeCodec(backend.layout, preset.steps)
        with tempfile.TemporaryDirectory() as tmp:
            db = RunDatabase(Path(tmp) / "run.sqlite", "bench", "bench", items_hash(items))
            config = SearchConfig(population, 0,
                                  racing=RacingConfig(max(2, -(-len(items) // 8))) if args.racing else None,
                                  surrogate=SurrogateConfig(evaluate=max(2, population // 4)) if args.surrogate else None)
            search = Search(codec, evaluator, db, Path(tmp), config, "bench")
            result = search.run(args.generations)
            result_rows = db.rows()
            db.close()
    finally:
        backend.close()

    wall = result.wall_seconds
    t = result.timings
    per_candidate = result.evaluation_seconds - t.total
    search_overhead = wall - result.evaluation_seconds
    rows = [
        ("sampling (inside the model)", t.model, ""),
        ("decoding latents to RGB", t.decode, ""),
        ("scoring (metric)", t.metric, ""),
        ("per-candidate overhead", per_candidate, "apply_ecad, noise, images, database commit"),
        ("search overhead", search_overhead, "pymoo ask/tell, surrogate, racing, checkpoints, frontier bookkeeping"),
    ]
    print(f"Optimizer benchmark: {preset.name}, {len(prompts)} prompts × {preset.images_per_prompt} image(s), "
          f"{preset.steps} steps at {preset.width}×{preset.height}, population {population}, "
          f"{args.generations} generations after the initial one, racing {'on' if args.racing else 'off'}, surrogate "
          f"{'on' if args.surrogate else 'off'}, {device} ({torch.get_num_threads()} thread(s))")
    print(f"reference images (full computation) took {setup:.1f} s before the search\n")
    print(f"{'':<32}{'seconds':>9}{'share':>9}")
    print(f"{'search wall time':<32}{wall:>9.2f}{100.0:>8.1f}%")
    for name, seconds, note in rows:
        print(f"  {name:<30}{seconds:>9.2f}{100 * seconds / wall:>8.1f}%   {note}")
    overhead = per_candidate + search_overhead
    verdict = "meets" if overhead / wall <= OVERHEAD_TARGET else "MISSES"
    print(f"{'optimizer overhead (both)':<32}{overhead:>9.2f}{100 * overhead / wall:>8.1f}%   "
          f"{verdict} the target of ≤ {100 * OVERHEAD_TARGET:.0f} %")
    images = sum(r.evaluation.images for r in result_rows)
    print(f"\n{result.new_evaluations} evaluations (screens and full ones), {images} images: "
          f"{60 * result.new_evaluations / wall:.1f} evaluations per minute, {1e3 * wall / max(1, images):.1f} ms per image")
    return 0


if __name__ == "__main__":
    sys.exit(main())

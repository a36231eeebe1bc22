"""Learn caching schedules for a model: NSGA-II over ECAD masks, headless, through ComfyUI.

    python -m optimizer.run --model flux-dev            # real weights from ComfyUI's models/ folders
    python -m optimizer.run --model tiny-flux           # a small random-weight FLUX on the CPU, minutes
    python -m optimizer.run --model tiny-flux --resume  # continue a killed run where it stopped

Every candidate schedule renders the same calibration prompts with the same seeds; its quality is
the mean metric score over those images and its cost the MACs of one image. Every evaluation is
committed to an SQLite database in the run directory and the search state is checkpointed after
every generation, so a killed run continues with ``--resume``. The frontier is written as a schedule
file that "ECAD Load Schedule" lists at once.
"""
from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import shlex
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

from .comfy_env import PACK_ROOT, ComfyUINotFound, import_comfy
from .presets import Preset, all_presets

DEFAULT_FRONTIER_SIZE = 8
BASELINE_EVERY = (2, 3, 4, 5)      # FORA-N heuristics measured alongside the frontier
LATENCY_IMAGES = 4                 # images per timed round of --measure-latency


class SetupError(RuntimeError):
    """Something to fix before the run can start; raised before any long work."""


# ---------------------------------------------------------------- command line

def _preset_lines() -> str:
    presets = all_presets()
    width = max(len(n) for n in presets)
    return "\n".join(f"  {name.ljust(width)}  {p.description}" for name, p in sorted(presets.items()))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m optimizer.run",
        description=__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n", 2)[2],
        epilog="presets:\n" + _preset_lines() + "\n\nSee docs/optimizer.md for the method, the files a run writes "
               "and how to use the result.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, metavar="PRESET",
                   help="the preset to optimise (listed below): model files, sampling and search settings")

    g = p.add_argument_group("ComfyUI and model files")
    g.add_argument("--comfyui", metavar="PATH", help="ComfyUI checkout (default: $COMFYUI_PATH, else the ComfyUI "
                   "this pack is installed in)")
    g.add_argument("--cpu", action="store_true", help="run on the CPU even where CUDA is available")
    g.add_argument("--threads", type=int, metavar="N", help="PyTorch CPU threads (default: 1 for tiny and toy presets, "
                   "whose layers are too small to gain from threads that only contend for cores; else PyTorch's default)")
    g.add_argument("--diffusion-model", metavar="FILE", help="the diffusion model: a name in models/diffusion_models "
                   "or a path (default: the preset's)")
    g.add_argument("--text-encoder", metavar="FILE", action="append", help="a text encoder: a name in "
                   "models/text_encoders or a path; repeat for each file (default: the preset's)")
    g.add_argument("--vae", metavar="FILE", help="the VAE: a name in models/vae or a path (default: the preset's)")

    g = p.add_argument_group("sampling (defaults: the preset's, i.e. the ECAD paper's calibration settings)")
    g.add_argument("--steps", type=int, help="sampling steps; the schedule is learned for exactly this count")
    g.add_argument("--width", type=int, help="image width in pixels")
    g.add_argument("--height", type=int, help="image height in pixels")
    g.add_argument("--sampler", help="ComfyUI sampler name, e.g. euler, dpmpp_2m")
    g.add_argument("--scheduler", help="ComfyUI scheduler name, e.g. simple, normal")
    g.add_argument("--cfg", type=float, help="classifier-free guidance scale (1 = no negative prompt pass)")
    g.add_argument("--guidance", type=float, help="distilled guidance of FLUX-like models")

    g = p.add_argument_group("calibration images")
    g.add_argument("--prompts", metavar="FILE", help="prompt file: text (one per line), PartiPrompts-style .tsv "
                   "(a 'Prompt' column) or .json (default: the pack's 100 calibration prompts)")
    g.add_argument("--num-prompts", type=int, metavar="N", help="use the first N prompts (default: the preset's)")
    g.add_argument("--images-per-prompt", type=int, metavar="N",
                   help="images per prompt, each with its own seed, the same for every candidate (default: the preset's)")
    g.add_argument("--batch-size", type=int, metavar="N",
                   help="images sampled together (one prompt's seeds; default: images per prompt, at most 16)")
    g.add_argument("--holdout", type=int, default=0, metavar="N",
                   help="hold N prompts out of the search and, at the end, score the frontier and the FORA baselines "
                        "on them with unseen seeds (from 1000); 0 = off (default)")

    g = p.add_argument_group("search (NSGA-II)")
    g.add_argument("--population", type=int, help="population size (default: the preset's; ECAD: 72 PixArt, 24 FLUX)")
    g.add_argument("--generations", type=int, help="offspring generations after the initial one (default: the "
                   "preset's); with --resume, a larger number continues a finished run")
    g.add_argument("--seed", type=int, default=0, help="seed of the search (initial population, pymoo's RNG)")
    g.add_argument("--mutation-prob", type=float, default=0.05,
                   help="share of offspring mutated (pymoo BitflipMutation prob; ECAD: 0.05)")
    g.add_argument("--mutation-bits", type=float, default=1.0,
                   help="expected bits flipped in a mutated offspring (ECAD/pymoo default: 1)")
    g.add_argument("--step-move-prob", type=float, default=0.25,
                   help="share of offspring in which two neighbouring steps swap their genes: moves a computed step "
                        "at equal cost, which bit flips cannot (not in the ECAD paper; 0 = the paper's operators only; "
                        "default 0.25)")

    g = p.add_argument_group("objectives")
    g.add_argument("--metric", help="quality metric: fidelity (PSNR against the uncached image; no weights) or "
                   "image_reward (the ECAD paper's; needs ImageReward files) (default: the preset's)")
    g.add_argument("--image-reward-weights", metavar="FILE", help="ImageReward.pt (default: models/image_reward/)")
    g.add_argument("--image-reward-config", metavar="FILE", help="med_config.json (default: models/image_reward/)")
    g.add_argument("--image-reward-tokenizer", metavar="DIR",
                   help="bert-base-uncased tokenizer folder (default: models/image_reward/bert-base-uncased)")
    g.add_argument("--cost", choices=("macs", "macs-attention", "latency"), default="macs",
                   help="cost objective: MACs of the linear layers (as the paper's calflops counts; default), MACs "
                        "with the attention products, or the sampling time measured on this device (noisy; "
                        "runs are then not exactly reproducible)")

    g = p.add_argument_group("output and runs")
    g.add_argument("--out", metavar="FILE", help="schedule file to write (default: the pack's schedules/<preset>.json, "
                   "which ECAD Load Schedule lists)")
    g.add_argument("--run-dir", metavar="DIR", help="database, checkpoint and plot of the run (default: runs/<preset> "
                   "in the pack)")
    g.add_argument("--resume", action="store_true", help="continue the run in --run-dir (settings must match)")
    g.add_argument("--frontier-size", type=int, default=DEFAULT_FRONTIER_SIZE, metavar="K",
                   help=f"about K points written to the schedule file: both ends of the frontier, the best point within "
                        f"each FORA baseline's cost (kept even beyond K), the rest spread evenly "
                        f"(default {DEFAULT_FRONTIER_SIZE})")
    g.add_argument("--measure-latency", type=int, default=0, metavar="REPEATS",
                   help="time the frontier points and baselines against no caching on this device (REPEATS rounds, "
                        "interleaved) and store the measured speedups; 0 = off (default)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar (generation lines are still printed)")
    return p


# ---------------------------------------------------------------- set-up checks (before any long work)

def _writable_file_problem(path: Path, what: str) -> Optional[str]:
    if path.is_dir():
        return f"{what} {path} is a directory; give a file name"
    if path.exists():
        return None if os.access(path, os.W_OK) else f"{what} {path} exists and is not writable"
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"{what} {path} cannot be created: {parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{what} {path} cannot be created: {parent} is not writable"
    return None


@dataclass
class Plan:
    """Everything resolved from the command line and the preset, checked, before loading a model."""

    preset: Preset
    args: argparse.Namespace
    steps: int
    width: int
    height: int
    sampler: str
    scheduler: str
    cfg: float
    guidance: Optional[float]
    prompts: list[str]
    holdout_prompts: list[str]
    images_per_prompt: int
    batch_size: int
    population: int
    generations: int
    metric: str
    metric_options: dict[str, Any]
    out: Path
    run_dir: Path
    comfy_root: Optional[Path] = None
    model_paths: Any = None


def plan_run(args: argparse.Namespace) -> Plan:
    presets = all_presets()
    preset = presets.get(args.model)
    if preset is None:
        raise SetupError(f"unknown preset {args.model!r}; choose one of: {', '.join(sorted(presets))}")
    problems: list[str] = []

    def positive(name: str, value: Optional[int], default: int, minimum: int = 1) -> int:
        value = default if value is None else value
        if value < minimum:
            problems.append(f"--{name.replace('_', '-')} must be at least {minimum}, got {value}")
        return value

    steps = positive("steps", args.steps, preset.steps, 2)
    width = positive("width", args.width, preset.width, 8)
    height = positive("height", args.height, preset.height, 8)
    images_per_prompt = positive("images_per_prompt", args.images_per_prompt, preset.images_per_prompt)
    population = positive("population", args.population, preset.population, 4)
    generations = positive("generations", args.generations, preset.generations, 0)
    batch_size = positive("batch_size", args.batch_size, min(images_per_prompt, 16))
    positive("frontier_size", args.frontier_size, 1)
    positive("holdout", args.holdout, 0, 0)
    if not 0.0 <= args.mutation_prob <= 1.0:
        problems.append(f"--mutation-prob must be in [0, 1], got {args.mutation_prob}")
    if not 0.0 <= args.step_move_prob <= 1.0:
        problems.append(f"--step-move-prob must be in [0, 1], got {args.step_move_prob}")
    if args.mutation_bits <= 0:
        problems.append(f"--mutation-bits must be positive, got {args.mutation_bits}")

    # prompts
    from .prompts import load_prompts, split_prompts
    prompts: list[str] = []
    holdout: list[str] = []
    try:
        all_prompts = load_prompts(args.prompts)
        calibration, holdout = split_prompts(all_prompts, args.holdout, seed=args.seed) if args.holdout else (all_prompts, [])
        wanted = args.num_prompts if args.num_prompts is not None else min(preset.prompts, len(calibration))
        if wanted < 1:
            problems.append(f"--num-prompts must be at least 1, got {wanted}")
        elif wanted > len(calibration):
            problems.append(f"--num-prompts {wanted}: the prompt file has only {len(calibration)} prompts"
                            + (f" left after holding out {args.holdout}" if args.holdout else ""))
        prompts = calibration[:wanted]
    except ValueError as e:
        problems.append(str(e))

    # metric
    metric = args.metric or preset.metric
    from .metrics import known_metrics
    metric_options: dict[str, Any] = {}
    if metric not in known_metrics():
        problems.append(f"unknown --metric {metric!r}; known metrics: {', '.join(known_metrics())}")
    elif metric == "image_reward":
        metric_options = {k: v for k, v in (("weights", args.image_reward_weights),
                                            ("med_config", args.image_reward_config),
                                            ("tokenizer", args.image_reward_tokenizer)) if v}

    # output and run directory
    is_toy = preset.family == "toy"
    if is_toy and args.cost == "macs-attention":
        problems.append("--cost macs-attention: the toy model's cost model counts linear layers only; use --cost macs")
    run_dir = Path(args.run_dir) if args.run_dir else PACK_ROOT / "runs" / preset.name
    default_out = (run_dir / f"{preset.name}.json") if is_toy else PACK_ROOT / "schedules" / f"{preset.name}.json"
    out = Path(args.out) if args.out else default_out
    for problem in (_writable_file_problem(out, "--out"), _writable_file_problem(run_dir / "run.sqlite", "--run-dir")):
        if problem:
            problems.append(problem)
    from .run_dir import setup_problems
    problems.extend(setup_problems(run_dir, args.resume))

    plan = Plan(preset, args, steps, width, height, args.sampler or preset.sampler, args.scheduler or preset.scheduler,
                preset.cfg if args.cfg is None else args.cfg, preset.guidance if args.guidance is None else args.guidance,
                prompts, holdout, images_per_prompt, batch_size, population, generations, metric, metric_options,
                out, run_dir)

    if not is_toy:
        from .loading import MissingModelFiles, check_resolution, find_model_files
        why = check_resolution(preset.family, width, height)
        if why:
            problems.append(why)
        try:
            plan.comfy_root = import_comfy(args.comfyui, cpu=True if args.cpu else None)
        except ComfyUINotFound as e:
            problems.append(str(e))
        if plan.comfy_root is not None and not preset.is_tiny:
            files = preset.files
            files = replace(files, diffusion_model=args.diffusion_model or files.diffusion_model,
                            text_encoders=tuple(args.text_encoder) if args.text_encoder else files.text_encoders,
                            vae=args.vae or files.vae)
            try:
                plan.model_paths = find_model_files(files, plan.comfy_root)
            except MissingModelFiles as e:
                problems.append(str(e))
    if metric == "image_reward":  # reported with the model files: one run of the command names everything missing
        from .metrics import MetricUnavailable
        from .metrics.image_reward import find_files
        try:
            find_files(comfyui=plan.comfy_root, **metric_options)
        except MetricUnavailable as e:
            problems.append(str(e))
    if problems:
        raise SetupError("cannot start:\n  - " + "\n  - ".join(p.replace("\n", "\n    ") for p in problems))
    return plan


# ---------------------------------------------------------------- the run

def _settings(plan: Plan, model_identity: dict[str, Any], device: str, calibration_hash: str):
    from .settings import RunSettings
    metric_files: dict[str, Any] = {}
    if plan.metric == "image_reward":
        from .loading import file_identity
        from .metrics.image_reward import find_files
        files = find_files(comfyui=plan.comfy_root, **plan.metric_options)
        metric_files = {"weights": file_identity(files.weights), "med_config": file_identity(files.med_config)}
    a = plan.args
    return RunSettings(
        preset=plan.preset.name, family=plan.preset.family, model=model_identity, device=device, steps=plan.steps,
        sampler=plan.sampler, scheduler=plan.scheduler, cfg=plan.cfg, guidance=plan.guidance, width=plan.width,
        height=plan.height, frames=plan.preset.frames, prompts_source=str(a.prompts or "built-in calibration prompts"),
        calibration_hash=calibration_hash, num_prompts=len(plan.prompts), images_per_prompt=plan.images_per_prompt,
        batch_size=plan.batch_size, metric=plan.metric, metric_files=metric_files, cost=a.cost,
        population=plan.population, seed=a.seed, crossover_points=4, crossover_prob=0.9,
        mutation_prob=a.mutation_prob, mutation_bits=a.mutation_bits, step_move_prob=a.step_move_prob)


def _model_identity(plan: Plan) -> dict[str, Any]:
    from .loading import model_identity, tiny_identity
    return tiny_identity(plan.preset) if plan.preset.is_tiny else model_identity(plan.model_paths)


def _backend(plan: Plan):
    preset = plan.preset
    if preset.family == "toy":
        from .toy_backend import ToyBackend
        return ToyBackend(preset.tiny, plan.steps, plan.cfg, plan.sampler, plan.width, plan.batch_size, preset.name)
    from .comfy_backend import ComfyBackend, Sampling
    from .loading import build_tiny, load_real
    loaded = build_tiny(preset, plan.width, plan.height) if preset.is_tiny else \
        load_real(preset, plan.model_paths, plan.width, plan.height)
    return ComfyBackend(loaded, Sampling(plan.steps, plan.sampler, plan.scheduler, plan.cfg), plan.batch_size, preset.name)


def run(args: argparse.Namespace) -> int:
    from .calibration import HOLDOUT_SEED_BASE, calibration_items, items_hash
    from .settings import differences

    plan = plan_run(args)
    items = calibration_items(plan.prompts, plan.images_per_prompt)
    calibration_hash = items_hash(items)
    model_identity = _model_identity(plan)
    import torch
    threads = args.threads or (1 if plan.preset.is_tiny else None)
    if threads:
        torch.set_num_threads(threads)
    device = "cpu" if plan.preset.family == "toy" else _device_name()
    if device == "cpu":  # results may differ in the last bits with the thread count: part of the settings
        device = f"cpu ({torch.get_num_threads()} threads)"
    settings = _settings(plan, model_identity, device, calibration_hash)

    from .run_dir import check_resume, open_run
    # run.sqlite and checkpoint.pkl checked against each other (optimizer/run_dir.py) before anything is written
    db, checkpoint = open_run(plan.run_dir, settings.fingerprint(), _short_hash(model_identity), calibration_hash)
    try:
        stored = db.get_meta("settings")
        if stored is not None and stored != settings.to_json():
            lines = differences(stored, settings.to_json())
            raise SetupError(f"--resume: {plan.run_dir} was made with other settings, so its evaluations do not apply:\n  - "
                             + "\n  - ".join(lines) + "\nresume with the run's settings, or choose another --run-dir")
        check_resume(db, checkpoint, settings.fingerprint(), settings_stored=stored is not None)
        if stored is None:
            db.set_meta("settings", settings.to_json())
            db.set_meta("created", _now())
        return _search_and_report(plan, settings, items, db, HOLDOUT_SEED_BASE)
    finally:
        db.close()


def _where_listed(path: Path) -> str:
    from ecad_nodes.library import PACK_SCHEDULES, USER_FOLDER_NAME
    resolved = path.resolve()
    if resolved.is_relative_to(PACK_SCHEDULES.resolve()) or USER_FOLDER_NAME in resolved.parts:
        return "ECAD Load Schedule lists it"
    return f"copy it into ComfyUI/models/{USER_FOLDER_NAME}/ for ECAD Load Schedule to list it"


def _device_name() -> str:
    import comfy.model_management
    return str(comfy.model_management.get_torch_device())


def _short_hash(value: Any) -> str:
    import hashlib
    import json
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def _search_and_report(plan: Plan, settings, items, db, holdout_seed_base: int) -> int:
    import time

    from ecad_nodes.heuristics import fora_bits
    from ecad_nodes.schedule_io import save_schedule

    from .calibration import calibration_items, items_hash, seed_range
    from .evaluate import Evaluator, measure_latency
    from .genome import GenomeCodec
    from .metrics import MetricUnavailable, make_metric
    from .report import ResultPoint, pareto_front, plot, point_names, schedule_file, select_points, table
    from .search import Progress, Search, SearchConfig
    from .settings import TOOL_VERSION

    args = plan.args
    print(f"ECAD optimizer: preset {plan.preset.name}, {len(plan.prompts)} prompts × {plan.images_per_prompt} images, "
          f"{plan.steps} steps at {plan.width}×{plan.height}, metric {plan.metric}, cost {args.cost}")
    print(f"run directory: {plan.run_dir}   schedule file: {plan.out}")
    started = time.perf_counter()
    backend = _backend(plan)
    try:
        try:
            metric = make_metric(plan.metric, **({"comfyui": plan.comfy_root, **plan.metric_options}
                                                  if plan.metric == "image_reward" else {}))
        except MetricUnavailable as e:
            raise SetupError(str(e)) from None
        print(backend.describe())
        evaluator = Evaluator(backend, metric, items, args.cost)
        full = evaluator.prepare()
        print(f"no caching: {metric.short_name} {full.quality:.3f}, {evaluator.full_macs / 1e9:.4g} GMACs/image "
              f"({evaluator.image_cost.convention}), {full.latency_ms:.1f} ms/image to sample; set-up took "
              f"{time.perf_counter() - started:.1f} s")

        codec = GenomeCodec(backend.layout, plan.steps)
        config = SearchConfig(plan.population, args.seed, mutation_prob=args.mutation_prob,
                              mutation_bits=args.mutation_bits, step_move_prob=args.step_move_prob)
        search = Search(codec, evaluator, db, plan.run_dir, config, settings.fingerprint(), metric_short=metric.short_name)
        done = search.completed_generations()
        if done:
            print(f"resuming after generation {done - 1} ({db.count()} evaluations in the database)")
        offspring_generations = max(0, plan.generations - max(0, done - 1))
        total = (0 if done else len(search.seed_origins)) + offspring_generations * plan.population
        progress = Progress(total=total, enabled=False if args.no_progress else None)
        search.progress = progress
        try:
            result = search.run(plan.generations)
        finally:
            progress.close()
        db.set_meta("generations_completed", result.completed)

        # baselines: FORA-N, measured the same way (mostly found in the database: they seed the population)
        baselines = []
        for every in BASELINE_EVERY:
            if every >= plan.steps:
                continue
            bits = fora_bits(backend.layout, plan.steps, every)
            bits[0] = True
            genome = codec.genome(codec.mask(bits[1:].reshape(-1)))
            ev = search.evaluate(genome, f"FORA-{every}", -1)
            baselines.append(ResultPoint(f"FORA-{every}", codec.mask(genome), ev.quality, ev.macs, ev.cost))

        # the frontier over everything measured: a baseline the search never met may still lie on it
        evaluations = db.all()
        by_hash = {e.genome_hash: e for e in evaluations}
        frontier = [by_hash[k] for k in pareto_front([(e.genome_hash, (e.evaluation.quality, e.evaluation.cost))
                                                       for e in evaluations])]
        chosen = select_points(frontier, args.frontier_size, cost_of=lambda e: e.evaluation.cost,
                               anchors=[b.cost for b in baselines])
        names = point_names([1.0 / e.evaluation.cost for e in chosen])
        points = [ResultPoint(n, codec.mask(e.genome), e.evaluation.quality, e.evaluation.macs, e.evaluation.cost,
                              extra={"origin": e.origin})
                  for n, e in zip(names, chosen)]

        if args.measure_latency:
            timed = {p.name: p.mask for p in [*points, *baselines]}
            seconds = measure_latency(backend, {"no caching": None, **timed}, items[:LATENCY_IMAGES], args.measure_latency)
            for p in [*points, *baselines]:
                p.latency_ms = 1e3 * seconds[p.name]
                p.speedup = seconds["no caching"] / seconds[p.name]

        holdout_hash = None
        if plan.holdout_prompts:
            held = calibration_items(plan.holdout_prompts, plan.images_per_prompt, first_seed=holdout_seed_base)
            holdout_hash = items_hash(held)
            checker = Evaluator(backend, metric, held, "macs" if args.cost == "latency" else args.cost)
            checker.prepare()
            for p in [*points, *baselines]:
                p.holdout_quality = checker.evaluate(p.mask).quality

        provenance = {
            "tool": f"ComfyUI-ECAD optimizer {TOOL_VERSION}", "date": _now(),
            "command": "python -m optimizer.run " + shlex.join(args.argv),
            "preset": plan.preset.name, "model": settings.model, "device": settings.device,
            "sampling": {"steps": plan.steps, "sampler": plan.sampler, "scheduler": plan.scheduler, "cfg": plan.cfg,
                         "guidance": plan.guidance, "width": plan.width, "height": plan.height},
            "calibration": {"prompts": settings.prompts_source, "num_prompts": len(plan.prompts),
                            "images_per_prompt": plan.images_per_prompt, "seeds": seed_range(items),
                            "prompts_hash": settings.calibration_hash},
            "metric": plan.metric, "cost": args.cost, "mac_convention": evaluator.image_cost.convention,
            "search": {"algorithm": "NSGA-II (pymoo)", "population": plan.population, "seed": args.seed,
                       "crossover": "4-point, p=0.9", "mutation": f"bit-flip, p={args.mutation_prob}, "
                       f"{args.mutation_bits:g} bit(s); neighbouring steps swapped, p={args.step_move_prob}", "generations_run": result.completed - 1,
                       "evaluations": len(evaluations)},
        }
        if holdout_hash:
            provenance["holdout"] = {"num_prompts": len(plan.holdout_prompts), "images_per_prompt": plan.images_per_prompt,
                                     "seeds": seed_range(held),
                                     "prompts_hash": holdout_hash}
        schedule = schedule_file(backend.family, backend.variant, backend.layout, plan.steps, points, baselines,
                                 plan.metric, evaluator.full_macs, evaluator.image_cost.convention, provenance)
        save_schedule(schedule, plan.out)
        png = plot(plan.run_dir / "frontier.png", [(e.evaluation.quality, e.evaluation.cost) for e in evaluations],
                   points, baselines, evaluator.full_macs, f"{metric.short_name} ({plan.metric})",
                   f"{plan.preset.name}: {len(evaluations)} schedules, {result.completed - 1} generations")

        print()
        print(table(points, baselines, metric.short_name, evaluator.full_macs, full.quality))
        overhead = result.wall_seconds - result.timings.total
        if result.wall_seconds > 0 and result.new_evaluations:
            print(f"\nsearch: {result.new_evaluations} new evaluations, {result.reused_evaluations} from the database, "
                  f"{result.wall_seconds:.1f} s: sampling {100 * result.timings.model / result.wall_seconds:.1f}%, "
                  f"decoding {100 * result.timings.decode / result.wall_seconds:.1f}%, "
                  f"scoring {100 * result.timings.metric / result.wall_seconds:.1f}%, "
                  f"optimizer {100 * overhead / result.wall_seconds:.1f}%")
        print(f"\nwrote {plan.out} ({len(points)} points; {_where_listed(plan.out)}) and {png}")
        return 0
    finally:
        backend.close()
        del backend
        gc.collect()


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if hasattr(sys.stdout, "reconfigure"):  # progress lines appear as they happen, also when piped to a file
        sys.stdout.reconfigure(line_buffering=True)
    args = build_parser().parse_args(argv)
    args.argv = argv
    from .database import DamagedRun
    try:
        return run(args)
    except (SetupError, DamagedRun) as e:  # DamagedRun: "<file>: <problem>"
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.filename is None:
            raise
        print(f"error: {e.filename}: {e.strerror or type(e).__name__}", file=sys.stderr)  # e.g. a folder made read-only
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted; every finished evaluation is in the database. Continue with: python -m optimizer.run "
              f"--model {args.model} --resume" + (f" --run-dir {args.run_dir}" if args.run_dir else ""), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

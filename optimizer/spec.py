"""One run's configuration: a preset plus command-line options, checked, as a frozen ``RunSpec``.

The command-line options come in groups that every optimizer tool shares; each group is one function
that adds it to a parser, so ``python -m optimizer.run`` and other tools (e.g. a quick calibration)
offer the same options with the same meaning::

    parser = argparse.ArgumentParser(prog="python -m optimizer.mytool")
    add_preset_option(parser)
    add_model_options(parser)
    add_sampling_options(parser)
    add_calibration_options(parser)
    add_objective_options(parser)
    add_output_options(parser)
    spec = spec_from_args(parser.parse_args(argv), command="python -m optimizer.mytool " + shlex.join(argv))

``spec_from_args`` reads only the options the parser has (the others take the preset's or the default
value) and reports every problem it finds at once, as one ``SetupError``, before any model is loaded or
any file written. A tool with its own default run directory or schedule file sets it with
``parser.set_defaults(run_dir=..., out=...)``.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

from .comfy_env import PACK_ROOT
from .presets import Preset, all_presets

DEFAULT_FRONTIER_SIZE = 8
COSTS = ("macs", "macs-attention", "latency")


class SetupError(RuntimeError):
    """Something to fix before the run can start; raised before any long work."""


class RunFailure(RuntimeError):
    """The run cannot go on (e.g. its workers keep dying); everything it finished is stored."""


class InputFileError(SetupError):
    """A file the run was given cannot be used; ``str()`` is ``"<file>: <problem>"``."""

    def __init__(self, path: Path | str, problem: str):
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path}: {problem}")


# ---------------------------------------------------------------- option groups

def preset_lines() -> str:
    """Every preset with its one-line description, for a parser's epilog."""
    presets = all_presets()
    width = max(len(n) for n in presets)
    return "\n".join(f"  {name.ljust(width)}  {p.description}" for name, p in sorted(presets.items()))


def add_preset_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="PRESET",
                        help="the preset (listed below): model files, sampling and search settings")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("ComfyUI and model files")
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


def add_sampling_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("sampling (defaults: the preset's, i.e. the ECAD paper's calibration settings)")
    g.add_argument("--steps", type=int, help="sampling steps; the schedule is learned for exactly this count")
    g.add_argument("--width", type=int, help="image width in pixels")
    g.add_argument("--height", type=int, help="image height in pixels")
    g.add_argument("--sampler", help="ComfyUI sampler name, e.g. euler, dpmpp_2m")
    g.add_argument("--scheduler", help="ComfyUI scheduler name, e.g. simple, normal")
    g.add_argument("--cfg", type=float, help="classifier-free guidance scale (1 = no negative prompt pass)")
    g.add_argument("--guidance", type=float, help="distilled guidance of FLUX-like models")


def add_calibration_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("calibration images")
    g.add_argument("--prompts", metavar="FILE", help="prompt file: text (one per line), PartiPrompts-style .tsv "
                   "(a 'Prompt' column) or .json (default: the pack's 100 calibration prompts)")
    g.add_argument("--num-prompts", type=int, metavar="N", help="use the first N prompts (default: the preset's)")
    g.add_argument("--images-per-prompt", type=int, metavar="N",
                   help="images per prompt, each with its own seed, the same for every candidate (default: the preset's)")
    g.add_argument("--batch-size", type=int, metavar="N",
                   help="images sampled together, of one prompt or several (default: images per prompt or the preset's, "
                        "whichever is more, at most 16; lower it when the GPU runs out of memory, and on a CPU, where "
                        "larger models gain nothing from batches)")
    g.add_argument("--holdout", type=int, default=0, metavar="N",
                   help="hold N prompts out of the search and, at the end, score the frontier and the FORA baselines "
                        "on them with unseen seeds (from 1000000); 0 = off (default)")


def add_objective_options(parser: argparse.ArgumentParser) -> None:
    from .metrics import known_metrics
    g = parser.add_argument_group("objectives")
    g.add_argument("--metric", help=f"quality metric: {', '.join(known_metrics())} (see docs/metrics.md; default: the "
                   "preset's)")
    g.add_argument("--image-reward-weights", metavar="FILE", help="ImageReward.pt (default: models/image_reward/)")
    g.add_argument("--image-reward-config", metavar="FILE", help="med_config.json (default: models/image_reward/)")
    g.add_argument("--image-reward-tokenizer", metavar="DIR",
                   help="bert-base-uncased tokenizer folder (default: models/image_reward/bert-base-uncased)")
    g.add_argument("--cost", choices=COSTS, default="macs",
                   help="cost objective: MACs of the linear layers (as the paper's calflops counts; default), MACs "
                        "with the attention products, or the sampling time measured on this device (noisy; "
                        "runs are then not exactly reproducible)")


def add_output_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("output and runs")
    g.add_argument("--out", metavar="FILE", help="schedule file to write (default: the pack's schedules/<preset>.json, "
                   "which ECAD Load Schedule lists; for toy, <run-dir>/toy.json)")
    g.add_argument("--run-dir", metavar="DIR", help="database, checkpoint and plot of the run (default: runs/<preset> "
                   "in the pack)")
    g.add_argument("--seed", type=int, default=0, help="seed of the run: its initial population, pymoo's RNG, the "
                   "held-out prompts drawn (default 0)")
    g.add_argument("--frontier-size", type=int, default=DEFAULT_FRONTIER_SIZE, metavar="K",
                   help=f"about K points written to the schedule file: both ends of the frontier, the best point within "
                        f"each FORA baseline's cost (kept even beyond K), the rest spread evenly in speedup "
                        f"(default {DEFAULT_FRONTIER_SIZE})")
    g.add_argument("--measure-latency", type=int, default=0, metavar="REPEATS",
                   help="time the frontier points and baselines against no caching on this device (REPEATS rounds, "
                        "interleaved) and store the measured speedups; 0 = off (default)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar (generation lines are still printed)")


def add_search_options(parser: argparse.ArgumentParser) -> None:
    """The NSGA-II search of ``python -m optimizer.run``, and ``--resume``."""
    g = parser.add_argument_group("search (NSGA-II)")
    g.add_argument("--population", type=int, help="population size (default: the preset's; ECAD: 72 PixArt, 24 FLUX)")
    g.add_argument("--generations", type=int, help="offspring generations after the initial one (default: the "
                   "preset's); with --resume, a larger number continues a finished run")
    g.add_argument("--mutation-prob", type=float, default=0.05,
                   help="share of offspring mutated (pymoo BitflipMutation prob; ECAD: 0.05)")
    g.add_argument("--mutation-bits", type=float, default=1.0,
                   help="expected bits flipped in a mutated offspring (ECAD/pymoo default: 1)")
    g.add_argument("--step-move-prob", type=float, default=0.25,
                   help="share of offspring in which two neighbouring steps swap their genes: moves a computed step "
                        "at equal cost, which bit flips cannot (not in the ECAD paper; 0 = the paper's operators only; "
                        "default 0.25)")
    g.add_argument("--resume", action="store_true", help="continue the run in --run-dir (settings must match)")
    g.add_argument("--budget-images", type=int, metavar="N",
                   help="render at most N images in all (uncached references, every candidate at every fidelity, "
                        "baselines, held-out check, latency rounds), also across --resume; the search stops when the "
                        "next evaluation would exceed it and the frontier of what it measured is written (default: "
                        "no limit; a larger N continues a run it stopped)")
    g.add_argument("--warm-start", metavar="FILE",
                   help="seed the first generation with the points of this schedule file: another model of the same "
                        "family, another step count (mapped by relative position), another size")
    g.add_argument("--calibration-seeds", action=argparse.BooleanOptionalAction, default=True,
                   help="seed the first generation with quick calibration's greedy schedules, made from each "
                        "component's output change recorded while the uncached references render (no extra images; "
                        "see python -m optimizer.calibrate) (default: on)")

    g = parser.add_argument_group("fewer images for the same frontier")
    g.add_argument("--paired", action=argparse.BooleanOptionalAction, default=True,
                   help="score a candidate on some of the images relative to the uncached image of the same prompt "
                        "and seed, so that easy and hard prompts cancel out (default: on; fidelity is relative anyway)")
    g.add_argument("--racing", action=argparse.BooleanOptionalAction, default=True,
                   help="screen each candidate on --race-images images first, then on twice as many, and so on, "
                        "while it could still reach the frontier, and render the rest only then; only evaluations on "
                        "every image make the frontier (default: on)")
    g.add_argument("--race-images", type=int, metavar="N",
                   help="images of a candidate's first screen: one of each of N prompts in a seeded order, then second "
                        "images (default: an eighth of the calibration images, at least 2; when steering, a quarter of "
                        "--steer-images)")
    g.add_argument("--steer-images", type=int, metavar="N",
                   help="screens stop at N images: the search steers on those estimates, and only their frontier is "
                        "rendered on every image, at the end (default: an eighth of the calibration images, at least "
                        "16; as many as the calibration images: off)")
    g.add_argument("--race-margin", type=float, default=2.0, metavar="Z",
                   help="a screened candidate is dropped when its estimate plus Z standard errors stays below the "
                        "frontier at its cost (default 2)")
    g.add_argument("--surrogate", action=argparse.BooleanOptionalAction, default=True,
                   help="each generation, propose --surrogate-pool offspring, predict their quality with a ridge "
                        "regression on the run's evaluations and evaluate the predicted best; plain NSGA-II offspring "
                        "while its rank agreement is poor (default: on)")
    g.add_argument("--surrogate-pool", type=int, default=300, metavar="N",
                   help="offspring proposed per generation for the surrogate to rank (default 300)")
    g.add_argument("--surrogate-evaluations", type=int, metavar="N",
                   help="of them evaluated per generation (default: a quarter of the population, at least 2)")
    g.add_argument("--surrogate-min-tau", type=float, default=0.3, metavar="TAU",
                   help="rank agreement (Kendall's tau between predicted and measured quality of the latest "
                        "evaluations) below which plain NSGA-II offspring are used (default 0.3)")


def add_worker_options(parser: argparse.ArgumentParser) -> None:
    """Rendering and scoring on Ray workers, each holding the model (``optimizer/workers.py``)."""
    g = parser.add_argument_group("workers (Ray; see docs/optimizer.md, \"Workers and clusters\")")
    g.add_argument("--workers", type=int, metavar="N",
                   help="render and score on N worker processes, each loading the model once: one per GPU of this "
                        "machine, or CPU processes where there is none (or with --cpu); with --ray-address, N on the "
                        "cluster (default there: one per GPU). The results are the same whatever N. Needs Ray "
                        "(requirements-optimizer.txt)")
    g.add_argument("--ray-address", metavar="ADDR",
                   help="run the workers on this Ray cluster (the address 'ray start --head' printed, e.g. "
                        "10.0.0.1:6379; 'auto': the cluster this machine belongs to); every node needs ComfyUI, this "
                        "pack and the model files at the same paths as here")


# ---------------------------------------------------------------- the spec

@dataclass(frozen=True)
class RunSpec:
    """Everything a run does, resolved from the preset and the options and checked before any long work."""

    preset: Preset
    command: str                              # for the provenance of written files
    # ComfyUI and model files
    comfyui: Optional[str] = None
    cpu: bool = False
    threads: Optional[int] = None
    diffusion_model: Optional[str] = None     # overrides of the preset's files
    text_encoders: tuple[str, ...] = ()
    vae: Optional[str] = None
    comfy_root: Optional[Path] = None         # found by the checks (None for the toy model)
    model_paths: Any = None                   # loading.ModelPaths of a real preset, found by the checks
    # sampling
    steps: int = 0
    width: int = 0
    height: int = 0
    sampler: str = ""
    scheduler: str = ""
    cfg: float = 1.0
    guidance: Optional[float] = None
    # calibration images
    prompts_source: str = "built-in calibration prompts"
    prompts: tuple[str, ...] = ()
    holdout_prompts: tuple[str, ...] = ()
    images_per_prompt: int = 1
    batch_size: int = 1
    # objectives
    metric: str = "fidelity"
    metric_options: dict[str, Any] = field(default_factory=dict)
    cost: str = "macs"
    # search
    population: int = 0
    generations: int = 0
    seed: int = 0
    mutation_prob: float = 0.05
    mutation_bits: float = 1.0
    step_move_prob: float = 0.25
    warm_start: Optional[Path] = None
    calibration_seeds: bool = False
    budget_images: Optional[int] = None
    # fewer images for the same frontier
    paired: bool = True
    racing: bool = True
    race_images: int = 2
    race_margin: float = 2.0
    steer_images: int = 16
    surrogate: bool = True
    surrogate_pool: int = 300
    surrogate_evaluations: int = 2
    surrogate_min_tau: float = 0.3
    # output and runs
    out: Path = Path()
    run_dir: Path = Path()
    resume: bool = False
    frontier_size: int = DEFAULT_FRONTIER_SIZE
    measure_latency: int = 0
    progress: Optional[bool] = None           # None: a bar when the output is a terminal
    # workers (Ray)
    workers: Optional[int] = None             # None: one per GPU of the cluster (--ray-address), or none at all
    ray_address: Optional[str] = None

    @property
    def distributed(self) -> bool:
        """Whether the model is loaded and run by Ray workers (``optimizer/workers.py``) rather than this process."""
        return self.workers is not None or self.ray_address is not None

    @property
    def frames(self) -> int:
        return self.preset.frames

    def calibration_items(self):
        from .calibration import calibration_items
        return calibration_items(self.prompts, self.images_per_prompt)

    def holdout_items(self):
        from .calibration import HOLDOUT_SEED_BASE, calibration_items
        return calibration_items(self.holdout_prompts, self.images_per_prompt, first_seed=HOLDOUT_SEED_BASE)

    def metric_kwargs(self) -> dict[str, Any]:
        """What ``make_metric`` needs besides the name."""
        return {"comfyui": self.comfy_root, **self.metric_options} if self.metric == "image_reward" else {}


def writable_file_problem(path: Path, what: str, replaced: bool = False) -> Optional[str]:
    """Why ``path`` cannot be written (``what`` names the option), or None; ``replaced``: an existing file is replaced
    atomically, by a new file written beside it first."""
    if path.is_dir():
        return f"{what} {path} is a directory; give a file name"
    if path.exists():
        if not os.access(path, os.W_OK):
            return f"{what} {path} exists and is not writable"
        if replaced and not os.access(path.parent, os.W_OK | os.X_OK):
            return f"{what} {path} cannot be replaced: {path.parent} is not writable (the new file is written there first)"
        return None
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"{what} {path} cannot be created: {parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{what} {path} cannot be created: {parent} is not writable"
    return None


def spec_from_args(args: argparse.Namespace, command: str = "") -> RunSpec:
    """The checked spec of the options in ``args``; a ``SetupError`` listing every problem found."""
    presets = all_presets()
    preset = presets.get(args.model)
    if preset is None:
        raise SetupError(f"unknown preset {args.model!r}; choose one of: {', '.join(sorted(presets))}")
    option = lambda name, default=None: getattr(args, name, default)  # noqa: E731 -- groups a tool may not have
    problems: list[str] = []

    def at_least(name: str, default: int, minimum: int = 1) -> int:
        value = option(name)
        value = default if value is None else value
        if value < minimum:
            problems.append(f"--{name.replace('_', '-')} must be at least {minimum}, got {value}")
        return value

    def within(name: str, low: float, high: float, default: float) -> float:
        value = option(name, default)
        if not low <= value <= high:
            problems.append(f"--{name.replace('_', '-')} must be in [{low:g}, {high:g}], got {value}")
        return value

    images_per_prompt = at_least("images_per_prompt", preset.images_per_prompt)
    holdout = at_least("holdout", 0, 0)
    seed = option("seed", 0)
    mutation_bits = option("mutation_bits", 1.0)
    if mutation_bits <= 0:
        problems.append(f"--mutation-bits must be positive, got {mutation_bits}")
    values: dict[str, Any] = dict(
        steps=at_least("steps", preset.steps, 2), width=at_least("width", preset.width, 8),
        height=at_least("height", preset.height, 8), sampler=option("sampler") or preset.sampler,
        scheduler=option("scheduler") or preset.scheduler,
        cfg=preset.cfg if option("cfg") is None else option("cfg"),
        guidance=preset.guidance if option("guidance") is None else option("guidance"),
        images_per_prompt=images_per_prompt,
        batch_size=at_least("batch_size", min(max(images_per_prompt, preset.images_per_prompt), 16)),
        population=at_least("population", preset.population, 4), generations=at_least("generations", preset.generations, 0),
        seed=seed, mutation_prob=within("mutation_prob", 0.0, 1.0, 0.05), mutation_bits=mutation_bits,
        step_move_prob=within("step_move_prob", 0.0, 1.0, 0.25),
        frontier_size=at_least("frontier_size", DEFAULT_FRONTIER_SIZE), measure_latency=at_least("measure_latency", 0, 0),
        comfyui=option("comfyui"), cpu=bool(option("cpu", False)), threads=option("threads"),
        diffusion_model=option("diffusion_model"), text_encoders=tuple(option("text_encoder") or ()), vae=option("vae"),
        cost=option("cost", "macs"), resume=bool(option("resume", False)),
        progress=False if option("no_progress", False) else None,
        paired=bool(option("paired", True)), racing=bool(option("racing", False)),
        calibration_seeds=bool(option("calibration_seeds", False)),
        race_margin=option("race_margin", 2.0), surrogate=bool(option("surrogate", False)),
        surrogate_pool=at_least("surrogate_pool", 300, 1), surrogate_min_tau=within("surrogate_min_tau", -1.0, 1.0, 0.3))
    values["surrogate_evaluations"] = at_least("surrogate_evaluations", max(2, values["population"] // 4))
    values.update(workers=option("workers"), ray_address=option("ray_address"))
    if values["workers"] is not None:
        at_least("workers", 1)
    if values["workers"] is not None or values["ray_address"] is not None:
        import importlib.util
        if importlib.util.find_spec("ray") is None:  # found, not imported: Ray is imported only by the workers
            problems.append("--workers and --ray-address need Ray: pip install 'ray[default]>=2.40' (see "
                            "requirements-optimizer.txt)")
    if values["race_margin"] < 0:
        problems.append(f"--race-margin must not be negative, got {values['race_margin']}")

    # calibration prompts; the held-out ones are drawn from the whole file first
    from .prompts import load_prompts, split_prompts
    try:
        everything = load_prompts(option("prompts"))
        calibration, held = split_prompts(everything, holdout, seed=seed) if holdout else (everything, [])
        wanted = option("num_prompts")
        wanted = min(preset.prompts, len(calibration)) if wanted is None else wanted
        if wanted < 1:
            problems.append(f"--num-prompts must be at least 1, got {wanted}")
        elif wanted > len(calibration):
            problems.append(f"--num-prompts {wanted}: the prompt file has only {len(calibration)} prompts"
                            + (f" left after holding out {holdout}" if holdout else ""))
        values.update(prompts=tuple(calibration[:wanted]), holdout_prompts=tuple(held))
    except ValueError as e:
        problems.append(str(e))
    images = len(values.get("prompts", ())) * images_per_prompt
    values["steer_images"] = at_least("steer_images", max(16, -(-images // 8)))
    # steering, the screens end at few images: start on a quarter of them, so that stages can drop candidates
    steered = min(images, values["steer_images"])
    values["race_images"] = at_least("race_images", max(2, -(-steered // (4 if steered < images else 8))))
    if option("prompts"):
        values["prompts_source"] = str(option("prompts"))

    # the metric
    from .metrics import known_metrics
    metric = option("metric") or preset.metric
    values["metric"] = metric
    if metric not in known_metrics():
        problems.append(f"unknown --metric {metric!r}; known metrics: {', '.join(known_metrics())}")
    elif metric == "image_reward":
        values["metric_options"] = {k: v for k, v in (("weights", option("image_reward_weights")),
                                                      ("med_config", option("image_reward_config")),
                                                      ("tokenizer", option("image_reward_tokenizer"))) if v}

    # where the run writes
    models = model_kind(preset)
    run_dir = Path(option("run_dir")) if option("run_dir") else PACK_ROOT / "runs" / preset.name
    out = Path(option("out")) if option("out") else (
        PACK_ROOT / "schedules" / f"{preset.name}.json" if models.listed_by_nodes else run_dir / f"{preset.name}.json")
    values.update(run_dir=run_dir, out=out)
    for problem in (writable_file_problem(out, "--out", replaced=True),
                    writable_file_problem(run_dir / "run.sqlite", "--run-dir")):
        if problem:
            problems.append(problem)
    from .run_dir import setup_problems
    problems.extend(setup_problems(run_dir, values["resume"], resumable=hasattr(args, "resume")))

    warm_start_problem = None
    if option("warm_start"):
        from .warm_start import family_problem
        values["warm_start"] = Path(option("warm_start"))
        if values["warm_start"].resolve() == out.resolve():
            problems.append(f"--warm-start and --out are the same file, {out}: the run would write over the file it "
                            "is seeded from (its digest is part of the run's settings, so the run could not be resumed); "
                            "give another --out")
        warm_start_problem = family_problem(values["warm_start"], preset.family)
        if warm_start_problem and values["resume"] and not values["warm_start"].exists() and (
                run_dir / "run.sqlite").is_file():
            warm_start_problem = None  # a resumed run has its seeds, and the file's digest, in its run directory
        if warm_start_problem:
            problems.append(str(warm_start_problem))
    budget = option("budget_images")
    if budget is not None:
        values["budget_images"] = budget
        least = least_budget(values, images)
        if budget < least:
            problems.append(f"--budget-images {budget} is too small: the uncached references, the FORA baselines, "
                            f"verifying the frontier (--steer-images) and the measurements asked for after the search "
                            f"need {least} images")

    spec = RunSpec(preset=preset, command=command, **values)
    # the model's own checks (ComfyUI found, files there, sizes it can sample), named with everything else
    found, resolved = models.check(spec)
    problems.extend(found)
    spec = replace(spec, **resolved)
    if metric == "image_reward":
        from .metrics import MetricUnavailable
        from .metrics.image_reward import find_files
        try:
            find_files(comfyui=spec.comfy_root, **spec.metric_options)
        except MetricUnavailable as e:
            problems.append(str(e))
    if warm_start_problem and problems == [str(warm_start_problem)]:
        raise warm_start_problem  # alone: "<file>: <problem>", as when its blocks do not fit the loaded model
    if problems:
        raise SetupError("cannot start:\n  - " + "\n  - ".join(p.replace("\n", "\n    ") for p in problems))
    return spec


def least_budget(values: dict[str, Any], images: int) -> int:
    """The fewest images a run can do with: its references, each FORA baseline on every image, a round of verifying
    a steered search's frontier (``budget.verification_images``) and the most the measurements after the search can
    render (``budget.final_measurement_images``)."""
    from .budget import final_measurement_images, verification_images
    from .pipeline import BASELINE_EVERY, LATENCY_IMAGES
    baselines = sum(1 for every in BASELINE_EVERY if every < values["steps"])
    holdout = len(values.get("holdout_prompts", ())) * values["images_per_prompt"]
    steering = values["racing"] and values["race_images"] < images
    return (images * (1 + baselines)
            + verification_images(images, values["steer_images"] if steering else None, values["frontier_size"],
                                  baselines)
            + final_measurement_images(images, holdout, values["measure_latency"], values["frontier_size"], baselines,
                                       LATENCY_IMAGES))


def model_kind(preset: Preset):
    """How the preset's model is found, identified and opened: ``toy_backend.TOY_MODELS`` for the plain-PyTorch
    toy model, else ``comfy_backend.COMFY_MODELS`` (real and tiny models through ComfyUI)."""
    from .toy_backend import TOY_MODELS, ToySpec
    if isinstance(preset.tiny, ToySpec):
        return TOY_MODELS
    from .comfy_backend import COMFY_MODELS
    return COMFY_MODELS

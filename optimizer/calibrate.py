"""Quick calibration: a frontier of caching schedules from a few uncached runs, in minutes.

    python -m optimizer.calibrate --model flux-dev       # real weights; minutes on one GPU
    python -m optimizer.calibrate --model tiny-flux      # a small random-weight FLUX on the CPU, seconds

1. The calibration images are rendered once without caching, every component's output change from
   step to step recorded on the way (``ecad_nodes.calibration``); they are also the references of
   the quality metric.
2. Greedy schedules at each --budgets fraction of the block MACs (``ecad_nodes.greedy``): whole
   steps, single components, and whole steps continued with single components, reusing where the
   accumulated change is smallest per MAC saved.
3. FORA-2…5 are rendered on every image and scored with --metric; the greedy schedules are raced
   against them and each other (``race``): each is scored on a few images first, then on more, and on
   all of them only while it could still reach the frontier of those measured on every image.
4. The non-dominated ones measured on every image (FORA included) are written as a schedule file, as
   ``optimizer.run`` writes its frontier.

Far fewer images than the full search (``optimizer.run``), and a frontier that starts it
(``calibration_masks``). By default 8 prompts with one image each; --num-prompts and
--images-per-prompt choose more.
"""
from __future__ import annotations

import argparse
import gc
import shlex
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ecad_nodes.greedy import DEFAULT_BUDGETS

from .pipeline import BASELINE_EVERY
from .spec import (RunFailure, RunSpec, SetupError, add_calibration_options, add_model_options, add_objective_options,
                   add_output_options, add_preset_option, add_sampling_options, add_worker_options, model_kind,
                   preset_lines, spec_from_args)

QUICK_PROMPTS = 8                  # default calibration prompts (the preset's, if it has fewer)
QUICK_IMAGES_PER_PROMPT = 1
#: Finer than the node's (``DEFAULT_BUDGETS``), which renders every schedule on the user's latent: racing drops most of
#: the extra ones after two images, and the near-lossless end (99 %) and the gaps between budgets carry much of a
#: frontier's hypervolume (benchmarks/README.md, "Quick calibration with finer budgets, raced").
CALIBRATION_BUDGETS = (0.99, *(round(0.95 - 0.05 * k, 2) for k in range(15)))   # 0.99, 0.95, 0.90, … 0.25
SCREEN_IMAGES = 2                  # a greedy schedule's first screen, then twice as many … (``racing.screening_stages``)
#: Standard errors of optimism before a screened schedule is dropped: one, not the search's two, because a dropped
#: schedule level with the frontier costs quick calibration nothing that a neighbouring budget does not give.
RACE_MARGIN = 1.0

ALGORITHM = "quick calibration (greedy schedules from recorded component changes, raced and verified by rendering)"


# ---------------------------------------------------------------- building blocks (also for the full search)

def consumers_of(backend) -> dict[int, tuple[int, ...]]:
    """Internal components of the backend's model -> their consumers (none for the toy model, which has none)."""
    from ecad_nodes.families import adapter_named
    try:
        adapter = adapter_named(backend.family)
    except KeyError:
        return {}
    return adapter.consumers(backend.layout)


def macs_per_step(image_cost) -> np.ndarray:
    """(steps, bits): what each component costs at each step of one image (all model evaluations of the step)."""
    return image_cost.evaluations.astype(np.float64)[:, None] * image_cost.table.per_bit[None, :]


def greedy_candidates(changes, image_cost, backend, budgets: Sequence[float] = DEFAULT_BUDGETS) -> list:
    """``ecad_nodes.greedy.calibrated_schedules`` for recorded ``changes`` on the backend's model."""
    from ecad_nodes.greedy import calibrated_schedules
    return calibrated_schedules(changes.staleness(), macs_per_step(image_cost), backend.layout, budgets,
                                consumers_of(backend))


def calibration_masks(backend, items: Sequence, budgets: Sequence[float] = DEFAULT_BUDGETS, cost: str = "macs") -> list:
    """Greedy schedules (``ecad_nodes.schedule.Mask``, first step computed) from the recorded changes of ``items``
    rendered without caching, for seeding a search; not verified, and nothing is scored.

    Renders ``len(items)`` images through ``backend.render(None, items)`` (through a metered backend they are
    counted); a few items are enough (the changes are means over images). ``cost``: "macs-attention" prices
    components with the attention products, anything else as "macs" (the greedy needs MACs, not times). At most
    three schedules per budget (whole steps, single components, both), largest budget first."""
    from ecad_nodes.calibration import ChangeRecorder
    recorder = ChangeRecorder()
    with recorder.recording():
        backend.render(None, list(items))
    image_cost = backend.image_cost(attention_matmuls=cost == "macs-attention")
    return [g.mask for g in greedy_candidates(recorder.changes(), image_cost, backend, budgets)]


# ---------------------------------------------------------------- the calibration

@dataclass
class Verified:
    """A schedule rendered and scored on the calibration images."""

    origin: str             # "FORA-2", "greedy (steps) at 45% of the block MACs", …
    mask: Any
    evaluation: Any         # evaluate.Evaluation


@dataclass
class CalibrationResult:
    out: Path
    plot: Path
    points: list            # report.ResultPoint, written
    baselines: list
    verified: list[Verified]
    images: int             # every image rendered
    seconds: float


def calibration_items(spec: RunSpec):
    """The calibration images: ``--seed`` picks their noise (seed s: the s-th block of as many seeds as images), so
    seed 0 renders exactly the images ``optimizer.run`` renders with the same options."""
    from .calibration import calibration_items as items_of
    count = len(spec.prompts) * spec.images_per_prompt
    return items_of(spec.prompts, spec.images_per_prompt, first_seed=spec.seed * count)


def calibrate(spec: RunSpec, budgets: Sequence[float] = CALIBRATION_BUDGETS, say: Callable[[str], None] = print) -> CalibrationResult:
    from .pipeline import device_label, set_threads, worker_pool

    set_threads(spec)
    say(f"ECAD quick calibration: preset {spec.preset.name}, {len(spec.prompts)} prompts × {spec.images_per_prompt} "
        f"images, {spec.steps} steps at {spec.width}×{spec.height}, metric {spec.metric}, cost {spec.cost}")
    say(f"run directory: {spec.run_dir}   schedule file: {spec.out}")
    with worker_pool(spec, say) as workers:
        return _calibrate(spec, budgets, say, workers, workers.device if workers else device_label(spec))


def _calibrate(spec: RunSpec, budgets: Sequence[float], say, workers, device: str) -> CalibrationResult:
    from ecad_nodes.calibration import ChangeRecorder

    from .budget import ImageLedger, MeteredBackend
    from .evaluate import make_evaluator
    from .genome import GenomeCodec
    from .pipeline import baseline_genomes, open_model

    items = calibration_items(spec)
    started = time.perf_counter()
    ledger = ImageLedger()
    model, metric = open_model(spec, workers)
    backend = MeteredBackend(model, ledger)
    fora = [every for every in BASELINE_EVERY if every < spec.steps]
    progress = _progress(spec, len(items) * (1 + 3 * len(budgets) + len(fora)), ledger, say)
    try:
        say(backend.describe())
        evaluator = make_evaluator(backend, metric, items, spec.cost)
        recorder = ChangeRecorder()
        full = evaluator.prepare(recorder=recorder)  # the references, rendered once, are the recorded runs
        changes = recorder.changes()
        say(f"no caching: {metric.short_name} {full.quality:.3f}, {evaluator.full_macs / 1e9:.4g} GMACs/image "
            f"({evaluator.image_cost.convention}), {full.latency_ms:.1f} ms/image to sample; component changes recorded "
            f"over {changes.runs} run(s)")
        # priced in MACs whatever the cost objective (with --cost latency, the linear layers'): the greedy needs them
        candidates = greedy_candidates(changes, evaluator.image_cost, backend, budgets)
        progress.set_total(ledger.used + len(items) * (len(candidates) + len(fora)))  # at most: racing drops some
        codec = GenomeCodec(backend.layout, spec.steps)
        baselines = [Verified(name, codec.mask(genome), evaluator.evaluate(codec.mask(genome)))
                     for name, genome in baseline_genomes(spec, codec, backend.layout).items()]
        verified = race(evaluator, [(f"greedy ({g.kind}) at {100 * g.budget:.0f}% of the block MACs", g.mask)
                                    for g in candidates], baselines, spec.seed)
        progress.set_total(ledger.used)  # what racing left of the estimate: the bar ends full
        return _write(spec, budgets, backend, evaluator, metric, items, full, changes, verified, baselines, ledger,
                      len(candidates), time.perf_counter() - started, say, device)
    finally:
        progress.close()
        model.close()
        del backend, model
        gc.collect()


def race(evaluator, candidates: Sequence[tuple[str, Any]], measured: Sequence[Verified], seed: int,
         screen_images: int = SCREEN_IMAGES, margin: float = RACE_MARGIN) -> list[Verified]:
    """The ``candidates`` (origin, mask) that were scored on every image, each dropped as soon as it could not reach
    the frontier of ``measured`` (scored on every image: the FORA baselines) and of the candidates kept before it.

    Every candidate is first screened on ``screen_images`` images (``racing.screening_stages``, seeded by ``seed``), so
    that the spread of the paired differences can be pooled over all screens and ``measured``'s full evaluations
    (a screen of two images says little about its own). Then, cheapest first (so that the frontier at a candidate's
    cost is already measured), the search's test on each stage (``racing.could_reach_frontier``): go on while the
    estimate plus ``margin`` standard errors reaches the best quality measured at no more cost."""
    from .racing import could_reach_frontier, pooled_sd, screening_stages, standard_error
    stages = screening_stages(evaluator.items, screen_images, seed)
    if not stages:  # too few images to screen on
        return [Verified(origin, mask, evaluator.evaluate(mask)) for origin, mask in candidates]
    screens = [evaluator.evaluate(mask, stages[0]) for _, mask in candidates]
    spread = pooled_sd([evaluator.differences(ev) for ev in [*screens, *(v.evaluation for v in measured)]])
    front = [(v.evaluation.quality, v.evaluation.cost) for v in measured]
    kept = []
    for k in sorted(range(len(candidates)), key=lambda k: screens[k].cost):
        (origin, mask), ev = candidates[k], screens[k]
        for items in (*stages[1:], ()):
            error = standard_error(evaluator.differences(ev), spread, len(evaluator.items))
            if not could_reach_frontier(ev.quality, error, ev.cost, front, margin):
                break
            ev = evaluator.evaluate(mask, items, known=ev)
        else:
            kept.append(Verified(origin, mask, ev))
            front.append((ev.quality, ev.cost))
    return kept


def _progress(spec: RunSpec, estimate: int, ledger, say):
    from .progress import Progress
    progress = Progress(total=estimate, enabled=spec.progress, write=say)
    ledger.listeners.append(progress.images)
    return progress


def _write(spec: RunSpec, budgets: Sequence[float], backend, evaluator, metric, items, full, changes, verified,
           baselines, ledger, raced: int, seconds: float, say, device: str) -> CalibrationResult:
    from ecad_nodes.schedule_io import save_schedule

    from .calibration import items_hash, seed_range
    from .pipeline import measure_stage, now, where_listed
    from .report import ResultPoint, pareto_front, plot, point_names, schedule_file, select_points, table
    from .settings import TOOL_VERSION

    def result(v: Verified, name: str) -> ResultPoint:
        e = v.evaluation
        return ResultPoint(name, v.mask, e.quality, e.macs, e.cost, extra={"origin": v.origin})

    everything = [*verified, *baselines]
    # the frontier over everything rendered: a FORA baseline may lie on it
    front = [everything[k] for k in pareto_front([(k, (v.evaluation.quality, v.evaluation.cost))
                                                  for k, v in enumerate(everything)])]
    base_points = [result(b, b.origin) for b in baselines]
    chosen = select_points(front, spec.frontier_size, cost_of=lambda v: v.evaluation.cost,
                           anchors=[b.cost for b in base_points])
    points = [result(v, n) for v, n in zip(chosen, point_names([1.0 / v.evaluation.cost for v in chosen]))]
    measured = measure_stage(spec, backend, metric, items, points, base_points)
    identity = model_kind(spec.preset).identity(spec)
    provenance = {
        "tool": f"ComfyUI-ECAD optimizer {TOOL_VERSION}", "date": now(), "command": spec.command,
        "preset": spec.preset.name, "model": identity, "device": device,
        "sampling": {"steps": spec.steps, "sampler": spec.sampler, "scheduler": spec.scheduler, "cfg": spec.cfg,
                     "guidance": spec.guidance, "width": spec.width, "height": spec.height},
        "calibration": {"prompts": spec.prompts_source, "num_prompts": len(spec.prompts),
                        "images_per_prompt": spec.images_per_prompt, "seeds": seed_range(items),
                        "prompts_hash": items_hash(items)},
        "metric": spec.metric, "cost": spec.cost, "mac_convention": evaluator.image_cost.convention,
        "search": {"algorithm": ALGORITHM, "budgets": sorted({float(b) for b in budgets}, reverse=True),
                   "recorded_runs": changes.runs, "lags": changes.lags, "schedules_raced": raced,
                   "schedules_verified": len(verified),
                   "evaluations": len(everything), "images": ledger.used, "seed": spec.seed},
        **measured,
    }
    schedule = schedule_file(backend.family, backend.variant, backend.layout, spec.steps, points, base_points,
                             spec.metric, evaluator.full_macs, evaluator.image_cost.convention, provenance)
    save_schedule(schedule, spec.out)
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(spec.run_dir / "changes.npz", change=changes.change, size=changes.size)
    png = plot(spec.run_dir / "frontier.png", [(v.evaluation.quality, v.evaluation.cost) for v in everything],
               points, base_points, evaluator.full_macs, f"{metric.short_name} ({spec.metric})",
               f"{spec.preset.name}: quick calibration, {len(verified)} greedy schedules")
    say("")
    say(table(points, base_points, metric.short_name, evaluator.full_macs, full.quality))
    say(f"\n{ledger.used} images rendered in {seconds:.1f} s ({len(verified)} of {raced} greedy schedules and "
        f"{len(baselines)} FORA baselines verified on every image)")
    say(f"wrote {spec.out} ({len(points)} points; {where_listed(spec.out)}) and {png}")
    return CalibrationResult(spec.out, png, points, base_points, everything, ledger.used, seconds)


# ---------------------------------------------------------------- command line

def _fractions(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None
    if not values or not all(0.0 < v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"budgets are fractions of the block MACs in (0, 1], got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m optimizer.calibrate",
        description=__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n", 2)[2],
        epilog="presets:\n" + preset_lines() + "\n\n" + textwrap.fill(
            f"Defaults that differ from optimizer.run: --num-prompts {QUICK_PROMPTS} (or the preset's, if fewer), "
            f"--images-per-prompt {QUICK_IMAGES_PER_PROMPT}, --run-dir runs/<preset>-calibrated, --out "
            "schedules/<preset>-calibrated.json (toy: in the run directory). --seed also picks the images' noise: "
            "seed s renders the s-th block of as many seeds as images (0: the seeds optimizer.run renders). See "
            "docs/optimizer.md, \"Quick calibration\".", width=100, break_on_hyphens=False),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_preset_option(p)
    add_model_options(p)
    add_sampling_options(p)
    add_calibration_options(p)
    add_objective_options(p)
    add_output_options(p)
    add_worker_options(p)
    g = p.add_argument_group("quick calibration")
    g.add_argument("--budgets", type=_fractions, default=CALIBRATION_BUDGETS, metavar="F,F,...",
                   help="block-MAC fractions the greedy schedules are made for (default: "
                        f"{','.join(f'{b:g}' for b in CALIBRATION_BUDGETS)}); up to three schedules each are raced")
    return p


def quick_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Fill in the options whose quick-calibration default differs from ``optimizer.run``'s (see the epilog)."""
    from .comfy_env import PACK_ROOT
    from .presets import all_presets
    from .prompts import load_prompts
    preset = all_presets().get(args.model)
    if preset is None:
        return args  # spec_from_args names the unknown preset
    if args.num_prompts is None:
        try:
            available = len(load_prompts(args.prompts))
        except ValueError:
            available = QUICK_PROMPTS  # spec_from_args reports the prompt file's problem
        args.num_prompts = max(1, min(preset.prompts, QUICK_PROMPTS, available - args.holdout))
    if args.images_per_prompt is None:
        args.images_per_prompt = QUICK_IMAGES_PER_PROMPT
    name = f"{preset.name}-calibrated"
    if args.run_dir is None:
        args.run_dir = str(PACK_ROOT / "runs" / name)
    if args.out is None:
        folder = PACK_ROOT / "schedules" if model_kind(preset).listed_by_nodes else Path(args.run_dir)
        args.out = str(folder / f"{name}.json")
    return args


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if hasattr(sys.stdout, "reconfigure"):  # lines appear as they happen, also when piped to a file
        sys.stdout.reconfigure(line_buffering=True)
    args = quick_defaults(build_parser().parse_args(argv))
    try:
        calibrate(spec_from_args(args, command="python -m optimizer.calibrate " + shlex.join(argv)), args.budgets)
        return 0
    except SetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RunFailure as e:
        print(f"error: {e}; nothing was written", file=sys.stderr)
        return 1
    except OSError as e:
        if e.filename is None:
            raise
        print(f"error: {e.filename}: {e.strerror or type(e).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

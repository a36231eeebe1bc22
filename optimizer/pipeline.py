"""One optimizer run, stage by stage: search → baselines → frontier → measure → write.

``run(spec)`` takes a checked ``RunSpec`` (``optimizer/spec.py``) and does everything the run's command line
asked: opens the run directory (refusing one that does not fit), opens the model through its backend,
searches, measures the FORA baselines, picks the frontier points, measures what was asked for (latency,
held-out quality) and writes the schedule file and the plot. The stages are plain functions so that
other tools can reuse the later ones on candidates of their own.
"""
from __future__ import annotations

import datetime as dt
import gc
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from .spec import RunSpec, SetupError, model_kind

BASELINE_EVERY = (2, 3, 4, 5)      # FORA-N heuristics measured alongside the frontier
LATENCY_IMAGES = 4                 # images per timed round of --measure-latency


@dataclass
class Outcome:
    """What a run wrote."""

    out: Path
    plot: Path
    points: list                    # report.ResultPoint, slowest last
    baselines: list


# ---------------------------------------------------------------- small helpers

def now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def short_hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def where_listed(path: Path) -> str:
    """Whether ECAD Load Schedule lists ``path`` as it is, or where to copy it."""
    from ecad_nodes.library import PACK_SCHEDULES, USER_FOLDER_NAME
    resolved = path.resolve()
    if resolved.is_relative_to(PACK_SCHEDULES.resolve()) or USER_FOLDER_NAME in resolved.parts:
        return "ECAD Load Schedule lists it"
    return f"copy it into ComfyUI/models/{USER_FOLDER_NAME}/ for ECAD Load Schedule to list it"


def device_label(spec: RunSpec) -> str:
    """The device as stored in the run's settings; on the CPU with the thread count (results may differ in the
    last bits with it)."""
    import torch
    device = model_kind(spec.preset).device(spec)
    return f"cpu ({torch.get_num_threads()} threads)" if device == "cpu" else device


def set_threads(spec: RunSpec) -> None:
    import torch
    threads = spec.threads or (1 if spec.preset.is_tiny else None)
    if threads:
        torch.set_num_threads(threads)


def metric_files(spec: RunSpec) -> dict[str, Any]:
    """Identities of the metric's weight files, part of the run's settings."""
    if spec.metric != "image_reward":
        return {}
    from .loading import file_identity
    from .metrics.image_reward import find_files
    files = find_files(comfyui=spec.comfy_root, **spec.metric_options)
    return {"weights": file_identity(files.weights), "med_config": file_identity(files.med_config)}


# ---------------------------------------------------------------- the run

def run(spec: RunSpec, say: Callable[[str], None] = print) -> Outcome:
    """The whole run of ``spec``; ``SetupError``/``DamagedRun`` for what the user must fix."""
    from .calibration import items_hash
    from .run_dir import check_resume, open_run
    from .settings import RunSettings, differences

    items = spec.calibration_items()
    calibration_hash = items_hash(items)
    models = model_kind(spec.preset)
    identity = models.identity(spec)
    set_threads(spec)
    settings = RunSettings.of(spec, identity, device_label(spec), calibration_hash, metric_files(spec))

    # run.sqlite and checkpoint.pkl checked against each other (optimizer/run_dir.py) before anything is written
    db, checkpoint = open_run(spec.run_dir, settings.fingerprint(), short_hash(identity), calibration_hash)
    try:
        stored = db.get_meta("settings")
        if stored is not None and stored != settings.to_json():
            lines = differences(stored, settings.to_json())
            raise SetupError(f"--resume: {spec.run_dir} was made with other settings, so its evaluations do not "
                             "apply:\n  - " + "\n  - ".join(lines) + "\nresume with the run's settings, or choose "
                             "another --run-dir")
        check_resume(db, checkpoint, settings.fingerprint(), settings_stored=stored is not None)
        if stored is None:
            db.set_meta("settings", settings.to_json())
            db.set_meta("created", now())
        return _run_with_database(spec, settings, items, db, say)
    finally:
        db.close()


def _run_with_database(spec: RunSpec, settings, items, db, say) -> Outcome:
    from .evaluate import Evaluator
    from .genome import GenomeCodec
    from .metrics import MetricUnavailable, make_metric
    from .report import table

    say(f"ECAD optimizer: preset {spec.preset.name}, {len(spec.prompts)} prompts × {spec.images_per_prompt} images, "
        f"{spec.steps} steps at {spec.width}×{spec.height}, metric {spec.metric}, cost {spec.cost}")
    say(f"run directory: {spec.run_dir}   schedule file: {spec.out}")
    started = time.perf_counter()
    backend = model_kind(spec.preset).open(spec)
    try:
        try:
            metric = make_metric(spec.metric, **spec.metric_kwargs())
        except MetricUnavailable as e:
            raise SetupError(str(e)) from None
        say(backend.describe())
        evaluator = Evaluator(backend, metric, items, spec.cost)
        full = evaluator.prepare()
        say(f"no caching: {metric.short_name} {full.quality:.3f}, {evaluator.full_macs / 1e9:.4g} GMACs/image "
            f"({evaluator.image_cost.convention}), {full.latency_ms:.1f} ms/image to sample; set-up took "
            f"{time.perf_counter() - started:.1f} s")
        codec = GenomeCodec(backend.layout, spec.steps)

        search, result = search_stage(spec, settings, codec, evaluator, db, metric.short_name, say)
        baselines = baseline_stage(spec, codec, backend.layout, search)
        evaluations = db.all()
        points = frontier_stage(evaluations, baselines, codec, spec.frontier_size)
        provenance_extra = measure_stage(spec, backend, metric, items, points, baselines)
        provenance = provenance_of(spec, settings, evaluator, items, result.completed - 1, len(evaluations),
                                   provenance_extra)
        png = write_stage(spec, backend, evaluator, metric, points, baselines, provenance, evaluations,
                          result.completed - 1)

        say("")
        say(table(points, baselines, metric.short_name, evaluator.full_macs, full.quality))
        if result.wall_seconds > 0 and result.new_evaluations:
            overhead = result.wall_seconds - result.timings.total
            say(f"\nsearch: {result.new_evaluations} new evaluations, {result.reused_evaluations} from the database, "
                f"{result.wall_seconds:.1f} s: sampling {100 * result.timings.model / result.wall_seconds:.1f}%, "
                f"decoding {100 * result.timings.decode / result.wall_seconds:.1f}%, "
                f"scoring {100 * result.timings.metric / result.wall_seconds:.1f}%, "
                f"optimizer {100 * overhead / result.wall_seconds:.1f}%")
        say(f"\nwrote {spec.out} ({len(points)} points; {where_listed(spec.out)}) and {png}")
        return Outcome(spec.out, png, points, baselines)
    finally:
        backend.close()
        del backend
        gc.collect()


# ---------------------------------------------------------------- stages

def search_stage(spec: RunSpec, settings, codec, evaluator, db, metric_short: str, say):
    """NSGA-II until ``spec.generations`` offspring generations are done (resuming from the checkpoint)."""
    from .search import Progress, Search, SearchConfig
    config = SearchConfig(spec.population, spec.seed, mutation_prob=spec.mutation_prob,
                          mutation_bits=spec.mutation_bits, step_move_prob=spec.step_move_prob)
    search = Search(codec, evaluator, db, spec.run_dir, config, settings.fingerprint(), metric_short=metric_short)
    done = search.completed_generations()
    if done:
        say(f"resuming after generation {done - 1} ({db.count()} evaluations in the database)")
    offspring_generations = max(0, spec.generations - max(0, done - 1))
    total = (0 if done else len(search.seed_origins)) + offspring_generations * spec.population
    search.progress = Progress(total=total, enabled=spec.progress, write=say)
    try:
        result = search.run(spec.generations)
    finally:
        search.progress.close()
    db.set_meta("generations_completed", result.completed)
    return search, result


def baseline_stage(spec: RunSpec, codec, layout, search) -> list:
    """FORA-N, measured as the candidates were (mostly found in the database: they seed the population)."""
    from ecad_nodes.heuristics import fora_bits

    from .report import ResultPoint
    baselines = []
    for every in BASELINE_EVERY:
        if every >= spec.steps:
            continue
        bits = fora_bits(layout, spec.steps, every)
        bits[0] = True
        genome = codec.genome(codec.mask(bits[1:].reshape(-1)))
        ev = search.evaluate(genome, f"FORA-{every}", -1)
        baselines.append(ResultPoint(f"FORA-{every}", codec.mask(genome), ev.quality, ev.macs, ev.cost))
    return baselines


def frontier_stage(evaluations: Sequence, baselines: Sequence, codec, frontier_size: int) -> list:
    """The points to write: the frontier over everything measured (a baseline the search never met may lie on it),
    ``frontier_size`` of them (``report.select_points``), named after their speedups."""
    from .report import ResultPoint, pareto_front, point_names, select_points
    by_hash = {e.genome_hash: e for e in evaluations}
    frontier = [by_hash[k] for k in pareto_front([(e.genome_hash, (e.evaluation.quality, e.evaluation.cost))
                                                   for e in evaluations])]
    chosen = select_points(frontier, frontier_size, cost_of=lambda e: e.evaluation.cost,
                           anchors=[b.cost for b in baselines])
    names = point_names([1.0 / e.evaluation.cost for e in chosen])
    return [ResultPoint(n, codec.mask(e.genome), e.evaluation.quality, e.evaluation.macs, e.evaluation.cost,
                        extra={"origin": e.origin})
            for n, e in zip(names, chosen)]


def measure_stage(spec: RunSpec, backend, metric, items, points, baselines) -> dict[str, Any]:
    """Latency (``--measure-latency``) and held-out quality (``--holdout``) of the points and baselines, in place;
    returns what the provenance records about them."""
    from .calibration import items_hash, seed_range
    from .evaluate import Evaluator, measure_latency
    if spec.measure_latency:
        timed = {p.name: p.mask for p in [*points, *baselines]}
        seconds = measure_latency(backend, {"no caching": None, **timed}, items[:LATENCY_IMAGES], spec.measure_latency)
        for p in [*points, *baselines]:
            p.latency_ms = 1e3 * seconds[p.name]
            p.speedup = seconds["no caching"] / seconds[p.name]
    if not spec.holdout_prompts:
        return {}
    held = spec.holdout_items()
    checker = Evaluator(backend, metric, held, "macs" if spec.cost == "latency" else spec.cost)
    checker.prepare()
    for p in [*points, *baselines]:
        p.holdout_quality = checker.evaluate(p.mask).quality
    return {"holdout": {"num_prompts": len(spec.holdout_prompts), "images_per_prompt": spec.images_per_prompt,
                        "seeds": seed_range(held), "prompts_hash": items_hash(held)}}


def provenance_of(spec: RunSpec, settings, evaluator, items, generations_run: int, evaluations: int,
                  extra: dict[str, Any]) -> dict[str, Any]:
    from .calibration import seed_range
    from .settings import TOOL_VERSION
    return {
        "tool": f"ComfyUI-ECAD optimizer {TOOL_VERSION}", "date": now(), "command": spec.command,
        "preset": spec.preset.name, "model": settings.model, "device": settings.device,
        "sampling": {"steps": spec.steps, "sampler": spec.sampler, "scheduler": spec.scheduler, "cfg": spec.cfg,
                     "guidance": spec.guidance, "width": spec.width, "height": spec.height},
        "calibration": {"prompts": settings.prompts_source, "num_prompts": len(spec.prompts),
                        "images_per_prompt": spec.images_per_prompt, "seeds": seed_range(items),
                        "prompts_hash": settings.calibration_hash},
        "metric": spec.metric, "cost": spec.cost, "mac_convention": evaluator.image_cost.convention,
        "search": {"algorithm": "NSGA-II (pymoo)", "population": spec.population, "seed": spec.seed,
                   "crossover": "4-point, p=0.9",
                   "mutation": f"bit-flip, p={spec.mutation_prob}, {spec.mutation_bits:g} bit(s); neighbouring steps "
                               f"swapped, p={spec.step_move_prob}",
                   "generations_run": generations_run, "evaluations": evaluations},
        **extra,
    }


def write_stage(spec: RunSpec, backend, evaluator, metric, points, baselines, provenance, evaluations,
                generations_run: int) -> Path:
    """The schedule file (``spec.out``) and the run directory's plot; returns the plot's path."""
    from ecad_nodes.schedule_io import save_schedule

    from .report import plot, schedule_file
    schedule = schedule_file(backend.family, backend.variant, backend.layout, spec.steps, points, baselines,
                             spec.metric, evaluator.full_macs, evaluator.image_cost.convention, provenance)
    save_schedule(schedule, spec.out)
    return plot(spec.run_dir / "frontier.png", [(e.evaluation.quality, e.evaluation.cost) for e in evaluations],
                points, baselines, evaluator.full_macs, f"{metric.short_name} ({spec.metric})",
                f"{spec.preset.name}: {len(evaluations)} schedules, {generations_run} generations")

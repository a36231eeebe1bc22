"""One optimizer run, stage by stage: search → baselines → frontier → measure → write.

``run(spec)`` takes a checked ``RunSpec`` (``optimizer/spec.py``) and does everything the run's command line
asked: opens the run directory (refusing one that does not fit), opens the model through its backend (every
render counted, and capped by ``--budget-images``: ``optimizer/budget.py``), renders or reloads the uncached
references, searches, measures the FORA baselines, picks the frontier points, measures what was asked for
(latency, held-out quality) and writes the schedule file and the plot. The stages are plain functions so that
other tools can reuse the later ones on candidates of their own.

Extra seeds for the first generation (``run(spec, extra_seeds=...)``): a list of ``seeding.Seed``, or a function
of the open backend returning one (e.g. schedules from a quick calibration). They are computed once per run
directory and stored in it, so a resumed run starts from the same ones without rendering anything again.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import gc
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

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
    images: int                     # every image the run rendered (provenance.search.images)


ExtraSeeds = Union[Sequence, Callable[[Any], Sequence]]   # seeding.Seed, or a function of the backend giving them


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


@contextlib.contextmanager
def worker_pool(spec: RunSpec, say: Callable[[str], None] = print):
    """The Ray workers that load and run the model (``--workers``/``--ray-address``: ``optimizer/workers.py``), joined
    before anything else because their device is one of the run's settings; None without those options, and then
    nothing imports Ray."""
    if not spec.distributed:
        yield None
        return
    from .workers import WorkerPool
    pool = WorkerPool.connect(spec, say)
    try:
        yield pool
    finally:
        pool.close()


def open_model(spec: RunSpec, workers=None) -> tuple[Any, Any]:
    """The model's backend and the quality metric: loaded once by each worker (the pool is the backend), or here."""
    if workers is not None:
        workers.open()
        return workers, workers.metric
    from .metrics import MetricUnavailable, make_metric
    model = model_kind(spec.preset).open(spec)
    try:
        return model, make_metric(spec.metric, **spec.metric_kwargs())
    except MetricUnavailable as e:
        model.close()
        raise SetupError(str(e)) from None


def metric_files(spec: RunSpec) -> dict[str, Any]:
    """Identities of the metric's weight files, part of the run's settings."""
    if spec.metric != "image_reward":
        return {}
    from .loading import file_identity
    from .metrics.image_reward import find_files
    files = find_files(comfyui=spec.comfy_root, **spec.metric_options)
    return {"weights": file_identity(files.weights), "med_config": file_identity(files.med_config)}


# ---------------------------------------------------------------- the run

def run(spec: RunSpec, say: Callable[[str], None] = print, extra_seeds: ExtraSeeds = (),
        extra_seeds_id: Optional[str] = None) -> Outcome:
    """The whole run of ``spec``; ``SetupError``/``DamagedRun`` for what the user must fix. ``extra_seeds_id``: what
    identifies the extra seeds in the run's settings (resuming with others is refused)."""
    from .calibration import items_hash
    from .settings import RunSettings

    items = spec.calibration_items()
    calibration_hash = items_hash(items)
    models = model_kind(spec.preset)
    identity = models.identity(spec)
    set_threads(spec)
    given = [] if callable(extra_seeds) else list(extra_seeds)
    with worker_pool(spec, say) as workers:
        settings = RunSettings.of(spec, identity, workers.device if workers else device_label(spec), calibration_hash,
                                  metric_files(spec), extra_seeds_id or (_seeds_digest(given) if given else None))
        return _run_in_directory(spec, settings, items, calibration_hash, identity, say, extra_seeds, workers)


def _run_in_directory(spec: RunSpec, settings, items, calibration_hash: str, identity: dict, say, extra_seeds,
                      workers) -> Outcome:
    """The run in its directory, refused before anything is loaded if the directory does not fit."""
    from .run_dir import check_resume, open_run
    from .settings import differences

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
        try:
            return _run_with_database(spec, settings, items, db, say, extra_seeds, workers)
        except SetupError:
            if stored is None and db.images() == 0:  # a new run refused before it rendered anything leaves no run
                db.close()
                for name in DATABASE_FILES:
                    (spec.run_dir / name).unlink(missing_ok=True)
            raise
    finally:
        db.close()


DATABASE_FILES = ("run.sqlite", "run.sqlite-wal", "run.sqlite-shm")


def _seeds_digest(seeds: Sequence) -> str:
    from .genome import pack
    return short_hash([[s.origin, pack(s.genome).hex()] for s in seeds])


def _run_with_database(spec: RunSpec, settings, items, db, say, extra_seeds: ExtraSeeds, workers=None) -> Outcome:
    from .budget import ImageLedger, MeteredBackend, final_measurement_images
    from .evaluate import make_evaluator
    from .genome import GenomeCodec
    from .report import table

    say(f"ECAD optimizer: preset {spec.preset.name}, {len(spec.prompts)} prompts × {spec.images_per_prompt} images, "
        f"{spec.steps} steps at {spec.width}×{spec.height}, metric {spec.metric}, cost {spec.cost}")
    say(f"run directory: {spec.run_dir}   schedule file: {spec.out}")
    started = time.perf_counter()
    # the measurements after the search may render this many: the search leaves them room in the budget
    n_baselines = sum(1 for every in BASELINE_EVERY if every < spec.steps)
    reserve = final_measurement_images(len(items), len(spec.holdout_prompts) * spec.images_per_prompt,
                                       spec.measure_latency, spec.frontier_size, n_baselines, LATENCY_IMAGES)
    ledger = ImageLedger(None if spec.budget_images is None else spec.budget_images - reserve, used=db.images())
    if spec.budget_images is not None and ledger.used > spec.budget_images:
        raise SetupError(f"--budget-images {spec.budget_images} is less than the {ledger.used} images the run in "
                         f"{spec.run_dir} has rendered already; resume with a budget of at least {ledger.used}, or "
                         "without --budget-images")
    if spec.budget_images is not None:
        say(f"image budget: {spec.budget_images} ({ledger.used} rendered before, {reserve} kept for the "
            "measurements after the search)")
    model, metric = open_model(spec, workers)
    backend = MeteredBackend(model, ledger)
    try:
        say(backend.describe())
        codec = GenomeCodec(backend.layout, spec.steps)
        evaluator = make_evaluator(backend, metric, items, spec.cost, paired=spec.paired)
        stored = db.references(backend.layout)
        recorder = None
        if stored is None and spec.calibration_seeds and db.get_meta("extra_seeds") is None:
            from ecad_nodes.calibration import ChangeRecorder
            recorder = ChangeRecorder()  # the references are quick calibration's uncached runs: no extra images
        full = evaluator.prepare(stored, recorder=recorder)
        seeds = seed_stage(spec, codec, backend, db, extra_seeds, calibration=(recorder, evaluator))
        if stored is None:  # after the seeds: a run directory with references has its seeds
            db.put_references(evaluator.references_record())
        say(f"no caching: {metric.short_name} {full.quality:.3f}, {evaluator.full_macs / 1e9:.4g} GMACs/image "
            f"({evaluator.image_cost.convention}), {full.latency_ms:.1f} ms/image to sample; "
            + ("references from the run directory" if stored else f"set-up took {time.perf_counter() - started:.1f} s"))

        waited = workers.waiting_seconds if workers else 0.0
        search, result = search_stage(spec, settings, codec, evaluator, db, metric.short_name, say, ledger, seeds)
        waited = workers.waiting_seconds - waited if workers else 0.0
        ledger.limit = spec.budget_images  # the measurements may use what the search left them
        baselines = baseline_stage(spec, codec, backend.layout, search, say)
        evaluations = db.all()
        points = frontier_stage(evaluations, baselines, codec, spec.frontier_size)
        ledger.listeners.append(db.add_measured_images)  # counted as rendered: a kill loses no count
        try:
            provenance_extra = measure_stage(spec, backend, metric, items, points, baselines, say, db)
        finally:
            ledger.listeners.remove(db.add_measured_images)
        db.sync()
        images = db.images()
        provenance = provenance_of(spec, settings, evaluator, items, result.completed - 1, len(evaluations),
                                   images, provenance_extra)
        png = write_stage(spec, backend, evaluator, metric, points, baselines, provenance, evaluations,
                          result.completed - 1)

        say("")
        say(table(points, baselines, metric.short_name, evaluator.full_macs, full.quality))
        if result.wall_seconds > 0 and result.new_evaluations:
            say("\n" + time_split(result, workers, waited))
        say(f"\n{images} images rendered in all" + (f" of a budget of {spec.budget_images}" if spec.budget_images else "")
            + (" (the budget ended the search early)" if result.budget_spent else ""))
        say(f"wrote {spec.out} ({len(points)} points; {where_listed(spec.out)}) and {png}")
        return Outcome(spec.out, png, points, baselines, images)
    finally:
        model.close()
        del backend, model
        gc.collect()


def time_split(result, workers=None, waited: float = 0.0) -> str:
    """Where the search's time went: sampling, decoding, scoring and the optimizer's own share; with workers, their
    shares of the workers' time, and the driver's own share of the wall time (``waited``: the time it waited for
    them; the workers idle while the driver works, so this share is what more workers cannot shorten)."""
    wall, t = result.wall_seconds, result.timings
    head = f"search: {result.new_evaluations} new evaluations, {result.reused_evaluations} from the database, {wall:.1f} s"
    if workers is None:
        return (f"{head}: sampling {100 * t.model / wall:.1f}%, decoding {100 * t.decode / wall:.1f}%, "
                f"scoring {100 * t.metric / wall:.1f}%, optimizer {100 * (wall - t.total) / wall:.1f}%")
    busy = max(t.total, 1e-9)
    driver = max(0.0, wall - waited)
    return (f"{head} on {workers.size} workers, busy {100 * t.total / (workers.size * wall):.1f}% of the time: "
            f"sampling {100 * t.model / busy:.1f}%, decoding {100 * t.decode / busy:.1f}%, scoring "
            f"{100 * t.metric / busy:.1f}% of their work; the driver's own work {100 * driver / wall:.1f}% of the "
            "wall time")


# ---------------------------------------------------------------- stages

def seed_stage(spec: RunSpec, codec, backend, db, extra_seeds: ExtraSeeds, calibration=None) -> list:
    """The extra seeds of the first generation: ``--warm-start``'s, quick calibration's (``calibration``: a
    ``ChangeRecorder`` that recorded the references' render, and the evaluator) and the caller's, made once per run
    directory and kept there (``run`` key ``extra_seeds``), so a resumed run needs neither files nor renders."""
    from .genome import pack, unpack
    from .seeding import Seed
    stored = db.get_meta("extra_seeds")
    if stored is not None:
        return [Seed(origin, unpack(bytes.fromhex(bits), codec.n_var)) for origin, bits in stored]
    seeds = []
    if spec.warm_start:
        from . import warm_start
        seeds += warm_start.seeds(spec.warm_start, codec)
    recorder, evaluator = calibration or (None, None)
    if recorder is not None:
        from .calibrate import greedy_candidates
        pricing = evaluator.image_cost if spec.cost != "latency" else backend.image_cost(attention_matmuls=False)
        seeds += [Seed(f"quick calibration: greedy ({g.kind}) at {100 * g.budget:.0f}% of the block MACs",
                       codec.genome(g.mask.with_first_step_computed()))
                  for g in greedy_candidates(recorder.changes(), pricing, backend)]
    seeds += list(extra_seeds(backend) if callable(extra_seeds) else extra_seeds)
    db.set_meta("extra_seeds", [[s.origin, pack(s.genome).hex()] for s in seeds])
    return seeds


def baseline_genomes(spec: RunSpec, codec, layout) -> dict[str, Any]:
    """FORA-N for each N of ``BASELINE_EVERY`` below the step count, as genomes by name."""
    from ecad_nodes.heuristics import fora_bits
    genomes = {}
    for every in BASELINE_EVERY:
        if every < spec.steps:
            bits = fora_bits(layout, spec.steps, every)
            bits[0] = True
            genomes[f"FORA-{every}"] = codec.genome(codec.mask(bits[1:].reshape(-1)))
    return genomes


def search_stage(spec: RunSpec, settings, codec, evaluator, db, metric_short: str, say, ledger=None, seeds=()):
    """NSGA-II until ``spec.generations`` offspring generations are done (resuming from the checkpoint) or the image
    budget is spent; where it steered on few images, then the frontier's points verified (``verify_stage``)."""
    from .budget import verification_images
    from .progress import Progress
    from .racing import RacingConfig
    from .search import Search, SearchConfig
    from .surrogate import SurrogateConfig
    config = SearchConfig(spec.population, spec.seed, mutation_prob=spec.mutation_prob,
                          mutation_bits=spec.mutation_bits, step_move_prob=spec.step_move_prob,
                          racing=RacingConfig(spec.race_images, spec.race_margin, spec.steer_images)
                          if settings.racing else None,
                          surrogate=SurrogateConfig(pool=spec.surrogate_pool, evaluate=spec.surrogate_evaluations,
                                                    min_tau=spec.surrogate_min_tau) if spec.surrogate else None)
    search = Search(codec, evaluator, db, spec.run_dir, config, settings.fingerprint(), metric_short=metric_short,
                    ledger=ledger, extra_seeds=seeds,
                    full_fidelity=list(baseline_genomes(spec, codec, evaluator.backend.layout).values()))
    done = search.completed_generations()
    if done:
        say(f"resuming after generation {done - 1} ({db.count()} evaluations in the database)")
    images = len(evaluator.items)
    per_generation = (config.surrogate.evaluate if config.surrogate else spec.population) * images
    verification = verification_images(images, search.steer_images, spec.frontier_size,  # kept for verify
                                       len(search.full_fidelity))
    planned = ((0 if done else len(search.seeds)) * images
               + max(0, spec.generations - max(0, done - 1)) * per_generation + verification)
    used = search.ledger.used
    search.progress = Progress(total=search.ledger.capped(used + planned), done=used, enabled=spec.progress,
                               write=say)
    search.ledger.listeners.append(search.progress.images)
    try:
        if search.ledger.limit is not None:
            search.ledger.limit -= verification
        try:
            result = search.run(spec.generations)
        finally:
            if search.ledger.limit is not None:
                search.ledger.limit += verification
        verify_stage(spec, search, say)
    finally:
        search.progress.close()
        search.ledger.listeners.remove(search.progress.images)
    db.set_meta("generations_completed", result.completed)
    return search, result


def verify_stage(spec: RunSpec, search, say: Callable[[str], None] = print) -> None:
    """Where the search steered on estimates on a few images: their frontier, rendered on every image."""
    from .budget import BudgetExhausted
    before = len(search.archive.full)
    try:
        search.verify(spec.frontier_size)
    except BudgetExhausted as e:
        say(f"verified {len(search.archive.full) - before} schedules of the frontier of estimates on every "
            f"calibration image, then {e}: {len(search.unverified())} points of it are left unverified, and the file "
            "holds none of them")
        return
    if len(search.archive.full) > before:
        say(f"verified {len(search.archive.full) - before} schedules of the frontier of estimates on every "
            "calibration image")


def baseline_stage(spec: RunSpec, codec, layout, search, say: Callable[[str], None] = print) -> list:
    """FORA-N, measured on every image as the candidates were (found in the database: they lead the first
    generation). One the budget cannot pay for is left out."""
    from .budget import BudgetExhausted
    from .report import ResultPoint
    baselines = []
    for name, genome in baseline_genomes(spec, codec, layout).items():
        try:
            ev = search.evaluate(genome, name, -1)
        except BudgetExhausted as e:
            say(f"{name} is not among the baselines: {e}")
            continue
        baselines.append(ResultPoint(name, codec.mask(genome), ev.quality, ev.macs, ev.cost))
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


def measure_stage(spec: RunSpec, backend, metric, items, points, baselines,
                  say: Callable[[str], None] = print, db=None) -> dict[str, Any]:
    """Latency (``--measure-latency``) and held-out quality (``--holdout``) of the points and baselines, in place;
    returns what the provenance records about them. Each finished measurement is kept in the run's database (``db``),
    so a resumed run that writes the same schedules takes it from there instead of rendering it again. A measurement
    the image budget cannot pay for in full is left out, and the run says so."""
    from .budget import BudgetExhausted
    from .calibration import items_hash, seed_range
    from .evaluate import make_evaluator, measure_latency
    from .genome import genome_hash
    schedules = [*points, *baselines]
    keys = [genome_hash(p.mask.bits.reshape(-1)) for p in schedules]
    kept = (db.get_meta("measurements") if db is not None else None) or {}
    if kept.get("schedules") != keys:
        kept = {"schedules": keys}

    def keep(**measured) -> None:
        kept.update(measured)
        if db is not None:
            db.set_meta("measurements", kept)

    if spec.measure_latency:
        if kept.get("latency_repeats") != spec.measure_latency:
            try:
                seconds = measure_latency(backend, {"no caching": None, **{p.name: p.mask for p in schedules}},
                                          items[:LATENCY_IMAGES], spec.measure_latency)
                keep(latency_repeats=spec.measure_latency, latency_full=seconds["no caching"],
                     latency=[seconds[p.name] for p in schedules])
            except BudgetExhausted as e:
                say(f"latency not measured: {e}")
        if kept.get("latency_repeats") == spec.measure_latency:
            for p, seconds in zip(schedules, kept["latency"]):
                p.latency_ms = 1e3 * seconds
                p.speedup = kept["latency_full"] / seconds
    if not spec.holdout_prompts:
        return {}
    held = spec.holdout_items()
    held_hash = items_hash(held)
    if kept.get("holdout_items") != held_hash:
        checker = make_evaluator(backend, metric, held, "macs" if spec.cost == "latency" else spec.cost)
        try:
            checker.prepare()
            keep(holdout_items=held_hash, holdout=[checker.evaluate(p.mask).quality for p in schedules])
        except BudgetExhausted as e:
            say(f"held-out quality not measured: {e}")
            return {}
    for p, quality in zip(schedules, kept["holdout"]):
        p.holdout_quality = quality
    return {"holdout": {"num_prompts": len(spec.holdout_prompts), "images_per_prompt": spec.images_per_prompt,
                        "seeds": seed_range(held), "prompts_hash": held_hash}}


def provenance_of(spec: RunSpec, settings, evaluator, items, generations_run: int, evaluations: int, images: int,
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
                   "generations_run": generations_run, "evaluations": evaluations, "images": images,
                   "budget_images": spec.budget_images, "paired_scoring": spec.paired,
                   "racing": settings.racing, "surrogate": settings.surrogate,
                   **({"warm_start": settings.warm_start} if settings.warm_start else {}),
                   "calibration_seeds": settings.calibration_seeds,
                   **({"extra_seeds": settings.extra_seeds} if settings.extra_seeds else {})},
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

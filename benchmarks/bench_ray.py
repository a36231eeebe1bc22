"""The optimizer on Ray workers: evaluations per minute with 1, 2, … workers (and in one process), and the driver's
own share of the time.

    python benchmarks/bench_ray.py [--model tiny-flux] [--workers 0,1,2] [--generations 3] [--population N]
                                   [--prompts N] [--rounds 2] [--ray-address ADDR] [--cpu]

Runs the search of ``python -m optimizer.run`` (racing and the surrogate on, as the run's defaults) from scratch in a
temporary run directory for each worker count ("0": the model in this process, no Ray), rounds interleaved with the
order rotated each round. Per run: evaluations per minute (screens and full ones, as ``bench_optimizer.py`` counts
them), images per second, how busy the workers were (their sampling, decoding and scoring time over workers × wall
time) and **the driver's own share** of the wall time: the time it was not waiting for the workers (pymoo ask/tell,
racing and surrogate decisions, merging scores, the database, checkpoints), during which the workers idle; more
workers cannot shorten it. Starting Ray and loading the model on each worker are reported apart, not in these
figures. Every run must find the same evaluations (checked): only the time differs. On the CPU, N workers need N free
cores to run N times as fast; on a machine with GPUs each worker takes one.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny-flux", help="a tiny preset, or toy (default tiny-flux)")
    p.add_argument("--comfyui", help="ComfyUI checkout (default: $COMFYUI_PATH)")
    p.add_argument("--workers", default="0,1,2", help="worker counts to compare, 0 = in this process (default 0,1,2)")
    p.add_argument("--generations", type=int, default=3, help="offspring generations after the initial one")
    p.add_argument("--population", type=int, help="default: the preset's")
    p.add_argument("--prompts", type=int, help="calibration prompts (default: the preset's)")
    p.add_argument("--rounds", type=int, default=2, help="rounds, each running every worker count once (default 2)")
    p.add_argument("--ray-address", help="run the workers on this Ray cluster instead of a local Ray")
    p.add_argument("--cpu", action="store_true", help="CPU workers even where there are GPUs")
    return p.parse_args(argv)


def one_search(args, workers: int, tmp: Path) -> dict:
    """The search of a run with ``workers`` workers (0: in this process), from scratch; its figures."""
    from optimizer.budget import ImageLedger, MeteredBackend
    from optimizer.calibration import items_hash
    from optimizer.evaluate import make_evaluator
    from optimizer.genome import GenomeCodec
    from optimizer.pipeline import device_label, metric_files, open_model, search_stage, set_threads, worker_pool
    from optimizer.run import build_parser
    from optimizer.run_dir import open_run
    from optimizer.settings import RunSettings
    from optimizer.spec import model_kind, spec_from_args

    argv = ["--model", args.model, "--generations", str(args.generations), "--no-progress", "--no-calibration-seeds",
            "--run-dir", str(tmp / "run"), "--out", str(tmp / "out.json")]
    argv += ["--population", str(args.population)] if args.population else []
    argv += ["--num-prompts", str(args.prompts)] if args.prompts else []
    argv += ["--comfyui", args.comfyui] if args.comfyui else []
    argv += ["--cpu"] if args.cpu else []
    argv += (["--workers", str(workers)] + (["--ray-address", args.ray_address] if args.ray_address else [])
             if workers else [])
    spec = spec_from_args(build_parser().parse_args(argv))
    set_threads(spec)
    items = spec.calibration_items()
    started = time.perf_counter()
    with worker_pool(spec, say=lambda line: None) as pool:
        model, metric = open_model(spec, pool)
        try:
            setup = time.perf_counter() - started
            identity = model_kind(spec.preset).identity(spec)
            settings = RunSettings.of(spec, identity, pool.device if pool else device_label(spec), items_hash(items),
                                      metric_files(spec))
            db, _ = open_run(spec.run_dir, settings.fingerprint(), "bench", items_hash(items))
            ledger = ImageLedger()
            evaluator = make_evaluator(MeteredBackend(model, ledger), metric, items, spec.cost, spec.paired)
            evaluator.prepare()
            references = ledger.used
            waited = pool.waiting_seconds if pool else 0.0
            _, result = search_stage(spec, settings, GenomeCodec(model.layout, spec.steps), evaluator, db,
                                     metric.short_name, lambda line: None, ledger)
            waited = (pool.waiting_seconds - waited) if pool else 0.0
            rows = [(r.genome_hash, r.full, r.evaluation.quality) for r in db.rows()]
            db.close()
            description = model.describe()
        finally:
            model.close()
    wall = result.wall_seconds
    own = wall - waited if pool else wall - result.timings.total
    return {"workers": workers, "setup": setup, "wall": wall, "evaluations": result.new_evaluations,
            "images": ledger.used - references, "busy": result.timings.total / (max(1, workers) * wall),
            "driver": own / wall, "rows": rows, "description": description}


def main(argv=None) -> int:
    args = parse(argv)
    counts = [int(w) for w in args.workers.split(",")]
    runs: dict[int, list[dict]] = {w: [] for w in counts}
    for r in range(args.rounds):
        order = counts[r % len(counts):] + counts[:r % len(counts)]
        for workers in order:
            with tempfile.TemporaryDirectory() as tmp:
                runs[workers].append(one_search(args, workers, Path(tmp)))
            done = runs[workers][-1]
            print(f"round {r + 1}, {workers or 'no'} worker(s): {done['evaluations']} evaluations in "
                  f"{done['wall']:.1f} s (set-up {done['setup']:.1f} s)", flush=True)
    reference = runs[counts[0]][0]["rows"]
    for workers, done in runs.items():
        for d in done:
            assert d["rows"] == reference, f"{workers} worker(s) evaluated other schedules or got other scores"

    def median(workers: int, key: str) -> float:
        return statistics.median(d[key] for d in runs[workers])

    base = 1 if 1 in counts else counts[0]
    first = runs[counts[0]][0]
    print(f"\nRay benchmark: {first['description']}; {first['evaluations']} evaluations ({first['images']} images) per "
          f"search of {args.generations} generations after the initial one; median of {args.rounds} round(s)\n")
    print("| workers | search (s) | evaluations / min | images / s | vs 1 worker | workers busy | driver's own share |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for workers in counts:
        wall = median(workers, "wall")
        per_minute = 60 * first["evaluations"] / wall
        speedup = median(base, "wall") / wall
        busy = f"{100 * median(workers, 'busy'):.0f} %" if workers else "–"
        print(f"| {workers or 'none (one process)'} | {wall:.1f} | {per_minute:.1f} | {first['images'] / wall:.1f} | "
              f"{speedup:.2f}× | {busy} | {100 * median(workers, 'driver'):.1f} % |")
    print("\nSet-up (Ray start, model and metric loaded on every worker), not in the figures above: "
          + ", ".join(f"{w or 'no'} worker(s) {median(w, 'setup'):.1f} s" for w in counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())

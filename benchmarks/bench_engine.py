"""Engine benchmark: what caching costs and what it gains, measured side by side in one run.

    python benchmarks/bench_engine.py [--comfyui PATH] [--device cpu|cuda] [--dtype float32|bfloat16]
                                      [--shape moderate|large|flux-dev] [--families flux,pixart,...]
                                      [--repeats 5] [--steps N] [--threads N]

For each family's benchmark model (``optimizer.presets.benchmark_models()``: a moderate-size
random-weight model built from ComfyUI's own classes) it samples one seed with ComfyUI's
``comfy.sample.sample`` (what KSampler runs) with the unpatched model and with ECAD schedules. Runs
are interleaved, one round at a time with the order rotated each round, so drift and neighbours'
load hit every variant alike; each figure is the median over rounds of a ratio taken within a round.

* ``all compute``: the no-caching schedule through the engine; its overhead over the unpatched
  model (target: at most 2 %).
* ``FORA-2`` (every family) and, for FLUX, ``FORA-3`` and a random schedule computing half of the
  components: the realized speedup over the unpatched model, the speedup its skipped MACs allow
  (``RunReport.mac_speedup_bound()``, attention products included), and realized / bound
  (target: at least 90 %).
* The peak cache memory (``RunReport.peak_cache_bytes``) next to the size of one hidden state of the
  model (rows × tokens × width × dtype size) and, on CUDA, the peak of torch's allocations.

Next to each median, "best" compares the fastest round of each variant: interruptions on a shared
machine only ever add time, so the minimum is the least disturbed estimate (as ``timeit`` argues).

Needs ComfyUI (``--comfyui`` or ``COMFYUI_PATH``).
"""
from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from optimizer.comfy_env import import_comfy  # noqa: E402

SEED = 42


def parse(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--comfyui", help="ComfyUI checkout (default: $COMFYUI_PATH)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    p.add_argument("--shape", choices=["moderate", "large", "flux-dev"], default="moderate",
                   help="large: FLUX at hidden 1536, 8 double + 16 single blocks, 4096 image tokens; flux-dev: "
                        "FLUX.1-dev's own shape (hidden 3072, 19 double + 38 single blocks, 12B parameters), 1024² "
                        "(for GPUs; random weights)")
    p.add_argument("--families", help="comma-separated benchmark model names (default: every registered one)")
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds after one warm-up round")
    p.add_argument("--steps", type=int, default=None, help="override the models' step counts")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    return p.parse_args(argv)


@dataclass
class Measured:
    name: str
    seconds: float                  # median time of one sampling run
    speedup: float                  # median over rounds of t(unpatched) / t(this)
    speedup_range: tuple[float, float]
    best_speedup: float = 1.0       # fastest unpatched round / fastest round of this (noise only ever adds time)
    bound: Optional[float] = None   # MAC speedup bound of the run's schedule
    computed: Optional[float] = None
    peak_cache: Optional[int] = None
    peak_alloc: Optional[int] = None


def hidden_width(dm: Any) -> int:
    """The residual stream's width: the most common fan-in of the model's linear layers."""
    import torch
    widths = collections.Counter(m.in_features for m in dm.modules() if isinstance(m, torch.nn.Linear))
    return widths.most_common(1)[0][0]


def large_flux(bench: Any, shape: str) -> Any:
    if shape == "flux-dev":
        spec = replace(bench.spec, hidden=3072, heads=24, depth=19, depth_single=38, axes_dim=(16, 56, 56),
                       mlp_ratio=4.0, context_dim=4096, vec_dim=768, max_parameters=None)
    else:
        spec = replace(bench.spec, hidden=1536, heads=12, depth=8, depth_single=16, axes_dim=(16, 56, 56),
                       max_parameters=None)
    return replace(bench, spec=spec, width=1024, height=1024)


def schedules_for(bench: Any, layout: Any, steps: int) -> dict[str, Any]:
    import numpy as np
    from ecad_nodes.choice import ScheduleChoice
    from ecad_nodes.heuristics import NO_CACHING, heuristic
    from ecad_nodes.schedule import Mask
    chosen = {"all compute": ScheduleChoice.of_heuristic(NO_CACHING),
              "FORA-2": ScheduleChoice.of_heuristic(heuristic("FORA every 2 steps"))}
    if bench.name == "flux":
        chosen["FORA-3"] = ScheduleChoice.of_heuristic(heuristic("FORA every 3 steps"))
        bits = np.random.default_rng(0).random((steps, layout.bits_per_step)) < 0.5
        chosen["random 50%"] = ScheduleChoice.of_mask("random 50%", Mask(layout, bits))
    return chosen


def measure(bench: Any, args: argparse.Namespace, dtype: Any) -> tuple[list[Measured], int]:
    """Time the unpatched model and each schedule; returns the rows and one hidden state's bytes."""
    import torch
    import comfy.model_management
    import comfy.sample
    from ecad_nodes.families import adapter_for
    from ecad_nodes.patching import SETTINGS_KEY, apply_ecad

    steps = args.steps or bench.steps
    model = bench.spec.build(seed=0, dtype=dtype, device=torch.device(args.device))  # FLUX.1-dev's 12 B weights drawn on the GPU
    dm = model.model.diffusion_model
    layout = adapter_for(model.model).layout(dm)
    variants = {"unpatched": model}
    variants.update({name: apply_ecad(model, choice) for name, choice in schedules_for(bench, layout, steps).items()})
    positive, negative = bench.spec.conditioning(1), bench.spec.conditioning(2)
    latent = comfy.sample.fix_empty_latent_channels(model, bench.spec.empty_latent(bench.height, bench.width, 1))
    noise = comfy.sample.prepare_noise(latent, SEED)
    cuda = args.device == "cuda"
    peak_alloc: dict[str, int] = {}

    def run(name: str) -> float:
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        with torch.inference_mode():
            comfy.sample.sample(variants[name], noise, steps, bench.cfg, bench.sampler, bench.scheduler, positive,
                                negative, latent, seed=SEED, disable_pbar=True)
        if cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        if cuda:
            peak_alloc[name] = torch.cuda.max_memory_allocated()
        return elapsed

    names = list(variants)
    for name in names:  # warm-up: weights placed, kernels chosen, caches of ComfyUI filled
        run(name)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(run(name))

    base = times["unpatched"]
    rows = [Measured("unpatched", statistics.median(base), 1.0, (1.0, 1.0), peak_alloc=peak_alloc.get("unpatched"))]
    hidden_bytes = 0
    for name in names[1:]:
        report = variants[name].model_options["transformer_options"][SETTINGS_KEY].last_report
        ratios = [b / t for b, t in zip(base, times[name])]
        rows.append(Measured(name, statistics.median(times[name]), statistics.median(ratios), (min(ratios), max(ratios)),
                             best_speedup=min(base) / min(times[name]), bound=report.mac_speedup_bound(),
                             computed=report.compute_fraction(),
                             peak_cache=report.peak_cache_bytes, peak_alloc=peak_alloc.get(name)))
        tokens = getattr(report.tokens, "image", 0) + getattr(report.tokens, "text", 0)
        rows_per_call = 1 if bench.cfg == 1.0 else 2  # cond and uncond batched together
        hidden_bytes = rows_per_call * tokens * hidden_width(dm) * torch.finfo(dtype).bits // 8
    comfy.model_management.unload_all_models()  # the next family gets the memory
    return rows, hidden_bytes


def mib(n: Optional[int]) -> str:
    return "" if n is None else f"{n / 2**20:.1f} MiB"


def table_rows(bench_name: str, rows: list[Measured], hidden_bytes: int) -> list[str]:
    out = []
    for m in rows:
        if m.name == "unpatched":
            out.append(f"| {bench_name} | unpatched | {m.seconds:.3f} | 1.00× | | | | 100% | | {mib(hidden_bytes)} | {mib(m.peak_alloc)} |")
            continue
        low, high = m.speedup_range
        if m.name == "all compute":
            overhead = (f"{100 * (1 / m.speedup - 1):+.1f} % ({100 * (1 / high - 1):+.1f} … {100 * (1 / low - 1):+.1f}); "
                        f"best {100 * (1 / m.best_speedup - 1):+.1f} %")
            realized = ""
        else:
            overhead = ""
            realized = f"**{100 * m.speedup / m.bound:.0f} %**; best {100 * m.best_speedup / m.bound:.0f} %" if m.bound else ""
        out.append(f"| {bench_name} | {m.name} | {m.seconds:.3f} | {m.speedup:.2f}× ({low:.2f}–{high:.2f}) | "
                   f"{'' if m.bound is None else f'{m.bound:.2f}×'} | {realized} | {overhead} | "
                   f"{100 * m.computed:.0f}% | {mib(m.peak_cache)} | {mib(hidden_bytes)} | {mib(m.peak_alloc)} |")
    return out


def main(argv: Optional[list[str]] = None) -> int:
    args = parse(argv)
    import_comfy(args.comfyui, cpu=args.device == "cpu")
    import torch
    from optimizer.presets import benchmark_models

    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    models = benchmark_models()
    if args.families:
        wanted = [f.strip() for f in args.families.split(",")]
        unknown = set(wanted) - {m.name for m in models}
        if unknown:
            print(f"unknown benchmark models: {', '.join(sorted(unknown))}; registered: "
                  f"{', '.join(m.name for m in models)}", file=sys.stderr)
            return 2
        models = [m for m in models if m.name in wanted]
    if args.shape != "moderate":
        models = [large_flux(m, args.shape) if m.name == "flux" else m for m in models]

    device = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"{device}, {args.dtype}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"shape {args.shape}, 1 warm-up + {args.repeats} interleaved rounds; medians (min–max over rounds); "
          f"best: fastest round against fastest round\n")
    print("| model | schedule | time (s) | speedup | MAC bound | realized / bound | overhead | computed | "
          "peak cache | hidden state | peak alloc |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    sys.stdout.flush()
    failed = 0
    for bench in models:
        try:
            rows, hidden_bytes = measure(bench, args, dtype)
        except Exception as e:  # one broken family must not hide the others' rows
            failed += 1
            print(f"| {bench.name} | error: {type(e).__name__}: {str(e)[:120]} | | | | | | | | | |")
            traceback.print_exc(file=sys.stderr)
            continue
        print("\n".join(table_rows(bench.name, rows, hidden_bytes)))
        sys.stdout.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

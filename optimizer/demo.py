"""Demo: ECAD caching on a small random-weight FLUX built from ComfyUI's classes, on the CPU.

    python -m optimizer.demo [--comfyui PATH] [--steps 20] [--size 512]

Samples the same seed with the unpatched model and with ECAD's built-in heuristics, and prints,
for each, the wall time and speedup, the share of component calls computed, the speedup its
skipped MACs allow, the peak cache memory, and how far the result is from the full computation.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Optional

from .comfy_env import ComfyUINotFound, import_comfy


def _parse(argv):
    p = argparse.ArgumentParser(prog="python -m optimizer.demo", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--comfyui", help="ComfyUI checkout (default: $COMFYUI_PATH, or the ComfyUI this pack is in)")
    p.add_argument("--steps", type=int, default=20, help="sampling steps (default 20, as the ECAD paper)")
    p.add_argument("--size", type=int, default=512, help="image size in pixels; 512 gives 1024 image tokens")
    p.add_argument("--repeats", type=int, default=2, help="timed runs per schedule; the median is shown")
    return p.parse_args(argv)


def busy_share(seconds: float = 0.5) -> Optional[float]:
    """The share of the machine's CPU time other work used over ``seconds`` (Linux's /proc/stat; None elsewhere)."""
    def idle_and_total():
        with open("/proc/stat", encoding="ascii") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return values[3] + values[4], sum(values)  # idle + iowait, everything
    try:
        idle0, total0 = idle_and_total()
        time.sleep(seconds)
        idle1, total1 = idle_and_total()
    except (OSError, ValueError, IndexError):
        return None
    return None if total1 <= total0 else 1.0 - (idle1 - idle0) / (total1 - total0)


def busy_warning(share: Optional[float]) -> str:
    """A warning when other work keeps half the cores or more busy before the demo starts: torch's threads then
    wait for cores, and the times and speedups mean nothing (no caching came out 1.8x slower than the unpatched
    model so); empty otherwise."""
    if share is None or share < 0.5:
        return ""
    return (f"warning: other work keeps {100 * share:.0f} % of the CPU busy: the times and speedups below will be "
            "wrong, often below 1x; run the demo alone. The 'computed' and 'MAC bound' columns do not depend "
            "on it.\n")


def main(argv=None) -> int:
    args = _parse(argv)
    warning = busy_warning(busy_share())  # before this process loads the CPU itself
    try:
        import_comfy(args.comfyui, cpu=True)
    except ComfyUINotFound as e:
        print(f"The demo needs ComfyUI and cannot run here: {e}.\n"
              "`make demo` clones a pinned ComfyUI release when the network allows; offline, point "
              "COMFYUI_PATH at a ComfyUI checkout.", file=sys.stderr)
        return 2

    import torch
    from ecad_nodes.choice import ScheduleChoice
    from ecad_nodes.heuristics import HEURISTICS, NO_CACHING
    from ecad_nodes.patching import SETTINGS_KEY, apply_ecad
    from ecad_nodes.families.flux import TinyFlux

    torch.manual_seed(0)
    spec = TinyFlux(hidden=256, heads=4, depth=2, depth_single=4, context_dim=128, vec_dim=64, mlp_ratio=4.0,
                    axes_dim=(16, 24, 24))
    model = spec.build(seed=0)
    positive = spec.conditioning(1, tokens=64)
    print(f"Model: FLUX ({spec.depth} double + {spec.depth_single} single blocks, hidden {spec.hidden}), "
          f"random weights, {args.size}×{args.size} ({(args.size // 16) ** 2} image tokens), {args.steps} steps, "
          f"euler, CPU ({torch.get_num_threads()} threads)\n")
    if warning:
        print(warning)

    def run(m):
        import comfy.sample
        latent = comfy.sample.fix_empty_latent_channels(m, spec.empty_latent(args.size, args.size))
        noise = comfy.sample.prepare_noise(latent, 42)
        with torch.inference_mode():
            start = time.perf_counter()
            out = comfy.sample.sample(m, noise, args.steps, 1.0, "euler", "simple", positive, positive, latent,
                                      seed=42, disable_pbar=True)
            return out, time.perf_counter() - start

    run(model)  # warm-up
    base_times, reference = [], None
    for _ in range(args.repeats):
        reference, seconds = run(model)
        base_times.append(seconds)
    base = statistics.median(base_times)

    header = f"{'schedule':<26} {'time':>8} {'speedup':>8} {'computed':>9} {'MAC bound':>10} {'peak cache':>11} {'PSNR vs full':>13}"
    print(header)
    print("-" * len(header))
    print(f"{'unpatched model':<26} {base:>7.2f}s {1.0:>7.2f}x {'100.0%':>9} {1.0:>9.2f}x {'-':>11} {'-':>13}")
    for heuristic in (NO_CACHING,) + tuple(h for h in HEURISTICS if h is not NO_CACHING):
        patched = apply_ecad(model, ScheduleChoice.of_heuristic(heuristic))
        times = []
        for _ in range(args.repeats):
            out, seconds = run(patched)
            times.append(seconds)
        t = statistics.median(times)
        report = patched.model_options["transformer_options"][SETTINGS_KEY].last_report
        mse = torch.mean((out - reference) ** 2).item()
        peak = reference.abs().max().item()
        psnr = "identical" if mse == 0 else f"{10 * torch.log10(torch.tensor(peak ** 2 / mse)).item():.1f} dB"
        print(f"{heuristic.name:<26} {t:>7.2f}s {base / t:>7.2f}x {100 * report.compute_fraction():>8.1f}% "
              f"{report.mac_speedup_bound():>9.2f}x {report.peak_cache_bytes / 2**20:>8.1f} MiB {psnr:>13}")
    del patched, model  # release ComfyUI's patchers while ComfyUI is still importable
    print("\n'computed': share of (step, block, component) calls computed; the rest reused their cache.\n"
          "'MAC bound': the speedup the skipped MACs (attention products included) allow; the rest of a step\n"
          "(embeddings, final layer, sampler) always runs.\n"
          "Random weights make no pictures: PSNR only shows how close each schedule stays to the full computation.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

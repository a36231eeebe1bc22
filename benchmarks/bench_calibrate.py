"""Quick calibration at a released model's shape: how long ``optimizer.calibrate`` takes on this device.

    python benchmarks/bench_calibrate.py [--comfyui PATH] [--num-prompts 8] [--images-per-prompt 1]
                                         [--search-batch 10] [--steps N] [--width W --height H]

Issue 12 asks quick calibration to take minutes on one GPU for FLUX.1-dev at the paper's settings. No weights
can be had here, so the ``flux-dev`` preset's model is replaced by a random-weight model of its exact shape,
built from ComfyUI's classes through its detection (hidden 3072, 19 double + 38 single blocks, 12 B parameters,
bfloat16 as ComfyUI loads FLUX on a GPU), with T5's 256 text tokens in place of encoded prompts, a small random
VAE, and the preset's sampling settings (20 steps, 256², guidance 5, euler/simple). The calibration is the one
``python -m optimizer.calibrate`` runs, with its defaults (8 prompts × 1 image, 16 budgets raced, FORA-2…5 on
every image), scored by fidelity: Image Reward's weights cannot be had either, and scoring is a few ms per image
next to the transformer's 20 steps. Text encoding (once per prompt) and the real VAE's decode are left out.

Quick calibration runs twice, side by side: sampling one image at a time (``--batch-size 1``, how it sampled before
images of several prompts shared a batch) and with its default batch, prompts together. Printed: the time to build
the model, each calibration's images and wall time and the ratio, the largest quality difference between their
frontiers, an uncached image sampled alone and in calibration's batch, and for scale the paper's full
search (the preset's population × (generations + 1) × prompts × images per prompt) at the time per image of an
uncached batch of --search-batch images of one prompt, as the search renders its images.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from optimizer.comfy_env import import_comfy  # noqa: E402

PRESET = "flux-dev"
T5_TOKENS = 256        # ComfyUI's FLUX T5 tokenizer pads every prompt to at least 256 tokens
SEARCH_BATCH = 10      # the preset's images per prompt, sampled together by the search


def parse(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--comfyui", help="ComfyUI checkout (default: $COMFYUI_PATH)")
    p.add_argument("--num-prompts", type=int, help="calibration prompts (default: optimizer.calibrate's)")
    p.add_argument("--images-per-prompt", type=int, help="(default: optimizer.calibrate's)")
    p.add_argument("--steps", type=int, help="sampling steps (default: the preset's)")
    p.add_argument("--width", type=int, help="(default: the preset's)")
    p.add_argument("--height", type=int, help="(default: the preset's)")
    p.add_argument("--search-batch", type=int, default=SEARCH_BATCH,
                   help="images of one prompt sampled together when timing the full search's images")
    p.add_argument("--shape", choices=["flux-dev", "moderate"], default="flux-dev",
                   help="moderate: the engine benchmark's FLUX (hidden 512, 4 + 8 blocks), to check this script on a CPU")
    p.add_argument("--cpu", action="store_true", help="run on the CPU (a check of this script, not a measurement)")
    return p.parse_args(argv)


def released_shape_preset(shape_name: str, cpu: bool) -> Any:
    """The ``flux-dev`` preset with a random-weight model of FLUX.1-dev's shape (or ``moderate``) instead of its files."""
    import torch
    import comfy.model_management
    from bench_engine import large_flux
    from optimizer.presets import all_presets, benchmark_models
    from ecad_nodes.families.flux import TinyFlux

    flux = next(b for b in benchmark_models() if b.name == "flux")
    shape = large_flux(flux, "flux-dev").spec if shape_name == "flux-dev" else flux.spec
    dtype = torch.float32 if cpu else torch.bfloat16
    device = comfy.model_management.get_torch_device()

    @dataclass(frozen=True)
    class FluxDevShape(TinyFlux):
        """FLUX.1-dev's shape with random weights, made where it runs, conditioned by T5-length text."""

        def build(self, seed: int = 0, dtype: Any = dtype, device: Any = device) -> Any:
            return super().build(seed, dtype=dtype, device=device)

        def conditioning(self, seed: int, tokens: Optional[int] = None, guidance: float = 3.5) -> list:
            return super().conditioning(seed, tokens or T5_TOKENS, guidance)

    spec = FluxDevShape(**{f.name: getattr(shape, f.name) for f in fields(shape)})  # max_parameters too
    real = all_presets()[PRESET]
    shaped = replace(real, name=f"{PRESET}-shape", files=None, tiny=spec, metric="fidelity",
                     description=f"{real.description}; random weights of {shape_name} shape")
    all_presets()[shaped.name] = shaped  # the registry is read by name; this preset lives only in this process
    return shaped


def uncached_image_seconds(preset: Any, args: argparse.Namespace, loaded: Any, batch: int) -> float:
    """Seconds per image of an uncached batch of ``batch`` images of one prompt (the best of two, after a warm-up)."""
    import torch
    import comfy.model_management
    import comfy.sample
    from optimizer.loading import with_guidance

    positive = with_guidance(preset.tiny.conditioning(1), preset.guidance)
    latent = loaded.empty_latent(batch)
    noise = comfy.sample.prepare_noise(latent, 0)
    steps = args.steps or preset.steps

    def once() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            comfy.sample.sample(loaded.model, noise, steps, preset.cfg, preset.sampler, preset.scheduler, positive,
                                positive, latent, seed=0, disable_pbar=True)
        if torch.cuda.is_available() and not args.cpu:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    once()
    return min(once() for _ in range(2)) / batch


def frontier_difference(a: list, b: list) -> float:
    """The largest quality difference between two calibrations' points of the same schedule (same mask)."""
    qualities = {p.mask.bits.tobytes(): p.quality for p in a}
    shared = [abs(qualities[p.mask.bits.tobytes()] - p.quality) for p in b if p.mask.bits.tobytes() in qualities]
    return max(shared) if shared else float("nan")


def main(argv: Optional[list[str]] = None) -> int:
    args = parse(argv)
    import_comfy(args.comfyui, cpu=args.cpu)
    import torch
    import comfy.model_management
    from optimizer import calibrate as quick
    from optimizer.loading import build_tiny
    from optimizer.spec import spec_from_args

    preset = released_shape_preset(args.shape, args.cpu)
    device = "CPU" if args.cpu else torch.cuda.get_device_name()
    print(f"{device}, torch {torch.__version__}; {preset.name}: {preset.description}")

    with tempfile.TemporaryDirectory() as work:
        argv_quick = ["--model", preset.name, "--run-dir", f"{work}/run", "--out", f"{work}/calibrated.json",
                      "--no-progress"] + (["--comfyui", args.comfyui] if args.comfyui else [])
        for option in ("num_prompts", "images_per_prompt", "steps", "width", "height"):
            if getattr(args, option) is not None:
                argv_quick += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
        ns = quick.quick_defaults(quick.build_parser().parse_args(argv_quick))
        spec = spec_from_args(ns, command="bench_calibrate")

        start = time.perf_counter()
        loaded = build_tiny(preset, spec.width, spec.height)
        built = time.perf_counter() - start
        parameters = sum(p.numel() for p in loaded.model.model.diffusion_model.parameters())
        batches = sorted({1, spec.batch_size})   # one image at a time, and calibration's batch where it differs
        per_image = {batch: uncached_image_seconds(preset, args, loaded, batch) for batch in batches}
        per_search_image = uncached_image_seconds(preset, args, loaded, args.search_batch)
        del loaded
        comfy.model_management.unload_all_models()
        comfy.model_management.soft_empty_cache()

        results = {batch: quick.calibrate(replace(spec, batch_size=batch, run_dir=Path(work, f"run-{batch}"),
                                                  out=Path(work, f"calibrated-{batch}.json")), ns.budgets)
                   for batch in batches}  # one image at a time first: all run after the warm-up above

    images = len(spec.prompts) * spec.images_per_prompt
    search_images = preset.population * (preset.generations + 1) * preset.prompts * preset.images_per_prompt
    search_hours = search_images * per_search_image / 3600
    print("\n| what | images | wall time | per image |")
    print("|---|---:|---:|---:|")
    print(f"| build {parameters / 1e9:.1f} B random parameters ({spec.steps} steps, {spec.width}×{spec.height}) | | "
          f"{built:.1f} s | |")
    for batch, result in results.items():
        how = "one image at a time" if batch == 1 else f"batches of up to {batch}, prompts together"
        print(f"| quick calibration ({len(spec.prompts)} prompts × {spec.images_per_prompt}, {how}; model built "
              f"again inside) | {result.images} | **{result.seconds / 60:.1f} min** ({result.seconds:.0f} s) | "
              f"{result.seconds / result.images:.3f} s |")
    for batch, seconds in per_image.items():
        print(f"| uncached images in a batch of {batch} (no recording) | {batch} | | {seconds:.3f} s |")
    print(f"| the paper's full search ({preset.population} × {preset.generations + 1} × {preset.prompts} × "
          f"{preset.images_per_prompt}), uncached batches of {args.search_batch} | {search_images:,} | "
          f"≈ {search_hours:.0f} h | {per_search_image:.3f} s |")
    single, result = results[1], results[spec.batch_size]
    print()
    if result is not single:
        print(f"prompts together: {single.seconds / result.seconds:.2f}x faster than one image at a time "
              f"({single.images} and {result.images} images); frontier qualities differ by at most "
              f"{frontier_difference(single.points, result.points):.3g} ({spec.metric})")
    print(f"quick calibration: {result.images / images:.0f} images per calibration image, "
          f"{result.images / search_images:.4%} of the full search's images, "
          f"{result.seconds / 3600 / search_hours:.4%} of its time at the per-image time above")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The "ECAD Calibrate" node: quick calibration of the workflow's own model, sampler and step count.

It samples the workflow's latent once without caching, recording every component's output change
from step to step (``calibration``), builds greedy schedules at several MAC budgets (``greedy``)
and samples the same latent with each of them and with FORA-2…5. With no VAE at hand, each is
scored in latent space: the PSNR of its latent against the uncached one (peak: the uncached
latent's value range), the mean over the batch. The non-dominated schedules (FORA included) are
written as a schedule file into ``models/ecad_schedules/`` (the first folder ComfyUI knows under
that name), which "ECAD Load Schedule" lists after a refresh. Their step count is the workflow's,
so they fit its sampler and steps exactly.

The file name must stay inside that folder (sub-folders allowed) and be one the Load node lists.
An existing file is replaced only when ``overwrite`` is on; otherwise the node refuses before any
sampling, and the file is created exclusively at the end (a file that appeared meanwhile is not
replaced either). The file is written only when everything is done, in one atomic step: an
interrupted or failed calibration leaves nothing behind.
"""
from __future__ import annotations

import datetime as dt
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from . import library
from .calibration import ChangeRecorder
from .choice import ScheduleChoice
from .families import adapter_for
from .greedy import DEFAULT_BUDGETS, calibrated_schedules
from .heuristics import fora_bits
from .patching import SETTINGS_KEY, apply_ecad
from .schedule import FrontierPoint, Mask, PointMetrics, ScheduleError, ScheduleFile
from .schedule_io import dump_schedule, save_schedule

log = logging.getLogger("ComfyUI-ECAD")

METRIC = "latent_psnr"
PSNR_CAP_DB = 100.0          # identical latents (as the optimizer's fidelity metric caps images)
#: Longest file or folder name written: 255 bytes less what the temporary name adds ('.' + name + '.XXXXXXXX.tmp').
MAX_PART_BYTES = 255 - 14
FORA_EVERY = (2, 3, 4, 5)
MAC_CONVENTION = "linear layers only"
ALGORITHM = "quick calibration (ECAD Calibrate node: greedy schedules from recorded component changes, verified " \
            "by sampling, scored in latent space)"


# ---------------------------------------------------------------- where the file goes

def user_folder() -> Path:
    """``models/ecad_schedules`` (the first folder registered under that name: ComfyUI's default one)."""
    import folder_paths
    return Path(folder_paths.get_folder_paths(library.USER_FOLDER_NAME)[0])


def listed_name(file_name: str) -> str:
    """The name the file will be listed under: ``file_name`` with ``.json`` added when it has no such ending;
    a ScheduleError when the Load node could not list it or it would leave the folder."""
    name = file_name.strip()
    if not name.lower().endswith(".json"):
        name += ".json"
    why = library.name_problem(name)
    if why is None and any(part.startswith(".") for part in name.split("/")):
        why = "names (and folders) starting with '.' are hidden from the schedule list"
    if why is None and name.endswith(".schema.json"):
        why = "'.schema.json' files are not schedule files"
    if why is None and any(len(part.encode()) > MAX_PART_BYTES for part in name.split("/")):
        why = (f"a file or folder name is longer than {MAX_PART_BYTES} bytes (UTF-8), what file systems allow once the "
               "temporary name the file is written under is counted")
    if why is not None:
        raise ScheduleError(f"file name '{file_name}' cannot be used: {why}")
    return name


def target_path(file_name: str, overwrite: bool) -> tuple[str, Path]:
    """(listed name, path) of the file to write; a ScheduleError if it leaves the folder, or exists and may not be
    replaced."""
    name = listed_name(file_name)
    folder = user_folder()
    path = folder / name
    root = folder.resolve()
    if not path.parent.resolve().is_relative_to(root):
        raise ScheduleError(f"file name '{file_name}' leads outside {folder} (a symlinked folder?)")
    for parent in reversed(path.relative_to(folder).parents[:-1]):  # the sub-folders to write into, outermost first
        if (folder / parent).exists() and not (folder / parent).is_dir():
            raise ScheduleError(f"{folder / parent} is a file, not a folder; choose another file name")
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise ScheduleError(f"{path} exists and is not a plain file; choose another name")
    if path.exists() and not overwrite:
        raise ScheduleError(f"{path} exists; choose another file name, or turn on 'overwrite' to replace it")
    listed = library.find(name)
    if listed is not None and not overwrite and listed.path != path:
        raise ScheduleError(f"{listed.path} is listed as '{name}', and a new file of that name would hide it; choose "
                            "another file name, or turn on 'overwrite' to list the new file instead")
    return name, path


def write_new(schedule: ScheduleFile, path: Path, overwrite: bool) -> None:
    """Write ``schedule`` to ``path`` atomically; unless ``overwrite``, only if no file is there (checked by the
    file system at the moment of writing, so a file created meanwhile is not replaced)."""
    if overwrite:
        save_schedule(schedule, path)
        return
    text = dump_schedule(schedule, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())  # the name must never point at a file whose data is not on disk yet
        os.chmod(tmp, 0o666 & ~_umask())
        created = ScheduleError(f"{path} was created while calibrating; nothing was written (choose another file name, "
                                "or turn on 'overwrite')")
        try:
            os.link(tmp, path)  # fails if the name exists: never replaces a file
        except FileExistsError:
            raise created from None
        except OSError:  # no hard links on this file system (FAT, exFAT, some network mounts): claim the name, then
            try:         # move the file onto the claimed (empty) one
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666 & ~_umask()))
            except FileExistsError:
                raise created from None
            os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ---------------------------------------------------------------- scoring

def latent_psnr(latent: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean over the batch of each row's PSNR against the uncached latent, the peak being that latent's value range;
    capped at PSNR_CAP_DB. NaN where the latent holds NaN or infinity (a schedule that broke the sampling)."""
    if not bool(torch.isfinite(latent).all()):
        return math.nan
    scores = []
    for x, ref in zip(latent.float().cpu(), reference.float().cpu()):
        mse = float(((x - ref) ** 2).mean())
        peak = float(ref.max() - ref.min())
        scores.append(PSNR_CAP_DB if mse == 0.0 or peak == 0.0 else min(PSNR_CAP_DB, 10 * math.log10(peak ** 2 / mse)))
    return float(np.mean(scores))


@dataclass
class Scored:
    origin: str
    mask: Mask
    quality: float
    macs: float


def non_dominated(scored: Sequence[Scored]) -> list[Scored]:
    """The schedules no other beats on both quality (higher) and MACs (fewer), cheapest first."""
    front, best = [], -math.inf
    for s in sorted(scored, key=lambda s: (s.macs, -s.quality)):
        if s.quality > best:
            front.append(s)
            best = s.quality
    return front


def point_name(speedup: float, taken: set[str]) -> str:
    """``ecad-2.61x``, with more digits where the name is taken."""
    for digits in range(2, 7):
        name = f"ecad-{speedup:.{digits}f}x"
        if name not in taken:
            return name
    return f"ecad-{len(taken) + 1}-{speedup:.2f}x"


# ---------------------------------------------------------------- the calibration

@dataclass
class Sampling:
    """What the node samples, as KSampler would (``nodes.common_ksampler``)."""

    model: Any
    positive: list
    negative: list
    latent: dict
    sampler_name: str
    scheduler: str
    steps: int
    cfg: float
    seed: int

    def prepare(self) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        import comfy.sample
        samples = self.latent["samples"]
        if "downscale_ratio_spacial" in self.latent:  # ComfyUI versions that know it pass it on
            samples = comfy.sample.fix_empty_latent_channels(self.model, samples, self.latent["downscale_ratio_spacial"])
        else:
            samples = comfy.sample.fix_empty_latent_channels(self.model, samples)
        noise = comfy.sample.prepare_noise(samples, self.seed, self.latent.get("batch_index"))
        return samples, noise, self.latent.get("noise_mask")

    def run(self, model: Any, callback: Callable[[], None]) -> torch.Tensor:
        import comfy.sample
        samples, noise, noise_mask = self.prepare()
        return comfy.sample.sample(model, noise, self.steps, self.cfg, self.sampler_name, self.scheduler, self.positive,
                                   self.negative, samples, noise_mask=noise_mask, seed=self.seed, disable_pbar=True,
                                   callback=lambda *_: callback())


@dataclass
class Calibrated:
    schedule: ScheduleFile
    front: list[Scored]
    baselines: list[Scored]
    images: int


def quick_calibration(sampling: Sampling, budgets: Sequence[float] = DEFAULT_BUDGETS,
                      on_step: Callable[[int, int], None] = lambda done, total: None,
                      check_interrupt: Callable[[], None] = lambda: None) -> Calibrated:
    """Record, build greedy schedules, sample each and FORA-N, keep the non-dominated ones (module docstring).
    ``on_step(done, total)`` after every sampling step; ``check_interrupt`` between and during samplings."""
    model = sampling.model
    adapter = adapter_for(model.model)
    dm = model.get_model_object("diffusion_model")
    layout = adapter.layout(dm)
    steps = sampling.steps
    fora = [(f"FORA-{n}", Mask(layout, fora_bits(layout, steps, n)).with_first_step_computed())
            for n in FORA_EVERY if n < steps]
    progress = {"done": 0, "total": steps * (1 + 3 * len(budgets) + len(fora))}

    def tick() -> None:
        check_interrupt()
        progress["done"] += 1
        on_step(progress["done"], progress["total"])

    def sample(name: str, mask: Mask) -> tuple[torch.Tensor, Any]:
        check_interrupt()
        patched = apply_ecad(model, ScheduleChoice.of_mask(name, mask))
        latent = sampling.run(patched, tick)
        return latent, patched.model_options["transformer_options"][SETTINGS_KEY].last_report

    recorder = ChangeRecorder()
    with recorder.recording():
        reference, report = sample("uncached", Mask.full(layout, steps))
    if not bool(torch.isfinite(reference).all()):
        raise ScheduleError("sampling without caching gave a latent holding NaN or infinity, so there is nothing to "
                            "compare schedules with (a model or VAE in a precision that overflows? the sampler's "
                            "settings?); nothing was written")
    costs = adapter.costs(dm, report.tokens, attention_matmuls=False)  # the optimizer's default convention
    per_bit, constant = costs.per_bit, costs.per_step_constant
    evaluations = report.evaluations.astype(np.float64)
    streams = len(report.streams)
    macs_per_step = evaluations[:, None] * per_bit[None, :]

    def macs(mask: Mask) -> float:  # one image: every evaluation of every step, for every stream
        return float(streams * (evaluations @ (mask.bits.astype(np.float64) @ per_bit + constant)))

    candidates = calibrated_schedules(recorder.changes().staleness(), macs_per_step, layout, budgets,
                                      adapter.consumers(layout))
    progress["total"] = steps * (1 + len(candidates) + len(fora))
    runs = 1
    scored, baselines = [], []
    for g in candidates:
        latent, _ = sample("candidate", g.mask)
        scored.append(Scored(f"greedy ({g.kind}) at {100 * g.budget:.0f}% of the block MACs", g.mask,
                             latent_psnr(latent, reference), macs(g.mask)))
        runs += 1
    for name, mask in fora:
        latent, _ = sample(name, mask)
        baselines.append(Scored(name, mask, latent_psnr(latent, reference), macs(mask)))
        runs += 1
    broken = [s for s in scored + baselines if math.isnan(s.quality)]
    for s in broken:
        log.warning("ECAD Calibrate: %s gave a latent holding NaN or infinity; it is left out", s.origin)
    scored = [s for s in scored if s not in broken]
    baselines = [s for s in baselines if s not in broken]
    if not scored + baselines:
        raise ScheduleError("every schedule gave a latent holding NaN or infinity; nothing was written")
    full_macs = macs(Mask.full(layout, steps))
    front = non_dominated(scored + baselines)
    taken: set[str] = set()
    points = []
    for s in front:
        name = point_name(full_macs / s.macs, taken)
        taken.add(name)
        points.append(_point(name, s, full_macs))
    images = runs * int(reference.shape[0])
    provenance = {
        "tool": "ComfyUI-ECAD, ECAD Calibrate node", "date": dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        .isoformat(), "model": {"class": type(dm).__name__, "layout": layout.describe()},
        "sampling": {"steps": steps, "sampler": sampling.sampler_name, "scheduler": sampling.scheduler,
                     "cfg": sampling.cfg, "seed": sampling.seed, "latent": list(reference.shape)},
        "metric": METRIC, "cost": "macs", "mac_convention": MAC_CONVENTION,
        "search": {"algorithm": ALGORITHM, "budgets": sorted({float(b) for b in budgets}, reverse=True),
                   "schedules_verified": len(scored), "evaluations": len(scored) + len(baselines), "images": images},
    }
    schedule = ScheduleFile(adapter.family, adapter.variant(model.model), layout, steps, points, provenance,
                            [_point(b.origin, b, full_macs) for b in baselines])
    return Calibrated(schedule, front, baselines, images)


def _point(name: str, s: Scored, full_macs: float) -> FrontierPoint:
    return FrontierPoint(name, s.mask, PointMetrics(METRIC, s.quality, macs=s.macs, full_macs=full_macs,
                                                    extra={"mac_convention": MAC_CONVENTION, "origin": s.origin}))


def chosen_point(schedule: ScheduleFile, target_speedup: float) -> FrontierPoint:
    """The best-quality point at least ``target_speedup`` times cheaper in MACs; the fastest if none is."""
    fast_enough = [p for p in schedule.points if p.metrics.mac_speedup >= target_speedup * (1 - 1e-9)]
    if fast_enough:
        return max(fast_enough, key=lambda p: p.metrics.quality)
    return max(schedule.points, key=lambda p: p.metrics.mac_speedup)


def summary(name: str, path: Path, result: Calibrated, chosen: FrontierPoint) -> str:
    lines = [f"ECAD Calibrate wrote {path} ({len(result.schedule.points)} points, listed as '{name}' by ECAD Load "
             f"Schedule after a refresh; {result.images} images sampled):"]
    for p in result.schedule.points:
        mark = "  <- output" if p.name == chosen.name else ""
        lines.append(f"  {library.point_label(p)}  ({p.metrics.extra['origin']}){mark}")
    lines.append("FORA baselines: " + ", ".join(f"{b.name} {b.metrics.mac_speedup:.2f}× latent PSNR "
                                                  f"{b.metrics.quality:.2f}" for b in result.schedule.baselines))
    return "\n".join(lines)


# ---------------------------------------------------------------- the node

class ECADCalibrate:
    DESCRIPTION = ("Learn caching schedules for this model, sampler and step count in minutes: sample the latent once "
                   "without caching while recording how much every attention and MLP output changes from step to step, "
                   "then sample it with greedy schedules at several speeds and with FORA, score each against the "
                   "uncached latent and write the best trade-offs as a schedule file into models/ecad_schedules "
                   "(ECAD Load Schedule lists it after a refresh).")
    RETURN_TYPES = ("ECAD_SCHEDULE", "STRING")
    RETURN_NAMES = ("schedule", "summary")
    OUTPUT_TOOLTIPS = ("The written file's point closest to target_speedup (the best quality at least that fast), "
                       "for \"ECAD Apply Cache\".",
                       "The written points with their MAC speedups and latent PSNR, and the FORA baselines.")
    FUNCTION = "calibrate"
    CATEGORY = "ECAD"
    OUTPUT_NODE = True  # it writes a file: it runs even when nothing reads its outputs

    @classmethod
    def INPUT_TYPES(cls):
        import comfy.samplers
        return {"required": {
            "model": ("MODEL", {"tooltip": "The diffusion transformer to calibrate (a supported family), as the "
                                           "sampler gets it (LoRAs applied)."}),
            "positive": ("CONDITIONING", {"tooltip": "A typical prompt of the workflow."}),
            "negative": ("CONDITIONING", {"tooltip": "The negative prompt (not used at cfg 1)."}),
            "latent_image": ("LATENT", {"tooltip": "The latent to sample, e.g. an empty latent of the workflow's size. "
                                                   "A batch of several images calibrates on all of them."}),
            "sampler_name": (comfy.samplers.KSampler.SAMPLERS, {"tooltip": "The workflow's sampler."}),
            "scheduler": (comfy.samplers.KSampler.SCHEDULERS, {"tooltip": "The workflow's scheduler."}),
            "steps": ("INT", {"default": 20, "min": 2, "max": 10000,
                              "tooltip": "The workflow's step count: the schedules are made for exactly this count."}),
            "cfg": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                              "tooltip": "The workflow's classifier-free guidance scale."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff,
                             "tooltip": "Seed of the noise every schedule is sampled and compared with."}),
            "file_name": ("STRING", {"default": "calibrated.json",
                                     "tooltip": "Schedule file to write in models/ecad_schedules ('.json' is added; "
                                                "sub-folders allowed, nothing outside the folder)."}),
            "overwrite": ("BOOLEAN", {"default": False,
                                      "tooltip": "Replace an existing file of that name. Off: an existing file stops "
                                                 "the node before it samples anything."}),
            "target_speedup": ("FLOAT", {"default": 2.0, "min": 1.0, "max": 100.0, "step": 0.05,
                                         "tooltip": "Which written point the schedule output gives: the best quality "
                                                    "with at least this MAC speedup (the fastest if none has)."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, file_name):
        # Only the name here: whether the file exists is checked when the node runs (a cached result of an earlier run
        # that wrote it must not fail validation). A linked name has no value yet (None): checked when the node runs.
        if file_name is None:
            return True
        try:
            listed_name(file_name)
        except ScheduleError as e:
            return str(e)
        return True

    def calibrate(self, model, positive, negative, latent_image, sampler_name, scheduler, steps, cfg, seed, file_name,
                  overwrite, target_speedup):
        import comfy.model_management
        import comfy.utils
        name, path = target_path(file_name, overwrite)  # before any sampling
        bar = comfy.utils.ProgressBar(steps)
        result = quick_calibration(
            Sampling(model, positive, negative, latent_image, sampler_name, scheduler, steps, cfg, seed),
            on_step=lambda done, total: bar.update_absolute(done, total),
            check_interrupt=comfy.model_management.throw_exception_if_processing_interrupted)
        write_new(result.schedule, path, overwrite)
        result.schedule.path = path
        chosen = chosen_point(result.schedule, target_speedup)
        text = summary(name, path, result, chosen)
        log.info("%s", text)
        return {"ui": {"text": [text]}, "result": (ScheduleChoice.of_point(name, result.schedule, chosen), text)}

"""Rendering candidate schedules through ComfyUI: ``apply_ecad`` on the loaded model, ``comfy.sample.sample``
(what KSampler runs), the VAE's decode.

Prompts are encoded once and kept. An image's noise comes from its own seed
(``comfy.sample.prepare_noise``), and images are sampled together in batches of fixed composition
(``calibration.sampling_batches``), so every candidate sees exactly the same inputs and a candidate's images
do not depend on which other candidates ran before it. A batch may hold several prompts: their conditionings
are stacked row by row (``stack_conditioning``), which ComfyUI samples as each row's own prompt; prompts whose
conditionings do not stack (other shapes, e.g. text of another length) are sampled in batches of their own.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from ecad_nodes.choice import ScheduleChoice
from ecad_nodes.families import adapter_for
from ecad_nodes.patching import SETTINGS_KEY, apply_ecad
from ecad_nodes.runtime import RunReport
from ecad_nodes.schedule import Mask

from .backend import ImageCost, Rendered, average_tables
from .calibration import CalibrationItem, sampling_batches
from .loading import LoadedModel

NOISE_CACHE_BYTES = 256 << 20


@dataclass(frozen=True)
class Sampling:
    steps: int
    sampler: str          # a ComfyUI sampler name
    scheduler: str        # a ComfyUI scheduler name
    cfg: float


class ComfyBackend:
    def __init__(self, loaded: LoadedModel, sampling: Sampling, batch_size: int, label: str):
        self.loaded = loaded
        self.sampling = sampling
        self.batch_size = max(1, batch_size)
        self.label = label
        self.adapter = adapter_for(loaded.model.model)
        self.family = self.adapter.family
        self.variant = loaded.variant
        self.layout = self.adapter.layout(loaded.model.get_model_object("diffusion_model"))
        self.steps = sampling.steps
        self._conditioning: dict[str, list] = {}
        self._noise: dict[tuple, torch.Tensor] = {}
        self._noise_bytes = 0
        self._full_reports: list[RunReport] = []

    def _encoded(self, prompt: str) -> list:
        cond = self._conditioning.get(prompt)
        if cond is None:
            cond = self._conditioning[prompt] = self.loaded.encode(prompt)
        return cond

    def _noise_of(self, latent: torch.Tensor, seed: int) -> torch.Tensor:
        """One image's noise, from its own seed; kept for reuse while the kept noise stays under NOISE_CACHE_BYTES."""
        import comfy.sample
        key = (seed, tuple(latent.shape[1:]), latent.dtype)
        noise = self._noise.get(key)
        if noise is None:
            noise = comfy.sample.prepare_noise(latent[:1], seed)
            if self._noise_bytes + noise.numel() * noise.element_size() <= NOISE_CACHE_BYTES:
                self._noise[key] = noise
                self._noise_bytes += noise.numel() * noise.element_size()
        return noise

    def render(self, mask: Optional[Mask], items: Sequence[CalibrationItem]) -> Rendered:
        import comfy.sample

        full = mask is None
        mask = Mask.full(self.layout, self.steps) if full else mask
        patched = apply_ecad(self.loaded.model, ScheduleChoice.of_mask("full" if full else "candidate", mask))
        settings = patched.model_options["transformer_options"][SETTINGS_KEY]
        s = self.sampling
        images: list = [None] * len(items)
        model_seconds = decode_seconds = 0.0
        with torch.inference_mode():  # as ComfyUI runs every node: encoding, sampling and decoding
            negative = self._encoded("")
            start = 0
            for chunk in sampling_batches(items, self.batch_size):
                for rows, positive in self._stacked(chunk):
                    batch = [chunk[r] for r in rows]
                    latent = self.loaded.empty_latent(len(batch))
                    noise = torch.cat([self._noise_of(latent, item.seed) for item in batch])
                    began = time.perf_counter()
                    samples = comfy.sample.sample(patched, noise, s.steps, s.cfg, s.sampler, s.scheduler, positive,
                                                  negative, latent, seed=batch[0].seed, disable_pbar=True)
                    decoded_at = time.perf_counter()
                    for r, image in zip(rows, self.loaded.decode(samples)):
                        images[start + r] = image
                    model_seconds += decoded_at - began
                    decode_seconds += time.perf_counter() - decoded_at
                    if full:
                        self._full_reports.append(settings.last_report)
                start += len(chunk)
        return Rendered(images, model_seconds, decode_seconds)

    def _stacked(self, chunk: Sequence[CalibrationItem]) -> list[tuple[list[int], list]]:
        """(rows of ``chunk``, their stacked conditioning) to sample together: the whole chunk where the
        conditionings stack, else each prompt's rows on their own."""
        conds = [self._encoded(item.prompt) for item in chunk]
        whole = stack_conditioning(conds)
        if whole is not None:
            return [(list(range(len(chunk))), whole)]
        groups: dict[str, list[int]] = {}
        for r, item in enumerate(chunk):
            groups.setdefault(item.prompt, []).append(r)
        return [(rows, conds[rows[0]]) for rows in groups.values()]

    def image_cost(self, attention_matmuls: bool) -> ImageCost:
        if not self._full_reports:
            raise RuntimeError("the cost model needs one full-computation render first (it reads the model's shapes)")
        dm = self.loaded.model.get_model_object("diffusion_model")
        tables = [self.adapter.costs(dm, r.tokens, attention_matmuls=attention_matmuls) for r in self._full_reports]
        first = self._full_reports[0]
        return ImageCost(average_tables(tables), first.evaluations.copy(), len(first.streams),
                         "linear layers + attention products" if attention_matmuls else "linear layers only")

    def describe(self) -> str:
        import comfy.model_management
        dm = self.loaded.model.get_model_object("diffusion_model")
        params = sum(p.numel() for p in dm.parameters())
        s = self.sampling
        return (f"{self.label}: {type(dm).__name__} ({params / 1e6:.1f}M parameters, {self.layout.describe()}), "
                f"{s.steps} steps {s.sampler}/{s.scheduler}, cfg {s.cfg:g}, on {comfy.model_management.get_torch_device()}")

    def close(self) -> None:
        self._conditioning.clear()
        self._noise.clear()
        self._full_reports.clear()
        self.loaded = None


def stack_conditioning(conds: Sequence[list]) -> Optional[list]:
    """One CONDITIONING whose batch row i is ``conds[i]``'s, or None where they do not stack.

    ComfyUI repeats a conditioning of batch 1 to the latent's batch and uses one of the latent's batch row by row
    (``comfy.utils.repeat_to_batch_size``), so stacked rows sample as each prompt alone would. They stack when each
    is one entry of batch 1 with the same tensor shapes and the same other values; area and mask conditionings (more
    than one entry) and text of other lengths do not. Options the same in every row (e.g. OmniGen2's attention
    mask, which its model reads as one prompt's) are passed as they are; only options that differ are stacked."""
    first = conds[0]
    if all(c is first for c in conds):
        return first
    if any(len(c) != 1 for c in conds):
        return None
    tensors, options = [c[0][0] for c in conds], [c[0][1] for c in conds]
    if not _same_rows(tensors) or any(o.keys() != options[0].keys() for o in options):
        return None
    stacked: dict[str, Any] = {}
    for key in options[0]:
        values = [o[key] for o in options]
        if all(isinstance(v, torch.Tensor) for v in values):
            if all(v.shape == values[0].shape and torch.equal(v, values[0]) for v in values):
                stacked[key] = values[0]          # the same in every row: passed as for one prompt's batch
            elif _same_rows(values):
                stacked[key] = torch.cat(values)
            else:
                return None
        elif all(not isinstance(v, torch.Tensor) and _equal(v, values[0]) for v in values):
            stacked[key] = values[0]
        else:
            return None
    return [[torch.cat(tensors), stacked]]


def _same_rows(tensors: Sequence[Any]) -> bool:
    """Tensors of one row each and one shape."""
    return all(isinstance(t, torch.Tensor) and t.ndim > 0 and t.shape[0] == 1 and t.shape == tensors[0].shape
               for t in tensors)


def _equal(a: Any, b: Any) -> bool:
    try:
        return a is b or bool(a == b)
    except Exception:  # values without a plain truth value (arrays, objects): not known equal
        return False


class ComfyModels:
    """How a preset's model is checked, identified and opened through ComfyUI (``spec.model_kind``): real weights
    from ComfyUI's model folders, or a tiny random-weight model built from ComfyUI's classes."""

    listed_by_nodes = True

    def check(self, spec) -> tuple[list[str], dict]:
        """Problems found before anything is loaded (ComfyUI, model files, sizes ComfyUI cannot sample), and what
        was found: ``comfy_root`` and, for real weights, ``model_paths``."""
        from dataclasses import replace

        from .comfy_env import ComfyUINotFound, import_comfy
        from .loading import MissingModelFiles, check_resolution, find_model_files
        problems = []
        why = check_resolution(spec.preset.family, spec.width, spec.height)
        if why:
            problems.append(why)
        try:
            root = import_comfy(spec.comfyui, cpu=True if spec.cpu else None)
        except ComfyUINotFound as e:
            return problems + [str(e)], {}
        resolved = {"comfy_root": root}
        if not spec.preset.is_tiny:
            files = spec.preset.files
            files = replace(files, diffusion_model=spec.diffusion_model or files.diffusion_model,
                            text_encoders=spec.text_encoders or files.text_encoders, vae=spec.vae or files.vae)
            try:
                resolved["model_paths"] = find_model_files(files, root)
            except MissingModelFiles as e:
                problems.append(str(e))
        return problems, resolved

    def identity(self, spec) -> dict:
        from .loading import model_identity, tiny_identity
        return tiny_identity(spec.preset) if spec.preset.is_tiny else model_identity(spec.model_paths)

    def device(self, spec) -> str:
        import comfy.model_management
        return str(comfy.model_management.get_torch_device())

    def open(self, spec) -> ComfyBackend:
        from .loading import build_tiny, load_real
        loaded = build_tiny(spec.preset, spec.width, spec.height) if spec.preset.is_tiny else \
            load_real(spec.preset, spec.model_paths, spec.width, spec.height)
        return ComfyBackend(loaded, Sampling(spec.steps, spec.sampler, spec.scheduler, spec.cfg), spec.batch_size,
                            spec.preset.name)


COMFY_MODELS = ComfyModels()

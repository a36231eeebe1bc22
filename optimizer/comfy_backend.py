"""Rendering candidate schedules through ComfyUI: ``apply_ecad`` on the loaded model, ``comfy.sample.sample``
(what KSampler runs), the VAE's decode.

Prompts are encoded once and kept. An image's noise comes from its own seed
(``comfy.sample.prepare_noise``), and the images of one prompt are sampled together in batches of
fixed composition, so every candidate sees exactly the same inputs and a candidate's images do not
depend on which other candidates ran before it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from ecad_nodes.choice import ScheduleChoice
from ecad_nodes.families import adapter_for
from ecad_nodes.patching import SETTINGS_KEY, apply_ecad
from ecad_nodes.runtime import RunReport
from ecad_nodes.schedule import Mask

from .backend import ImageCost, Rendered, average_tables
from .calibration import CalibrationItem, by_prompt
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
        images, model_seconds, decode_seconds = [], 0.0, 0.0
        with torch.inference_mode():  # as ComfyUI runs every node: encoding, sampling and decoding
            negative = self._encoded("")
            for batch in by_prompt(items, self.batch_size):
                positive = self._encoded(batch[0].prompt)
                latent = self.loaded.empty_latent(len(batch))
                noise = torch.cat([self._noise_of(latent, item.seed) for item in batch])
                start = time.perf_counter()
                samples = comfy.sample.sample(patched, noise, s.steps, s.cfg, s.sampler, s.scheduler, positive, negative,
                                              latent, seed=batch[0].seed, disable_pbar=True)
                decoded_at = time.perf_counter()
                images.extend(self.loaded.decode(samples))
                model_seconds += decoded_at - start
                decode_seconds += time.perf_counter() - decoded_at
                if full:
                    self._full_reports.append(settings.last_report)
        return Rendered(images, model_seconds, decode_seconds)

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

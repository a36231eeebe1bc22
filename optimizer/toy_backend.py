"""The toy backend: the plain-PyTorch toy DiT of ``optimizer/toy_dit.py``, run through the real
``CacheRuntime``, so the search, database, resume and metric code are tested where there is no ComfyUI.

Prompts map to seeded random text features (seeded by a hash of the prompt), each image's noise
to its own seed, and latents to RGB through a fixed random 1×1 projection and a sigmoid (the toy
latent is the image: one pixel per latent pixel).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from ecad_nodes.runtime import RunReport
from ecad_nodes.schedule import Mask

from .backend import ImageCost, Rendered, average_tables
from .calibration import CalibrationItem, prompt_seed, sampling_batches
from .toy_dit import ToyConfig, ToyDiT, sample

TOY_MODEL_SEED = 0


@dataclass(frozen=True)
class ToySpec:
    """Sizes of the toy model a toy preset runs (it stands where tiny presets keep a ComfyUI model spec)."""

    config: ToyConfig = field(default_factory=ToyConfig)
    text_tokens: int = 6


class ToyBackend:
    family = "toy"

    def __init__(self, spec: ToySpec, steps: int, cfg: float, sampler: str, size: int, batch_size: int, label: str):
        self.spec, self.steps, self.cfg, self.sampler, self.size = spec, steps, cfg, sampler, size
        self.batch_size = max(1, batch_size)
        self.label = label
        self.variant = label
        self.model = ToyDiT(spec.config, seed=TOY_MODEL_SEED).eval()
        self.layout = self.model.layout
        projection = torch.Generator().manual_seed(TOY_MODEL_SEED + 1)
        self._to_rgb = torch.randn(3, spec.config.channels, generator=projection) / np.sqrt(spec.config.channels)
        self._full_reports: list[RunReport] = []

    def _text(self, prompt: str) -> torch.Tensor:
        gen = torch.Generator().manual_seed(prompt_seed(prompt))
        return torch.randn(1, self.spec.text_tokens, self.spec.config.text_dim, generator=gen)

    def _noise(self, seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return torch.randn(1, self.spec.config.channels, self.size, self.size, generator=gen)

    def _images(self, latents: torch.Tensor) -> list[Image.Image]:
        rgb = torch.sigmoid(torch.einsum("oc,bchw->bhwo", self._to_rgb, latents))
        return [Image.fromarray(np.clip(255.0 * a, 0, 255).astype(np.uint8)) for a in rgb.numpy()]

    def render(self, mask: Optional[Mask], items: Sequence[CalibrationItem]) -> Rendered:
        full = mask is None
        mask = Mask.full(self.layout, self.steps) if full else mask
        images, model_seconds, decode_seconds = [], 0.0, 0.0
        with torch.inference_mode():
            for batch in sampling_batches(items, self.batch_size):
                noise = torch.cat([self._noise(item.seed) for item in batch])
                cond = torch.cat([self._text(item.prompt) for item in batch])
                start = time.perf_counter()
                latents, runtime = sample(self.model, noise, cond, torch.zeros_like(cond), cfg=self.cfg,
                                          steps=self.steps, mask=mask, sampler=self.sampler)
                decoded_at = time.perf_counter()
                images.extend(self._images(latents))
                model_seconds += decoded_at - start
                decode_seconds += time.perf_counter() - decoded_at
                if full:
                    self._full_reports.append(runtime.close())
        return Rendered(images, model_seconds, decode_seconds)

    def image_cost(self, attention_matmuls: bool) -> ImageCost:
        if attention_matmuls:
            raise ValueError("the toy model's cost model counts linear layers only; use --cost macs")
        if not self._full_reports:
            raise RuntimeError("the cost model needs one full-computation render first")
        first = self._full_reports[0]
        return ImageCost(average_tables([r.costs for r in self._full_reports]), first.evaluations.copy(),
                         len(first.streams), "linear layers only")

    def describe(self) -> str:
        c = self.spec.config
        params = sum(p.numel() for p in self.model.parameters())
        return (f"{self.label}: plain-PyTorch toy DiT ({params / 1e3:.0f}k parameters, {c.depth} blocks × "
                f"[self_attn, cross_attn, mlp]), {self.steps} steps {self.sampler}, cfg {self.cfg:g}, on cpu")

    def close(self) -> None:
        self._full_reports.clear()


class ToyModels:
    """How a toy preset's model is checked, identified and opened (``spec.model_kind``): built in-process on the
    CPU, no ComfyUI, no files. Its schedules are for a family no ComfyUI model has, so nodes never list them."""

    listed_by_nodes = False

    def check(self, spec) -> tuple[list[str], dict]:
        """Problems with the spec for this model (none are found by looking for files), and nothing resolved."""
        if spec.cost == "macs-attention":
            return ["--cost macs-attention: the toy model's cost model counts linear layers only; use --cost macs"], {}
        return [], {}

    def identity(self, spec) -> dict:
        return {"tiny": repr(spec.preset.tiny), "weights_seed": TOY_MODEL_SEED}

    def device(self, spec) -> str:
        return "cpu"

    def open(self, spec) -> ToyBackend:
        return ToyBackend(spec.preset.tiny, spec.steps, spec.cfg, spec.sampler, spec.width, spec.batch_size,
                          spec.preset.name)


TOY_MODELS = ToyModels()

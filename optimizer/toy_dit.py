"""A plain-PyTorch diffusion transformer and sampler that run the ECAD engine without ComfyUI.

CI has no ComfyUI, yet the engine, the optimizer's search, database and resume logic and the
metrics must be tested there. This model has PixArt's block anatomy (gated self-attention,
ungated cross-attention, gated MLP) and routes its components through ``CacheRuntime`` exactly as
the ComfyUI adapters do; the sampler plays the part of ComfyUI's (one evaluation or two per step,
cond and uncond in one batch or in separate calls).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ecad_nodes.costs import CostTable, linear_macs
from ecad_nodes.runtime import CacheRuntime, CallShape, active_runtime, new_runtime
from ecad_nodes.schedule import BlockGroup, Layout, Mask

COMPONENTS = ("self_attn", "cross_attn", "mlp")


def _routed(bit: int, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    rt = active_runtime()
    return compute() if rt is None else rt.component(bit, compute)


class ToyBlock(nn.Module):
    def __init__(self, hidden: int, heads: int, text_dim: int, index: int):
        super().__init__()
        self.heads, self.bit = heads, 3 * index
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.q = nn.Linear(hidden, hidden)
        self.kv = nn.Linear(text_dim, 2 * hidden)
        self.cross_proj = nn.Linear(hidden, hidden)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False)
        self.fc1 = nn.Linear(hidden, 2 * hidden)
        self.fc2 = nn.Linear(2 * hidden, hidden)
        self.modulation = nn.Linear(hidden, 6 * hidden)

    def _attend(self, q, k, v):
        b, n, h = q.shape
        split = lambda t: t.view(b, -1, self.heads, h // self.heads).transpose(1, 2)
        out = F.scaled_dot_product_attention(split(q), split(k), split(v))
        return out.transpose(1, 2).reshape(b, n, h)

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(F.silu(t))[:, None].chunk(6, dim=-1)

        def self_attn():
            q, k, v = self.qkv(self.norm1(x) * (1 + scale1) + shift1).chunk(3, dim=-1)
            return self.proj(self._attend(q, k, v))

        x = x + gate1 * _routed(self.bit, self_attn)

        def cross_attn():
            k, v = self.kv(context).chunk(2, dim=-1)
            return self.cross_proj(self._attend(self.q(x), k, v))

        x = x + _routed(self.bit + 1, cross_attn)
        x = x + gate2 * _routed(self.bit + 2, lambda: self.fc2(F.gelu(self.fc1(self.norm2(x) * (1 + scale2) + shift2))))
        return x


@dataclass(frozen=True)
class ToyConfig:
    hidden: int = 32
    heads: int = 2
    depth: int = 4
    channels: int = 4
    text_dim: int = 16


class ToyDiT(nn.Module):
    """Predicts the flow-matching velocity of a (B, C, H, W) latent, one token per latent pixel."""

    def __init__(self, config: ToyConfig = ToyConfig(), seed: int = 0):
        super().__init__()
        self.config = config
        torch.manual_seed(seed)
        self.embed = nn.Linear(config.channels, config.hidden)
        self.time = nn.Linear(64, config.hidden)
        self.blocks = nn.ModuleList(ToyBlock(config.hidden, config.heads, config.text_dim, i) for i in range(config.depth))
        self.out = nn.Linear(config.hidden, config.channels)

    @property
    def layout(self) -> Layout:
        return Layout("toy", (BlockGroup("blocks", self.config.depth, COMPONENTS),))

    def costs(self, image_tokens: int, text_tokens: int) -> CostTable:
        c, n, l, h = self.config, image_tokens, text_tokens, self.config.hidden
        per_block = {"self_attn": linear_macs(n, h, 4 * h),
                     "cross_attn": 2 * linear_macs(n, h, h) + linear_macs(l, c.text_dim, 2 * h),
                     "mlp": 2 * linear_macs(n, h, 2 * h)}
        constant = linear_macs(n, c.channels, h) + 64 * h + c.depth * h * 6 * h + linear_macs(n, h, c.channels)
        return CostTable.from_components(self.layout, {"blocks": per_block}, constant)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, c, height, width = x.shape
        freqs = torch.exp(-math.log(1000.0) * torch.arange(32, dtype=x.dtype) / 32)
        angles = sigma[:, None] * 1000.0 * freqs[None]
        t = self.time(torch.cat([angles.cos(), angles.sin()], dim=-1))
        h = self.embed(x.flatten(2).transpose(1, 2))
        for block in self.blocks:
            h = block(h, t, context)
        return self.out(h).transpose(1, 2).reshape(b, c, height, width)


def flow_sigmas(steps: int) -> torch.Tensor:
    return torch.linspace(1.0, 0.0, steps + 1)


def sample(model: ToyDiT, noise: torch.Tensor, cond: torch.Tensor, uncond: Optional[torch.Tensor] = None,
           cfg: float = 1.0, steps: int = 8, mask: Optional[Mask] = None, sampler: str = "euler",
           split_streams: bool = False, streams: Sequence = ("cond", "uncond")) -> tuple[torch.Tensor, Optional[CacheRuntime]]:
    """Flow-matching sampling; with a mask, through a fresh ``CacheRuntime`` as ComfyUI runs it.

    ``split_streams`` runs cond and uncond as separate model calls (ComfyUI does this under memory
    pressure or when their shapes differ); ``sampler`` is "euler" or "heun" (two evaluations a step).
    """
    sigmas = flow_sigmas(steps)
    runtime = new_runtime(mask, sample_sigmas=sigmas.tolist()) if mask is not None else None
    if runtime is not None:
        runtime.costs = model.costs(noise.shape[-1] * noise.shape[-2], cond.shape[1])
    use_cfg = uncond is not None and cfg != 1.0
    rows = noise.shape[0]

    def call(x, sigma, batch_streams, context):
        s = torch.full((x.shape[0],), float(sigma))
        if runtime is None:
            return model(x, s, context)
        shape = CallShape(tuple(x.shape[1:]), rows, x.dtype, x.device)
        with runtime.call(list(batch_streams), shape):
            return model(x, s, context)

    def velocity(x, sigma):
        if runtime is not None:
            runtime.begin_evaluation(float(sigma))
        if not use_cfg:
            return call(x, sigma, streams[:1], cond)
        if split_streams:
            v_cond = call(x, sigma, streams[:1], cond)
            v_uncond = call(x, sigma, streams[1:2], uncond)
        else:
            # ComfyUI batches uncond first when both fit.
            both = call(torch.cat([x, x]), sigma, [streams[1], streams[0]], torch.cat([uncond, cond]))
            v_uncond, v_cond = both.chunk(2)
        return v_uncond + cfg * (v_cond - v_uncond)

    x = noise.clone()
    with torch.inference_mode():
        for i in range(steps):
            s, s_next = sigmas[i], sigmas[i + 1]
            d = velocity(x, s)
            if sampler == "heun" and float(s_next) > 0:
                x_pred = x + (s_next - s) * d
                d = (d + velocity(x_pred, s_next)) / 2
            elif sampler not in ("euler", "heun"):
                raise ValueError(f"unknown sampler {sampler!r}")
            x = x + (s_next - s) * d
    return x, runtime


def random_inputs(config: ToyConfig, seed: int, batch: int = 1, size: int = 8, text_tokens: int = 6):
    """Noise and a (cond, uncond) pair of text features for one prompt/seed."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(batch, config.channels, size, size, generator=gen)
    cond = torch.randn(batch, text_tokens, config.text_dim, generator=gen)
    uncond = torch.zeros(batch, text_tokens, config.text_dim)
    return noise, cond, uncond


def random_mask(layout: Layout, steps: int, keep: float, seed: int) -> Mask:
    bits = np.random.default_rng(seed).random((steps, layout.bits_per_step)) < keep
    bits[0] = True
    return Mask(layout, bits)

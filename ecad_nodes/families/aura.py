"""AuraFlow in ComfyUI's ``comfy.ldm.aura.mmdit`` (``MMDiT``).

Every component is a real submodule, hooked on its ``forward`` (as for PixArt), so raw outputs are cached:

* ``double_layers`` (``MMDiTBlock``): ``attn`` (the joint attention; its forward returns both
  streams' projected outputs, so one component covers both), ``img_mlp`` (``mlpX``), ``txt_mlp`` (``mlpC``);
* ``single_layers`` (``DiTBlock``, over ``cat(text, image)``): ``attn`` and ``mlp``.

AuraFlow's blocks feed the gated attention output through ``normC2``/``normX2`` into the MLPs
instead of adding it to the residual, so the attention reaches the block output only through the
MLPs (an internal component): it is computed, and kept, only for steps at which an MLP of its block
computes. When none does, the hook hands the block its inputs back (same shapes) in place of the
attention output, since the block's MLP inputs are then not read. The block re-applies the current
step's gates and norms to the raw outputs, out of place.

The text stream holds the prompt's tokens and AuraFlow's 8 register tokens; the cost model counts both.
A model of double layers only (its last layer without a text MLP) is refused: ComfyUI cannot run it either.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..costs import CostTable, attention_matmul_macs, module_linear_macs
from ..registry import BenchmarkModel, ModelFiles, Preset, tiny_preset
from ..schedule import Layout
from ..tiny import TinyModel, text_states
from .base import CallTokens, Component, FamilyAdapter, Group, UnsupportedModelError


def _joint_inputs(c, x, **kwargs):
    return c, x


def _single_input(cx, **kwargs):
    return cx


DOUBLE_LAYERS = Group("double_layers", "double_layers", (
    Component("attn", module="attn", feeds=("img_mlp", "txt_mlp"), placeholder=_joint_inputs),
    Component("img_mlp", module="mlpX"),
    Component("txt_mlp", module="mlpC")))
SINGLE_LAYERS = Group("single_layers", "single_layers", (
    Component("attn", module="attn", feeds=("mlp",), placeholder=_single_input),
    Component("mlp", module="mlp")))


def _projections(attention: torch.nn.Module, prefix: str, tokens: int) -> float:
    """The q/k/v/output projections of one stream of an AuraFlow attention (``w1*`` text, ``w2*`` image)."""
    return sum(module_linear_macs(getattr(attention, f"{prefix}{p}"), tokens) for p in "qkvo")


def aura_costs(dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
    """``tokens.text`` counts the text stream as the blocks see it: the prompt's tokens and the register tokens."""
    img, txt = tokens.image, tokens.text
    both = img + txt
    per_group: dict[str, dict[str, float]] = {}
    if len(dm.double_layers):
        block = dm.double_layers[0]
        width = block.attn.n_heads * block.attn.head_dim
        per_group["double_layers"] = {
            "attn": _projections(block.attn, "w1", txt) + _projections(block.attn, "w2", img)
                    + (attention_matmul_macs(both, both, width) if attention_matmuls else 0.0),
            "img_mlp": module_linear_macs(block.mlpX, img), "txt_mlp": module_linear_macs(block.mlpC, txt)}
    if len(dm.single_layers):
        block = dm.single_layers[0]
        width = block.attn.n_heads * block.attn.head_dim
        per_group["single_layers"] = {
            "attn": module_linear_macs(block.attn, both) + (attention_matmul_macs(both, both, width) if attention_matmuls else 0.0),
            "mlp": module_linear_macs(block.mlp, both)}
    registers = dm.register_tokens.shape[1]
    modulation = sum(module_linear_macs(getattr(block, name), 1) for block in list(dm.double_layers) + list(dm.single_layers)
                     for name in ("modC", "modX", "modCX") if hasattr(block, name))
    constant = (module_linear_macs(dm.init_x_linear, img) + module_linear_macs(dm.cond_seq_linear, txt - registers)
                + module_linear_macs(dm.t_embedder, 1) + modulation + module_linear_macs(dm.modF, 1)
                + module_linear_macs(dm.final_linear, img))
    return CostTable.from_components(AuraFlowAdapter().layout(dm), per_group, constant)


class AuraFlowAdapter(FamilyAdapter):
    family = "auraflow"
    model_classes = (("comfy.ldm.aura.mmdit", "MMDiT"),)
    variants = {"AuraFlow": "auraflow"}
    groups = (DOUBLE_LAYERS, SINGLE_LAYERS)

    def check_supported(self, dm: torch.nn.Module) -> None:
        if any(block.is_last for block in dm.double_layers):  # a model of double layers only; ComfyUI cannot run it either
            raise UnsupportedModelError("comfy.ldm.aura.mmdit.MMDiT: a last double layer without a text MLP is not supported")

    def tokens(self, dm: torch.nn.Module, x: torch.Tensor, context: Optional[torch.Tensor]) -> CallTokens:
        p = dm.patch_size
        text = 0 if context is None else int(context.shape[1])
        return CallTokens(image=((x.shape[-2] + 1) // p) * ((x.shape[-1] + 1) // p),  # as MMDiT.patchify counts
                          text=text + dm.register_tokens.shape[1])

    def costs(self, dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
        return aura_costs(dm, tokens, attention_matmuls)


ADAPTERS = (AuraFlowAdapter(),)


def aura_layout(depth_double: int, depth_single: int) -> Layout:
    return AuraFlowAdapter().layout_of_sizes(double_layers=depth_double, single_layers=depth_single)


# ------------------------------------------------------------------ tiny model, presets, benchmark model

TEXT_DIM = 2048          # ComfyUI's AuraFlow config matches only this text width (Pile-T5-XL)


@dataclass(frozen=True)
class TinyAuraFlow(TinyModel):
    """AuraFlow as its checkpoints look to ComfyUI's detection (which reads the position table, the text width and
    the block counts), at a small width. Detection leaves the width, heads and conditioning width to the
    constructor's released-size defaults, so ``overrides()`` sets them. The text width stays 2048: ComfyUI's
    AuraFlow config matches only that."""

    hidden: int = 64
    heads: int = 2
    depth_double: int = 1
    depth_single: int = 2
    max_seq: int = 256                 # position table of 16×16 patches (9216 = 96² in AuraFlow 0.3)
    latent_channels = 4

    def checkpoint(self) -> dict[str, tuple[int, ...]]:
        h = self.hidden
        keys = {"positional_encoding": (1, self.max_seq, h), "cond_seq_linear.weight": (h, TEXT_DIM),
                "register_tokens": (1, 8, h), "init_x_linear.weight": (h, self.latent_channels * 4)}
        for i in range(self.depth_double):
            keys[f"double_layers.{i}.attn.w1q.weight"] = (h, h)
        for i in range(self.depth_single):
            keys[f"single_layers.{i}.attn.w1q.weight"] = (h, h)
        return keys

    def overrides(self) -> dict[str, Any]:
        return {"dim": self.hidden, "n_heads": self.heads, "global_conddim": self.hidden}

    def conditioning(self, seed: int, tokens: Optional[int] = None) -> list:
        gen = torch.Generator().manual_seed(seed)
        return [[text_states(gen, tokens or 16, TEXT_DIM), {}]]


PRESETS = (
    # ComfyUI's AuraFlow example: the all-in-one checkpoint (models/checkpoints: diffusion model, Pile-T5-XL and
    # SDXL VAE in one file), 1024², 25 uni_pc/normal steps, CFG 3.5, ModelSamplingAuraFlow shift 1.73.
    Preset(name="auraflow-0.3", family="auraflow",
           description="AuraFlow 0.3 (ComfyUI example: 1024², 25 steps, CFG 3.5, shift 1.73)",
           files=ModelFiles("aura_flow_0.3.safetensors", (), "STABLE_DIFFUSION", "", checkpoint=True),
           steps=25, sampler="uni_pc", scheduler="normal", cfg=3.5, width=1024, height=1024,
           population=24, generations=50, metric="image_reward",
           extra={"model_sampling": "AuraFlow", "shift": 1.73}),
    tiny_preset("auraflow", TinyAuraFlow(), "A small random-weight AuraFlow built through ComfyUI's detection; runs on a "
                "CPU in minutes", scheduler="normal", cfg=3.5),
)

# hidden 512 (4 heads of 128), 2 double + 6 single layers, 1024 image tokens (512² image); CFG batches cond and uncond
BENCHMARK_MODELS = (
    BenchmarkModel("auraflow", TinyAuraFlow(hidden=512, heads=4, depth_double=2, depth_single=6, max_seq=1024),
                   width=512, height=512, cfg=3.5),
)

"""HiDream-I1 (full, dev, fast) and HiDream-E1 in ComfyUI's ``comfy.ldm.hidream``.

Blocks sit one level down, in ``double_stream_blocks.{i}.block`` and ``single_stream_blocks.{i}.block``.
Components are their real submodules, hooked (no mirror):

* double-stream blocks: ``attn`` (``attn1``, the joint attention; it returns both streams' projected
  outputs, so one component covers both), ``ff_i`` (the image tokens' mixture-of-experts feed-forward),
  ``ff_t`` (the text tokens' feed-forward);
* single-stream blocks: ``attn`` (``attn1``) and ``ff_i`` (the mixture of experts over image and text tokens).

Each block gates the raw outputs with the current step's modulation and adds them out of place, so
cached outputs are never written into. Every block reads its own Llama layer's tokens, so text
lengths differ between the double and single blocks; caches are per component, so that is fine.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..costs import CostTable, attention_matmul_macs, module_linear_macs
from ..registry import BenchmarkModel, ModelFiles, Preset, tiny_preset
from ..schedule import Layout
from ..tiny import TinyModel, text_states
from .base import CallTokens, Component, FamilyAdapter, Group

_ATTENTION, _IMAGE_FF, _TEXT_FF = Component("attn", module="attn1"), Component("ff_i", module="ff_i"), Component("ff_t", module="ff_t")
DOUBLE_STREAM_BLOCKS = Group("double_stream_blocks", "double_stream_blocks", (_ATTENTION, _IMAGE_FF, _TEXT_FF), block="block")
SINGLE_STREAM_BLOCKS = Group("single_stream_blocks", "single_stream_blocks", (_ATTENTION, _IMAGE_FF), block="block")

_IMAGE_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out")
_TEXT_PROJECTIONS = ("to_q_t", "to_k_t", "to_v_t", "to_out_t")


def image_ff_macs(ff: torch.nn.Module, tokens: int) -> float:
    """A HiDream image feed-forward on ``tokens`` tokens: with experts, the gate, the top-k routed experts each
    token really runs (experts are alike) and the shared expert; else the plain SwiGLU feed-forward."""
    experts = getattr(ff, "experts", None)
    if experts is None:
        return module_linear_macs(ff, tokens)
    gate = float(tokens) * ff.gate.weight.shape[0] * ff.gate.weight.shape[1]   # an F.linear on the gate's weight
    return (gate + ff.num_activated_experts * module_linear_macs(experts[0], tokens)
            + module_linear_macs(ff.shared_experts, tokens))


def _projections(attn: torch.nn.Module, names: tuple[str, ...], tokens: int) -> float:
    return sum(module_linear_macs(getattr(attn, name), tokens) for name in names)


def hidream_costs(dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
    """MACs per batch row. ``tokens.text`` is the T5 length; each Llama layer's length is taken to be the same
    (ComfyUI pads both tokenizers to 128 tokens). HiDream-E1's reference image is not counted."""
    img, t5 = tokens.image, tokens.text
    llama = t5
    double_txt = t5 + 2 * llama           # T5 + last Llama layer (kept), + this block's Llama layer
    single = img + double_txt             # single blocks run over image and text tokens together
    double, single_block = dm.double_stream_blocks[0].block, dm.single_stream_blocks[0].block
    h = dm.inner_dim

    def attention(query: int) -> float:
        return attention_matmul_macs(query, query, h) if attention_matmuls else 0.0

    per_component = {
        "double_stream_blocks": {
            "attn": (_projections(double.attn1, _IMAGE_PROJECTIONS, img) + _projections(double.attn1, _TEXT_PROJECTIONS, double_txt)
                     + attention(img + double_txt)),
            "ff_i": image_ff_macs(double.ff_i, img),
            "ff_t": module_linear_macs(double.ff_t, double_txt)},
        "single_stream_blocks": {
            "attn": _projections(single_block.attn1, _IMAGE_PROJECTIONS, single) + attention(single),
            "ff_i": image_ff_macs(single_block.ff_i, single)},
    }
    blocks = list(dm.double_stream_blocks) + list(dm.single_stream_blocks)
    captions = dm.caption_projection    # one Llama projection per block, then T5's
    constant = (module_linear_macs(dm.t_embedder, 1) + module_linear_macs(dm.p_embedder, 1)
                + module_linear_macs(dm.x_embedder, img)
                + sum(module_linear_macs(p, llama) for p in captions[:-1]) + module_linear_macs(captions[-1], t5)
                + sum(module_linear_macs(b.block.adaLN_modulation, 1) for b in blocks)
                + module_linear_macs(dm.final_layer.adaLN_modulation, 1) + module_linear_macs(dm.final_layer.linear, img))
    return CostTable.from_components(HiDreamAdapter().layout(dm), per_component, constant)


class HiDreamAdapter(FamilyAdapter):
    family = "hidream"
    model_classes = (("comfy.ldm.hidream.model", "HiDreamImageTransformer2DModel"),)
    variants = {"HiDream": "hidream-i1"}
    groups = (DOUBLE_STREAM_BLOCKS, SINGLE_STREAM_BLOCKS)

    def tokens(self, dm: torch.nn.Module, x: torch.Tensor, context: Optional[torch.Tensor]) -> CallTokens:
        # HiDream-E1's reference image (concatenated along the width inside the model) is not counted.
        p = dm.patch_size
        return CallTokens(image=((x.shape[-2] + p - 1) // p) * ((x.shape[-1] + p - 1) // p),
                          text=0 if context is None else int(context.shape[1]))

    def costs(self, dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
        return hidream_costs(dm, tokens, attention_matmuls)


ADAPTERS = (HiDreamAdapter(),)


def hidream_layout(depth: int, depth_single: int) -> Layout:
    return HiDreamAdapter().layout_of_sizes(double_stream_blocks=depth, single_stream_blocks=depth_single)


@dataclass(frozen=True)
class TinyHiDream(TinyModel):
    """HiDream as its checkpoints look to ComfyUI's detection, which recognises the caption projection and fixes
    everything else at the released size (20 heads of 128, 16 + 32 blocks, 4096-wide text): all overrides.

    Its conditioning carries what HiDream's text encoders give: T5 states as the cross-attention input,
    CLIP-L+G pooled output, and the hidden states of every Llama layer (``conditioning_llama3``), one of
    which each block reads.
    """

    heads: int = 2
    head_dim: int = 32
    depth: int = 2
    depth_single: int = 2
    t5_dim: int = 48                         # T5-XXL hidden states in the real model (4096)
    llama_dim: int = 40                      # Llama-3.1-8B hidden states (4096)
    llama_layers: int = 4                    # Llama layers in the conditioning (32 in the real model)
    pooled_dim: int = 32                     # CLIP-L + CLIP-G pooled output (2048)
    experts: int = 4                         # routed experts (the released 4, top 2)
    active_experts: int = 2
    axes_dim: tuple[int, ...] = (16, 8, 8)   # sums to head_dim
    latent_channels = 16

    @property
    def hidden(self) -> int:
        return self.heads * self.head_dim

    def checkpoint(self) -> dict[str, tuple[int, ...]]:
        blocks = self.depth + self.depth_single
        keys = {f"caption_projection.{i}.linear.weight": (self.hidden, self.llama_dim) for i in range(blocks)}
        keys[f"caption_projection.{blocks}.linear.weight"] = (self.hidden, self.t5_dim)
        return keys

    def overrides(self) -> dict[str, Any]:
        blocks = self.depth + self.depth_single
        return {"num_layers": self.depth, "num_single_layers": self.depth_single,
                "attention_head_dim": self.head_dim, "num_attention_heads": self.heads,
                "caption_channels": [self.t5_dim, self.llama_dim], "text_emb_dim": self.pooled_dim,
                "num_routed_experts": self.experts, "num_activated_experts": self.active_experts,
                "axes_dims_rope": list(self.axes_dim),
                # which Llama layer each block reads; the released model reads layers 0-31, then 31 again
                "llama_layers": [min(i, self.llama_layers - 1) for i in range(blocks)]}

    def conditioning(self, seed: int, tokens: Optional[int] = None) -> list:
        """T5 states, pooled CLIP output and per-layer Llama states, as ComfyUI's HiDream text encoder returns them."""
        gen = torch.Generator().manual_seed(seed)
        n = tokens or 16
        return [[text_states(gen, n, self.t5_dim),
                 {"pooled_output": torch.randn(1, self.pooled_dim, generator=gen),
                  "conditioning_llama3": torch.randn(1, self.llama_layers, n, self.llama_dim, generator=gen)}]]


_TEXT_ENCODERS = ("clip_l_hidream.safetensors", "clip_g_hidream.safetensors", "t5xxl_fp8_e4m3fn_scaled.safetensors",
                  "llama_3.1_8b_instruct_fp8_scaled.safetensors")

PRESETS = (
    # ComfyUI's HiDream-I1 full template (hidream_i1_full.json): 1024², 50 uni_pc steps, CFG 5, ModelSamplingSD3 3.
    Preset(name="hidream-i1-full", family="hidream",
           description="HiDream-I1 full (ComfyUI example: 1024², 50 steps, uni_pc, CFG 5, shift 3)",
           files=ModelFiles("hidream_i1_full_fp16.safetensors", _TEXT_ENCODERS, "HIDREAM", "ae.safetensors"),
           steps=50, sampler="uni_pc", scheduler="simple", cfg=5.0, width=1024, height=1024,
           population=24, generations=50, metric="image_reward", extra={"model_sampling": "SD3", "shift": 3.0}),
    # ComfyUI's HiDream-I1 dev template (hidream_i1_dev.json): 1024², 28 lcm steps, normal scheduler, CFG 1, shift 6.
    Preset(name="hidream-i1-dev", family="hidream",
           description="HiDream-I1 dev (ComfyUI example: 1024², 28 steps, lcm, CFG 1, shift 6)",
           files=ModelFiles("hidream_i1_dev_bf16.safetensors", _TEXT_ENCODERS, "HIDREAM", "ae.safetensors"),
           steps=28, sampler="lcm", scheduler="normal", cfg=1.0, width=1024, height=1024,
           population=24, generations=50, metric="image_reward", extra={"model_sampling": "SD3", "shift": 6.0}),
    tiny_preset("hidream", TinyHiDream(), "A small random-weight HiDream built through ComfyUI's detection; runs on a "
                "CPU in minutes", cfg=3.0),
)

# hidden 512 (4 heads of 128), 2 double + 2 single blocks with 4 routed experts (top 2) + a shared one
# (each expert feed-forward costs about 3× a FLUX MLP), 1024 image tokens (512² image); no CFG, as dev and fast run
BENCHMARK_MODELS = (
    BenchmarkModel("hidream", TinyHiDream(heads=4, head_dim=128, depth=2, depth_single=2, t5_dim=256, llama_dim=256,
                                          axes_dim=(64, 32, 32)), width=512, height=512),
)

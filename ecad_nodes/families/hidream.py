"""HiDream-I1 (full, dev, fast) and HiDream-E1 in ComfyUI's ``comfy.ldm.hidream``.

Blocks sit one level down, in ``double_stream_blocks.{i}.block`` and ``single_stream_blocks.{i}.block``.
Components are their real submodules, wrapped through ModelPatcher object patches as for PixArt:

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

from ..costs import CostTable, attention_matmul_macs, linear_macs
from ..schedule import BlockGroup, Layout
from .base import CallTokens, FamilyAdapter, install_forward_hooks

DOUBLE_COMPONENTS = ("attn", "ff_i", "ff_t")
SINGLE_COMPONENTS = ("attn", "ff_i")
MODULE_OF = {"attn": "attn1", "ff_i": "ff_i", "ff_t": "ff_t"}
TIMESTEP_FEATURES = 256       # TimestepEmbed's sinusoidal features


def _swiglu_hidden(ff: torch.nn.Module) -> int:
    return ff.w1.out_features


@dataclass(frozen=True)
class HiDreamDims:
    hidden: int
    depth: int
    depth_single: int
    patch_features: int       # x_embedder fan-in (latent channels × patch²)
    out_features: int         # final layer fan-out
    t5_in: int                # caption_projection fan-in of the T5 states
    llama_in: int             # caption_projection fan-in of each Llama layer's states
    pooled_in: int
    expert_hidden: int        # one routed expert's SwiGLU width (0 without experts)
    experts: int
    active_experts: int       # routed experts per token (top-k)
    shared_hidden: int        # the shared expert's width, or the plain feed-forward's without experts
    text_ff_hidden: int

    @classmethod
    def of(cls, dm: torch.nn.Module) -> "HiDreamDims":
        double = dm.double_stream_blocks[0].block
        ff_i = double.ff_i
        moe = hasattr(ff_i, "experts")
        return cls(hidden=dm.inner_dim, depth=len(dm.double_stream_blocks), depth_single=len(dm.single_stream_blocks),
                   patch_features=dm.x_embedder.proj.in_features, out_features=dm.final_layer.linear.out_features,
                   t5_in=dm.caption_projection[-1].linear.in_features,
                   llama_in=dm.caption_projection[0].linear.in_features,
                   pooled_in=dm.p_embedder.pooled_embedder.linear_1.in_features,
                   expert_hidden=_swiglu_hidden(ff_i.experts[0]) if moe else 0,
                   experts=len(ff_i.experts) if moe else 0,
                   active_experts=ff_i.num_activated_experts if moe else 0,
                   shared_hidden=_swiglu_hidden(ff_i.shared_experts if moe else ff_i),
                   text_ff_hidden=_swiglu_hidden(double.ff_t))


def hidream_layout(depth: int, depth_single: int) -> Layout:
    return Layout("hidream", (BlockGroup("double_stream_blocks", depth, DOUBLE_COMPONENTS),
                              BlockGroup("single_stream_blocks", depth_single, SINGLE_COMPONENTS)))


def _image_ff_macs(dims: HiDreamDims, tokens: int) -> float:
    """Gate, the top-k routed experts each token really runs, and the shared expert."""
    h = dims.hidden
    routed = dims.active_experts * 3 * linear_macs(tokens, h, dims.expert_hidden) if dims.experts else 0.0
    return linear_macs(tokens, h, dims.experts) + routed + 3 * linear_macs(tokens, h, dims.shared_hidden)


def hidream_costs(dims: HiDreamDims, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
    """MACs per batch row. ``tokens.text`` is the T5 length; each Llama layer's length is taken to be the same
    (ComfyUI pads both tokenizers to 128 tokens)."""
    h, img, t5 = dims.hidden, tokens.image, tokens.text
    llama = t5
    double_txt = t5 + 2 * llama           # T5 + last Llama layer (kept), + this block's Llama layer
    single = img + double_txt             # single blocks run over image and text tokens together
    per_component = {
        "double_stream_blocks": {
            "attn": linear_macs(img + double_txt, h, 4 * h)
                    + (attention_matmul_macs(img + double_txt, img + double_txt, h) if attention_matmuls else 0.0),
            "ff_i": _image_ff_macs(dims, img),
            "ff_t": 3 * linear_macs(double_txt, h, dims.text_ff_hidden)},
        "single_stream_blocks": {
            "attn": linear_macs(single, h, 4 * h) + (attention_matmul_macs(single, single, h) if attention_matmuls else 0.0),
            "ff_i": _image_ff_macs(dims, single)},
    }
    blocks = dims.depth + dims.depth_single
    constant = (TIMESTEP_FEATURES * h + h * h + dims.pooled_in * h + h * h          # timestep and pooled embedders
                + linear_macs(img, dims.patch_features, h)
                + blocks * linear_macs(llama, dims.llama_in, h) + linear_macs(t5, dims.t5_in, h)
                + dims.depth * h * 12 * h + dims.depth_single * h * 6 * h           # adaLN of every block
                + h * 2 * h + linear_macs(img, h, dims.out_features))
    return CostTable.from_components(hidream_layout(dims.depth, dims.depth_single), per_component, constant)


class HiDreamAdapter(FamilyAdapter):
    family = "hidream"
    model_classes = (("comfy.ldm.hidream.model", "HiDreamImageTransformer2DModel"),)
    variants = {"HiDream": "hidream-i1"}

    def layout(self, dm: torch.nn.Module) -> Layout:
        return hidream_layout(len(dm.double_stream_blocks), len(dm.single_stream_blocks))

    def install(self, patcher: Any, layout: Layout) -> None:
        offsets = layout.offsets()
        install_forward_hooks(patcher, (
            (f"diffusion_model.{group.name}.{i}.block.{MODULE_OF[component]}",
             offsets[group.name] + len(group.components) * i + c)
            for group in layout.groups for i in range(group.blocks) for c, component in enumerate(group.components)))

    def tokens(self, dm: torch.nn.Module, x: torch.Tensor, context: Optional[torch.Tensor]) -> CallTokens:
        # HiDream-E1's reference image (concatenated along the width inside the model) is not counted.
        p = dm.patch_size
        return CallTokens(image=((x.shape[-2] + p - 1) // p) * ((x.shape[-1] + p - 1) // p),
                          text=0 if context is None else int(context.shape[1]))

    def costs(self, dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
        return hidream_costs(HiDreamDims.of(dm), tokens, attention_matmuls)


ADAPTERS = (HiDreamAdapter(),)

"""FLUX.1 (dev, schnell) in ComfyUI's ``comfy.ldm.flux``.

Components follow the ECAD genome:

* double-stream blocks: ``attn`` (the joint attention, both streams' projected outputs as one
  component), ``img_mlp``, ``txt_mlp``;
* single-stream blocks: ``attn`` (attention output before ``linear2``), ``mlp_in`` (the MLP input
  projection before GELU), ``out_proj`` (``linear2``'s output before the gate).

Caches hold raw outputs before the gate, so the current step's modulation is always applied.
ComfyUI fuses q/k/v and the MLP input into ``linear1``; when only one of them is computed, its rows
of the weight are used alone. Weights are fetched through ``comfy.ops.cast_bias_weight``, so LoRA
patches, low-VRAM offloading and scaled fp8 weights behave as in the unpatched block.

The block replacements are registered through ``patches_replace["dit"]``; outside an ECAD run they
call the original block.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from ..costs import CostTable, attention_matmul_macs, linear_macs
from ..runtime import CacheRuntime, active_runtime
from ..schedule import BlockGroup, Layout
from .base import CallTokens, FamilyAdapter

DOUBLE_COMPONENTS = ("attn", "img_mlp", "txt_mlp")
SINGLE_COMPONENTS = ("attn", "mlp_in", "out_proj")
#: single blocks add only ``linear2(cat(attn, act(mlp_in)))`` to the residual: attn and mlp_in feed out_proj
FLUX_INTERNAL = {"single_blocks": {"attn": ("out_proj",), "mlp_in": ("out_proj",)}}


@dataclass(frozen=True)
class FluxDims:
    hidden: int
    mlp_hidden: int
    depth: int
    depth_single: int
    in_channels: int        # img_in fan-in (latent channels × patch²)
    out_channels: int       # final layer fan-out
    context_in: int
    vec_in: int
    guidance_embed: bool

    @classmethod
    def of(cls, dm: torch.nn.Module) -> "FluxDims":
        p = dm.params
        return cls(hidden=p.hidden_size, mlp_hidden=int(p.hidden_size * p.mlp_ratio), depth=p.depth,
                   depth_single=p.depth_single_blocks, in_channels=dm.img_in.in_features,
                   out_channels=dm.final_layer.linear.out_features, context_in=p.context_in_dim,
                   vec_in=p.vec_in_dim, guidance_embed=bool(p.guidance_embed))


def flux_layout(depth: int, depth_single: int, family: str = "flux") -> Layout:
    return Layout(family, (BlockGroup("double_blocks", depth, DOUBLE_COMPONENTS),
                           BlockGroup("single_blocks", depth_single, SINGLE_COMPONENTS)))


def flux_block_macs(hidden: int, mlp_hidden: int, tokens: CallTokens,
                    attention_matmuls: bool = False) -> dict[str, dict[str, float]]:
    """MACs of each component of one double and one single block (FLUX, Chroma and HunyuanVideo blocks)."""
    h, m, img, txt = hidden, mlp_hidden, tokens.image, tokens.text
    both = img + txt
    attn_extra = attention_matmul_macs(both, both, h) if attention_matmuls else 0.0
    return {"double_blocks": {"attn": linear_macs(both, h, 4 * h) + attn_extra,
                              "img_mlp": 2 * linear_macs(img, h, m),
                              "txt_mlp": 2 * linear_macs(txt, h, m)},
            "single_blocks": {"attn": linear_macs(both, h, 3 * h) + attn_extra,
                              "mlp_in": linear_macs(both, h, m),
                              "out_proj": linear_macs(both, h + m, h)}}


def flux_costs(dims: FluxDims, tokens: CallTokens, attention_matmuls: bool = False, family: str = "flux") -> CostTable:
    h, img, txt = dims.hidden, tokens.image, tokens.text
    embed = 256 * h + h * h
    constant = (linear_macs(img, dims.in_channels, h) + embed + (embed if dims.guidance_embed else 0)
                + dims.vec_in * h + h * h + linear_macs(txt, dims.context_in, h)
                + dims.depth * 2 * h * 6 * h + dims.depth_single * h * 3 * h
                + h * 2 * h + linear_macs(img, h, dims.out_channels))
    return CostTable.from_components(flux_layout(dims.depth, dims.depth_single, family),
                                     flux_block_macs(h, dims.mlp_hidden, tokens, attention_matmuls), constant)


# ------------------------------------------------------------------ block computations

def _gate(value: torch.Tensor, gate: torch.Tensor, modulation_dims) -> torch.Tensor:
    from comfy.ldm.flux.layers import apply_mod
    # With modulation_dims, apply_mod works in place; never let it touch a cached tensor.
    return apply_mod(value if modulation_dims is None else value.clone(), gate, None, modulation_dims)


def _modulate(x: torch.Tensor, mod, modulation_dims) -> torch.Tensor:
    from comfy.ldm.flux.layers import apply_mod
    return apply_mod(x, (1 + mod.scale), mod.shift, modulation_dims)


def _linear_rows(layer: torch.nn.Module, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """``layer(x)[..., start:stop]`` computing only those output rows."""
    import comfy.ops
    cast = comfy.ops.cast_bias_weight(layer, x)
    weight, bias = cast[0], cast[1]
    w = weight[start:stop]
    scale = getattr(layer, "scale_weight", None)  # scaled fp8 checkpoints
    if scale is not None:
        w = w * scale.to(device=w.device, dtype=w.dtype)
    out = F.linear(x, w, None if bias is None else bias[start:stop])
    if len(cast) > 2 and hasattr(comfy.ops, "uncast_bias_weight"):  # newer ComfyUI offload streams
        comfy.ops.uncast_bias_weight(layer, weight, bias, cast[2])
    return out


def _add_gated(x: torch.Tensor, value: torch.Tensor, gate: torch.Tensor, modulation_dims) -> torch.Tensor:
    return x + _gate(value, gate, modulation_dims)


@dataclass(frozen=True)
class BlockMath:
    """Where a FLUX-style block's modulation comes from and how it is applied.

    Chroma's blocks compute exactly what FLUX's do, but take precomputed modulations as ``vec`` and
    use ``addcmul`` (one fused rounding on GPUs); bit-identity needs its own expressions.
    """

    double_mods: Callable   # (block, vec) -> ((img_mod1, img_mod2), (txt_mod1, txt_mod2))
    single_mod: Callable    # (block, vec) -> the single block's ModulationOut
    modulate: Callable      # (x, mod, modulation_dims) -> x * (1 + mod.scale) + mod.shift
    add_gated: Callable     # (x, value, gate, modulation_dims) -> x + gate * value, never writing into value


def _flux_double_mods(block, vec):
    return block.img_mod(vec), block.txt_mod(vec)


def _flux_single_mod(block, vec):
    return block.modulation(vec)[0]


FLUX_MATH = BlockMath(_flux_double_mods, _flux_single_mod, _modulate, _add_gated)


def double_block_forward(rt: CacheRuntime, bit: int, block, img, txt, vec, pe, attn_mask=None,
                         modulation_dims_img=None, modulation_dims_txt=None, transformer_options={},
                         block_math: BlockMath = FLUX_MATH):
    """``DoubleStreamBlock.forward`` with its three components routed through the runtime."""
    from comfy.ldm.flux.math import attention
    (img_mod1, img_mod2), (txt_mod1, txt_mod2) = block_math.double_mods(block, vec)
    modulate, add_gated = block_math.modulate, block_math.add_gated

    def joint_attention():
        img_qkv = block.img_attn.qkv(modulate(block.img_norm1(img), img_mod1, modulation_dims_img))
        img_q, img_k, img_v = img_qkv.view(img_qkv.shape[0], img_qkv.shape[1], 3, block.num_heads, -1).permute(2, 0, 3, 1, 4)
        img_q, img_k = block.img_attn.norm(img_q, img_k, img_v)
        txt_qkv = block.txt_attn.qkv(modulate(block.txt_norm1(txt), txt_mod1, modulation_dims_txt))
        txt_q, txt_k, txt_v = txt_qkv.view(txt_qkv.shape[0], txt_qkv.shape[1], 3, block.num_heads, -1).permute(2, 0, 3, 1, 4)
        txt_q, txt_k = block.txt_attn.norm(txt_q, txt_k, txt_v)
        if block.flipped_img_txt:
            attn = attention(torch.cat((img_q, txt_q), dim=2), torch.cat((img_k, txt_k), dim=2),
                             torch.cat((img_v, txt_v), dim=2), pe=pe, mask=attn_mask, transformer_options=transformer_options)
            img_attn, txt_attn = attn[:, :img.shape[1]], attn[:, img.shape[1]:]
        else:
            attn = attention(torch.cat((txt_q, img_q), dim=2), torch.cat((txt_k, img_k), dim=2),
                             torch.cat((txt_v, img_v), dim=2), pe=pe, mask=attn_mask, transformer_options=transformer_options)
            txt_attn, img_attn = attn[:, :txt.shape[1]], attn[:, txt.shape[1]:]
        return block.img_attn.proj(img_attn), block.txt_attn.proj(txt_attn)

    img_attn_out, txt_attn_out = rt.component(bit, joint_attention)
    img = add_gated(img, img_attn_out, img_mod1.gate, modulation_dims_img)
    img_mlp_out = rt.component(bit + 1, lambda: block.img_mlp(modulate(block.img_norm2(img), img_mod2, modulation_dims_img)))
    img = add_gated(img, img_mlp_out, img_mod2.gate, modulation_dims_img)

    txt = add_gated(txt, txt_attn_out, txt_mod1.gate, modulation_dims_txt)
    txt_mlp_out = rt.component(bit + 2, lambda: block.txt_mlp(modulate(block.txt_norm2(txt), txt_mod2, modulation_dims_txt)))
    txt = add_gated(txt, txt_mlp_out, txt_mod2.gate, modulation_dims_txt)
    if txt.dtype == torch.float16:
        txt = torch.nan_to_num(txt, nan=0.0, posinf=65504, neginf=-65504)
    return img, txt


def single_block_forward(rt: CacheRuntime, bit: int, block, x, vec, pe, attn_mask=None, modulation_dims=None,
                         transformer_options={}, block_math: BlockMath = FLUX_MATH):
    """``SingleStreamBlock.forward`` with attention, MLP input and output projection routed through the runtime."""
    from comfy.ldm.flux.math import attention
    mod = block_math.single_mod(block, vec)
    h3, mlp_hidden = 3 * block.hidden_size, block.mlp_hidden_dim

    def attend(qkv):
        q, k, v = qkv.view(qkv.shape[0], qkv.shape[1], 3, block.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k = block.norm(q, k, v)
        return attention(q, k, v, pe=pe, mask=attn_mask, transformer_options=transformer_options)

    # attn and mlp_in are internal (FLUX_INTERNAL): while out_proj is reused they only run to refresh their caches
    compute_attn = rt.needed(bit) and rt.will_compute(bit)
    compute_mlp = rt.needed(bit + 1) and rt.will_compute(bit + 1)
    # the normalized input only when linear1 runs (a reuse step would spend a norm on nothing)
    x_mod = block_math.modulate(block.pre_norm(x), mod, modulation_dims) if compute_attn or compute_mlp else None
    if compute_attn and compute_mlp:
        qkv, mlp = torch.split(block.linear1(x_mod), [h3, mlp_hidden], dim=-1)
        attn = rt.component(bit, lambda: attend(qkv))
        mlp_in = rt.component(bit + 1, lambda: mlp)
    else:
        attn = rt.component_if_needed(bit, lambda: attend(_linear_rows(block.linear1, x_mod, 0, h3)))
        mlp_in = rt.component_if_needed(bit + 1, lambda: _linear_rows(block.linear1, x_mod, h3, h3 + mlp_hidden))
    output = rt.component(bit + 2, lambda: block.linear2(torch.cat((attn, block.mlp_act(mlp_in)), 2)))
    x = block_math.add_gated(x, output, mod.gate, modulation_dims)
    if x.dtype == torch.float16:
        x = torch.nan_to_num(x, nan=0.0, posinf=65504, neginf=-65504)
    return x


# ------------------------------------------------------------------ replacements

@dataclass(frozen=True)
class DoubleBlockReplacement:
    """``patches_replace["dit"][("double_block", index)]``; small, since model_options are deep-copied."""

    index: int
    bit: int
    blocks_attr: str = "double_blocks"
    block_math: BlockMath = FLUX_MATH

    @torch.compiler.disable  # caching decisions are Python control flow: keep torch.compile out of them
    def __call__(self, args: dict, extra: dict) -> dict:
        rt = active_runtime()
        if rt is None:
            return extra["original_block"](args)
        block = getattr(rt.model, self.blocks_attr)[self.index]
        img, txt = double_block_forward(
            rt, self.bit, block, args["img"], args["txt"], args["vec"], args["pe"],
            attn_mask=args.get("attn_mask", args.get("attention_mask")),
            modulation_dims_img=args.get("modulation_dims_img"), modulation_dims_txt=args.get("modulation_dims_txt"),
            transformer_options=args.get("transformer_options", {}), block_math=self.block_math)
        return {"img": img, "txt": txt}


@dataclass(frozen=True)
class SingleBlockReplacement:
    index: int
    bit: int
    blocks_attr: str = "single_blocks"
    block_math: BlockMath = FLUX_MATH

    @torch.compiler.disable
    def __call__(self, args: dict, extra: dict) -> dict:
        rt = active_runtime()
        if rt is None:
            return extra["original_block"](args)
        block = getattr(rt.model, self.blocks_attr)[self.index]
        img = single_block_forward(
            rt, self.bit, block, args["img"], args["vec"], args["pe"],
            attn_mask=args.get("attn_mask", args.get("attention_mask")),
            modulation_dims=args.get("modulation_dims"), transformer_options=args.get("transformer_options", {}),
            block_math=self.block_math)
        return {"img": img}


def install_flux_replacements(patcher: Any, layout: Layout, block_math: BlockMath = FLUX_MATH) -> None:
    offsets = layout.offsets()
    double, single = layout.group("double_blocks"), layout.group("single_blocks")
    for i in range(double.blocks):
        patcher.set_model_patch_replace(
            DoubleBlockReplacement(i, offsets["double_blocks"] + 3 * i, block_math=block_math), "dit", "double_block", i)
    for i in range(single.blocks):
        patcher.set_model_patch_replace(
            SingleBlockReplacement(i, offsets["single_blocks"] + 3 * i, block_math=block_math), "dit", "single_block", i)


class FluxAdapter(FamilyAdapter):
    family = "flux"
    model_classes = (("comfy.ldm.flux.model", "Flux"),)
    variants = {"Flux": "flux-dev", "FluxSchnell": "flux-schnell", "FluxInpaint": "flux-fill"}
    internal = FLUX_INTERNAL

    def layout(self, dm: torch.nn.Module) -> Layout:
        return flux_layout(len(dm.double_blocks), len(dm.single_blocks))

    def install(self, patcher: Any, layout: Layout) -> None:
        install_flux_replacements(patcher, layout)

    def tokens(self, dm: torch.nn.Module, x: torch.Tensor, context: Optional[torch.Tensor]) -> CallTokens:
        p = dm.patch_size
        h, w = x.shape[-2], x.shape[-1]
        return CallTokens(image=((h + p - 1) // p) * ((w + p - 1) // p),
                          text=0 if context is None else int(context.shape[1]))

    def costs(self, dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
        return flux_costs(FluxDims.of(dm), tokens, attention_matmuls)


ADAPTERS = (FluxAdapter(),)

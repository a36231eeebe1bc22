"""FLUX.1 (dev, schnell, fill, Kontext) and every model ComfyUI runs on its ``comfy.ldm.flux`` ``Flux`` class:
FLUX.2 (dev, klein), Ovis-Image and LongCat-Image (ComfyUI v0.20 and later).

Components follow the ECAD genome:

* double-stream blocks: ``attn`` (the joint attention, both streams' projected outputs as one
  component), ``img_mlp``, ``txt_mlp``;
* single-stream blocks: ``attn`` (attention output before ``linear2``), ``mlp_in`` (the MLP input
  projection before its activation), ``out_proj`` (``linear2``'s output before the gate). ``attn``
  and ``mlp_in`` reach the block output only through ``out_proj`` (internal components).

Caches hold raw outputs before the gate, so the current step's modulation is always applied. The
MLPs and ``linear2`` are submodules (hooked); the joint attention and the two halves of the fused
``linear1`` are not, so mirrored copies of ``DoubleStreamBlock.forward`` and
``SingleStreamBlock.forward`` route them (see ``mirror``). The copies follow upstream's features:
``attn1_patch``/``attn1_output_patch``, token-wise ``modulation_dims`` (FLUX.2's reference latents
at timestep zero), the text/image order, blocks without their own modulation (Chroma, FLUX.2's
global modulation), SiLU-gated (FLUX.2) and "yak" (Ovis) MLPs. When only one half of ``linear1``
runs, its rows of the weight are used alone (through ``comfy.ops.cast_bias_weight``, so LoRA
patches and low-VRAM offloading apply); quantized weights (ComfyUI v0.20's ``QuantizedTensor``)
run the whole layer and keep the rows asked for.

Variants differ only in what the layers hold, so one adapter serves them all and costs are read
from the layers' shapes. Reference latents (Kontext, FLUX.2 editing) add image tokens that the
latent does not show; the token counts include them (``FluxAdapter.call_tokens``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F

from ..costs import CostTable, attention_matmul_macs, linear_macs, module_linear_macs
from ..registry import BenchmarkModel, ModelFiles, Preset, tiny_preset
from ..schedule import Layout
from ..tiny import TinyModel, text_states
from .base import CallTokens, Component, FamilyAdapter, Group, UnsupportedModelError
from .mirror import Mirror

# ------------------------------------------------------------------ mirrored block forwards


def _gated(value: torch.Tensor, gate: torch.Tensor, modulation_dims) -> torch.Tensor:
    from comfy.ldm.flux.layers import apply_mod
    # With modulation_dims, apply_mod works in place: never let it touch a cached tensor.
    return apply_mod(value if modulation_dims is None else value.clone(), gate, None, modulation_dims)


def _modulated(x: torch.Tensor, mod, modulation_dims) -> torch.Tensor:
    from comfy.ldm.flux.layers import apply_mod
    return apply_mod(x, (1 + mod.scale), mod.shift, modulation_dims)


def _plain_weight(weight: Any) -> bool:
    return type(weight) in (torch.Tensor, torch.nn.Parameter)


def linear_rows(layer: torch.nn.Module, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """``layer(x)[..., start:stop]``, computing only those output rows where the weight allows it.

    The weight comes from ``comfy.ops.cast_bias_weight`` as the layer's own forward gets it (device, dtype, LoRA
    patches applied by low-VRAM weight functions); on ComfyUI versions with ``uncast_bias_weight`` it is cast as
    offloadable and released after use, as ComfyUI's layers do (offload streams, DynamicVRAM pins). Quantized
    weights (ComfyUI v0.20's ``QuantizedTensor``, GGUF tensors: tensor subclasses whose rows are not rows of a plain
    matrix in every layout, and which cannot even be viewed under inference mode when made outside it) and fp8
    matmuls with input scales run the whole layer as ComfyUI runs it, and keep the rows asked for.
    """
    import comfy.ops
    if not _plain_weight(layer.weight) or getattr(layer, "scale_input", None) is not None:
        return layer(x)[..., start:stop]
    release = getattr(comfy.ops, "uncast_bias_weight", None)
    cast = comfy.ops.cast_bias_weight(layer, x, offloadable=True) if release else comfy.ops.cast_bias_weight(layer, x)
    weight, bias = cast[0], cast[1]
    if _plain_weight(weight):
        w = weight[start:stop]
        scale = getattr(layer, "scale_weight", None)  # ComfyUI v0.3.x scaled fp8 checkpoints
        if scale is not None:
            w = w * scale.to(device=w.device, dtype=w.dtype)
        out = F.linear(x, w, None if bias is None else bias[start:stop])
    else:  # a weight function handed back something other than a plain tensor
        out = None
    if release:
        release(layer, weight, bias, cast[2])
    return out if out is not None else layer(x)[..., start:stop]


def _heads(qkv: torch.Tensor, heads: int):
    return qkv.view(qkv.shape[0], qkv.shape[1], 3, heads, -1).permute(2, 0, 3, 1, 4)


def _attention_with_patches(q, k, v, pe, attn_mask, transformer_options, extra_options, flags):
    from comfy.ldm.flux.math import attention
    patches = transformer_options.get("patches", {})
    if "attn1_patch" in flags:
        for p in patches.get("attn1_patch", ()):
            out = p(q, k, v, pe=pe, attn_mask=attn_mask, extra_options=extra_options)
            q, k, v, pe, attn_mask = out.get("q", q), out.get("k", k), out.get("v", v), out.get("pe", pe), out.get("attn_mask", attn_mask)
    attn = attention(q, k, v, pe=pe, mask=attn_mask, transformer_options=transformer_options)
    if "attn1_output_patch" in flags:
        for p in patches.get("attn1_output_patch", ()):
            attn = p(attn, extra_options)
    return attn


def same_tokens(value: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """``value`` (a component output, perhaps cached at an earlier step), checked to have ``current``'s tokens."""
    if value.shape[1] != current.shape[1]:
        raise UnsupportedModelError(
            f"ECAD: a cached block output has {value.shape[1]} tokens where this step runs {current.shape[1]}: the "
            "model's token count changed during sampling (ComfyUI's Flux KV Cache node drops the reference images' "
            "tokens after the first step). ECAD cannot reuse outputs across that change: use only one of the two.")
    return value


def routed_double_block(route, block, img, txt, mods, joint_attention, modulate, add_gated):
    """A FLUX-style double block after its modulation: the joint attention and both MLPs routed.

    ``modulate(x, mod, stream)`` and ``add_gated(x, value, gate, stream)`` are the block's own arithmetic
    (``stream`` is "img" or "txt"); ``add_gated`` never writes into ``value``, which may be cached.
    """
    (img_mod1, img_mod2), (txt_mod1, txt_mod2) = mods
    img_attn_out, txt_attn_out = route.component("attn", joint_attention)
    img = add_gated(img, same_tokens(img_attn_out, img), img_mod1.gate, "img")
    img_mlp_out = route.component("img_mlp", lambda: block.img_mlp(modulate(block.img_norm2(img), img_mod2, "img")))
    img = add_gated(img, same_tokens(img_mlp_out, img), img_mod2.gate, "img")

    txt = add_gated(txt, same_tokens(txt_attn_out, txt), txt_mod1.gate, "txt")
    txt_mlp_out = route.component("txt_mlp", lambda: block.txt_mlp(modulate(block.txt_norm2(txt), txt_mod2, "txt")))
    txt = add_gated(txt, same_tokens(txt_mlp_out, txt), txt_mod2.gate, "txt")
    if txt.dtype == torch.float16:
        txt = torch.nan_to_num(txt, nan=0.0, posinf=65504, neginf=-65504)
    return img, txt


def double_block_forward(route, block, flags, img, txt, vec, pe, attn_mask=None, modulation_dims_img=None,
                         modulation_dims_txt=None, transformer_options={}):
    """``comfy.ldm.flux.layers.DoubleStreamBlock.forward`` with its three components routed."""
    if getattr(block, "modulation", True):
        mods = block.img_mod(vec), block.txt_mod(vec)
    else:
        mods = vec
    (img_mod1, _), (txt_mod1, _) = mods
    dims = {"img": modulation_dims_img, "txt": modulation_dims_txt}

    def joint_attention():
        img_q, img_k, img_v = _heads(block.img_attn.qkv(_modulated(block.img_norm1(img), img_mod1, modulation_dims_img)),
                                     block.num_heads)
        img_q, img_k = block.img_attn.norm(img_q, img_k, img_v)
        txt_q, txt_k, txt_v = _heads(block.txt_attn.qkv(_modulated(block.txt_norm1(txt), txt_mod1, modulation_dims_txt)),
                                     block.num_heads)
        txt_q, txt_k = block.txt_attn.norm(txt_q, txt_k, txt_v)
        if "flipped_img_txt" in flags and block.flipped_img_txt:  # ComfyUI v0.3.x HunyuanVideo: image tokens first
            from comfy.ldm.flux.math import attention
            attn = attention(torch.cat((img_q, txt_q), dim=2), torch.cat((img_k, txt_k), dim=2),
                             torch.cat((img_v, txt_v), dim=2), pe=pe, mask=attn_mask, transformer_options=transformer_options)
            img_attn, txt_attn = attn[:, :img.shape[1]], attn[:, img.shape[1]:]
        else:
            q, k, v = torch.cat((txt_q, img_q), dim=2), torch.cat((txt_k, img_k), dim=2), torch.cat((txt_v, img_v), dim=2)
            extra_options = transformer_options.copy()
            extra_options["img_slice"] = [txt.shape[1], q.shape[2]]
            attn = _attention_with_patches(q, k, v, pe, attn_mask, transformer_options, extra_options, flags)
            txt_attn, img_attn = attn[:, :txt.shape[1]], attn[:, txt.shape[1]:]
        return block.img_attn.proj(img_attn), block.txt_attn.proj(txt_attn)

    return routed_double_block(route, block, img, txt, mods, joint_attention,
                               lambda x, mod, stream: _modulated(x, mod, dims[stream]),
                               lambda x, value, gate, stream: x + _gated(value, gate, dims[stream]))


def _mlp_width(block) -> int:
    """Rows of ``linear1`` after q/k/v: the MLP input (doubled for gated MLPs)."""
    return getattr(block, "mlp_hidden_dim_first", block.mlp_hidden_dim)


def _mlp_activation(block, mlp: torch.Tensor) -> torch.Tensor:
    if getattr(block, "yak_mlp", False):
        half = block.mlp_hidden_dim_first // 2
        return block.mlp_act(mlp[..., half:]) * mlp[..., :half]
    return block.mlp_act(mlp)


def routed_single_output(route, block, modulated_input, attend, mlp_width: int, activation) -> torch.Tensor:
    """A FLUX-style single block's ``linear2`` output with attention, MLP input and output projection routed.

    ``attn`` and ``mlp_in`` are internal: while ``out_proj`` is reused they only run to refresh their caches,
    and the normalized input is computed only when ``linear1`` runs.
    """
    h3 = 3 * block.hidden_size
    compute_attn = route.needed("attn") and route.will_compute("attn")
    compute_mlp = route.needed("mlp_in") and route.will_compute("mlp_in")
    x_mod = modulated_input() if compute_attn or compute_mlp else None
    if compute_attn and compute_mlp:
        qkv, mlp = torch.split(block.linear1(x_mod), [h3, mlp_width], dim=-1)
        attn = route.component("attn", lambda: attend(qkv))
        mlp_in = route.component("mlp_in", lambda: mlp)
    else:
        attn = route.component_if_needed("attn", lambda: attend(linear_rows(block.linear1, x_mod, 0, h3)))
        mlp_in = route.component_if_needed("mlp_in", lambda: linear_rows(block.linear1, x_mod, h3, h3 + mlp_width))
    return route.component("out_proj",
                           lambda: block.linear2(torch.cat((attn, activation(same_tokens(mlp_in, attn))), 2)))


def single_block_forward(route, block, flags, x, vec, pe, attn_mask=None, modulation_dims=None, transformer_options={}):
    """``comfy.ldm.flux.layers.SingleStreamBlock.forward`` with attention, MLP input and output projection routed."""
    mod = block.modulation(vec)[0] if block.modulation else vec

    def attend(qkv):
        q, k, v = _heads(qkv, block.num_heads)
        q, k = block.norm(q, k, v)
        return _attention_with_patches(q, k, v, pe, attn_mask, transformer_options, transformer_options.copy(), flags)

    output = routed_single_output(route, block, lambda: _modulated(block.pre_norm(x), mod, modulation_dims), attend,
                                  _mlp_width(block), lambda mlp: _mlp_activation(block, mlp))
    x = x + _gated(same_tokens(output, x), mod.gate, modulation_dims)
    if x.dtype == torch.float16:
        x = torch.nan_to_num(x, nan=0.0, posinf=65504, neginf=-65504)
    return x


def _forward_of(block_class: type) -> tuple:
    return (block_class.forward,)


def _call_features(block, args, kwargs) -> tuple:
    """What selects code paths of a call: token-wise modulation, masks, attention patches, fp16."""
    options = kwargs.get("transformer_options") or {}
    present = [k for k in ("attn_mask", "modulation_dims", "modulation_dims_img", "modulation_dims_txt")
               if kwargs.get(k) is not None]
    x = args[0] if args else kwargs.get("img", kwargs.get("x"))
    return (tuple(present), tuple(sorted(options.get("patches", {}))), getattr(x, "dtype", None))


#: Fingerprints of the upstream forwards these copies were verified against (tests check both trees).
DOUBLE_MIRROR = Mirror(
    "ECAD's copy of FLUX's DoubleStreamBlock.forward", ("comfy.ldm.flux.layers.DoubleStreamBlock",),
    double_block_forward, _forward_of,
    known={"a4a0fe9e59b02de5": "ComfyUI v0.3.64", "b486845ec8e58531": "ComfyUI v0.20.1"},
    markers=("attn1_patch", "attn1_output_patch", "flipped_img_txt"), features=_call_features)
SINGLE_MIRROR = Mirror(
    "ECAD's copy of FLUX's SingleStreamBlock.forward", ("comfy.ldm.flux.layers.SingleStreamBlock",),
    single_block_forward, _forward_of,
    known={"3e962b752829dd89": "ComfyUI v0.3.64", "181353cf3070627b": "ComfyUI v0.20.1"},
    markers=("attn1_patch", "attn1_output_patch"), features=_call_features)

DOUBLE_BLOCKS = Group("double_blocks", "double_blocks", (
    Component("attn"),  # the joint attention is inline in the block: only the mirror can skip it
    Component("img_mlp", module="img_mlp", written_by_block=True),
    Component("txt_mlp", module="txt_mlp", written_by_block=True)), mirrors=(DOUBLE_MIRROR,))
SINGLE_BLOCKS = Group("single_blocks", "single_blocks", (
    Component("attn", feeds=("out_proj",)),
    Component("mlp_in", feeds=("out_proj",)),
    Component("out_proj", module="linear2", written_by_block=True)), mirrors=(SINGLE_MIRROR,))


# ------------------------------------------------------------------ costs


def flux_block_macs(double: Optional[torch.nn.Module], single: Optional[torch.nn.Module], tokens: CallTokens,
                    attention_matmuls: bool = False) -> dict[str, dict[str, float]]:
    """MACs of each component of one double and one single block, from the blocks' own layers
    (FLUX, Chroma, HunyuanVideo and every MLP variant)."""
    img, txt = tokens.image, tokens.text
    both = img + txt
    out: dict[str, dict[str, float]] = {}
    if double is not None:
        h = double.hidden_size
        attn_extra = attention_matmul_macs(both, both, h) if attention_matmuls else 0.0
        out["double_blocks"] = {
            "attn": (module_linear_macs(double.img_attn.qkv, img) + module_linear_macs(double.txt_attn.qkv, txt)
                     + module_linear_macs(double.img_attn.proj, img) + module_linear_macs(double.txt_attn.proj, txt)
                     + attn_extra),
            "img_mlp": module_linear_macs(double.img_mlp, img),
            "txt_mlp": module_linear_macs(double.txt_mlp, txt)}
    if single is not None:
        h = single.hidden_size
        out["single_blocks"] = {
            "attn": linear_macs(both, h, 3 * h) + (attention_matmul_macs(both, both, h) if attention_matmuls else 0.0),
            "mlp_in": linear_macs(both, h, _mlp_width(single)),
            "out_proj": module_linear_macs(single.linear2, both)}
    return out


def _block_modulation_macs(dm: torch.nn.Module) -> float:
    """Per-block modulation layers (one token per batch row each), or FLUX.2's shared ones."""
    total = 0.0
    for block in list(dm.double_blocks) + list(dm.single_blocks):
        for name in ("img_mod", "txt_mod", "modulation"):
            mod = getattr(block, name, None)
            if isinstance(mod, torch.nn.Module):
                total += module_linear_macs(mod, 1)
    for name in ("double_stream_modulation_img", "double_stream_modulation_txt", "single_stream_modulation"):
        mod = getattr(dm, name, None)
        if mod is not None:
            total += module_linear_macs(mod, 1)
    return total


def flux_costs(dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
    img, txt = tokens.image, tokens.text
    embedders = sum(module_linear_macs(m, 1) for m in (dm.time_in, dm.guidance_in, dm.vector_in)
                    if isinstance(m, torch.nn.Module))
    final = dm.final_layer
    constant = (module_linear_macs(dm.img_in, img) + module_linear_macs(dm.txt_in, txt) + embedders
                + _block_modulation_macs(dm) + module_linear_macs(final.adaLN_modulation, 1)
                + module_linear_macs(final.linear, img))
    double = dm.double_blocks[0] if len(dm.double_blocks) else None
    single = dm.single_blocks[0] if len(dm.single_blocks) else None
    return CostTable.from_components(FluxAdapter().layout(dm), flux_block_macs(double, single, tokens, attention_matmuls),
                                     constant)


# ------------------------------------------------------------------ adapter


class FluxAdapter(FamilyAdapter):
    family = "flux"
    model_classes = (("comfy.ldm.flux.model", "Flux"),)
    variants = {"Flux": "flux-dev", "FluxSchnell": "flux-schnell", "FluxInpaint": "flux-fill",
                "LongCatImage": "longcat-image", "Flux2": "flux2"}
    groups = (DOUBLE_BLOCKS, SINGLE_BLOCKS)

    def variant(self, base_model: Any) -> Optional[str]:
        """The model-config class names most variants. Ovis-Image loads as ``FluxSchnell`` and is told by its yak
        MLPs and text norm; FLUX.2 dev by its distilled guidance; FLUX.2 klein by its width (4B: 3072, 9B: 4096;
        base and distilled checkpoints have the same layers)."""
        found = super().variant(base_model)
        params = getattr(getattr(base_model, "diffusion_model", None), "params", None)
        if found is None or params is None:
            return found
        if getattr(params, "yak_mlp", False) and getattr(params, "txt_norm", False):
            return "ovis-image"
        if found == "flux2":
            if params.guidance_embed:
                return "flux2-dev"
            return FLUX2_KLEIN_BY_WIDTH.get(params.hidden_size, "flux2-klein")
        return found

    def tokens(self, dm: torch.nn.Module, x: torch.Tensor, context: Optional[torch.Tensor]) -> CallTokens:
        return CallTokens(image=_patches(dm, x), text=0 if context is None else int(context.shape[1]))

    def call_tokens(self, dm: torch.nn.Module, x: torch.Tensor, context: Optional[torch.Tensor],
                    extra_conds: dict) -> CallTokens:
        """Reference latents (Kontext, FLUX.2 editing) join the image tokens in every block and the final layer.
        (With the "index_timestep_zero" method the shared modulation layers also run a second, zero-timestep row:
        a few thousand MACs per block, not counted.)"""
        tokens = self.tokens(dm, x, context)
        references = extra_conds.get("ref_latents") or ()
        return CallTokens(image=tokens.image + sum(_patches(dm, r) for r in references), text=tokens.text)

    def costs(self, dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
        return flux_costs(dm, tokens, attention_matmuls)


def _patches(dm: torch.nn.Module, latent: torch.Tensor) -> int:
    """Tokens of a latent: whole patches, the last ones padded (``Flux.process_img``)."""
    p = dm.patch_size
    return ((latent.shape[-2] + p - 1) // p) * ((latent.shape[-1] + p - 1) // p)


#: FLUX.2 klein's two sizes by hidden width (black-forest-labs/FLUX.2-klein-4B and -9B: 24 and 32 heads of 128).
FLUX2_KLEIN_BY_WIDTH = {3072: "flux2-klein-4b", 4096: "flux2-klein-9b"}

ADAPTERS = (FluxAdapter(),)


def flux_layout(depth: int, depth_single: int) -> Layout:
    return FluxAdapter().layout_of_sizes(double_blocks=depth, single_blocks=depth_single)


# ------------------------------------------------------------------ tiny models and presets


def flux_block_keys(hidden: int, heads: int, depth: int, depth_single: int,
                    linear1_rows: int) -> dict[str, tuple[int, ...]]:
    """The block keys ComfyUI's detection reads from a checkpoint of the ``Flux`` class (counts, head size, widths)."""
    keys: dict[str, tuple[int, ...]] = {}
    for i in range(depth):
        keys[f"double_blocks.{i}.img_attn.norm.key_norm.scale"] = (hidden // heads,)
        keys[f"double_blocks.{i}.img_attn.qkv.weight"] = (3 * hidden, hidden)
    for i in range(depth_single):
        keys[f"single_blocks.{i}.linear1.weight"] = (linear1_rows, hidden)
    return keys




@dataclass(frozen=True)
class TinyFlux(TinyModel):
    """FLUX.1 as its checkpoints look to ComfyUI's detection, at a small width."""

    hidden: int = 64
    heads: int = 2
    depth: int = 2
    depth_single: int = 4
    context_dim: int = 48
    vec_dim: int = 32
    mlp_ratio: float = 2.0
    axes_dim: tuple[int, ...] = (8, 12, 12)
    guidance_embed: bool = True
    latent_channels = 16

    def checkpoint(self) -> dict[str, tuple[int, ...]]:
        h = self.hidden
        keys = {"img_in.weight": (h, self.latent_channels * 4), "txt_in.weight": (h, self.context_dim),
                "vector_in.in_layer.weight": (h, self.vec_dim), "final_layer.linear.weight": (self.latent_channels * 4, h)}
        if self.guidance_embed:
            keys["guidance_in.in_layer.weight"] = (h, 256)
        keys.update(flux_block_keys(h, self.heads, self.depth, self.depth_single, 3 * h + int(h * self.mlp_ratio)))
        return keys

    def overrides(self) -> dict[str, Any]:
        # ComfyUI v0.3.x fixes FLUX's width, heads and text width; later versions read them, but fix the head size.
        return {"hidden_size": self.hidden, "num_heads": self.heads, "axes_dim": list(self.axes_dim),
                "context_in_dim": self.context_dim, "mlp_ratio": self.mlp_ratio}

    def conditioning(self, seed: int, tokens: Optional[int] = None, guidance: float = 3.5) -> list:
        gen = torch.Generator().manual_seed(seed)
        return [[text_states(gen, tokens or 16, self.context_dim),
                 {"pooled_output": torch.randn(1, self.vec_dim, generator=gen), "guidance": guidance}]]


#: FLUX.1 Fill's input: the noisy latent, the masked image's latent and the 8×8 mask pixels of each latent pixel.
FILL_INPUT_CHANNELS = 16 + 16 + 64


@dataclass(frozen=True)
class TinyFluxFill(TinyFlux):
    """FLUX.1 Fill (``FluxInpaint``): 96 input channels. Without an image and mask in the conditioning ComfyUI
    passes an empty image and a mask over everything, as for a plain text-to-image run."""

    def checkpoint(self) -> dict[str, tuple[int, ...]]:
        return {**super().checkpoint(), "img_in.weight": (self.hidden, FILL_INPUT_CHANNELS * 4)}


#: FLUX.2's MLP width over its hidden width; ComfyUI's detection fixes it.
FLUX2_MLP_RATIO = 3.0


@dataclass(frozen=True)
class TinyFlux2(TinyModel):
    """FLUX.2 as its checkpoints look to ComfyUI's detection (ComfyUI v0.20 and later), at a small width: shared
    (global) modulation layers instead of per-block ones, SiLU-gated MLPs, no biases, 128-channel latents in 1×1
    patches, text padded to 512 tokens by ComfyUI. Without ``guidance_in`` it is FLUX.2 klein."""

    hidden: int = 64
    heads: int = 2
    depth: int = 2
    depth_single: int = 2
    context_dim: int = 48
    axes_dim: tuple[int, ...] = (8, 8, 8, 8)
    guidance_embed: bool = True
    latent_channels = 128
    compression = 16
    test_size = 128                      # an 8×8 latent

    requires = ("comfy.supported_models.Flux2",)

    def checkpoint(self) -> dict[str, tuple[int, ...]]:
        h = self.hidden
        keys = {"img_in.weight": (h, self.latent_channels), "txt_in.weight": (h, self.context_dim),
                "double_stream_modulation_img.lin.weight": (6 * h, h),
                "double_stream_modulation_txt.lin.weight": (6 * h, h),
                "single_stream_modulation.lin.weight": (3 * h, h),
                "final_layer.linear.weight": (self.latent_channels, h)}
        if self.guidance_embed:
            keys["guidance_in.in_layer.weight"] = (h, 256)
        keys.update(flux_block_keys(h, self.heads, self.depth, self.depth_single, 3 * h + 2 * int(h * FLUX2_MLP_RATIO)))
        return keys

    def overrides(self) -> dict[str, Any]:
        # Detection fixes FLUX.2's rotary axes (head size 128) and derives the heads from them.
        return {"num_heads": self.heads, "axes_dim": list(self.axes_dim)}

    def conditioning(self, seed: int, tokens: Optional[int] = None, guidance: float = 4.0) -> list:
        gen = torch.Generator().manual_seed(seed)
        extra = {"guidance": guidance} if self.guidance_embed else {}
        return [[text_states(gen, tokens or 16, self.context_dim), extra]]


@dataclass(frozen=True)
class TinyOvisImage(TinyModel):
    """Ovis-Image as its checkpoint looks to ComfyUI's detection (v0.20 and later): FLUX.1's layout without pooled
    text or guidance, "yak" MLPs (SiLU-gated, three projections) and an RMS norm on the text states. ComfyUI
    loads it as ``FluxSchnell``."""

    hidden: int = 64
    heads: int = 2
    depth: int = 2
    depth_single: int = 2
    context_dim: int = 48
    mlp_ratio: float = 4.0               # fixed by detection
    axes_dim: tuple[int, ...] = (8, 12, 12)
    latent_channels = 16

    requires = ("comfy.ldm.flux.layers.YakMLP",)

    def checkpoint(self) -> dict[str, tuple[int, ...]]:
        h, mlp = self.hidden, int(self.hidden * self.mlp_ratio)
        keys = {"img_in.weight": (h, self.latent_channels * 4), "txt_in.weight": (h, self.context_dim),
                "txt_norm.scale": (self.context_dim,), "final_layer.linear.weight": (self.latent_channels * 4, h)}
        keys.update(flux_block_keys(h, self.heads, self.depth, self.depth_single, 3 * h + 2 * mlp))
        for i in range(self.depth):
            keys[f"double_blocks.{i}.img_mlp.gate_proj.weight"] = (mlp, h)
        return keys

    def overrides(self) -> dict[str, Any]:
        # Detection fixes FLUX's rotary axes (head size 128) and derives the heads from them.
        return {"num_heads": self.heads, "axes_dim": list(self.axes_dim)}

    def conditioning(self, seed: int, tokens: Optional[int] = None) -> list:
        gen = torch.Generator().manual_seed(seed)
        return [[text_states(gen, tokens or 16, self.context_dim), {}]]


#: LongCat-Image's text width (Qwen2.5-VL 7B): ComfyUI's detection recognises LongCat by it.
LONGCAT_TEXT_WIDTH = 3584


@dataclass(frozen=True)
class TinyLongCatImage(TinyModel):
    """LongCat-Image as its checkpoint looks to ComfyUI's detection (v0.20 and later): FLUX.1's blocks without
    pooled text or guidance, on Qwen2.5-VL text states of the released width (detection keys on it)."""

    hidden: int = 64
    heads: int = 2
    depth: int = 2
    depth_single: int = 2
    mlp_ratio: float = 4.0               # fixed by detection
    axes_dim: tuple[int, ...] = (8, 12, 12)
    latent_channels = 16

    requires = ("comfy.supported_models.LongCatImage",)

    def checkpoint(self) -> dict[str, tuple[int, ...]]:
        h = self.hidden
        keys = {"img_in.weight": (h, self.latent_channels * 4), "txt_in.weight": (h, LONGCAT_TEXT_WIDTH),
                "final_layer.linear.weight": (self.latent_channels * 4, h)}
        keys.update(flux_block_keys(h, self.heads, self.depth, self.depth_single, 3 * h + int(h * self.mlp_ratio)))
        return keys

    def overrides(self) -> dict[str, Any]:
        return {"num_heads": self.heads, "axes_dim": list(self.axes_dim)}

    def conditioning(self, seed: int, tokens: Optional[int] = None) -> list:
        gen = torch.Generator().manual_seed(seed)
        return [[text_states(gen, tokens or 16, LONGCAT_TEXT_WIDTH), {}]]


_FLUX_TEXT = ("clip_l.safetensors", "t5xxl_fp16.safetensors")
_FLUX2_VAE = "flux2-vae.safetensors"

PRESETS = (
    # Calibration settings follow the ECAD paper: 20 steps at 256², guidance 5.
    Preset(name="flux-dev", family="flux", description="FLUX.1-dev (ECAD paper: 20 steps, 256², guidance 5)",
           files=ModelFiles("flux1-dev.safetensors", _FLUX_TEXT, "FLUX", "ae.safetensors"),
           steps=20, sampler="euler", scheduler="simple", cfg=1.0, guidance=5.0, width=256, height=256,
           population=24, generations=250, metric="image_reward"),
    Preset(name="flux-schnell", family="flux", description="FLUX.1-schnell (4 steps, 256², no guidance)",
           files=ModelFiles("flux1-schnell.safetensors", _FLUX_TEXT, "FLUX", "ae.safetensors"),
           steps=4, sampler="euler", scheduler="simple", cfg=1.0, width=256, height=256,
           population=24, generations=100, metric="image_reward"),
    # FLUX.2 templates sample with Flux2Scheduler: the time shift exp(mu)/(exp(mu) + 1/t - 1) of FLUX's model
    # sampling with mu from the step count and image size (2.20 at 1024² and 20 steps, 2.29 at 4 steps). The optimizer
    # runs ComfyUI's "simple" scheduler on the model's own sampling: the same shift with FLUX.2's mu of 2.02.
    # ComfyUI template image_flux2_text_to_image.json: FluxGuidance 4, BasicGuider, euler, 20 steps, 1024².
    Preset(name="flux2-dev", family="flux",
           description="FLUX.2 dev, fp8 mixed (ComfyUI template: 1024², 20 steps, guidance 4, no CFG)",
           files=ModelFiles("flux2_dev_fp8mixed.safetensors", ("mistral_3_small_flux2_bf16.safetensors",), "FLUX2",
                            _FLUX2_VAE),
           steps=20, sampler="euler", scheduler="simple", cfg=1.0, guidance=4.0, width=1024, height=1024,
           population=24, generations=50, metric="image_reward"),
    # ComfyUI template image_flux2_klein_text_to_image.json: distilled 4B at 4 steps, CFGGuider 1; base 4B at 20
    # steps, CFGGuider 5; euler, 1024².
    Preset(name="flux2-klein-4b", family="flux",
           description="FLUX.2 klein 4B, distilled (ComfyUI template: 1024², 4 steps, no CFG)",
           files=ModelFiles("flux-2-klein-4b.safetensors", ("qwen_3_4b.safetensors",), "FLUX2", _FLUX2_VAE),
           steps=4, sampler="euler", scheduler="simple", cfg=1.0, width=1024, height=1024,
           population=24, generations=100, metric="image_reward"),
    Preset(name="flux2-klein-base-4b", family="flux",
           description="FLUX.2 klein 4B base (ComfyUI template: 1024², 20 steps, CFG 5)",
           files=ModelFiles("flux-2-klein-base-4b.safetensors", ("qwen_3_4b.safetensors",), "FLUX2", _FLUX2_VAE),
           steps=20, sampler="euler", scheduler="simple", cfg=5.0, width=1024, height=1024,
           population=24, generations=50, metric="image_reward"),
    # ComfyUI template image_flux2_text_to_image_9b.json: base 9B fp8, CFGGuider 5, euler, 20 steps, 1024².
    Preset(name="flux2-klein-base-9b", family="flux",
           description="FLUX.2 klein 9B base, fp8 (ComfyUI template: 1024², 20 steps, CFG 5)",
           files=ModelFiles("flux-2-klein-base-9b-fp8.safetensors", ("qwen_3_8b_fp8mixed.safetensors",), "FLUX2",
                            "full_encoder_small_decoder.safetensors"),
           steps=20, sampler="euler", scheduler="simple", cfg=5.0, width=1024, height=1024,
           population=24, generations=50, metric="image_reward"),
    # ComfyUI template image_ovis_text_to_image.json: KSampler 20 steps, CFG 5, euler/simple, ModelSamplingAuraFlow 3.
    Preset(name="ovis-image", family="flux",
           description="Ovis-Image (ComfyUI template: 1024², 20 steps, CFG 5, shift 3)",
           files=ModelFiles("ovis_image_bf16.safetensors", ("ovis_2.5.safetensors",), "OVIS", "ae.safetensors"),
           steps=20, sampler="euler", scheduler="simple", cfg=5.0, width=1024, height=1024,
           population=24, generations=50, metric="image_reward", extra={"model_sampling": "AuraFlow", "shift": 3.0}),
    # ComfyUI template image_longcat_text_to_image.json: KSampler 20 steps, CFG 4, euler/simple, 1024². The template
    # also applies CFGNorm (strength 1), which the optimizer does not; its FluxGuidance is dropped by LongCat's model.
    Preset(name="longcat-image", family="flux",
           description="LongCat-Image (ComfyUI template: 1024², 20 steps, CFG 4; without the template's CFGNorm)",
           files=ModelFiles("longcat_image_bf16.safetensors", ("qwen_2.5_vl_7b_fp8_scaled.safetensors",),
                            "LONGCAT_IMAGE", "ae.safetensors"),
           steps=20, sampler="euler", scheduler="simple", cfg=4.0, width=1024, height=1024,
           population=24, generations=50, metric="image_reward"),
    tiny_preset("flux", TinyFlux(), "A small random-weight FLUX built through ComfyUI's detection; runs on a CPU in "
                "minutes", guidance=3.5, images_per_prompt=2),
)

#: Further variants the family contract covers (FLUX.2, Ovis-Image and LongCat-Image need ComfyUI v0.20 or later).
TINY_MODELS = {
    "flux-schnell": TinyFlux(guidance_embed=False),
    "flux-fill": TinyFluxFill(),
    "flux2-dev": TinyFlux2(),
    "flux2-klein": TinyFlux2(guidance_embed=False),
    "ovis-image": TinyOvisImage(),
    "longcat-image": TinyLongCatImage(),
}

# hidden 512, 4 double + 8 single blocks, 1024 image tokens (512² image)
BENCHMARK_MODELS = (
    BenchmarkModel("flux", TinyFlux(hidden=512, heads=4, depth=4, depth_single=8, context_dim=256, vec_dim=128,
                                    mlp_ratio=4.0, axes_dim=(16, 56, 56)), width=512, height=512),
    # FLUX.2: gated MLPs (linear1 9 × hidden wide against FLUX.1's 7), shared modulation, no biases, 1×1 patches
    # of a 16× latent, text padded to 512 tokens
    BenchmarkModel("flux2", TinyFlux2(hidden=512, heads=4, depth=4, depth_single=8, context_dim=256,
                                      axes_dim=(32, 32, 32, 32)), width=512, height=512),
    # Ovis-Image: yak MLPs (three projections; linear1 11 × hidden wide), an RMS norm on the text; CFG batches
    # cond and uncond
    BenchmarkModel("ovis-image", TinyOvisImage(hidden=512, heads=4, depth=4, depth_single=8, context_dim=256,
                                               axes_dim=(16, 56, 56)), width=512, height=512, cfg=5.0),
)

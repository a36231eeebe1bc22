"""Stable Diffusion 3 and 3.5 (MMDiT) in ComfyUI's ``comfy.ldm.modules.diffusionmodules.mmdit``.

Each of the ``joint_blocks`` pairs a ``context_block`` (text stream) and an ``x_block`` (image
stream) around one joint attention. Components, cached before their gates:

* ``attn``: the joint attention, both streams' projected outputs as one component (both streams'
  q/k/v, the attention over ``cat(context, x)``, both output projections);
* ``img_mlp`` (``x_block.mlp``) and ``txt_mlp`` (``context_block.mlp``);
* ``attn2``: SD3.5 Medium's second self-attention of the image stream (MMDiT-X), in some blocks only.

The blocks are not all alike, so the layout groups alike ones: ``joint_blocks`` (all but the last),
``last_joint_block`` (its context block is ``pre_only``: it only lends keys and values to the
joint attention, so its components are ``attn`` and ``img_mlp``) and, for MMDiT-X,
``mmdit_x_blocks`` (one ``attn2`` per block that has one, in block order). No bit stands for work
that does not exist.

SD3 calls its blocks through ``patches_replace["dit"]`` double-block replacements only, and has no
DIFFUSION_MODEL wrapper (the APPLY_MODEL wrapper sets the active runtime). The replacement runs
ComfyUI's ``_block_mixing`` step by step with ``DismantledBlock``'s own pieces and ``mmdit``'s own
functions, routing each component through the runtime; outside an ECAD run it calls the original.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from ..costs import CostTable, attention_matmul_macs, linear_macs
from ..runtime import CacheRuntime, active_runtime
from ..schedule import BlockGroup, Layout
from .base import CallTokens, FamilyAdapter, UnsupportedModelError

JOINT_COMPONENTS = ("attn", "img_mlp", "txt_mlp")
LAST_COMPONENTS = ("attn", "img_mlp")
MMDIT_X_COMPONENTS = ("attn2",)
TIMESTEP_FEATURES = 256       # TimestepEmbedder input width


@dataclass(frozen=True)
class SD3Dims:
    hidden: int
    mlp_hidden: int
    blocks: int
    last_pre_only: bool                  # the last block's context block has no output projection and no MLP
    mmdit_x_layers: tuple[int, ...]      # blocks with ``x_block.attn2``
    patch_features: int                  # x_embedder fan-in (latent channels × patch²)
    out_features: int                    # final layer fan-out
    context_in: int                      # context_embedder fan-in, 0 without one
    pooled_in: int                       # y_embedder fan-in, 0 without one

    @classmethod
    def of(cls, dm: torch.nn.Module) -> "SD3Dims":
        blocks = dm.joint_blocks
        conv = dm.x_embedder.proj
        context = dm.context_embedder
        y = dm.y_embedder
        return cls(hidden=dm.hidden_size, mlp_hidden=blocks[0].x_block.mlp.fc1.out_features, blocks=len(blocks),
                   last_pre_only=blocks[-1].context_block.pre_only,
                   mmdit_x_layers=tuple(i for i, b in enumerate(blocks) if b.x_block.x_block_self_attn),
                   patch_features=conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1],
                   out_features=dm.final_layer.linear.out_features,
                   context_in=getattr(context, "in_features", 0), pooled_in=y.mlp[0].in_features if y is not None else 0)

    @property
    def joint_blocks(self) -> int:
        return self.blocks - 1 if self.last_pre_only else self.blocks


def check_supported(dm: torch.nn.Module) -> None:
    """What ComfyUI's loader can build is supported; other MMDiT options would break the replacement's math."""
    cls = f"{type(dm).__module__}.{type(dm).__name__}"
    blocks = dm.joint_blocks
    if any(b.context_block.pre_only for b in blocks[:-1]):
        raise UnsupportedModelError(f"{cls}: only the last MMDiT block may have a pre-only context block")
    for b in blocks:
        for d in (b.context_block, b.x_block):
            if d.scale_mod_only or (hasattr(d, "mlp") and not hasattr(d.mlp, "fc1")):
                raise UnsupportedModelError(f"{cls}: MMDiT blocks with scale-only modulation or SwiGLU MLPs are not supported")


def sd3_layout(dims: SD3Dims) -> Layout:
    groups = [BlockGroup("joint_blocks", dims.joint_blocks, JOINT_COMPONENTS)]
    if dims.last_pre_only:
        groups.append(BlockGroup("last_joint_block", 1, LAST_COMPONENTS))
    if dims.mmdit_x_layers:
        groups.append(BlockGroup("mmdit_x_blocks", len(dims.mmdit_x_layers), MMDIT_X_COMPONENTS))
    return Layout("sd3", tuple(groups))


def sd3_costs(dims: SD3Dims, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
    h, m, img, txt = dims.hidden, dims.mlp_hidden, tokens.image, tokens.text
    both = img + txt
    joint = attention_matmul_macs(both, both, h) if attention_matmuls else 0.0
    per_group = {
        "joint_blocks": {"attn": linear_macs(both, h, 4 * h) + joint,
                         "img_mlp": 2 * linear_macs(img, h, m), "txt_mlp": 2 * linear_macs(txt, h, m)},
        # q/k/v of both streams, the image stream's output projection only
        "last_joint_block": {"attn": linear_macs(both, h, 3 * h) + linear_macs(img, h, h) + joint,
                             "img_mlp": 2 * linear_macs(img, h, m)},
        "mmdit_x_blocks": {"attn2": linear_macs(img, h, 4 * h)
                           + (attention_matmul_macs(img, img, h) if attention_matmuls else 0.0)},
    }
    modulation_rows = (dims.joint_blocks * (6 + 6) + (6 + 2 if dims.last_pre_only else 0)
                       + 3 * len(dims.mmdit_x_layers))          # MMDiT-X x blocks have 9 chunks, not 6
    constant = (linear_macs(img, dims.patch_features, h) + TIMESTEP_FEATURES * h + h * h
                + (dims.pooled_in * h + h * h if dims.pooled_in else 0)
                + linear_macs(txt, dims.context_in, h) + modulation_rows * h * h
                + h * 2 * h + linear_macs(img, h, dims.out_features))
    return CostTable.from_components(sd3_layout(dims), per_group, constant)


# ------------------------------------------------------------------ block computation

@dataclass(frozen=True)
class JointBits:
    attn: int
    img_mlp: int
    txt_mlp: Optional[int]      # None in the last block (pre-only context block)
    attn2: Optional[int]        # MMDiT-X blocks only


def _modulations(block, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``adaLN_modulation(c)`` split as ``DismantledBlock`` splits it (shift/scale/gate of each path)."""
    chunks = 9 if block.x_block_self_attn else (2 if block.pre_only else 6)
    return block.adaLN_modulation(c).chunk(chunks, dim=1)


def joint_block_forward(rt: CacheRuntime, bits: JointBits, block, context: torch.Tensor, x: torch.Tensor,
                        c: torch.Tensor, transformer_options: dict) -> tuple[Optional[torch.Tensor], torch.Tensor]:
    """``mmdit._block_mixing`` with its components routed through the runtime; returns (context, x)."""
    from comfy.ldm.modules.diffusionmodules import mmdit
    cb, xb = block.context_block, block.x_block
    c_mod, x_mod = _modulations(cb, c), _modulations(xb, c)

    def joint_attention():
        context_qkv = cb.attn.pre_attention(mmdit.modulate(cb.norm1(context), c_mod[0], c_mod[1]))
        x_qkv = xb.attn.pre_attention(mmdit.modulate(xb.norm1(x), x_mod[0], x_mod[1]))
        qkv = tuple(torch.cat((context_qkv[t], x_qkv[t]), dim=1) for t in range(3))
        attn = mmdit.optimized_attention(qkv[0], qkv[1], qkv[2], heads=xb.attn.num_heads,
                                         transformer_options=transformer_options)
        n = context_qkv[0].shape[1]
        x_out = xb.attn.post_attention(attn[:, n:])
        return (x_out,) if cb.pre_only else (x_out, cb.attn.post_attention(attn[:, :n]))

    attn_out = rt.component(bits.attn, joint_attention)

    if cb.pre_only:
        context = None
    else:
        context = context + c_mod[2].unsqueeze(1) * attn_out[1]
        txt_mlp_out = rt.component(bits.txt_mlp, lambda: cb.mlp(mmdit.modulate(cb.norm2(context), c_mod[3], c_mod[4])))
        context = context + c_mod[5].unsqueeze(1) * txt_mlp_out

    if xb.x_block_self_attn:
        def second_attention():
            qkv2 = xb.attn2.pre_attention(mmdit.modulate(xb.norm1(x), x_mod[6], x_mod[7]))
            attn2 = mmdit.optimized_attention(qkv2[0], qkv2[1], qkv2[2], heads=xb.attn2.num_heads,
                                              transformer_options=transformer_options)
            return xb.attn2.post_attention(attn2)

        attn2_out = rt.component(bits.attn2, second_attention)
        x = mmdit.gate_cat(x, x_mod[2], x_mod[8], attn_out[0], attn2_out)
    else:
        x = x + x_mod[2].unsqueeze(1) * attn_out[0]
    img_mlp_out = rt.component(bits.img_mlp, lambda: xb.mlp(mmdit.modulate(xb.norm2(x), x_mod[3], x_mod[4])))
    x = x + x_mod[5].unsqueeze(1) * img_mlp_out
    return context, x


@dataclass(frozen=True)
class JointBlockReplacement:
    """``patches_replace["dit"][("double_block", index)]``; small, since model_options are deep-copied."""

    index: int
    bits: JointBits

    @torch.compiler.disable  # caching decisions are Python control flow: keep torch.compile out of them
    def __call__(self, args: dict, extra: dict) -> dict:
        rt = active_runtime()
        if rt is None:
            return extra["original_block"](args)
        context, x = joint_block_forward(rt, self.bits, rt.model.joint_blocks[self.index], args["txt"], args["img"],
                                         args["vec"], args.get("transformer_options", {}))
        return {"txt": context, "img": x}


def block_bits(layout: Layout, dims: SD3Dims) -> list[JointBits]:
    """The bits of each joint block's components."""
    offsets = layout.offsets()
    mmdit_x = {block: offsets["mmdit_x_blocks"] + j for j, block in enumerate(dims.mmdit_x_layers)}
    bits = [JointBits(offsets["joint_blocks"] + 3 * i, offsets["joint_blocks"] + 3 * i + 1,
                      offsets["joint_blocks"] + 3 * i + 2, mmdit_x.get(i)) for i in range(dims.joint_blocks)]
    if dims.last_pre_only:
        last = offsets["last_joint_block"]
        bits.append(JointBits(last, last + 1, None, mmdit_x.get(dims.blocks - 1)))
    return bits


class SD3Adapter(FamilyAdapter):
    family = "sd3"
    model_classes = (("comfy.ldm.modules.diffusionmodules.mmdit", "OpenAISignatureMMDITWrapper"),)
    variants = {"SD3": "sd3"}     # ComfyUI has one config for SD3 and SD3.5; ``variant`` tells them apart

    def variant(self, base_model: Any) -> Optional[str]:
        if super().variant(base_model) is None:
            return None
        dims = SD3Dims.of(base_model.diffusion_model)
        qk_norm = not isinstance(base_model.diffusion_model.joint_blocks[0].x_block.attn.ln_q, torch.nn.Identity)
        if dims.mmdit_x_layers:
            return "sd3.5-medium"
        return "sd3.5-large" if qk_norm else "sd3-medium"

    def layout(self, dm: torch.nn.Module) -> Layout:
        check_supported(dm)
        return sd3_layout(SD3Dims.of(dm))

    def install(self, patcher: Any, layout: Layout) -> None:
        dims = SD3Dims.of(patcher.get_model_object("diffusion_model"))
        for i, bits in enumerate(block_bits(layout, dims)):
            patcher.set_model_patch_replace(JointBlockReplacement(i, bits), "dit", "double_block", i)

    def tokens(self, dm: torch.nn.Module, x: torch.Tensor, context: Optional[torch.Tensor]) -> CallTokens:
        p = dm.x_embedder.patch_size
        return CallTokens(image=int(np.prod([(n + k - 1) // k for n, k in zip(x.shape[-2:], p)])),
                          text=(0 if context is None else int(context.shape[1])) + dm.register_length)

    def costs(self, dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
        return sd3_costs(SD3Dims.of(dm), tokens, attention_matmuls)


ADAPTERS = (SD3Adapter(),)

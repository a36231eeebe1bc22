"""Stable Diffusion 3 and 3.5 (MMDiT) in ComfyUI's ``comfy.ldm.modules.diffusionmodules.mmdit``.

Each of the ``joint_blocks`` pairs a ``context_block`` (text stream) and an ``x_block`` (image
stream) around one joint attention. Components, cached before their gates:

* ``attn``: the joint attention, both streams' projected outputs as one component (both streams'
  q/k/v, the attention over ``cat(context, x)``, both output projections);
* ``img_mlp`` (``x_block.mlp``) and ``txt_mlp`` (``context_block.mlp``): hooked submodules;
* ``attn2``: SD3.5 Medium's second self-attention of the image stream (MMDiT-X), in some blocks only.

The blocks are not all alike, so the layout groups alike ones of the one ``joint_blocks`` list:
``joint_blocks`` (all but the last), ``last_joint_block`` (its context block is ``pre_only``: it
only lends keys and values to the joint attention, so its components are ``attn`` and ``img_mlp``)
and, for MMDiT-X, ``mmdit_x_blocks`` (one ``attn2`` per block that has one, in block order). No bit
stands for work that does not exist.

The joint attention and ``attn2`` are computed inline (``mmdit._block_mixing`` calls the
``DismantledBlock``'s ``pre_attention``/``post_attention`` pieces), so a mirrored copy of
``JointBlock.forward`` routes all of a block's components, ``attn2`` included (see ``mirror``); a
block's mirror thus routes bits of two groups. The copy follows ComfyUI's modulation and MLPs as its
loader builds them; MMDiT options the loader never sets (scale-only modulation, SwiGLU MLPs, pre-only
blocks before the last) are refused by name.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..costs import CostTable, attention_matmul_macs, linear_macs, module_linear_macs
from ..registry import BenchmarkModel, ModelFiles, Preset, tiny_preset
from ..schedule import Layout
from ..tiny import TinyModel, text_states
from .base import CallTokens, Component, FamilyAdapter, Group, MirroredBlock, UnsupportedModelError
from .mirror import Mirror

# ------------------------------------------------------------------ mirrored block forward


def joint_block_forward(route, block, flags, context, x, c=None, use_checkpoint=True, transformer_options={}):
    """``JointBlock.forward`` (``block_mixing`` -> ``_block_mixing`` with the ``DismantledBlock`` pieces) with the
    joint attention, both MLPs and MMDiT-X's ``attn2`` routed; returns ``(context, x)``. ``use_checkpoint`` only
    matters for training (``torch.utils.checkpoint`` runs the same function)."""
    from comfy.ldm.modules.diffusionmodules import mmdit
    cb, xb = block.context_block, block.x_block
    # shift, scale, gate of attention and MLP (pre-only: shift and scale only; MMDiT-X: plus shift, scale, gate of attn2)
    c_mod = cb.adaLN_modulation(c).chunk(2 if cb.pre_only else 6, dim=1)
    x_mod = xb.adaLN_modulation(c).chunk(9 if xb.x_block_self_attn else 6, dim=1)
    x_norm: list[torch.Tensor] = []   # norm1(x), shared by attn and attn2, computed once if either runs

    def image_norm() -> torch.Tensor:
        if not x_norm:
            x_norm.append(xb.norm1(x))
        return x_norm[0]

    def joint_attention():
        context_qkv = cb.attn.pre_attention(mmdit.modulate(cb.norm1(context), c_mod[0], c_mod[1]))
        x_qkv = xb.attn.pre_attention(mmdit.modulate(image_norm(), x_mod[0], x_mod[1]))
        qkv = tuple(torch.cat((context_qkv[t], x_qkv[t]), dim=1) for t in range(3))
        attn = mmdit.optimized_attention(qkv[0], qkv[1], qkv[2], heads=xb.attn.num_heads,
                                         transformer_options=transformer_options)
        n = context_qkv[0].shape[1]
        x_out = xb.attn.post_attention(attn[:, n:])
        return (x_out,) if cb.pre_only else (x_out, cb.attn.post_attention(attn[:, :n]))

    attn_out = route.component("attn", joint_attention)

    if cb.pre_only:
        context = None
    else:
        context = context + c_mod[2].unsqueeze(1) * attn_out[1]
        txt_mlp = route.component("txt_mlp", lambda: cb.mlp(mmdit.modulate(cb.norm2(context), c_mod[3], c_mod[4])))
        context = context + c_mod[5].unsqueeze(1) * txt_mlp

    if xb.x_block_self_attn:
        def second_attention():
            qkv2 = xb.attn2.pre_attention(mmdit.modulate(image_norm(), x_mod[6], x_mod[7]))
            attn2 = mmdit.optimized_attention(qkv2[0], qkv2[1], qkv2[2], heads=xb.attn2.num_heads,
                                              transformer_options=transformer_options)
            return xb.attn2.post_attention(attn2)

        x = mmdit.gate_cat(x, x_mod[2], x_mod[8], attn_out[0], route.component("attn2", second_attention))
    else:
        x = x + x_mod[2].unsqueeze(1) * attn_out[0]
    img_mlp = route.component("img_mlp", lambda: xb.mlp(mmdit.modulate(xb.norm2(x), x_mod[3], x_mod[4])))
    x = x + x_mod[5].unsqueeze(1) * img_mlp
    return context, x


def _joint_sources(block_class: type) -> tuple:
    """The upstream functions whose logic the copy repeats (it calls ``SelfAttention``'s, ``modulate`` and
    ``gate_cat`` as they are)."""
    module = sys.modules[block_class.__module__]
    dismantled = module.DismantledBlock
    return (block_class.forward, module.block_mixing, module._block_mixing, dismantled.pre_attention,
            dismantled.post_attention, dismantled.pre_attention_x, dismantled.post_attention_x)


def _joint_features(block, args, kwargs) -> tuple:
    """What selects code paths: the block's kind (pre-only text, MMDiT-X) and the dtype."""
    x = args[1] if len(args) > 1 else kwargs.get("x")
    return block.context_block.pre_only, block.x_block.x_block_self_attn, getattr(x, "dtype", None)


#: Fingerprints of the upstream sources this copy was verified against (tests check both trees).
JOINT_MIRROR = Mirror(
    "ECAD's copy of SD3's JointBlock.forward", ("comfy.ldm.modules.diffusionmodules.mmdit.JointBlock",),
    joint_block_forward, _joint_sources,
    known={"7e5985771d8ce33c": "ComfyUI v0.3.64 and v0.20.1"}, features=_joint_features)


# ------------------------------------------------------------------ groups


def _last_is_pre_only(blocks: torch.nn.ModuleList) -> bool:
    return len(blocks) > 0 and blocks[-1].context_block.pre_only


def _full_blocks(blocks: torch.nn.ModuleList, dm: torch.nn.Module) -> Sequence[int]:
    return range(len(blocks) - 1 if _last_is_pre_only(blocks) else len(blocks))


def _pre_only_last(blocks: torch.nn.ModuleList, dm: torch.nn.Module) -> Sequence[int]:
    return [len(blocks) - 1] if _last_is_pre_only(blocks) else []


def _mmdit_x_blocks(blocks: torch.nn.ModuleList, dm: torch.nn.Module) -> Sequence[int]:
    return [i for i, block in enumerate(blocks) if block.x_block.x_block_self_attn]


JOINT_BLOCKS = Group("joint_blocks", "joint_blocks", (
    Component("attn"),   # the joint attention is inline in _block_mixing: only the mirror can skip it
    Component("img_mlp", module="x_block.mlp"),
    Component("txt_mlp", module="context_block.mlp")), mirrors=(JOINT_MIRROR,), indices=_full_blocks)
LAST_JOINT_BLOCK = Group("last_joint_block", "joint_blocks", (
    Component("attn"), Component("img_mlp", module="x_block.mlp")), mirrors=(JOINT_MIRROR,), indices=_pre_only_last)
MMDIT_X_BLOCKS = Group("mmdit_x_blocks", "joint_blocks", (Component("attn2"),), mirrors=(JOINT_MIRROR,),
                       indices=_mmdit_x_blocks)


# ------------------------------------------------------------------ costs


def _first(group: Group, dm: torch.nn.Module) -> Optional[torch.nn.Module]:
    paths = group.block_paths(dm)
    return dm.get_submodule(paths[0]) if paths else None


def sd3_block_macs(dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> dict[str, dict[str, float]]:
    """MACs of each component of one block of each group, from the blocks' own layers."""
    img, txt = tokens.image, tokens.text
    both = img + txt
    h = dm.hidden_size
    joint = attention_matmul_macs(both, both, h) if attention_matmuls else 0.0
    out: dict[str, dict[str, float]] = {}
    for group in (JOINT_BLOCKS, LAST_JOINT_BLOCK):
        block = _first(group, dm)
        if block is None:
            continue
        cb, xb = block.context_block, block.x_block
        # q/k/v of both streams; the output projections of those that have one (not a pre-only context block)
        out[group.name] = {"attn": module_linear_macs(cb.attn, txt) + module_linear_macs(xb.attn, img) + joint,
                           "img_mlp": module_linear_macs(xb.mlp, img)}
        if not cb.pre_only:
            out[group.name]["txt_mlp"] = module_linear_macs(cb.mlp, txt)
    block = _first(MMDIT_X_BLOCKS, dm)
    if block is not None:
        out[MMDIT_X_BLOCKS.name] = {"attn2": module_linear_macs(block.x_block.attn2, img)
                                    + (attention_matmul_macs(img, img, h) if attention_matmuls else 0.0)}
    return out


def sd3_costs(dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
    img, txt = tokens.image, tokens.text
    prompt = txt - dm.register_length            # the text encoder's tokens (register tokens are prepended later)
    conv = dm.x_embedder.proj
    constant = (linear_macs(img, conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1], conv.out_channels)
                + module_linear_macs(dm.t_embedder, 1)
                + (module_linear_macs(dm.y_embedder, 1) if dm.y_embedder is not None else 0.0)
                + module_linear_macs(dm.context_embedder, prompt)
                + sum(module_linear_macs(d.adaLN_modulation, 1) for b in dm.joint_blocks for d in (b.context_block, b.x_block))
                + module_linear_macs(dm.final_layer.adaLN_modulation, 1) + module_linear_macs(dm.final_layer.linear, img))
    if dm.context_processor is not None:
        processor = dm.context_processor
        constant += module_linear_macs(processor, prompt)
        if attention_matmuls:
            constant += len(processor.layers) * attention_matmul_macs(prompt, prompt, processor.layers[0].attn.qkv.in_features)
    return CostTable.from_components(SD3Adapter().layout(dm), sd3_block_macs(dm, tokens, attention_matmuls), constant)


# ------------------------------------------------------------------ adapter


class SD3Adapter(FamilyAdapter):
    family = "sd3"
    model_classes = (("comfy.ldm.modules.diffusionmodules.mmdit", "OpenAISignatureMMDITWrapper"),)
    variants = {"SD3": "sd3"}     # ComfyUI has one config for SD3 and SD3.5; ``variant`` tells them apart
    groups = (JOINT_BLOCKS, LAST_JOINT_BLOCK, MMDIT_X_BLOCKS)

    def variant(self, base_model: Any) -> Optional[str]:
        if super().variant(base_model) is None:
            return None
        dm = base_model.diffusion_model
        if _mmdit_x_blocks(dm.joint_blocks, dm):
            return "sd3.5-medium"
        qk_norm = not isinstance(dm.joint_blocks[0].x_block.attn.ln_q, torch.nn.Identity)
        return "sd3.5-large" if qk_norm else "sd3-medium"

    def check_supported(self, dm: torch.nn.Module) -> None:
        """What ComfyUI's loader builds is supported; other MMDiT options would break the copied block forward."""
        cls = f"{type(dm).__module__}.{type(dm).__name__}"
        blocks = dm.joint_blocks
        if any(b.context_block.pre_only for b in blocks[:-1]):
            raise UnsupportedModelError(f"{cls}: only the last MMDiT block may have a pre-only context block")
        for b in blocks:
            for d in (b.context_block, b.x_block):
                if d.scale_mod_only or (hasattr(d, "mlp") and not hasattr(d.mlp, "fc1")):
                    raise UnsupportedModelError(f"{cls}: MMDiT blocks with scale-only modulation or SwiGLU MLPs are not "
                                                "supported")

    def mirrored_blocks(self, dm: torch.nn.Module, layout: Layout) -> list[MirroredBlock]:
        """One mirrored forward per joint block, routing the bits of every group the block is in (an MMDiT-X block's
        ``attn2`` is in ``mmdit_x_blocks``, its other components in ``joint_blocks`` or ``last_joint_block``)."""
        bits: dict[str, dict[str, int]] = {}
        forced: dict[str, list[int]] = {}
        for group in layout.groups:
            spec = self.group_spec(group.name)
            for i, path in enumerate(spec.block_paths(dm)):
                for component in spec.components:
                    bit = layout.bit(group.name, i, component.name)
                    bits.setdefault(path, {})[component.name] = bit
                    if component.module is None:
                        forced.setdefault(path, []).append(bit)
        return [MirroredBlock(path, JOINT_BLOCKS.mirror_for(dm.get_submodule(path)), block_bits, tuple(forced.get(path, ())))
                for path, block_bits in sorted(bits.items(), key=lambda item: int(item[0].split(".")[1]))]

    def tokens(self, dm: torch.nn.Module, x: torch.Tensor, context: Optional[torch.Tensor]) -> CallTokens:
        p = dm.x_embedder.patch_size
        return CallTokens(image=int(np.prod([(n + k - 1) // k for n, k in zip(x.shape[-2:], p)])),
                          text=(0 if context is None else int(context.shape[1])) + dm.register_length)

    def costs(self, dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
        return sd3_costs(dm, tokens, attention_matmuls)


ADAPTERS = (SD3Adapter(),)


# ------------------------------------------------------------------ tiny models, presets, benchmark model

HEAD_DIM = 64           # ComfyUI's MMDiT: hidden = 64 · depth, heads = depth


@dataclass(frozen=True)
class TinySD3(TinyModel):
    """SD3 / SD3.5 as their checkpoints look to ComfyUI's detection, which reads everything from the weights: the
    width from the patch embedding (hidden = 64 · depth, heads = depth, blocks = depth), qk-norm (SD3.5) and the
    MMDiT-X blocks (SD3.5 Medium). The last block's text stream is pre-only, as in every released model."""

    depth: int = 2
    context_dim: int = 48                 # CLIP-L/G + T5 features in the real model (4096)
    pooled_dim: int = 32                  # CLIP-L + CLIP-G pooled outputs in the real model (2048)
    pos_embed_max_size: int = 16          # patches per side of the learned position table (192 in SD3)
    qk_norm: bool = False                 # SD3.5: RMSNorm on queries and keys
    mmdit_x_layers: tuple[int, ...] = ()  # SD3.5 Medium: blocks with a second image self-attention
    latent_channels = 16

    @property
    def hidden(self) -> int:
        return HEAD_DIM * self.depth

    def checkpoint(self) -> dict[str, tuple[int, ...]]:
        h, c = self.hidden, self.latent_channels
        keys = {"x_embedder.proj.weight": (h, c, 2, 2), "final_layer.linear.weight": (2 * 2 * c, h),
                "y_embedder.mlp.0.weight": (h, self.pooled_dim), "context_embedder.weight": (h, self.context_dim),
                "pos_embed": (1, self.pos_embed_max_size ** 2, h)}
        for i in range(self.depth):
            keys[f"joint_blocks.{i}.context_block.attn.qkv.weight"] = (3 * h, h)
        if self.qk_norm:
            keys["joint_blocks.0.context_block.attn.ln_q.weight"] = (HEAD_DIM,)
        for i in self.mmdit_x_layers:
            keys[f"joint_blocks.{i}.x_block.attn2.qkv.weight"] = (3 * h, h)
        return keys

    def conditioning(self, seed: int, tokens: Optional[int] = None) -> list:
        gen = torch.Generator().manual_seed(seed)
        return [[text_states(gen, tokens or 16, self.context_dim),
                 {"pooled_output": torch.randn(1, self.pooled_dim, generator=gen)}]]


_SD3_TEXT = ("clip_g.safetensors", "clip_l.safetensors", "t5xxl_fp16.safetensors")
# The stabilityai repositories ship the VAE as vae/diffusion_pytorch_model.safetensors; ComfyUI loads it under any name.
_SD3_VAE = "sd3_vae.safetensors"

PRESETS = (
    # Model cards: SD3.5 Large 28 steps CFG 3.5, SD3.5 Medium 40 steps CFG 4.5, SD3 Medium 28 steps CFG 7; 1024².
    Preset(name="sd3.5-large", family="sd3", description="SD3.5 Large (model card: 1024², 28 steps, CFG 3.5)",
           files=ModelFiles("sd3.5_large.safetensors", _SD3_TEXT, "SD3", _SD3_VAE),
           steps=28, sampler="euler", scheduler="sgm_uniform", cfg=3.5, width=1024, height=1024,
           population=24, generations=50, metric="image_reward"),
    Preset(name="sd3.5-medium", family="sd3", description="SD3.5 Medium (model card: 1024², 40 steps, CFG 4.5)",
           files=ModelFiles("sd3.5_medium.safetensors", _SD3_TEXT, "SD3", _SD3_VAE),
           steps=40, sampler="euler", scheduler="sgm_uniform", cfg=4.5, width=1024, height=1024,
           population=24, generations=50, metric="image_reward"),
    Preset(name="sd3-medium", family="sd3", description="SD3 Medium (model card: 1024², 28 steps, CFG 7)",
           files=ModelFiles("sd3_medium.safetensors", _SD3_TEXT, "SD3", _SD3_VAE),
           steps=28, sampler="euler", scheduler="sgm_uniform", cfg=7.0, width=1024, height=1024,
           population=24, generations=50, metric="image_reward"),
    # SD3.5-Medium-like: blocks 0 (joint, MMDiT-X), 1 (joint) and 2 (pre-only last)
    tiny_preset("sd3", TinySD3(depth=3, qk_norm=True, mmdit_x_layers=(0,)),
                "A small random-weight SD3.5-Medium-like MMDiT built through ComfyUI's detection; runs on a CPU",
                scheduler="sgm_uniform", cfg=4.5),
)

# SD3-Medium-like: no qk-norm, no MMDiT-X; one joint block and the pre-only last block
TINY_MODELS = {"sd3-medium": TinySD3(depth=2)}

# hidden 512 (8 heads of 64), 8 blocks, 1024 image tokens (512² image); CFG batches cond and uncond
BENCHMARK_MODELS = (
    BenchmarkModel("sd3", TinySD3(depth=8, context_dim=256, pooled_dim=128, pos_embed_max_size=32),
                   width=512, height=512, cfg=4.5),
)

"""Chroma in ComfyUI's ``comfy.ldm.chroma``, and Chroma Radiance (``comfy.ldm.chroma_radiance``, the same
blocks on pixel patches with a NeRF head instead of a VAE latent).

Chroma's blocks are FLUX's without a per-block ``Modulation``: one "distilled guidance"
approximator computes every block's shift/scale/gate up front, and ``forward_orig`` hands each block
its slice as ``vec``. The components are FLUX's (double: joint ``attn``, ``img_mlp``, ``txt_mlp``;
single: ``attn``, ``mlp_in``, ``out_proj``) and the block computations are FLUX's
(``flux.double_block_forward`` / ``single_block_forward``) with Chroma's ``BlockMath``: the
modulation is taken from ``vec`` and applied with ``addcmul`` as Chroma's blocks do. Chroma's
blocks add their residuals in place (``addcmul_``); here they are added out of place, so no cached
output is ever written into.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..costs import CostTable, linear_macs
from ..schedule import Layout
from .base import CallTokens, FamilyAdapter
from .flux import FLUX_INTERNAL, BlockMath, flux_block_macs, flux_layout, install_flux_replacements

#: Rows of the approximator's input, hard-coded in ``Chroma.forward_orig`` (enough for 19 + 38 blocks).
MODULATION_INDEX_LENGTH = 344


def _chroma_double_mods(block, vec):
    return vec  # ((img_mod1, img_mod2), (txt_mod1, txt_mod2)), sliced by Chroma.get_modulations


def _chroma_single_mod(block, vec):
    return vec


def _chroma_modulate(x: torch.Tensor, mod, modulation_dims) -> torch.Tensor:
    return torch.addcmul(mod.shift, 1 + mod.scale, x)


def _chroma_add_gated(x: torch.Tensor, value: torch.Tensor, gate: torch.Tensor, modulation_dims) -> torch.Tensor:
    return torch.addcmul(x, gate, value)  # Chroma's ``x.addcmul_(gate, value)``, out of place


CHROMA_MATH = BlockMath(_chroma_double_mods, _chroma_single_mod, _chroma_modulate, _chroma_add_gated)


@dataclass(frozen=True)
class ChromaDims:
    hidden: int
    mlp_hidden: int
    depth: int
    depth_single: int
    context_in: int
    approximator_in: int
    approximator_hidden: int
    approximator_out: int
    approximator_layers: int

    @classmethod
    def of(cls, dm: torch.nn.Module) -> "ChromaDims":
        p = dm.params
        return cls(hidden=p.hidden_size, mlp_hidden=int(p.hidden_size * p.mlp_ratio), depth=p.depth,
                   depth_single=p.depth_single_blocks, context_in=p.context_in_dim, approximator_in=p.in_dim,
                   approximator_hidden=p.hidden_dim, approximator_out=p.out_dim, approximator_layers=p.n_layers)


def chroma_layout(depth: int, depth_single: int) -> Layout:
    return flux_layout(depth, depth_single, family="chroma")


def chroma_costs(dims: ChromaDims, tokens: CallTokens, image_io_macs: float, attention_matmuls: bool = False) -> CostTable:
    """``image_io_macs``: what turns the image into tokens and tokens back into the output, per batch row."""
    a = dims.approximator_hidden
    approximator = MODULATION_INDEX_LENGTH * (dims.approximator_in * a + dims.approximator_layers * 2 * a * a
                                              + a * dims.approximator_out)
    constant = linear_macs(tokens.text, dims.context_in, dims.hidden) + approximator + image_io_macs
    return CostTable.from_components(chroma_layout(dims.depth, dims.depth_single),
                                     flux_block_macs(dims.hidden, dims.mlp_hidden, tokens, attention_matmuls), constant)


def latent_image_io_macs(dm: torch.nn.Module, image_tokens: int) -> float:
    """Chroma: a linear patch embedding in, a final linear layer out."""
    h = dm.params.hidden_size
    return linear_macs(image_tokens, dm.img_in.in_features, h) + linear_macs(image_tokens, h, dm.final_layer.linear.out_features)


def pixel_image_io_macs(dm: torch.nn.Module, image_tokens: int) -> float:
    """Chroma Radiance: a patchifying convolution in, and out a NeRF head that runs per pixel, its MLP
    weights generated per patch from the patch's token."""
    p = dm.params
    pixels = p.patch_size ** 2
    nerf, inner = p.nerf_hidden_size, p.nerf_hidden_size * p.nerf_mlp_ratio
    patch_in = p.in_channels * pixels * p.hidden_size
    embedder = pixels * (p.in_channels + p.nerf_max_freqs ** 2) * nerf
    nerf_block = p.hidden_size * 3 * nerf * inner + pixels * 3 * nerf * inner   # weight generator, then the GLU MLP
    head = pixels * nerf * p.in_channels * (9 if p.nerf_final_head_type == "conv" else 1)
    return image_tokens * (patch_in + embedder + p.nerf_depth * nerf_block + head)


class ChromaAdapter(FamilyAdapter):
    family = "chroma"
    model_classes = (("comfy.ldm.chroma.model", "Chroma"), ("comfy.ldm.chroma_radiance.model", "ChromaRadiance"))
    variants = {"Chroma": "chroma", "ChromaRadiance": "chroma-radiance"}
    internal = FLUX_INTERNAL

    def layout(self, dm: torch.nn.Module) -> Layout:
        return chroma_layout(len(dm.double_blocks), len(dm.single_blocks))

    def install(self, patcher: Any, layout: Layout) -> None:
        install_flux_replacements(patcher, layout, block_math=CHROMA_MATH)

    def tokens(self, dm: torch.nn.Module, x: torch.Tensor, context: Optional[torch.Tensor]) -> CallTokens:
        p = dm.patch_size  # 2 on latents (Chroma), 16 on pixels (Radiance); both pad to whole patches
        h, w = x.shape[-2], x.shape[-1]
        return CallTokens(image=((h + p - 1) // p) * ((w + p - 1) // p),
                          text=0 if context is None else int(context.shape[1]))

    def costs(self, dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
        io = pixel_image_io_macs if hasattr(dm, "nerf_blocks") else latent_image_io_macs
        return chroma_costs(ChromaDims.of(dm), tokens, io(dm, tokens.image), attention_matmuls)


ADAPTERS = (ChromaAdapter(),)

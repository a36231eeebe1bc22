"""OmniGen2 in ComfyUI's ``comfy.ldm.omnigen`` (``OmniGen2Transformer2DModel``).

A Lumina-style DiT: a context refiner (text only, unmodulated), a noise refiner (image only), a
reference-image refiner (reference latents only, for editing) and the main ``layers`` over text,
reference and image tokens. Every ``OmniGen2TransformerBlock`` has two real submodules, the
components: ``attn`` (self-attention, grouped-query) and ``feed_forward`` (SwiGLU). Their
``forward`` is hooked through ModelPatcher object patches; the block normalizes and gates the raw
outputs out of place, so cached outputs are never written into.

The groups are the context refiner, the noise refiner and the layers. The reference-image refiner
runs only when a prompt carries reference latents (image editing), so it is no group: its blocks
compute at every call. The context refiner's output depends on the prompt alone (no timestep), so
reusing it is exact. Reference latents add tokens to the layers that the call's latent does not
show; the cost model takes them from the call (``OmniGen2Adapter.call_tokens``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..costs import CostTable, attention_matmul_macs, module_linear_macs
from ..registry import BenchmarkModel, ModelFiles, Preset, tiny_preset
from ..tiny import TinyModel, text_states
from .base import CallTokens, Component, FamilyAdapter, Group

COMPONENTS = (Component("attn", module="attn"), Component("feed_forward", module="feed_forward"))
CONTEXT_REFINER = Group("context_refiner", "context_refiner", COMPONENTS)
NOISE_REFINER = Group("noise_refiner", "noise_refiner", COMPONENTS)
LAYERS = Group("layers", "layers", COMPONENTS)


@dataclass(frozen=True)
class OmniGen2Tokens(CallTokens):
    """``reference``: the reference images' tokens (image editing), which the layers read between text and image."""

    reference: int = 0


def _block_macs(block: torch.nn.Module, tokens: int, attention_matmuls: bool) -> dict[str, float]:
    attn = block.attn
    return {"attn": module_linear_macs(attn, tokens)
                    + (attention_matmul_macs(tokens, tokens, attn.heads * attn.dim_head) if attention_matmuls else 0.0),
            "feed_forward": module_linear_macs(block.feed_forward, tokens)}


def _modulation_macs(blocks: torch.nn.ModuleList) -> float:
    return sum(module_linear_macs(b.norm1.linear, 1) for b in blocks if b.modulation)


def omnigen2_costs(dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
    img, txt, ref = tokens.image, tokens.text, getattr(tokens, "reference", 0)
    every = txt + ref + img
    per_group = {"context_refiner": _block_macs(dm.context_refiner[0], txt, attention_matmuls),
                 "noise_refiner": _block_macs(dm.noise_refiner[0], img, attention_matmuls),
                 "layers": _block_macs(dm.layers[0], every, attention_matmuls)}
    references = 0.0
    if ref:   # editing: the reference latents' embedding and refiner, computed at every call
        block = _block_macs(dm.ref_image_refiner[0], ref, attention_matmuls)
        references = (module_linear_macs(dm.ref_image_patch_embedder, ref) + _modulation_macs(dm.ref_image_refiner)
                      + len(dm.ref_image_refiner) * sum(block.values()))
    embed = dm.time_caption_embed
    constant = (module_linear_macs(embed.timestep_embedder, 1) + module_linear_macs(embed.caption_embedder, txt)
                + module_linear_macs(dm.x_embedder, img) + references
                + _modulation_macs(dm.noise_refiner) + _modulation_macs(dm.layers)
                # the output norm's modulation runs once; its projection on every token (text included)
                + module_linear_macs(dm.norm_out.linear_1, 1) + module_linear_macs(dm.norm_out.linear_2, every))
    return CostTable.from_components(OmniGen2Adapter().layout(dm), per_group, constant)


class OmniGen2Adapter(FamilyAdapter):
    family = "omnigen2"
    model_classes = (("comfy.ldm.omnigen.omnigen2", "OmniGen2Transformer2DModel"),)
    variants = {"Omnigen2": "omnigen2"}
    groups = (CONTEXT_REFINER, NOISE_REFINER, LAYERS)

    def tokens(self, dm: torch.nn.Module, x: torch.Tensor, context: Optional[torch.Tensor]) -> OmniGen2Tokens:
        return OmniGen2Tokens(image=_patches(dm, x), text=0 if context is None else int(context.shape[1]))

    def call_tokens(self, dm: torch.nn.Module, x: torch.Tensor, context: Optional[torch.Tensor],
                    extra_conds: dict) -> OmniGen2Tokens:
        found = self.tokens(dm, x, context)
        references = extra_conds.get("ref_latents") or ()
        return OmniGen2Tokens(found.image, found.text, reference=sum(_patches(dm, r) for r in references))

    def costs(self, dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
        return omnigen2_costs(dm, tokens, attention_matmuls)


def _patches(dm: torch.nn.Module, latent: torch.Tensor) -> int:
    """Tokens of a latent: whole patches (ComfyUI pads the latent, and each reference latent, to them)."""
    p = dm.patch_size
    return math.ceil(latent.shape[-2] / p) * math.ceil(latent.shape[-1] / p)


ADAPTERS = (OmniGen2Adapter(),)


@dataclass(frozen=True)
class TinyOmniGen2(TinyModel):
    """OmniGen2 as its checkpoints look to ComfyUI's detection, at a small width.

    Detection fixes every size at the released model's (width 2520, 21 heads over 7 key/value heads, 32 layers,
    2 refiner layers, Qwen2.5-VL 3B text states), so they are overrides.
    """

    hidden: int = 64
    heads: int = 2
    kv_heads: int = 1                # grouped-query attention, as released (21 over 7)
    depth: int = 2
    refiner_depth: int = 1
    text_dim: int = 32               # Qwen2.5-VL 3B in the released model (2048)
    rope_axes: tuple[int, ...] = (8, 12, 12)   # sums to the head size
    latent_channels = 16             # the FLUX VAE
    test_size = 64                   # an 8×8 latent: 16 patches

    def checkpoint(self) -> dict[str, tuple[int, ...]]:
        h = self.hidden
        keys = {"time_caption_embed.timestep_embedder.linear_1.bias": (h,), "x_embedder.weight": (h, 4 * 16),
                "time_caption_embed.caption_embedder.1.weight": (h, self.text_dim)}
        for group, depth in (("context_refiner", self.refiner_depth), ("noise_refiner", self.refiner_depth),
                             ("ref_image_refiner", self.refiner_depth), ("layers", self.depth)):
            for i in range(depth):
                keys[f"{group}.{i}.attn.to_q.weight"] = (h, h)
        return keys

    def overrides(self) -> dict[str, Any]:
        return {"hidden_size": self.hidden, "num_attention_heads": self.heads, "num_kv_heads": self.kv_heads,
                "num_layers": self.depth, "num_refiner_layers": self.refiner_depth, "text_feat_dim": self.text_dim,
                "axes_dim_rope": list(self.rope_axes)}

    def conditioning(self, seed: int, tokens: Optional[int] = None) -> list:
        """Qwen2.5-VL states with their attention mask, as ComfyUI's OmniGen2 text encoder gives them (unpadded: ComfyUI's
        OmniGen2 places its rotary positions for the unmasked text tokens only, so it cannot run a masked tail)."""
        gen = torch.Generator().manual_seed(seed)
        n = tokens or 16
        return [[text_states(gen, n, self.text_dim), {"attention_mask": torch.ones(1, n, dtype=torch.int64)}]]


PRESETS = (
    # ComfyUI's template image_omnigen2_t2i.json: SamplerCustomAdvanced, euler, BasicScheduler simple 20 steps,
    # 1024² (EmptySD3LatentImage). Its DualCFGGuider (5, 2, regular) gets the negative prompt as both its middle and
    # negative conditioning, which makes it CFG 5 on the positive prompt (with a third, redundant model call).
    Preset(name="omnigen2", family="omnigen2",
           description="OmniGen2 text-to-image (ComfyUI template: 1024², 20 steps, CFG 5, euler/simple)",
           files=ModelFiles("omnigen2_fp16.safetensors", ("qwen_2.5_vl_fp16.safetensors",), "OMNIGEN2", "ae.safetensors"),
           steps=20, sampler="euler", scheduler="simple", cfg=5.0, width=1024, height=1024,
           population=24, generations=50, metric="image_reward"),
    tiny_preset("omnigen2", TinyOmniGen2(), "A small random-weight OmniGen2 built through ComfyUI's detection; runs on "
                "a CPU in minutes", cfg=5.0),
)

# hidden 512 (4 heads of 128 over 2 key/value heads), 8 layers + 2 refiner layers each, 1024 image tokens (512² image);
# CFG batches cond and uncond
BENCHMARK_MODELS = (
    BenchmarkModel("omnigen2", TinyOmniGen2(hidden=512, heads=4, kv_heads=2, depth=8, refiner_depth=2, text_dim=256,
                                            rope_axes=(32, 48, 48)), width=512, height=512, cfg=5.0),
)

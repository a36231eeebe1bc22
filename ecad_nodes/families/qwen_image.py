"""Qwen-Image (and Qwen-Image-Edit, -Edit-2511 and -Layered, the same class) in ComfyUI's ``comfy.ldm.qwen_image``.

Each ``transformer_blocks`` entry has three real submodules, the components: ``attn`` (the joint
attention; its forward returns both streams' projected outputs, so one component covers both),
``img_mlp`` and ``txt_mlp``. Their ``forward`` is hooked (no mirror); the block gates the raw
outputs with the current step's modulation and adds them out of place (``hidden + gate * out``,
``torch.addcmul``), so cached outputs are never written into. That holds for Qwen-Image-Edit-2511's
"timestep zero" reference tokens too, whose gates are applied to slices of the raw outputs.
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

BLOCKS = Group("transformer_blocks", "transformer_blocks", (Component("attn", module="attn"),
                                                            Component("img_mlp", module="img_mlp"),
                                                            Component("txt_mlp", module="txt_mlp")))

_IMAGE_PROJECTIONS = ("to_q", "to_k", "to_v")
_TEXT_PROJECTIONS = ("add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")


def qwen_image_block_macs(block: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> dict[str, float]:
    """MACs of each component of one ``QwenImageTransformerBlock``, from its own layers."""
    img, txt = tokens.image, tokens.text
    attn = block.attn
    joint = (sum(module_linear_macs(getattr(attn, name), img) for name in _IMAGE_PROJECTIONS)
             + module_linear_macs(attn.to_out, img)
             + sum(module_linear_macs(getattr(attn, name), txt) for name in _TEXT_PROJECTIONS))
    if attention_matmuls:
        joint += attention_matmul_macs(img + txt, img + txt, attn.inner_dim)
    return {"attn": joint, "img_mlp": module_linear_macs(block.img_mlp, img),
            "txt_mlp": module_linear_macs(block.txt_mlp, txt)}


def qwen_image_costs(dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
    """MACs per batch row. Reference latents (Qwen-Image-Edit) add image tokens that are not counted."""
    img, txt = tokens.image, tokens.text
    modulation = sum(module_linear_macs(block.img_mod, 1) + module_linear_macs(block.txt_mod, 1)
                     for block in dm.transformer_blocks)
    constant = (module_linear_macs(dm.img_in, img) + module_linear_macs(dm.txt_in, txt)
                + module_linear_macs(dm.time_text_embed, 1) + modulation
                + module_linear_macs(dm.norm_out, 1) + module_linear_macs(dm.proj_out, img))
    return CostTable.from_components(QwenImageAdapter().layout(dm),
                                     {"transformer_blocks": qwen_image_block_macs(dm.transformer_blocks[0], tokens,
                                                                                  attention_matmuls)}, constant)


class QwenImageAdapter(FamilyAdapter):
    family = "qwen_image"
    model_classes = (("comfy.ldm.qwen_image.model", "QwenImageTransformer2DModel"),)
    variants = {"QwenImage": "qwen-image"}
    groups = (BLOCKS,)

    def tokens(self, dm: torch.nn.Module, x: torch.Tensor, context: Optional[torch.Tensor]) -> CallTokens:
        # Reference latents of Qwen-Image-Edit add image tokens that ``x`` does not show; they are not counted.
        p = dm.patch_size
        return CallTokens(image=((x.shape[-2] + p - 1) // p) * ((x.shape[-1] + p - 1) // p),
                          text=0 if context is None else int(context.shape[1]))

    def costs(self, dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
        return qwen_image_costs(dm, tokens, attention_matmuls)


ADAPTERS = (QwenImageAdapter(),)


def qwen_image_layout(depth: int) -> Layout:
    return QwenImageAdapter().layout_of_sizes(transformer_blocks=depth)


@dataclass(frozen=True)
class TinyQwenImage(TinyModel):
    """Qwen-Image as its checkpoints look to ComfyUI's detection, which reads only the input channels and the
    block count: the widths are the constructor's released-size defaults, so they are overrides."""

    heads: int = 2
    head_dim: int = 32
    depth: int = 2
    context_dim: int = 48                       # Qwen2.5-VL hidden states in the real model (3584)
    axes_dim: tuple[int, ...] = (8, 12, 12)     # sums to head_dim
    latent_channels = 16

    @property
    def hidden(self) -> int:
        return self.heads * self.head_dim

    def checkpoint(self) -> dict[str, tuple[int, ...]]:
        h = self.hidden
        keys = {"txt_norm.weight": (self.context_dim,), "img_in.weight": (h, self.latent_channels * 4),
                "txt_in.weight": (h, self.context_dim), "proj_out.weight": (self.latent_channels * 4, h)}
        for i in range(self.depth):
            keys[f"transformer_blocks.{i}.attn.to_q.weight"] = (h, h)
        return keys

    def overrides(self) -> dict[str, Any]:
        return {"attention_head_dim": self.head_dim, "num_attention_heads": self.heads,
                "joint_attention_dim": self.context_dim, "axes_dims_rope": tuple(self.axes_dim)}

    def conditioning(self, seed: int, tokens: Optional[int] = None) -> list:
        gen = torch.Generator().manual_seed(seed)
        return [[text_states(gen, tokens or 16, self.context_dim), {}]]


@dataclass(frozen=True)
class TinyQwenImageEdit2511(TinyQwenImage):
    """Qwen-Image-Edit-2511: its checkpoint's marker makes ComfyUI (v0.20+) give reference tokens timestep 0, so
    the blocks modulate and gate image and reference tokens apart. Without reference latents it is Qwen-Image,
    so the family contract does not list it; tests/test_family_qwen_image.py samples it with reference latents."""

    def checkpoint(self) -> dict[str, tuple[int, ...]]:
        return {**super().checkpoint(), "__index_timestep_zero__": (0,)}

    def unavailable(self) -> Optional[str]:
        import inspect
        from comfy.ldm.qwen_image.model import QwenImageTransformer2DModel
        if "default_ref_method" not in inspect.signature(QwenImageTransformer2DModel).parameters:
            return "this ComfyUI's Qwen-Image has no timestep-zero reference tokens (Qwen-Image-Edit-2511)"
        return None


PRESETS = (
    # ComfyUI's Qwen-Image template (image_qwen_image.json) without its 8-step Lightning LoRA, as the template's
    # first version ran it: KSampler 20 euler/simple steps, CFG 2.5, ModelSamplingAuraFlow 3.1, 1328².
    Preset(name="qwen-image", family="qwen_image",
           description="Qwen-Image (ComfyUI template: 1328², 20 steps, CFG 2.5, shift 3.1)",
           files=ModelFiles("qwen_image_fp8_e4m3fn.safetensors", ("qwen_2.5_vl_7b_fp8_scaled.safetensors",),
                            "QWEN_IMAGE", "qwen_image_vae.safetensors"),
           steps=20, sampler="euler", scheduler="simple", cfg=2.5, width=1328, height=1328,
           population=24, generations=50, metric="image_reward",
           extra={"model_sampling": "AuraFlow", "shift": 3.1}),
    tiny_preset("qwen_image", TinyQwenImage(), "A small random-weight Qwen-Image built through ComfyUI's detection; "
                "runs on a CPU in minutes", cfg=2.5),
)

# hidden 512 (4 heads of 128), 8 blocks, 1024 image tokens (512² image); CFG batches cond and uncond
BENCHMARK_MODELS = (
    BenchmarkModel("qwen_image", TinyQwenImage(heads=4, head_dim=128, depth=8, context_dim=256, axes_dim=(16, 56, 56)),
                   width=512, height=512, cfg=2.5),
)

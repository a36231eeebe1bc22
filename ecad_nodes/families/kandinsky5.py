"""Kandinsky 5 (video Lite and Pro, and the Image Lite model) in ComfyUI's ``comfy.ldm.kandinsky5``
(ComfyUI v0.20 and later).

The model runs two stacks of blocks, one after the other, so they are two groups:

* ``text_blocks`` (``text_transformer_blocks``, ``TransformerEncoderBlock``): the text tokens alone,
  modulated by the timestep; components ``self_attn`` (``self_attention``) and ``ffn``
  (``feed_forward``);
* ``visual_blocks`` (``visual_transformer_blocks``, ``TransformerDecoderBlock``): the video or image
  tokens; components ``self_attn`` (``self_attention``), ``cross_attn`` (``cross_attention``, reading
  the text blocks' output) and ``ffn`` (``feed_forward``).

Every component is a real submodule, hooked through ModelPatcher object patches; each block
normalizes and modulates its input before the submodule and gates the raw output after it, out of
place (``torch.addcmul``), so cached outputs keep their pre-gate values and are never written into.
Image-to-video (``time_dim_replace``) writes the start frame into the model's input only.
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

TEXT_BLOCKS = Group("text_blocks", "text_transformer_blocks", (
    Component("self_attn", module="self_attention"), Component("ffn", module="feed_forward")))
VISUAL_BLOCKS = Group("visual_blocks", "visual_transformer_blocks", (
    Component("self_attn", module="self_attention"), Component("cross_attn", module="cross_attention"),
    Component("ffn", module="feed_forward")))

POOLED_DIM = 768            # CLIP-L pooled output (the constructor's in_text_dim2; detection does not read it)


def _self_attention_macs(attention: torch.nn.Module, tokens: int, attention_matmuls: bool) -> float:
    width = attention.num_heads * attention.head_dim
    matmuls = attention_matmul_macs(tokens, tokens, width) if attention_matmuls else 0.0
    return module_linear_macs(attention, tokens) + matmuls


def _cross_attention_macs(attention: torch.nn.Module, tokens: int, text: int, attention_matmuls: bool) -> float:
    width = attention.num_heads * attention.head_dim
    return (module_linear_macs(attention.to_query, tokens) + module_linear_macs(attention.to_key, text)
            + module_linear_macs(attention.to_value, text) + module_linear_macs(attention.out_layer, tokens)
            + (attention_matmul_macs(tokens, text, width) if attention_matmuls else 0.0))


def kandinsky5_costs(dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
    img, txt = tokens.image, tokens.text
    per_group: dict[str, dict[str, float]] = {}
    if len(dm.text_transformer_blocks):
        block = dm.text_transformer_blocks[0]
        per_group["text_blocks"] = {"self_attn": _self_attention_macs(block.self_attention, txt, attention_matmuls),
                                    "ffn": module_linear_macs(block.feed_forward, txt)}
    if len(dm.visual_transformer_blocks):
        block = dm.visual_transformer_blocks[0]
        per_group["visual_blocks"] = {
            "self_attn": _self_attention_macs(block.self_attention, img, attention_matmuls),
            "cross_attn": _cross_attention_macs(block.cross_attention, img, txt, attention_matmuls),
            "ffn": module_linear_macs(block.feed_forward, img)}
    # The time and pooled-text embeddings and every block's modulation run once per batch row.
    modulations = (sum(module_linear_macs(b.text_modulation, 1) for b in dm.text_transformer_blocks)
                   + sum(module_linear_macs(b.visual_modulation, 1) for b in dm.visual_transformer_blocks))
    constant = (module_linear_macs(dm.time_embeddings, 1) + module_linear_macs(dm.pooled_text_embeddings, 1)
                + module_linear_macs(dm.text_embeddings, txt) + module_linear_macs(dm.visual_embeddings, img)
                + modulations + module_linear_macs(dm.out_layer.modulation, 1)
                + module_linear_macs(dm.out_layer.out_layer, img))
    return CostTable.from_components(Kandinsky5Adapter().layout(dm), per_group, constant)


class Kandinsky5Adapter(FamilyAdapter):
    family = "kandinsky5"
    model_classes = (("comfy.ldm.kandinsky5.model", "Kandinsky5"),)
    variants = {"Kandinsky5": "kandinsky5-video", "Kandinsky5Image": "kandinsky5-image-lite"}
    groups = (TEXT_BLOCKS, VISUAL_BLOCKS)

    #: ComfyUI has one config for every video model; the width tells Lite from Pro (as ComfyUI's detection does).
    VIDEO_WIDTHS = {1792: "kandinsky5-video-lite", 4096: "kandinsky5-video-pro"}

    def variant(self, base_model: Any) -> Optional[str]:
        found = super().variant(base_model)
        if found == "kandinsky5-video":
            return self.VIDEO_WIDTHS.get(base_model.diffusion_model.model_dim, found)
        return found

    def tokens(self, dm: torch.nn.Module, x: torch.Tensor, context: Optional[torch.Tensor]) -> CallTokens:
        # Images (4-D latents) run as one frame; the latent is padded to whole patches.
        sizes = (x.shape[-3] if x.ndim == 5 else 1, x.shape[-2], x.shape[-1])
        return CallTokens(image=math.prod((n + p - 1) // p for n, p in zip(sizes, dm.patch_size)),
                          text=0 if context is None else int(context.shape[1]))

    def costs(self, dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
        return kandinsky5_costs(dm, tokens, attention_matmuls)


ADAPTERS = (Kandinsky5Adapter(),)



# ------------------------------------------------------------------ tiny models and presets


@dataclass(frozen=True)
class TinyKandinsky5(TinyModel):
    """Kandinsky 5 Video as its checkpoints look to ComfyUI's detection (which reads the widths, the feed-forward
    size and both block counts), at a small width. Heads are 64 wide (detection's axes for widths it does not know)."""

    model_dim: int = 128
    ff_dim: int = 256
    time_dim: int = 32
    text_blocks: int = 1
    visual_blocks: int = 2
    text_dim: int = 32               # Qwen2.5-VL 7B hidden states in the real model (3584)
    frames: int = 5                  # video frames; the latent has (frames - 1) // 4 + 1 of them
    head_dim = 64
    #: the model's input channels per patch: the noise, and image-to-video's start-frame latent and mask (16 + 16 + 1),
    #: over 1×2×2 patches
    visual_embed_dim = 4 * 33
    latent_channels = 16

    def released_width(self) -> int:
        """The width the checkpoint's ``visual_embeddings`` shows to detection."""
        return self.model_dim

    def checkpoint(self) -> dict[str, tuple[int, ...]]:
        h, width = self.model_dim, self.released_width()
        keys = {"visual_embeddings.in_layer.weight": (width, self.visual_embed_dim),
                "visual_embeddings.in_layer.bias": (width,),
                "time_embeddings.in_layer.bias": (self.time_dim,),
                "visual_transformer_blocks.0.feed_forward.in_layer.weight": (self.ff_dim, h)}
        for i in range(self.text_blocks):
            keys[f"text_transformer_blocks.{i}.self_attention.to_query.weight"] = (h, h)
        for i in range(self.visual_blocks):
            keys[f"visual_transformer_blocks.{i}.cross_attention.key_norm.weight"] = (self.head_dim,)
        return keys

    def overrides(self) -> dict[str, Any]:
        return {"in_text_dim": self.text_dim}

    requires = ("comfy.ldm.kandinsky5.model.Kandinsky5",)

    def conditioning(self, seed: int, tokens: Optional[int] = None) -> list:
        gen = torch.Generator().manual_seed(seed)
        return [[text_states(gen, tokens or 16, self.text_dim),
                 {"pooled_output": torch.randn(1, POOLED_DIM, generator=gen)}]]

    def empty_latent(self, height: int, width: int, batch: int = 1) -> torch.Tensor:
        """As ComfyUI's Kandinsky5ImageToVideo (and EmptyHunyuanLatentVideo) makes it: HunyuanVideo's VAE latent."""
        return torch.zeros(batch, self.latent_channels, (self.frames - 1) // 4 + 1, height // 8, width // 8)


@dataclass(frozen=True)
class TinyKandinsky5Image(TinyKandinsky5):
    """Kandinsky 5 Image Lite: the same class on FLUX's 16-channel image latents (2×2 patches, no image-to-video
    channels). ComfyUI recognises it by the released width (2560) alone, so the checkpoint shows that width to
    detection and the matched config is built small."""

    model_dim: int = 128
    visual_embed_dim = 4 * 16

    def released_width(self) -> int:
        return 2560

    def overrides(self) -> dict[str, Any]:
        # detection's axes for the released width (32, 48, 48) make one 128-wide head at this width
        return {**super().overrides(), "model_dim": self.model_dim}

    def model_config(self, config: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> Any:
        # Match on detection's own (released-width) configuration, then configure the matched class with the small one.
        import comfy.model_detection
        released = comfy.model_detection.detect_unet_config(state_dict, "")
        matched = comfy.model_detection.model_config_from_unet_config(released, state_dict)
        return None if matched is None else type(matched)(config)

    def empty_latent(self, height: int, width: int, batch: int = 1) -> torch.Tensor:
        return TinyModel.empty_latent(self, height, width, batch)


_QWEN_CLIP = ("qwen_2.5_vl_7b_fp8_scaled.safetensors", "clip_l.safetensors")

PRESETS = (
    # ComfyUI's template video_kandinsky5_t2v.json: Kandinsky5ImageToVideo 768×512, 121 frames; KSampler 50 steps,
    # CFG 5, euler_ancestral, beta; ModelSamplingSD3 shift 5.
    Preset(name="kandinsky5-video-lite", family="kandinsky5",
           description="Kandinsky 5.0 Video Lite t2v 5 s (ComfyUI template: 768×512, 121 frames, 50 steps, CFG 5)",
           files=ModelFiles("kandinsky5lite_t2v_sft_5s.safetensors", _QWEN_CLIP, "KANDINSKY5",
                            "hunyuan_video_vae_bf16.safetensors"),
           steps=50, sampler="euler_ancestral", scheduler="beta", cfg=5.0, width=768, height=512, frames=121,
           population=24, generations=50, metric="fidelity", prompts=50, images_per_prompt=1,
           extra={"model_sampling": "SD3", "shift": 5.0}),
    # ComfyUI's template image_kandinsky5_t2i.json: 1024², KSampler 50 steps, CFG 3.5, euler, simple; ModelSamplingSD3
    # shift 3.
    Preset(name="kandinsky5-image-lite", family="kandinsky5",
           description="Kandinsky 5.0 Image Lite (ComfyUI template: 1024², 50 steps, CFG 3.5)",
           files=ModelFiles("kandinsky5lite_t2i.safetensors", _QWEN_CLIP, "KANDINSKY5_IMAGE", "ae.safetensors"),
           steps=50, sampler="euler", scheduler="simple", cfg=3.5, width=1024, height=1024,
           population=24, generations=50, metric="image_reward", extra={"model_sampling": "SD3", "shift": 3.0}),
    tiny_preset("kandinsky5", TinyKandinsky5(), "A small random-weight Kandinsky 5 Video built through ComfyUI's "
                "detection; 2 latent frames on a CPU", cfg=5.0, frames=5),
)

TINY_MODELS = {"kandinsky5-image": TinyKandinsky5Image()}

# width 512 (8 heads), 2 text + 8 visual blocks, 2 latent frames × 16 × 32 patches = 1024 image tokens; CFG 5
BENCHMARK_MODELS = (
    BenchmarkModel("kandinsky5", TinyKandinsky5(model_dim=512, ff_dim=2048, time_dim=256, text_blocks=2,
                                                visual_blocks=8, text_dim=256), width=512, height=256, cfg=5.0),
)

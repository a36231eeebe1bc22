"""HunyuanVideo, HunyuanImage 2.1 and HunyuanVideo 1.5 (the same class) in ComfyUI's ``comfy.ldm.hunyuan_video``.

Its blocks are ComfyUI's FLUX blocks (ComfyUI v0.3.x puts the image stream first in the joint
attention, ``flipped_img_txt``; later versions the text), so FLUX's groups and mirrors serve as they
are: they take HunyuanVideo's ``attn_mask`` and its token-wise modulation (``modulation_dims_*``,
used by image-to-video's guiding frame), and apply gates to copies, never to cached outputs.
Components are FLUX's: double ``attn`` (joint, both streams), ``img_mlp``, ``txt_mlp``; single
``attn``, ``mlp_in``, ``out_proj``.

HunyuanVideo 1.5 (ComfyUI v0.20 and later; 720p/480p text- and image-to-video, and the distilled
1080p super-resolution model) has double blocks only. Its text stream is longer than the prompt: the
glyph prompt's ByT5 states (``byt5_in``) and, for image-to-video, the SigLIP states of the start
image (``vision_in``, ``clip_fea``) join the refined prompt, each marked by a ``cond_type_embedding``;
all of them run through the blocks as text tokens, and the cost model counts them
(``HunyuanVideoAdapter.call_tokens``). The start image's latent and mask are input channels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from ..costs import CostTable, attention_matmul_macs, linear_macs, module_linear_macs
from ..registry import BenchmarkModel, ModelFiles, Preset, tiny_preset
from ..tiny import TinyModel, text_states
from .base import CallTokens, FamilyAdapter
from .flux import DOUBLE_BLOCKS, SINGLE_BLOCKS, flux_block_macs

HEAD_DIM = 128          # ComfyUI's detection: num_heads = hidden_size // 128
POOLED_DIM = 768        # CLIP-L pooled output; detection assumes it whenever vector_in exists
BYT5_DIM = 1472         # ByT5-small states (ComfyUI's ByT5Mapper input width, fixed)
SIGLIP_DIM = 1152       # SigLIP-so400m states: HunyuanVideo 1.5's vision_in width (ComfyUI matches the model by it)


@dataclass(frozen=True)
class HunyuanVideoTokens(CallTokens):
    """``text`` counts every token of the text stream: the prompt's, then ``byt5`` glyph and ``vision`` image tokens."""

    byt5: int = 0
    vision: int = 0


def hunyuan_video_costs(dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
    h, img = dm.params.hidden_size, tokens.image
    byt5, vision = getattr(tokens, "byt5", 0), getattr(tokens, "vision", 0)
    txt = tokens.text - byt5 - vision      # the prompt's tokens: those the token refiner runs on
    refiner = dm.txt_in
    refiner_macs = (module_linear_macs(refiner.input_embedder, txt) + module_linear_macs(refiner.t_embedder, 1)
                    + module_linear_macs(refiner.c_embedder, 1))
    for block in refiner.individual_token_refiner.blocks:
        refiner_macs += (module_linear_macs(block.adaLN_modulation, 1) + module_linear_macs(block.self_attn, txt)
                         + module_linear_macs(block.mlp, txt) + (attention_matmul_macs(txt, txt, h) if attention_matmuls else 0.0))
    embedders = sum(module_linear_macs(m, 1) for m in (dm.time_in, getattr(dm, "guidance_in", None),
                                                      getattr(dm, "time_r_in", None), dm.vector_in)
                    if isinstance(m, torch.nn.Module))
    per_block_mods = sum(module_linear_macs(getattr(b, name), 1) for b in list(dm.double_blocks) + list(dm.single_blocks)
                         for name in ("img_mod", "txt_mod", "modulation") if isinstance(getattr(b, name, None), torch.nn.Module))
    patch = math.prod(dm.params.patch_size)
    constant = (linear_macs(img, dm.params.in_channels * patch, h) + embedders + refiner_macs + per_block_mods
                + module_linear_macs(dm.final_layer.adaLN_modulation, 1) + module_linear_macs(dm.final_layer.linear, img))
    # HunyuanVideo 1.5 / HunyuanImage 2.1: the glyph prompt's ByT5 mapper and the start image's SigLIP projection
    # (cond_type_embedding is a lookup, no MACs)
    if byt5 and getattr(dm, "byt5_in", None) is not None:
        constant += module_linear_macs(dm.byt5_in, byt5)
    if vision and getattr(dm, "vision_in", None) is not None:
        constant += module_linear_macs(dm.vision_in, vision)
    double = dm.double_blocks[0] if len(dm.double_blocks) else None
    single = dm.single_blocks[0] if len(dm.single_blocks) else None
    return CostTable.from_components(HunyuanVideoAdapter().layout(dm),
                                     flux_block_macs(double, single, tokens, attention_matmuls), constant)


class HunyuanVideoAdapter(FamilyAdapter):
    family = "hunyuan_video"
    model_classes = (("comfy.ldm.hunyuan_video.model", "HunyuanVideo"),)
    variants = {"HunyuanVideo": "hunyuan-video-t2v", "HunyuanVideoI2V": "hunyuan-video-i2v",
                "HunyuanVideoSkyreelsI2V": "skyreels-v1-i2v", "HunyuanImage21": "hunyuan-image-2.1",
                "HunyuanImage21Refiner": "hunyuan-image-2.1-refiner", "HunyuanVideo15": "hunyuan-video-1.5",
                "HunyuanVideo15_SR_Distilled": "hunyuan-video-1.5-sr-distilled"}
    groups = (DOUBLE_BLOCKS, SINGLE_BLOCKS)

    def tokens(self, dm: torch.nn.Module, x: torch.Tensor, context: Optional[torch.Tensor]) -> CallTokens:
        patch = dm.patch_size
        sizes = x.shape[-len(patch):]
        return CallTokens(image=math.prod((n + p // 2) // p for n, p in zip(sizes, patch)),
                          text=0 if context is None else int(context.shape[1]))

    def call_tokens(self, dm: torch.nn.Module, x: torch.Tensor, context: Optional[torch.Tensor],
                    extra_conds: dict) -> CallTokens:
        """The glyph prompt's ByT5 states (when the model maps them) and image-to-video's vision states join the text
        stream (HunyuanVideo 1.5, HunyuanImage 2.1)."""
        found = self.tokens(dm, x, context)
        byt5_states, vision_states = extra_conds.get("txt_byt5"), extra_conds.get("clip_fea")
        byt5 = vision = 0
        if byt5_states is not None and getattr(dm, "byt5_in", None) is not None:
            byt5 = int(byt5_states.shape[1])
        if vision_states is not None and getattr(dm, "vision_in", None) is not None:
            vision = int(vision_states.shape[1])
        return HunyuanVideoTokens(image=found.image, text=found.text + byt5 + vision, byt5=byt5, vision=vision)

    def costs(self, dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
        return hunyuan_video_costs(dm, tokens, attention_matmuls)


ADAPTERS = (HunyuanVideoAdapter(),)


@dataclass(frozen=True)
class TinyHunyuanVideo(TinyModel):
    """HunyuanVideo as its checkpoints look to ComfyUI's detection (which reads the width: heads = hidden / 128)."""

    hidden: int = 128                # a multiple of HEAD_DIM
    depth: int = 2
    depth_single: int = 2
    context_dim: int = 64            # llava-llama-3 hidden states in the real model (4096)
    frames: int = 5                  # video frames; the latent has (frames - 1) // 4 + 1 of them
    guidance_embed: bool = True
    latent_channels = 16
    patch: tuple[int, ...] = (1, 2, 2)
    pooled: bool = True

    def checkpoint(self) -> dict[str, tuple[int, ...]]:
        h = self.hidden
        keys = {"txt_in.individual_token_refiner.blocks.0.norm1.weight": (h,),
                "img_in.proj.weight": (h, self.latent_channels, *self.patch),
                "final_layer.linear.weight": (self.latent_channels * math.prod(self.patch), h),
                "txt_in.input_embedder.weight": (h, self.context_dim)}
        if self.pooled:
            keys["vector_in.in_layer.weight"] = (h, POOLED_DIM)
        if self.guidance_embed:
            keys["guidance_in.in_layer.weight"] = (h, 256)
        for i in range(self.depth):
            keys[f"double_blocks.{i}.img_attn.qkv.weight"] = (3 * h, h)
        for i in range(self.depth_single):
            keys[f"single_blocks.{i}.linear1.weight"] = (7 * h, h)
        return keys

    def conditioning(self, seed: int, tokens: Optional[int] = None, guidance: float = 6.0) -> list:
        gen = torch.Generator().manual_seed(seed)
        return [[text_states(gen, tokens or 16, self.context_dim),
                 {"pooled_output": torch.randn(1, POOLED_DIM, generator=gen), "guidance": guidance}]]

    def empty_latent(self, height: int, width: int, batch: int = 1) -> torch.Tensor:
        """As ComfyUI's EmptyHunyuanLatentVideo makes it."""
        return torch.zeros(batch, self.latent_channels, (self.frames - 1) // 4 + 1, height // 8, width // 8)


@dataclass(frozen=True)
class TinyHunyuanImage21(TinyHunyuanVideo):
    """HunyuanImage 2.1: the same class on 2-D latents (64 channels, 1×1 patches), without a pooled-text vector."""

    latent_channels = 64
    compression = 32                 # a 32× VAE
    test_size = 256                  # an 8×8 latent
    patch: tuple[int, ...] = (1, 1)
    pooled: bool = False

    def conditioning(self, seed: int, tokens: Optional[int] = None, guidance: float = 3.5) -> list:
        gen = torch.Generator().manual_seed(seed)
        return [[text_states(gen, tokens or 16, self.context_dim), {"guidance": guidance}]]

    def empty_latent(self, height: int, width: int, batch: int = 1) -> torch.Tensor:
        return TinyModel.empty_latent(self, height, width, batch)



@dataclass(frozen=True)
class TinyHunyuanVideo15(TinyHunyuanVideo):
    """HunyuanVideo 1.5 as its checkpoints look to ComfyUI's detection: double blocks only, 1×1×1 patches on
    32-channel latents (16× VAE) with the start image's latent and mask as 33 more input channels, a ByT5 glyph
    mapper, a SigLIP projection (its released width, 1152, is how ComfyUI tells 1.5 from HunyuanVideo) and cond-type
    embeddings; no pooled text and no distilled guidance."""

    depth_single: int = 0
    guidance_embed: bool = False
    pooled: bool = False
    patch: tuple[int, ...] = (1, 1, 1)
    in_channels: int = 32 + 32 + 1
    byt5: bool = True
    meanflow: bool = False           # the distilled super-resolution model's second timestep embedding
    latent_channels = 32
    compression = 16
    test_size = 64                   # a 4×4 latent per frame, 2 latent frames: 32 image tokens

    def checkpoint(self) -> dict[str, tuple[int, ...]]:
        h = self.hidden
        keys = {**super().checkpoint(), "img_in.proj.weight": (h, self.in_channels, *self.patch),
                "vision_in.proj.0.weight": (SIGLIP_DIM,), "cond_type_embedding.weight": (3, h)}
        if self.byt5:
            keys["byt5_in.fc1.weight"] = (2048, BYT5_DIM)
        if self.meanflow:
            keys["time_r_in.in_layer.weight"] = (h, 256)
        return keys

    requires = ("comfy.supported_models.HunyuanVideo15",)

    def conditioning(self, seed: int, tokens: Optional[int] = None) -> list:
        """Qwen2.5-VL states of the prompt (no pooled text, no guidance: 1.5 runs real CFG)."""
        gen = torch.Generator().manual_seed(seed)
        return [[text_states(gen, tokens or 16, self.context_dim), {"pooled_output": None}]]

    def empty_latent(self, height: int, width: int, batch: int = 1) -> torch.Tensor:
        """As ComfyUI's EmptyHunyuanVideo15Latent makes it."""
        return torch.zeros(batch, self.latent_channels, (self.frames - 1) // 4 + 1, height // 16, width // 16)


@dataclass(frozen=True)
class TinyHunyuanVideo15SR(TinyHunyuanVideo15):
    """HunyuanVideo 1.5's distilled 1080p super-resolution model: the low-resolution latent, its mask and the start
    image as 66 more input channels (98 in all, which ComfyUI matches it by), and a MeanFlow second timestep."""

    in_channels: int = 32 + 2 * 32 + 2
    meanflow: bool = True


PRESETS = (
    # ComfyUI's HunyuanVideo template: 848×480, 73 frames, 20 euler steps, FluxGuidance 6, no CFG, shift 7.
    Preset(name="hunyuan-video-t2v", family="hunyuan_video",
           description="HunyuanVideo t2v 720p (ComfyUI template: 848×480, 73 frames, 20 steps, guidance 6)",
           files=ModelFiles("hunyuan_video_t2v_720p_bf16.safetensors",
                            ("clip_l.safetensors", "llava_llama3_fp8_scaled.safetensors"), "HUNYUAN_VIDEO",
                            "hunyuan_video_vae_bf16.safetensors"),
           steps=20, sampler="euler", scheduler="simple", cfg=1.0, guidance=6.0, width=848, height=480, frames=73,
           population=24, generations=50, metric="fidelity", prompts=50, images_per_prompt=1),
    tiny_preset("hunyuan_video", TinyHunyuanVideo(), "A small random-weight HunyuanVideo built through ComfyUI's "
                "detection; 2 latent frames on a CPU", guidance=6.0, frames=5),
    # ComfyUI's template video_hunyuan_video_1.5_720p_t2v.json, its 720p pass (before the latent upscale and the
    # 1080p super-resolution pass, which starts from that pass's latent): EmptyHunyuanVideo15Latent 1280×720, 121
    # frames; BasicScheduler simple 20 steps, euler, CFGGuider 6, ModelSamplingSD3 shift 7; the text encoders are
    # Qwen2.5-VL 7B and the ByT5 glyph encoder.
    Preset(name="hunyuan-video-1.5-720p-t2v", family="hunyuan_video",
           description="HunyuanVideo 1.5 720p t2v (ComfyUI template: 1280×720, 121 frames, 20 steps, CFG 6, shift 7)",
           files=ModelFiles("hunyuanvideo1.5_720p_t2v_fp16.safetensors",
                            ("qwen_2.5_vl_7b_fp8_scaled.safetensors", "byt5_small_glyphxl_fp16.safetensors"),
                            "HUNYUAN_VIDEO_15", "hunyuanvideo15_vae_fp16.safetensors"),
           steps=20, sampler="euler", scheduler="simple", cfg=6.0, width=1280, height=720, frames=121,
           population=24, generations=50, metric="fidelity", prompts=50, images_per_prompt=1,
           extra={"model_sampling": "SD3", "shift": 7.0}),
)

# hidden 512 (4 heads), 4 double + 8 single blocks, 2 latent frames × 16 × 32 patches = 1024 image tokens
BENCHMARK_MODELS = (
    BenchmarkModel("hunyuan_video", TinyHunyuanVideo(hidden=512, depth=4, depth_single=8, context_dim=256, frames=5),
                   width=512, height=256),
    # HunyuanVideo 1.5: hidden 512 (4 heads), 8 double blocks, 2 latent frames × 16 × 32 = 1024 image tokens; CFG 6
    BenchmarkModel("hunyuan_video_1.5", TinyHunyuanVideo15(hidden=512, depth=8, context_dim=256, frames=5),
                   width=512, height=256, cfg=6.0),
)

TINY_MODELS = {"hunyuan-image-2.1": TinyHunyuanImage21(), "hunyuan-video-1.5": TinyHunyuanVideo15(),
               "hunyuan-video-1.5-sr": TinyHunyuanVideo15SR()}

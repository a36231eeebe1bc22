"""Wan 2.1 and Wan 2.2 (text-, image- and text+image-to-video) in ComfyUI's ``comfy.ldm.wan``.

Each ``blocks`` entry (``WanAttentionBlock``) has three real submodules, the components:
``self_attn``, ``cross_attn`` (text, plus CLIP-image keys for image-to-video; ungated) and ``ffn``.
Their ``forward`` is hooked (no mirror); the block applies the current step's modulation to the raw
outputs and adds them out of place (``torch.addcmul``, ``x + …``), so cached outputs are never
written into. Wan 2.2's per-frame timesteps only change that modulation, which stays the current
step's.

Every Wan model class of ComfyUI runs its blocks through these submodules, so the VACE, camera,
HuMo, speech-to-video, Animate, SCAIL and WanDancer models are cached the same way; their own extra
modules (VACE blocks, audio, music, pose and face adapters) always run. VACE blocks are in the cost
model; the audio, music, face, pose and camera adapters are not (their inputs are optional and
their sizes vary with the conditioning). ``CausalWanModel`` (Causal Forcing, ComfyUI v0.20+) is
refused: see ``WanAdapter.check_supported``.

Context windows (ComfyUI's "WAN Context Windows" node) call the model once per window at the same
step with the same cond uuids; ``ecad_nodes.patching`` keys each window's streams by the window's
frames, so every window reuses its own outputs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..costs import CostTable, attention_matmul_macs, module_linear_macs
from ..registry import BenchmarkModel, ModelFiles, Preset, tiny_preset
from ..schedule import Layout
from ..tiny import TinyModel, text_states
from .base import CallTokens, Component, FamilyAdapter, Group, UnsupportedModelError

CLIP_VISION_TOKENS = 257      # CLIP ViT-H penultimate states of one image (ComfyUI's CLIPVisionEncode)
CLIP_VISION_WIDTH = 1280      # hard-coded in Wan's MLPProj
HEAD_DIM = 128                # ComfyUI's detection: num_heads = dim // 128

BLOCKS = Group("blocks", "blocks", (Component("self_attn", module="self_attn"),
                                    Component("cross_attn", module="cross_attn"),
                                    Component("ffn", module="ffn")))

#: Classes whose forward gives every latent frame its own timestep, whatever the conditioning.
PER_FRAME_TIMESTEPS = ("WanModel_S2V",)


@dataclass(frozen=True)
class WanTokens(CallTokens):
    """Wan's token counts, with the latent frames (for models that embed one timestep per frame)."""

    frames: int = 1


# ------------------------------------------------------------------ costs


def image_context_tokens(dm: torch.nn.Module) -> int:
    """CLIP-image tokens the cross-attention reads: one image's (two for first-last-frame models, whose
    ``emb_pos`` fixes the count); 0 for text-only cross-attention."""
    img_emb = getattr(dm, "img_emb", None)
    if img_emb is None or not hasattr(dm.blocks[0].cross_attn, "k_img"):
        return 0
    return img_emb.emb_pos.shape[1] if img_emb.emb_pos is not None else CLIP_VISION_TOKENS


def _conv_macs(conv: torch.nn.Module, tokens: int) -> float:
    """A patchifying convolution: one kernel application per output token."""
    return float(tokens) * conv.in_channels * math.prod(conv.kernel_size) * conv.out_channels // conv.groups


def wan_block_macs(block: torch.nn.Module, tokens: CallTokens, image_context: int,
                   attention_matmuls: bool = False) -> dict[str, float]:
    """MACs of each component of one ``WanAttentionBlock``, from its own layers."""
    n, txt, h = tokens.image, tokens.text, block.dim
    cross = block.cross_attn
    cross_macs = (module_linear_macs(cross.q, n) + module_linear_macs(cross.o, n)
                  + module_linear_macs(cross.k, txt) + module_linear_macs(cross.v, txt))
    if hasattr(cross, "k_img"):
        cross_macs += module_linear_macs(cross.k_img, image_context) + module_linear_macs(cross.v_img, image_context)
    if attention_matmuls:
        cross_macs += attention_matmul_macs(n, txt, h) + (attention_matmul_macs(n, image_context, h) if image_context else 0.0)
    return {"self_attn": module_linear_macs(block.self_attn, n) + (attention_matmul_macs(n, n, h) if attention_matmuls else 0.0),
            "cross_attn": cross_macs,
            "ffn": module_linear_macs(block.ffn, n)}


def wan_costs(dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
    """MACs per batch row; one timestep per row (Wan 2.2's per-frame timesteps of a given first frame add a few
    per frame), except for the classes that always embed one per latent frame."""
    n, txt, img = tokens.image, tokens.text, image_context_tokens(dm)
    timesteps = getattr(tokens, "frames", 1) if type(dm).__name__ in PER_FRAME_TIMESTEPS else 1
    per_block = wan_block_macs(dm.blocks[0], tokens, img, attention_matmuls)
    constant = (_conv_macs(dm.patch_embedding, n)
                + module_linear_macs(dm.time_embedding, timesteps) + module_linear_macs(dm.time_projection, timesteps)
                + module_linear_macs(dm.text_embedding, txt)
                + (module_linear_macs(dm.img_emb, img) if img else 0.0)
                + module_linear_macs(dm.head.head, n))
    vace_blocks = getattr(dm, "vace_blocks", None)
    if vace_blocks is not None:  # VACE blocks run every step on one control video: full blocks plus their projections
        constant += _conv_macs(dm.vace_patch_embedding, n)
        for block in vace_blocks:
            constant += sum(wan_block_macs(block, tokens, 0, attention_matmuls).values())
            constant += sum(module_linear_macs(getattr(block, name), n) for name in ("before_proj", "after_proj")
                            if hasattr(block, name))
    return CostTable.from_components(WanAdapter().layout(dm), {"blocks": per_block}, constant)


# ------------------------------------------------------------------ adapter


class WanAdapter(FamilyAdapter):
    family = "wan"
    model_classes = (("comfy.ldm.wan.model", "WanModel"), ("comfy.ldm.wan.model", "VaceWanModel"),
                     ("comfy.ldm.wan.model", "CameraWanModel"), ("comfy.ldm.wan.model", "HumoWanModel"),
                     ("comfy.ldm.wan.model", "WanModel_S2V"), ("comfy.ldm.wan.model_animate", "AnimateWanModel"),
                     ("comfy.ldm.wan.model", "SCAILWanModel"), ("comfy.ldm.wan.model_wandancer", "WanDancerModel"),
                     ("comfy.ldm.wan.ar_model", "CausalWanModel"))  # claimed to be refused by name
    variants = {"WAN21_T2V": "wan-t2v", "WAN21_I2V": "wan2.1-i2v", "WAN21_FunControl2V": "wan2.1-fun-control",
                "WAN21_Vace": "wan-vace", "WAN21_Camera": "wan2.1-camera", "WAN22_Camera": "wan2.2-camera",
                "WAN21_HuMo": "wan-humo", "WAN22_S2V": "wan2.2-s2v", "WAN22_Animate": "wan2.2-animate",
                "WAN22_T2V": "wan2.2-ti2v-5b", "WAN21_FlowRVS": "wan2.1-flowrvs", "WAN21_SCAIL": "wan2.1-scail",
                "WAN22_WanDancer": "wan2.2-wandancer"}
    groups = (BLOCKS,)

    def check_supported(self, dm: torch.nn.Module) -> None:
        if type(getattr(dm, "_orig_mod", dm)).__name__ == "CausalWanModel":
            raise UnsupportedModelError(
                "ECAD cannot cache comfy.ldm.wan.ar_model.CausalWanModel (Causal Forcing Wan): with ComfyUI's ar_video "
                "sampler its self-attention writes every frame block's keys and values into a KV cache that later "
                "frames read, and the sampler runs the whole sigma schedule again for each frame block, so skipping a "
                "component would corrupt that cache and steps do not map to one schedule.")

    def variant(self, base_model: Any) -> Optional[str]:
        found = super().variant(base_model)
        dm = getattr(base_model, "diffusion_model", None)
        # Wan 2.2 A14B image-to-video has no CLIP-image branch, so ComfyUI configures it as text-to-video
        # with the image latent and mask concatenated to the input (36 channels).
        if found == "wan-t2v" and dm is not None and dm.patch_embedding.in_channels == 36:
            return "wan2.2-i2v-a14b"
        return found

    def tokens(self, dm: torch.nn.Module, x: torch.Tensor, context: Optional[torch.Tensor]) -> WanTokens:
        # Latent frames × height × width in patches (inputs are padded to whole patches). Reference
        # latents and extra frames some variants append are not counted.
        padded = [(s + p - 1) // p for s, p in zip(x.shape[-3:], dm.patch_size)]
        return WanTokens(image=math.prod(padded), text=0 if context is None else int(context.shape[1]), frames=padded[0])

    def costs(self, dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
        return wan_costs(dm, tokens, attention_matmuls)


ADAPTERS = (WanAdapter(),)


def wan_layout(depth: int) -> Layout:
    return WanAdapter().layout_of_sizes(blocks=depth)


# ------------------------------------------------------------------ tiny models


@dataclass(frozen=True)
class TinyWan(TinyModel):
    """Wan 2.1 text-to-video as its checkpoints look to ComfyUI's detection, at a small width.

    Detection reads the width (heads = dim / 128), the MLP width, the blocks and the channels from the
    weights; the UMT5 width is the constructor's released-size default, so it is an override.
    """

    dim: int = 128                   # a multiple of HEAD_DIM
    ffn_dim: int = 256
    depth: int = 2
    text_dim: int = 64               # UMT5-XXL hidden states in the real model (4096)
    frames: int = 5                  # video frames; the latent has (frames - 1) // 4 + 1 of them
    in_dim: int = 16                 # 36 for image-to-video (16 latent + 4 mask + 16 image channels)
    out_dim: int = 16
    latent_channels = 16

    requires: tuple[str, ...] = ()          # the model class, where not every ComfyUI release has it

    def checkpoint(self) -> dict[str, tuple[int, ...]]:
        d = self.dim
        keys = {"patch_embedding.weight": (d, self.in_dim, 1, 2, 2), "text_embedding.0.weight": (d, self.text_dim),
                "head.modulation": (1, 2, d), "head.head.weight": (self.out_dim * 4, d)}
        for i in range(self.depth):
            keys[f"blocks.{i}.ffn.0.weight"] = (self.ffn_dim, d)
        return keys

    def overrides(self) -> dict[str, Any]:
        return {"text_dim": self.text_dim}

    def has_clip_image_branch(self) -> bool:
        return "img_emb.proj.0.bias" in self.checkpoint()

    def conditioning(self, seed: int, tokens: Optional[int] = None) -> list:
        """UMT5 states; models with a CLIP-image branch also get a CLIP vision output, as WanImageToVideo attaches it."""
        gen = torch.Generator().manual_seed(seed)
        extra: dict[str, Any] = {}
        if self.has_clip_image_branch():
            from comfy.clip_vision import Output
            clip = Output()
            clip["penultimate_hidden_states"] = torch.randn(1, CLIP_VISION_TOKENS, CLIP_VISION_WIDTH, generator=gen)
            extra["clip_vision_output"] = clip
        return [[text_states(gen, tokens or 16, self.text_dim), extra]]

    def latent_frames(self) -> int:
        return (self.frames - 1) // 4 + 1

    def empty_latent(self, height: int, width: int, batch: int = 1) -> torch.Tensor:
        """As ComfyUI's EmptyHunyuanLatentVideo (Wan 2.1) or Wan22ImageToVideoLatent (Wan 2.2) makes it."""
        s = self.compression
        return torch.zeros(batch, self.latent_channels, self.latent_frames(), height // s, width // s)


def _clip_image_branch(dim: int) -> dict[str, tuple[int, ...]]:
    """The CLIP-image projection's keys (``img_emb``), which make detection choose the i2v cross-attention."""
    return {"img_emb.proj.0.weight": (CLIP_VISION_WIDTH,), "img_emb.proj.0.bias": (CLIP_VISION_WIDTH,),
            "img_emb.proj.1.weight": (CLIP_VISION_WIDTH, CLIP_VISION_WIDTH), "img_emb.proj.3.weight": (dim, CLIP_VISION_WIDTH)}


@dataclass(frozen=True)
class TinyWanI2V(TinyWan):
    """Wan 2.1 image-to-video: CLIP-image cross-attention, the start frame's latent and a mask concatenated."""

    in_dim: int = 36

    def checkpoint(self) -> dict[str, tuple[int, ...]]:
        return {**super().checkpoint(), **_clip_image_branch(self.dim)}

    def conditioning(self, seed: int, tokens: Optional[int] = None) -> list:
        """As WanImageToVideo makes it: a start frame's latent, a mask over the other frames, a CLIP vision output
        (ComfyUI scales the latent and the mask to the sampled size)."""
        cond = super().conditioning(seed, tokens)
        gen = torch.Generator().manual_seed(seed + 1000)
        frames = self.latent_frames()
        mask = torch.ones(1, 1, frames, 8, 8)
        mask[:, :, :1] = 0.0
        cond[0][1].update(concat_latent_image=torch.randn(1, self.latent_channels, frames, 8, 8, generator=gen),
                          concat_mask=mask)
        return cond


@dataclass(frozen=True)
class TinyWan22TI2V(TinyWan):
    """Wan 2.2 TI2V 5B's layout: 48-channel latents, 16× spatial compression, text-only cross-attention."""

    in_dim: int = 48
    out_dim: int = 48
    latent_channels = 48
    compression = 16
    test_size = 128                  # an 8×8 latent


@dataclass(frozen=True)
class TinyWanVace(TinyWan):
    """Wan VACE: extra VACE blocks read a control video (ComfyUI feeds zeros without one) and add to the blocks."""

    vace_layers: int = 1
    vace_in_dim: int = 96            # 32 control-video channels + 64 mask channels, as ComfyUI builds them

    def checkpoint(self) -> dict[str, tuple[int, ...]]:
        keys = {**super().checkpoint(), "vace_patch_embedding.weight": (self.dim, self.vace_in_dim, 1, 2, 2)}
        for i in range(self.vace_layers):
            keys[f"vace_blocks.{i}.after_proj.weight"] = (self.dim, self.dim)
        return keys


@dataclass(frozen=True)
class TinyWanCamera(TinyWan):
    """Wan 2.1 Fun Camera: a camera-control adapter (runs only with camera conditions) on an image-to-video model."""

    in_dim: int = 32
    control_in: int = 24             # Plücker embedding channels (the constructor's default)

    def checkpoint(self) -> dict[str, tuple[int, ...]]:
        return {**super().checkpoint(), **_clip_image_branch(self.dim),
                "control_adapter.conv.weight": (self.dim, self.control_in * 64, 2, 2)}


@dataclass(frozen=True)
class TinyWanHumo(TinyWan):
    """HuMo: an audio cross-attention in every block (runs only with audio)."""

    def checkpoint(self) -> dict[str, tuple[int, ...]]:
        return {**super().checkpoint(), "audio_proj.audio_proj_glob_1.layer.bias": (1024,)}


@dataclass(frozen=True)
class TinyWanS2V(TinyWan):
    """Wan 2.2 speech-to-video: audio injectors between blocks (run only with audio), one timestep per frame."""

    def checkpoint(self) -> dict[str, tuple[int, ...]]:
        return {**super().checkpoint(), "casual_audio_encoder.encoder.final_linear.weight": (self.dim, self.dim)}


@dataclass(frozen=True)
class TinyWanAnimate(TinyWan):
    """Wan 2.2 Animate: face adapters after every fifth block (run only with face video), CLIP-image branch."""

    in_dim: int = 36
    depth: int = 5                   # one face adapter per five blocks

    def checkpoint(self) -> dict[str, tuple[int, ...]]:
        return {**super().checkpoint(), **_clip_image_branch(self.dim),
                "face_adapter.fuser_blocks.0.k_norm.weight": (HEAD_DIM,)}


@dataclass(frozen=True)
class TinyWanScail(TinyWan):
    """SCAIL (ComfyUI v0.20+): pose latents as extra tokens (only with a pose video), CLIP-image branch."""

    in_dim: int = 20                 # 16 latent + 4 mask channels
    requires: tuple[str, ...] = ("comfy.ldm.wan.model.SCAILWanModel",)

    def checkpoint(self) -> dict[str, tuple[int, ...]]:
        return {**super().checkpoint(), **_clip_image_branch(self.dim),
                "patch_embedding_pose.weight": (self.dim, self.in_dim, 1, 2, 2)}


@dataclass(frozen=True)
class TinyWanDancer(TinyWan):
    """WanDancer (ComfyUI v0.20+): a music encoder and injectors (only with music), CLIP-image branch."""

    in_dim: int = 36
    requires: tuple[str, ...] = ("comfy.ldm.wan.model_wandancer.WanDancerModel",)

    def checkpoint(self) -> dict[str, tuple[int, ...]]:
        return {**super().checkpoint(), **_clip_image_branch(self.dim),
                "patch_embedding_global.weight": (self.dim, self.in_dim, 1, 2, 2)}


@dataclass(frozen=True)
class TinyCausalWan(TinyWan):
    """Causal Forcing Wan (ComfyUI v0.20+): Wan 2.1's weights; its checkpoint's metadata selects the causal class."""

    requires: tuple[str, ...] = ("comfy.ldm.wan.ar_model.CausalWanModel",)

    def overrides(self) -> dict[str, Any]:
        # Detection reads ``causal_ar`` from the checkpoint's metadata ("config" → "transformer"), which a
        # synthetic checkpoint has not.
        return {**super().overrides(), "causal_ar": True}


# ------------------------------------------------------------------ presets

_UMT5 = ("umt5_xxl_fp8_e4m3fn_scaled.safetensors",)

PRESETS = (
    # ComfyUI's Wan 2.1 text-to-video template (text_to_video_wan.json): 832×480, 33 frames, 30 uni_pc steps,
    # CFG 6, ModelSamplingSD3 shift 8.
    Preset(name="wan2.1-t2v-1.3b", family="wan",
           description="Wan 2.1 T2V 1.3B (ComfyUI template: 832×480, 33 frames, 30 steps, CFG 6, shift 8)",
           files=ModelFiles("wan2.1_t2v_1.3B_fp16.safetensors", _UMT5, "WAN", "wan_2.1_vae.safetensors"),
           steps=30, sampler="uni_pc", scheduler="simple", cfg=6.0, width=832, height=480, frames=33,
           population=24, generations=50, metric="fidelity", prompts=50, images_per_prompt=1,
           extra={"model_sampling": "SD3", "shift": 8.0}),
    # Image-to-video checkpoints (Wan 2.1 I2V) need a start image per prompt, which calibration prompts lack: the
    # engine supports them (tests), the optimizer has no preset for them.
    # ComfyUI's Wan 2.2 TI2V 5B template (video_wan2_2_5B_ti2v.json): 1280×704, 121 frames, 20 uni_pc steps,
    # CFG 5, shift 8.
    Preset(name="wan2.2-ti2v-5b", family="wan",
           description="Wan 2.2 TI2V 5B (ComfyUI template: 1280×704, 121 frames, 20 steps, CFG 5, shift 8)",
           files=ModelFiles("wan2.2_ti2v_5B_fp16.safetensors", _UMT5, "WAN", "wan2.2_vae.safetensors"),
           steps=20, sampler="uni_pc", scheduler="simple", cfg=5.0, width=1280, height=704, frames=121,
           population=24, generations=50, metric="fidelity", prompts=50, images_per_prompt=1,
           extra={"model_sampling": "SD3", "shift": 8.0}),
    tiny_preset("wan", TinyWan(), "A small random-weight Wan 2.1 T2V built through ComfyUI's detection; 2 latent "
                "frames on a CPU", cfg=4.0, frames=5),
)

TINY_MODELS = {
    "wan2.1-i2v": TinyWanI2V(),
    "wan2.2-ti2v-5b": TinyWan22TI2V(),
    "wan-vace": TinyWanVace(),
    "wan2.1-camera": TinyWanCamera(),
    "wan-humo": TinyWanHumo(),
    "wan2.2-s2v": TinyWanS2V(),
    "wan2.2-animate": TinyWanAnimate(),
    "wan2.1-scail": TinyWanScail(),
    "wan2.2-wandancer": TinyWanDancer(),
}

# dim 512 (4 heads), 4 blocks, 2 latent frames × 16 × 32 patches = 1024 image tokens; CFG batches cond and uncond
BENCHMARK_MODELS = (
    BenchmarkModel("wan", TinyWan(dim=512, ffn_dim=2048, depth=4, text_dim=256), width=512, height=256, cfg=4.0),
)

"""Wan presets: the released text-, image- and text+image-to-video models as ComfyUI's templates run
them, and tiny random-weight Wan models.

ComfyUI detects Wan's width from its weights (heads = dim / 128), so the tiny models go through the
real loader: a random state dict of ComfyUI's own Wan class, loaded with
``comfy.sd.load_diffusion_model_state_dict``. What the detection does not read (the 4096-wide
UMT5 context, 256 timestep features, the 1280-wide CLIP-image input) keeps the real size.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from ..tiny_models import _randomize
from . import BenchmarkModel, ModelFiles, Preset

HEAD_DIM = 128            # ComfyUI's detection: num_heads = dim // 128
TEXT_DIM = 4096           # UMT5-XXL hidden states; not detected, the constructor's default
CLIP_VISION_TOKENS = 257  # CLIP ViT-H penultimate states of one image
CLIP_VISION_WIDTH = 1280


@dataclass(frozen=True)
class TinyWan:
    """A small Wan of any ComfyUI Wan class (the class follows from ``model_type`` and ``extra``)."""

    dim: int = 128                   # a multiple of HEAD_DIM
    ffn_dim: int = 256
    depth: int = 2
    model_type: str = "t2v"          # "t2v" or "i2v" (CLIP-image cross-attention), "vace", "camera", "s2v", ...
    in_dim: int = 16                 # 36 for image-to-video (16 latent + 4 mask + 16 image channels)
    out_dim: int = 16                # 48 for Wan 2.2 TI2V 5B
    frames: int = 5                  # video frames; the latent has (frames - 1) // 4 + 1 of them
    spatial_compression: int = 8     # 16 for Wan 2.2's VAE
    extra: dict[str, Any] = field(default_factory=dict)  # subclass arguments, e.g. vace_layers

    @property
    def latent_channels(self) -> int:
        return self.out_dim

    def model_class(self) -> type:
        from comfy.ldm.wan import model, model_animate
        return {"vace": model.VaceWanModel, "camera": model.CameraWanModel, "humo": model.HumoWanModel,
                "s2v": model.WanModel_S2V, "animate": model_animate.AnimateWanModel}.get(self.model_type, model.WanModel)

    def params(self) -> dict[str, Any]:
        """The constructor arguments ComfyUI's detection derives from this model's weights."""
        return {"model_type": self.model_type, "dim": self.dim, "ffn_dim": self.ffn_dim,
                "num_heads": self.dim // HEAD_DIM, "num_layers": self.depth, "in_dim": self.in_dim,
                "out_dim": self.out_dim, "patch_size": (1, 2, 2), "freq_dim": 256, "window_size": (-1, -1),
                "qk_norm": True, "cross_attn_norm": True, "eps": 1e-6, **self.extra}

    def state_dict(self, seed: int = 0) -> dict[str, torch.Tensor]:
        """Seeded random weights of ComfyUI's Wan class, as a checkpoint holds them."""
        import comfy.ops
        if self.dim % HEAD_DIM:
            raise ValueError(f"Wan's dim must be a multiple of {HEAD_DIM}, not {self.dim}")
        model = self.model_class()(operations=comfy.ops.disable_weight_init, dtype=torch.float32, **self.params())
        _randomize(model, seed)
        return model.state_dict()

    def build(self, seed: int = 0, dtype: torch.dtype = torch.float32) -> Any:
        import comfy.sd
        patcher = comfy.sd.load_diffusion_model_state_dict(self.state_dict(seed), model_options={"dtype": dtype})
        if patcher is None:
            raise RuntimeError("ComfyUI did not detect the tiny Wan state dict")
        return patcher

    def conditioning(self, seed: int, tokens: Optional[int] = None) -> list:
        """UMT5 states (and, for CLIP-image models, a CLIP vision output as WanImageToVideo attaches it)."""
        gen = torch.Generator().manual_seed(seed)
        extra: dict[str, Any] = {}
        if self.model_type in ("i2v", "camera", "animate"):  # models with a CLIP-image branch
            from comfy.clip_vision import Output
            clip = Output()
            clip["penultimate_hidden_states"] = torch.randn(1, CLIP_VISION_TOKENS, CLIP_VISION_WIDTH, generator=gen)
            extra["clip_vision_output"] = clip
        return [[torch.randn(1, tokens or 16, TEXT_DIM, generator=gen), extra]]

    def empty_latent(self, height: int, width: int, batch: int = 1) -> torch.Tensor:
        """As ComfyUI's EmptyHunyuanLatentVideo (Wan 2.1) or Wan22ImageToVideoLatent (Wan 2.2) makes it."""
        s = self.spatial_compression
        return torch.zeros(batch, self.latent_channels, (self.frames - 1) // 4 + 1, height // s, width // s)


def tiny_wan_t2v() -> TinyWan:
    return TinyWan()


def tiny_wan_i2v() -> TinyWan:
    return TinyWan(model_type="i2v", in_dim=36)


def tiny_wan22_ti2v() -> TinyWan:
    """Wan 2.2 TI2V 5B's layout: 48-channel latents, 16× spatial compression, text-only cross-attention."""
    return TinyWan(in_dim=48, out_dim=48, spatial_compression=16)


_UMT5 = ("umt5_xxl_fp8_e4m3fn_scaled.safetensors",)

PRESETS = (
    # ComfyUI's Wan 2.1 text-to-video example: 832×480, 33 frames, 30 uni_pc steps, CFG 6, shift 8.
    Preset(name="wan2.1-t2v-1.3b", family="wan",
           description="Wan 2.1 T2V 1.3B (ComfyUI example: 832×480, 33 frames, 30 steps, CFG 6, shift 8)",
           files=ModelFiles("wan2.1_t2v_1.3B_fp16.safetensors", _UMT5, "WAN", "wan_2.1_vae.safetensors"),
           steps=30, sampler="uni_pc", scheduler="simple", cfg=6.0, width=832, height=480, frames=33,
           population=24, generations=50, metric="fidelity", prompts=50, images_per_prompt=1,
           extra={"model_sampling": "SD3", "shift": 8.0}),
    # Image-to-video checkpoints (Wan 2.1 I2V) need a start image per prompt, which calibration prompts lack: the
    # engine supports them (tests), the optimizer has no preset for them.
    # ComfyUI's Wan 2.2 TI2V 5B template: 1280×704, 121 frames, 20 uni_pc steps, CFG 5, shift 8.
    Preset(name="wan2.2-ti2v-5b", family="wan",
           description="Wan 2.2 TI2V 5B (ComfyUI template: 1280×704, 121 frames, 20 steps, CFG 5, shift 8)",
           files=ModelFiles("wan2.2_ti2v_5B_fp16.safetensors", _UMT5, "WAN", "wan2.2_vae.safetensors"),
           steps=20, sampler="uni_pc", scheduler="simple", cfg=5.0, width=1280, height=704, frames=121,
           population=24, generations=50, metric="fidelity", prompts=50, images_per_prompt=1,
           extra={"model_sampling": "SD3", "shift": 8.0}),
    Preset(name="tiny-wan", family="wan",
           description="A small random-weight Wan 2.1 T2V loaded through ComfyUI's detection; 2 latent frames on a CPU",
           tiny=tiny_wan_t2v(), steps=10, sampler="euler", scheduler="simple", cfg=4.0,
           width=128, height=128, frames=5, population=12, generations=8, metric="fidelity", prompts=8,
           images_per_prompt=1),
)

# dim 512 (4 heads), 4 blocks, 2 latent frames × 16 × 32 patches = 1024 image tokens; CFG batches cond and uncond
BENCHMARK_MODELS = (
    BenchmarkModel("wan", TinyWan(dim=512, ffn_dim=2048, depth=4), width=512, height=256, cfg=4.0),
)

"""NVIDIA Cosmos Predict2 (Text2Image, Video2World) in ComfyUI's ``comfy.ldm.cosmos.predict2``.

Each ``blocks`` entry (``Block``) has three real submodules, the components: ``self_attn``,
``cross_attn`` (T5 text) and ``mlp``. Their ``forward`` is hooked through ModelPatcher object patches,
as for PixArt; the block applies the current step's AdaLN(-LoRA) modulation and gate to the raw
outputs and adds them out of place, so cached outputs are never written into. Video2World's
per-frame timesteps (the conditioning frames are at noise level 0) only change that modulation,
which stays the current step's.

Anima (``anima.py``) runs these blocks too; its module reuses this one's groups and costs.
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

BLOCKS = Group("blocks", "blocks", (Component("self_attn", module="self_attn"),
                                    Component("cross_attn", module="cross_attn"),
                                    Component("mlp", module="mlp")))


def predict2_block_macs(block: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> dict[str, float]:
    """MACs of one ``Block``'s components, from its own layers."""
    img, txt = tokens.image, tokens.text
    cross = block.cross_attn
    inner = cross.n_heads * cross.head_dim
    return {
        "self_attn": module_linear_macs(block.self_attn, img)
                     + (attention_matmul_macs(img, img, inner) if attention_matmuls else 0.0),
        "cross_attn": module_linear_macs(cross.q_proj, img) + module_linear_macs(cross.output_proj, img)
                      + module_linear_macs(cross.k_proj, txt) + module_linear_macs(cross.v_proj, txt)
                      + (attention_matmul_macs(img, txt, inner) if attention_matmuls else 0.0),
        "mlp": module_linear_macs(block.mlp, img),
    }


def predict2_constant_macs(dm: torch.nn.Module, image_tokens: int) -> float:
    """What every step runs outside the components: the patch embedding, the timestep embedding, every block's three
    modulation layers and the final layer. One timestep per batch row (Video2World's per-frame timesteps run the
    modulation layers once per latent frame instead: a few hundred thousand MACs per frame, not counted)."""
    modulation = sum(module_linear_macs(getattr(block, name), 1) for block in dm.blocks
                     for name in ("adaln_modulation_self_attn", "adaln_modulation_cross_attn", "adaln_modulation_mlp"))
    final = dm.final_layer
    return (module_linear_macs(dm.x_embedder, image_tokens) + module_linear_macs(dm.t_embedder, 1) + modulation
            + module_linear_macs(final.adaln_modulation, 1) + module_linear_macs(final.linear, image_tokens))


def predict2_tokens(dm: torch.nn.Module, x: torch.Tensor, context: Optional[torch.Tensor]) -> CallTokens:
    """Patches of a (B, C, T, H, W) latent (ComfyUI pads it to whole patches) and the text tokens."""
    p, pt = dm.patch_spatial, dm.patch_temporal
    t, h, w = x.shape[-3:]
    return CallTokens(image=math.ceil(t / pt) * math.ceil(h / p) * math.ceil(w / p),
                      text=0 if context is None else int(context.shape[1]))


class CosmosPredict2Adapter(FamilyAdapter):
    family = "cosmos_predict2"
    model_classes = (("comfy.ldm.cosmos.predict2", "MiniTrainDIT"),)
    variants = {"CosmosT2IPredict2": "cosmos-predict2-t2i", "CosmosI2VPredict2": "cosmos-predict2-video2world"}
    groups = (BLOCKS,)

    def tokens(self, dm: torch.nn.Module, x: torch.Tensor, context: Optional[torch.Tensor]) -> CallTokens:
        return predict2_tokens(dm, x, context)

    def costs(self, dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
        return CostTable.from_components(self.layout(dm), {"blocks": predict2_block_macs(dm.blocks[0], tokens,
                                                                                          attention_matmuls)},
                                         predict2_constant_macs(dm, tokens.image))


ADAPTERS = (CosmosPredict2Adapter(),)

PATCH = 2                # spatial patch; ComfyUI's detection fixes it (and a temporal patch of 1)


@dataclass(frozen=True)
class TinyCosmosPredict2(TinyModel):
    """Cosmos Predict2 as its checkpoints look to ComfyUI's detection, at a small width.

    Detection reads the width and the input channels (16, or 17 with Video2World's mask channel) from the patch
    embedding; it sets depth and heads only for the released widths (2048, 5120) and fixes the text width and the
    AdaLN-LoRA width, so those are overrides here.
    """

    hidden: int = 64
    heads: int = 2
    depth: int = 2
    context_dim: int = 32            # the T5-XXL width in the released models (1024)
    adaln_lora_dim: int = 16
    image_to_video: bool = False     # Video2World: a 17th input channel (the inverted conditioning mask)
    frames: int = 1                  # video frames; the latent has (frames - 1) // 4 + 1 of them
    latent_channels = 16             # the Wan 2.1 VAE
    test_size = 64                   # an 8×8 latent: 16 patches per latent frame

    def checkpoint(self) -> dict[str, tuple[int, ...]]:
        h = self.hidden
        in_channels = self.latent_channels + int(self.image_to_video) + 1     # + the padding-mask channel
        keys = {"x_embedder.proj.1.weight": (h, in_channels * PATCH * PATCH), "t_embedder.1.linear_1.weight": (h, h),
                "final_layer.linear.weight": (PATCH * PATCH * self.latent_channels, h)}
        for i in range(self.depth):
            keys[f"blocks.{i}.self_attn.q_proj.weight"] = (h, h)
            keys[f"blocks.{i}.cross_attn.k_proj.weight"] = (h, self.context_dim)
            keys[f"blocks.{i}.mlp.layer1.weight"] = (4 * h, h)
        return keys

    def overrides(self) -> dict[str, Any]:
        return {"num_blocks": self.depth, "num_heads": self.heads, "crossattn_emb_channels": self.context_dim,
                "adaln_lora_dim": self.adaln_lora_dim}

    def conditioning(self, seed: int, tokens: Optional[int] = None) -> list:
        gen = torch.Generator().manual_seed(seed)
        return [[text_states(gen, tokens or 16, self.context_dim), {}]]

    def empty_latent(self, height: int, width: int, batch: int = 1) -> torch.Tensor:
        """As ComfyUI's EmptySD3LatentImage (an image; sampling adds the frame axis) or CosmosPredict2ImageToVideoLatent
        (a video) makes it."""
        if self.frames == 1:
            return super().empty_latent(height, width, batch)
        frames = (self.frames - 1) // 4 + 1
        return torch.zeros(batch, self.latent_channels, frames, height // self.compression, width // self.compression)


PRESETS = (
    # ComfyUI's template image_cosmos_predict2_2B_t2i.json (Comfy-Org/workflow_templates; no longer in the installed
    # templates package): KSampler 35 steps, CFG 4, euler, karras, 1024² (EmptySD3LatentImage), the "cosmos" text
    # encoder (old T5-XXL) and the Wan 2.1 VAE.
    Preset(name="cosmos-predict2-2b-t2i", family="cosmos_predict2",
           description="Cosmos Predict2 2B Text2Image (ComfyUI template: 1024², 35 steps, CFG 4, euler/karras)",
           files=ModelFiles("cosmos_predict2_2B_t2i.safetensors", ("oldt5_xxl_fp8_e4m3fn_scaled.safetensors",),
                            "COSMOS", "wan_2.1_vae.safetensors"),
           steps=35, sampler="euler", scheduler="karras", cfg=4.0, width=1024, height=1024,
           population=24, generations=50, metric="image_reward"),
    tiny_preset("cosmos_predict2", TinyCosmosPredict2(), "A small random-weight Cosmos Predict2 Text2Image built "
                "through ComfyUI's detection; runs on a CPU in minutes", scheduler="karras", cfg=4.0),
)

# hidden 512 (4 heads), 8 blocks, 1024 image tokens (512² image: 64×64 latent, 2×2 patches); CFG batches cond and uncond
BENCHMARK_MODELS = (
    BenchmarkModel("cosmos_predict2", TinyCosmosPredict2(hidden=512, heads=4, depth=8, context_dim=256,
                                                         adaln_lora_dim=64), width=512, height=512, cfg=4.0),
)

# Video2World: the mask channel, 2 latent frames (and, in tests/test_family_cosmos_predict2.py, per-frame timesteps)
TINY_MODELS = {"cosmos-predict2-video2world": TinyCosmosPredict2(image_to_video=True, frames=5)}

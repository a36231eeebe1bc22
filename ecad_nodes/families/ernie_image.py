"""ERNIE-Image (and ERNIE-Image-Turbo, the same class) in ComfyUI's ``comfy.ldm.ernie``.

A single-stream DiT: the image patches and the projected text states run as one sequence through
``layers`` (``ErnieImageSharedAdaLNBlock``), every layer modulated by one shared ``adaLN_modulation``
of the timestep. Each layer has two real submodules, the components: ``self_attention`` (joint
attention over image and text tokens) and ``mlp`` (a GELU-gated feed-forward). Their ``forward`` is
hooked through ModelPatcher object patches, as for PixArt; the layer gates their raw outputs and adds
them out of place (``residual + gate * out``), so cached outputs are never written into.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..costs import CostTable, attention_matmul_macs, linear_macs, module_linear_macs
from ..registry import BenchmarkModel, ModelFiles, Preset, tiny_preset
from ..tiny import TinyModel, text_states
from .base import CallTokens, Component, FamilyAdapter, Group

LAYERS = Group("layers", "layers", (Component("self_attention", module="self_attention"),
                                    Component("mlp", module="mlp")))


def ernie_image_costs(dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
    img, txt = tokens.image, tokens.text
    both = img + txt
    layer = dm.layers[0]
    attention = layer.self_attention
    per_layer = {
        "self_attention": module_linear_macs(attention, both)
                          + (attention_matmul_macs(both, both, attention.inner_dim) if attention_matmuls else 0.0),
        "mlp": module_linear_macs(layer.mlp, both),
    }
    conv = dm.x_embedder.proj
    patch_in = linear_macs(img, conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1], conv.out_channels)
    text_in = module_linear_macs(dm.text_proj, txt) if dm.text_proj is not None and txt else 0.0
    # The timestep embedding, the shared modulation and the final norm's modulation run once per batch row; the final
    # projection runs on text tokens too (ComfyUI drops them afterwards).
    constant = (patch_in + text_in + module_linear_macs(dm.time_embedding, 1) + module_linear_macs(dm.adaLN_modulation, 1)
                + module_linear_macs(dm.final_norm, 1) + module_linear_macs(dm.final_linear, both))
    return CostTable.from_components(ErnieImageAdapter().layout(dm), {"layers": per_layer}, constant)


class ErnieImageAdapter(FamilyAdapter):
    family = "ernie_image"
    model_classes = (("comfy.ldm.ernie.model", "ErnieImageModel"),)
    variants = {"ErnieImage": "ernie-image"}
    groups = (LAYERS,)

    def tokens(self, dm: torch.nn.Module, x: torch.Tensor, context: Optional[torch.Tensor]) -> CallTokens:
        p = dm.patch_size  # ComfyUI's ERNIE-Image does not pad: the latent is a whole number of patches
        return CallTokens(image=(x.shape[-2] // p) * (x.shape[-1] // p),
                          text=0 if context is None else int(context.shape[1]))

    def costs(self, dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
        return ernie_image_costs(dm, tokens, attention_matmuls)


ADAPTERS = (ErnieImageAdapter(),)


@dataclass(frozen=True)
class TinyErnieImage(TinyModel):
    """ERNIE-Image as its checkpoints look to ComfyUI's detection, at a small width.

    Detection recognises the family by one key and leaves every size to the constructor's defaults (the released
    8B model's), so all of them are overrides here.
    """

    hidden: int = 64
    heads: int = 2
    depth: int = 2
    ffn_hidden: int = 128
    text_dim: int = 48               # Ministral-3 3B hidden states in the real model (3072)
    rope_axes: tuple[int, ...] = (8, 12, 12)   # sums to the head size
    latent_channels = 128            # FLUX.2's VAE
    compression = 16
    test_size = 128                  # an 8×8 latent

    def checkpoint(self) -> dict[str, tuple[int, ...]]:
        h = self.hidden
        keys = {"x_embedder.proj.weight": (h, self.latent_channels, 1, 1), "text_proj.weight": (h, self.text_dim),
                "adaLN_modulation.1.weight": (6 * h, h), "final_linear.weight": (self.latent_channels, h)}
        for i in range(self.depth):
            keys[f"layers.{i}.self_attention.to_q.weight"] = (h, h)
            keys[f"layers.{i}.mlp.linear_fc2.weight"] = (h, self.ffn_hidden)
        return keys

    def overrides(self) -> dict[str, Any]:
        return {"hidden_size": self.hidden, "num_attention_heads": self.heads, "num_layers": self.depth,
                "ffn_hidden_size": self.ffn_hidden, "text_in_dim": self.text_dim, "rope_axes_dim": list(self.rope_axes)}

    def conditioning(self, seed: int, tokens: Optional[int] = None) -> list:
        gen = torch.Generator().manual_seed(seed)
        return [[text_states(gen, tokens or 16, self.text_dim), {}]]


_ERNIE_FILES = dict(text_encoders=("ministral-3-3b.safetensors",), clip_type="FLUX2", vae="flux2-vae.safetensors")

PRESETS = (
    # ComfyUI's template image_ernie_image.json: KSampler 20 steps, CFG 4, euler, simple, 1024² (EmptyFlux2LatentImage);
    # the template's optional prompt enhancer (a second text model) is left out.
    Preset(name="ernie-image", family="ernie_image",
           description="ERNIE-Image (ComfyUI template: 1024², 20 steps, CFG 4, euler/simple)",
           files=ModelFiles("ernie-image.safetensors", **_ERNIE_FILES),
           steps=20, sampler="euler", scheduler="simple", cfg=4.0, width=1024, height=1024,
           population=24, generations=50, metric="image_reward"),
    # ComfyUI's template image_ernie_image_turbo.json: 8 steps, CFG 1 (negative zeroed out), euler, simple, 1024².
    Preset(name="ernie-image-turbo", family="ernie_image",
           description="ERNIE-Image-Turbo (ComfyUI template: 1024², 8 steps, CFG 1, euler/simple)",
           files=ModelFiles("ernie-image-turbo.safetensors", **_ERNIE_FILES),
           steps=8, sampler="euler", scheduler="simple", cfg=1.0, width=1024, height=1024,
           population=24, generations=50, metric="image_reward"),
    tiny_preset("ernie_image", TinyErnieImage(), "A small random-weight ERNIE-Image built through ComfyUI's detection; "
                "runs on a CPU in minutes", cfg=4.0),
)

# hidden 512 (4 heads), 8 layers, 1024 image tokens (512² image, a 32×32 latent of 1×1 patches); CFG batches cond and uncond
BENCHMARK_MODELS = (
    BenchmarkModel("ernie_image", TinyErnieImage(hidden=512, heads=4, depth=8, ffn_hidden=1536, text_dim=256,
                                                 rope_axes=(32, 48, 48)), width=512, height=512, cfg=4.0),
)

"""Lumina Image 2.0 (also Neta Lumina and NewBie-image) and Z-Image on ComfyUI's ``comfy.ldm.lumina`` ``NextDiT``.

Every ``JointTransformerBlock`` has two real submodules, the components: ``attn`` (``attention``)
and ``mlp`` (``feed_forward``). Their ``forward`` is hooked, so their raw outputs are cached; the
block still applies the current step's ``*_norm2`` RMSNorm and ``tanh`` gate to them, out of place
(with reference latents, ComfyUI v0.20's ``apply_gate`` scales the norm's output in place, never
the cached tensor). Three block groups, in the order they run:

* ``context_refiner``: unmodulated blocks over the text alone; their input does not depend on the
  step, so reusing them is exact;
* ``noise_refiner``: modulated blocks over the image tokens alone;
* ``layers``: the main blocks over ``cat(text, image)``.

ComfyUI runs several models on this class, all with these groups and submodules:

* Lumina Image 2.0 and Neta Lumina (``Lumina2`` config, width 2304); NewBie-image is the same with
  a pooled-text projection (``clip_text_dim``, ComfyUI v0.20 and later);
* Z-Image and Z-Image Turbo (``ZImage``, width 3840, ComfyUI v0.20 and later): a one-layer adaLN
  on a 256-wide timestep embedding, and text and image tokens padded to multiples of 32 (the
  padding runs through the blocks, so the cost model counts it);
* the pixel-space Z-Image (``ZImagePixelSpace``: ``NextDiTPixelSpace``, the same backbone on RGB
  patches with a small per-patch MLP decoder instead of the final layer).

Refused by name: Z-Image Omni (a ``siglip_refiner``, which runs, like its reference-image tokens,
only when reference images are given; neither the layout nor the cost model covers them).

Costs count the text as the text encoder's tokens. ComfyUI v0.3.x runs the main blocks on a padded
prompt's unmasked tokens only (Lumina 2's attention mask), fewer than counted; later versions
ignore the mask. Reference latents (Z-Image editing) add image tokens the cost model does not see.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..costs import CostTable, attention_matmul_macs, module_linear_macs
from ..registry import BenchmarkModel, ModelFiles, Preset, tiny_preset
from ..schedule import Layout
from ..tiny import TinyModel, text_states
from .base import CallTokens, Component, FamilyAdapter, Group, UnsupportedModelError

BLOCK_COMPONENTS = (Component("attn", module="attention"), Component("mlp", module="feed_forward"))
CONTEXT_REFINER = Group("context_refiner", "context_refiner", BLOCK_COMPONENTS)
NOISE_REFINER = Group("noise_refiner", "noise_refiner", BLOCK_COMPONENTS)
LAYERS = Group("layers", "layers", BLOCK_COMPONENTS)


def _padded(tokens: int, multiple: Optional[int]) -> int:
    """Tokens after Z-Image's padding to a multiple (``pad_zimage``); unchanged without one."""
    return tokens + (-tokens) % multiple if multiple else tokens


def lumina_block_macs(block: torch.nn.Module, tokens: int, attention_matmuls: bool = False) -> dict[str, float]:
    attention = block.attention
    width = attention.n_local_heads * attention.head_dim   # key/value heads are repeated to the query heads
    return {"attn": module_linear_macs(attention, tokens)
                    + (attention_matmul_macs(tokens, tokens, width) if attention_matmuls else 0.0),
            "mlp": module_linear_macs(block.feed_forward, tokens)}


def lumina_costs(dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
    multiple = getattr(dm, "pad_tokens_multiple", None)
    text, image = _padded(tokens.text, multiple), _padded(tokens.image, multiple)
    per_group = {group: lumina_block_macs(getattr(dm, group)[0], n, attention_matmuls)
                 for group, n in (("context_refiner", text), ("noise_refiner", image), ("layers", text + image))
                 if len(getattr(dm, group))}
    # Embedders run on the tokens before padding; the timestep (and NewBie's pooled text) once per batch row.
    constant = (module_linear_macs(dm.t_embedder, 1) + module_linear_macs(dm.cap_embedder, tokens.text)
                + module_linear_macs(dm.x_embedder, tokens.image)
                + sum(module_linear_macs(block.adaLN_modulation, 1) for block in list(dm.noise_refiner) + list(dm.layers)))
    if getattr(dm, "clip_text_pooled_proj", None) is not None:
        constant += module_linear_macs(dm.clip_text_pooled_proj, 1) + module_linear_macs(dm.time_text_embed, 1)
    final = getattr(dm, "final_layer", None)
    if final is not None:   # the final layer sees the text too
        constant += module_linear_macs(final.adaLN_modulation, 1) + module_linear_macs(final.linear, text + image)
    else:                   # NextDiTPixelSpace: the decoder runs once per image patch
        constant += module_linear_macs(dm.dec_net, tokens.image)
    return CostTable.from_components(LuminaAdapter().layout(dm), per_group, constant)


class LuminaAdapter(FamilyAdapter):
    family = "lumina2"
    model_classes = (("comfy.ldm.lumina.model", "NextDiT"), ("comfy.ldm.lumina.model", "NextDiTPixelSpace"))
    # ComfyUI has one config for Z-Image and Z-Image Turbo (same layout), so one variant names both.
    variants = {"Lumina2": "lumina-image-2.0", "ZImage": "z-image", "ZImagePixelSpace": "z-image-pixel"}
    groups = (CONTEXT_REFINER, NOISE_REFINER, LAYERS)

    def variant(self, base_model: Any) -> Optional[str]:
        variant = super().variant(base_model)
        if variant == "lumina-image-2.0" and getattr(base_model.diffusion_model, "clip_text_pooled_proj", None) is not None:
            return "newbie-image"   # NewBie runs on ComfyUI's Lumina2 config, with a pooled-text projection
        return variant

    def check_supported(self, dm: torch.nn.Module) -> None:
        if getattr(dm, "siglip_refiner", None) is not None:
            raise UnsupportedModelError(
                f"{type(dm).__module__}.{type(dm).__name__} with a SigLIP refiner (Z-Image Omni, siglip_feat_dim) is not "
                "supported: its siglip_refiner blocks and reference-image tokens run only when reference images are "
                "given, which ECAD's layout and cost model do not cover")

    def tokens(self, dm: torch.nn.Module, x: torch.Tensor, context: Optional[torch.Tensor]) -> CallTokens:
        p = dm.patch_size  # the latent is padded to whole patches
        return CallTokens(image=((x.shape[-2] + p - 1) // p) * ((x.shape[-1] + p - 1) // p),
                          text=0 if context is None else int(context.shape[1]))

    def costs(self, dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
        return lumina_costs(dm, tokens, attention_matmuls)


ADAPTERS = (LuminaAdapter(),)


def lumina_layout(context_refiners: int, noise_refiners: int, depth: int) -> Layout:
    return LuminaAdapter().layout_of_sizes(context_refiner=context_refiners, noise_refiner=noise_refiners, layers=depth)


# ------------------------------------------------------------------ tiny models, presets, benchmark models



@dataclass(frozen=True)
class TinyLumina2(TinyModel):
    """Lumina 2 as its checkpoints look to ComfyUI's detection, at a small width, with the released model's
    grouped-query attention (fewer key/value heads than query heads) and qk-norm.

    ComfyUI tells Lumina 2 (2304) and Z-Image (3840) apart by the caption embedder's width and fixes the
    heads and rope axes from it, so that one weight keeps the released width; ``overrides()`` then sets
    the small width, heads and axes.
    """

    hidden: int = 64
    heads: int = 2
    kv_heads: int = 1
    depth: int = 2                               # main blocks; 2 context and 2 noise refiner blocks, as released
    caption_dim: int = 32                        # Gemma-2-2B hidden states in the real model (2304)
    axes_dims: tuple[int, ...] = (8, 12, 12)     # sums to the head size
    released_width = 2304
    latent_channels = 16

    def checkpoint(self) -> dict[str, tuple[int, ...]]:
        head = self.hidden // self.heads
        keys = {"cap_embedder.1.weight": (self.released_width, self.caption_dim),
                "noise_refiner.0.attention.k_norm.weight": (head,)}
        for i in range(self.depth):
            keys[f"layers.{i}.attention.qkv.weight"] = ((self.heads + 2 * self.kv_heads) * head, self.hidden)
        return keys

    def overrides(self) -> dict[str, Any]:
        return {"dim": self.hidden, "n_heads": self.heads, "n_kv_heads": self.kv_heads, "axes_dims": list(self.axes_dims)}

    def conditioning(self, seed: int, tokens: Optional[int] = None, padding: int = 0) -> list:
        """The text encoder's hidden states and attention mask; ``padding`` masks that many trailing tokens out."""
        gen = torch.Generator().manual_seed(seed)
        n = tokens or 16
        mask = torch.ones(1, n, dtype=torch.long)
        if padding:
            mask[:, n - padding:] = 0
        return [[text_states(gen, n, self.caption_dim), {"attention_mask": mask}]]


@dataclass(frozen=True)
class TinyNewBie(TinyLumina2):
    """NewBie-image: Lumina 2 with a pooled-text (Jina CLIP) projection added to the timestep embedding."""

    clip_text_dim: int = 16                      # Jina CLIP v2 pooled output in the real model (1024)

    def checkpoint(self) -> dict[str, tuple[int, ...]]:
        return {**super().checkpoint(), "clip_text_pooled_proj.0.weight": (self.clip_text_dim,)}

    def unavailable(self) -> Optional[str]:
        from comfy.ldm.lumina.model import NextDiT
        if "clip_text_dim" not in inspect.signature(NextDiT.__init__).parameters:
            return "this ComfyUI's NextDiT has no pooled-text projection (clip_text_dim), which NewBie-image needs"
        return None

    def conditioning(self, seed: int, tokens: Optional[int] = None, padding: int = 0) -> list:
        cond = super().conditioning(seed, tokens, padding)
        cond[0][1]["pooled_output"] = torch.randn(1, self.clip_text_dim, generator=torch.Generator().manual_seed(seed + 1))
        return cond


@dataclass(frozen=True)
class TinyZImage(TinyLumina2):
    """Z-Image (Turbo) as ComfyUI's detection sees its checkpoints: detection reads the released width 3840 and
    configures Z-Image from it (one-layer adaLN, token padding, rope, MLP width); the model is then built small.

    The one-layer adaLN reads ``min(width, 256)`` features of a 256-wide timestep embedding, so the width
    cannot go below 256.
    """

    hidden: int = 256
    heads: int = 2
    kv_heads: int = 2                            # Z-Image has no grouped-query attention
    axes_dims: tuple[int, ...] = (32, 48, 48)    # the released axes (head size 128)
    caption_dim: int = 32                        # Qwen3-4B hidden states in the real model (2560)
    released_width = 3840

    def checkpoint(self) -> dict[str, tuple[int, ...]]:
        # the pad tokens' presence switches on the padding to multiples of 32
        return {**super().checkpoint(), "cap_pad_token": (1, self.hidden), "x_pad_token": (1, self.hidden)}

    def model_config(self, config: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> Any:
        # ComfyUI matches its ZImage config by the released width: match on detection's own configuration,
        # then configure the matched class with the small one.
        import comfy.model_detection
        released = comfy.model_detection.detect_unet_config(state_dict, "")
        matched = comfy.model_detection.model_config_from_unet_config(released, state_dict)
        return None if matched is None else type(matched)(config)

    requires = ("comfy.supported_models.ZImage",)


@dataclass(frozen=True)
class TinyZImagePixel(TinyZImage):
    """The pixel-space Z-Image: NextDiTPixelSpace on RGB patches, decoded per patch by a small MLP."""

    patch: int = 16
    decoder_hidden: int = 32
    decoder_blocks: int = 2
    decoder_max_freqs: int = 4
    latent_channels = 3
    compression = 1                              # pixel space

    def checkpoint(self) -> dict[str, tuple[int, ...]]:
        pixels = self.patch * self.patch * 3
        keys = {**super().checkpoint(), "x_embedder.weight": (self.hidden, pixels),
                "dec_net.cond_embed.weight": (self.decoder_hidden, self.hidden),
                "dec_net.input_embedder.embedder.0.weight": (self.decoder_hidden, pixels + self.decoder_max_freqs ** 2),
                "dec_net.final_layer.linear.weight": (pixels, self.decoder_hidden)}
        for i in range(self.decoder_blocks):
            keys[f"dec_net.res_blocks.{i}.mlp.0.weight"] = (self.decoder_hidden, self.decoder_hidden)
        return keys

    requires = ("comfy.supported_models.ZImagePixelSpace",)


_LUMINA_SHIFT = {"model_sampling": "AuraFlow"}

PRESETS = (
    # ComfyUI's Lumina Image 2.0 example: 1024², 25 res_multistep/simple steps, CFG 4, ModelSamplingAuraFlow shift 6
    # (the model's default); split files from Comfy-Org's repackaging.
    Preset(name="lumina-image-2.0", family="lumina2",
           description="Lumina Image 2.0 (ComfyUI example: 1024², 25 steps, CFG 4, shift 6)",
           files=ModelFiles("lumina_2_model_bf16.safetensors", ("gemma_2_2b_fp16.safetensors",), "LUMINA2",
                            "ae.safetensors"),
           steps=25, sampler="res_multistep", scheduler="simple", cfg=4.0, width=1024, height=1024,
           population=24, generations=50, metric="image_reward", extra={**_LUMINA_SHIFT, "shift": 6.0}),
    # ComfyUI's template image_z_image_turbo.json: UNETLoader, CLIPLoader (qwen_3_4b, type lumina2), 1024²,
    # KSampler 8 res_multistep/simple steps, CFG 1, ModelSamplingAuraFlow 3.
    Preset(name="z-image-turbo", family="lumina2",
           description="Z-Image Turbo (ComfyUI template: 1024², 8 steps, CFG 1, shift 3)",
           files=ModelFiles("z_image_turbo_bf16.safetensors", ("qwen_3_4b.safetensors",), "LUMINA2", "ae.safetensors"),
           steps=8, sampler="res_multistep", scheduler="simple", cfg=1.0, width=1024, height=1024,
           population=24, generations=50, metric="image_reward", extra={**_LUMINA_SHIFT, "shift": 3.0}),
    # ComfyUI's template image_z_image.json: the base model, 25 res_multistep/simple steps, CFG 4, shift 3.
    Preset(name="z-image", family="lumina2",
           description="Z-Image (ComfyUI template: 1024², 25 steps, CFG 4, shift 3)",
           files=ModelFiles("z_image_bf16.safetensors", ("qwen_3_4b.safetensors",), "LUMINA2", "ae.safetensors"),
           steps=25, sampler="res_multistep", scheduler="simple", cfg=4.0, width=1024, height=1024,
           population=24, generations=50, metric="image_reward", extra={**_LUMINA_SHIFT, "shift": 3.0}),
    # ComfyUI's template image_newbieimage_exp0_1-t2i.json: DualCLIPLoader (gemma-3-4b-it, Jina CLIP v2, type newbie),
    # 1024 wide × 1536 high, 20 res_multistep/simple steps, CFG 5.5, ModelSamplingAuraFlow 6.
    Preset(name="newbie-image", family="lumina2",
           description="NewBie-image Exp0.1 (ComfyUI template: 1024×1536, 20 steps, CFG 5.5, shift 6)",
           files=ModelFiles("NewBie-Image-Exp0.1-bf16.safetensors",
                            ("gemma_3_4b_it_bf16.safetensors", "jina_clip_v2_bf16.safetensors"), "NEWBIE", "ae.safetensors"),
           steps=20, sampler="res_multistep", scheduler="simple", cfg=5.5, width=1024, height=1536,
           population=24, generations=50, metric="image_reward", extra={**_LUMINA_SHIFT, "shift": 6.0}),
    tiny_preset("lumina2", TinyLumina2(), "A small random-weight Lumina 2 built through ComfyUI's detection; runs on a "
                "CPU in minutes", cfg=4.0),
)

TINY_MODELS = {"newbie-image": TinyNewBie(), "z-image": TinyZImage(), "z-image-pixel": TinyZImagePixel()}

# hidden 512, 2 + 2 refiners and 8 blocks, 1024 image tokens (512² image). Lumina 2 (4 query heads of 128, 2 key/value
# heads) without CFG: its norms and rotary embeddings do more elementwise work per token than FLUX's; with one batch row
# a step takes about as long as the FLUX benchmark model's. Z-Image as its Turbo runs, without CFG.
BENCHMARK_MODELS = (
    BenchmarkModel("lumina2", TinyLumina2(hidden=512, heads=4, kv_heads=2, depth=8, caption_dim=256,
                                          axes_dims=(32, 48, 48)), width=512, height=512),
    BenchmarkModel("z-image", TinyZImage(hidden=512, heads=4, kv_heads=4, depth=8, caption_dim=256),
                   width=512, height=512),
    BenchmarkModel("z-image-pixel", TinyZImagePixel(hidden=512, heads=4, kv_heads=4, depth=8, caption_dim=256,
                                                    decoder_hidden=128), width=512, height=512),
)

"""LTX-Video 0.9.x and LTX-2 (audio and video) in ComfyUI's ``comfy.ldm.lightricks``.

One family, two block kinds, so two groups on the same ``transformer_blocks`` list (a model has one
or the other; the layout keeps the one it has):

* ``transformer_blocks``: LTX-Video's ``BasicTransformerBlock`` (``LTXVModel``, every ComfyUI
  release): ``self_attn`` (``attn1``), ``cross_attn`` (``attn2``, the text) and ``ffn`` (``ff``);
* ``av_blocks``: LTX-2's ``BasicAVTransformerBlock`` (``LTXAVModel``, ComfyUI v0.20 and later), a
  video and an audio stream with cross-modal attention: ``self_attn`` (``attn1``), ``cross_attn``
  (``attn2``), ``audio_self_attn`` (``audio_attn1``), ``audio_cross_attn`` (``audio_attn2``),
  ``audio_to_video_attn`` (video queries, audio keys), ``video_to_audio_attn`` (audio queries, video
  keys), ``ffn`` (``ff``) and ``audio_ffn`` (``audio_ff``), in the order the block runs them.

Every component is a real submodule (a ``CrossAttention`` or ``FeedForward``), hooked through
ModelPatcher object patches; no block forward is copied. The blocks modulate each submodule's input
and gate its output around the call (``x += attn1(...) * gate``, ``x.addcmul_(ff(y), gate)``,
``vx.add_(attn2(...))``, LTX-2.3's cross-attention adaLN ``attn2(...) * q_gate``): the writes go into
the residual stream, never into a submodule's output, so cached outputs keep their raw values.

LTX-2's reference audio (ID-LoRA) adds audio tokens ahead of the audio latent's; its identity
guidance predicts the positive prompt a second time without them, in the same step and under the
same cond uuid: those calls keep caches of their own (``stream_variant``).

Per-token timesteps (image-to-video's conditioning frames, keyframe guides: a noise mask makes
``process_timestep`` give every token its own timestep, LTX-2 compresses them per frame) change only
that modulation, which stays the current step's around a reused output. Keyframe guides are latent
frames appended to the input (and, from ComfyUI v0.20, tokens a negative mask drops); both are the
same at every step, so the cached outputs fit. Their self-attention bias (guide strength below 1)
is an argument of ``attn1``, computed by the model at every step.
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


def _video_blocks(modules: torch.nn.ModuleList, dm: torch.nn.Module) -> list[int]:
    return [i for i, block in enumerate(modules) if not hasattr(block, "audio_attn1")]


def _audio_video_blocks(modules: torch.nn.ModuleList, dm: torch.nn.Module) -> list[int]:
    return [i for i, block in enumerate(modules) if hasattr(block, "audio_attn1")]


TRANSFORMER_BLOCKS = Group("transformer_blocks", "transformer_blocks", (
    Component("self_attn", module="attn1"), Component("cross_attn", module="attn2"), Component("ffn", module="ff")),
    indices=_video_blocks)
AV_BLOCKS = Group("av_blocks", "transformer_blocks", (
    Component("self_attn", module="attn1"), Component("cross_attn", module="attn2"),
    Component("audio_self_attn", module="audio_attn1"), Component("audio_cross_attn", module="audio_attn2"),
    Component("audio_to_video_attn", module="audio_to_video_attn"),
    Component("video_to_audio_attn", module="video_to_audio_attn"),
    Component("ffn", module="ff"), Component("audio_ffn", module="audio_ff")),
    indices=_audio_video_blocks)


@dataclass(frozen=True)
class LTXTokens(CallTokens):
    """Token counts of an LTX call: ``image`` video tokens, ``text`` prompt tokens (after LTX-2's connector), and what
    else the per-step work depends on."""

    audio: int = 0                      # LTX-2's audio tokens
    timestep_rows: int = 1              # rows the video adaLN runs on: 1, or every video token with a noise mask
    audio_timestep_rows: int = 1        # the same for the audio stream


# ------------------------------------------------------------------ costs


def attention_macs(attention: torch.nn.Module, queries: int, keys: int, attention_matmuls: bool = False) -> float:
    """One ComfyUI LTX ``CrossAttention`` call: its projections (and LTX-2.3's per-head gates) from its own layers."""
    macs = (module_linear_macs(attention.to_q, queries) + module_linear_macs(attention.to_k, keys)
            + module_linear_macs(attention.to_v, keys) + module_linear_macs(attention.to_out, queries))
    gate = getattr(attention, "to_gate_logits", None)
    if gate is not None:
        macs += module_linear_macs(gate, queries)
    if attention_matmuls:
        macs += attention_matmul_macs(queries, keys, attention.heads * attention.dim_head)
    return macs


def _module_macs(module: Any, tokens: int) -> float:
    """``module_linear_macs`` for modules ComfyUI may replace by a plain function (LTX-2.3's identity projection)."""
    return module_linear_macs(module, tokens) if isinstance(module, torch.nn.Module) else 0.0


def ltxv_costs(dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
    n, txt = tokens.image, tokens.text
    audio = getattr(tokens, "audio", 0)
    rows, audio_rows = getattr(tokens, "timestep_rows", 1), getattr(tokens, "audio_timestep_rows", 1)
    blocks = dm.transformer_blocks
    per_group: dict[str, dict[str, float]] = {}
    video = [blocks[i] for i in _video_blocks(blocks, dm)]
    if video:
        block = video[0]
        per_group["transformer_blocks"] = {"self_attn": attention_macs(block.attn1, n, n, attention_matmuls),
                                           "cross_attn": attention_macs(block.attn2, n, txt, attention_matmuls),
                                           "ffn": module_linear_macs(block.ff, n)}
    av = [blocks[i] for i in _audio_video_blocks(blocks, dm)]
    if av:
        block = av[0]
        per_group["av_blocks"] = {"self_attn": attention_macs(block.attn1, n, n, attention_matmuls),
                                  "cross_attn": attention_macs(block.attn2, n, txt, attention_matmuls),
                                  "ffn": module_linear_macs(block.ff, n)}
        # Without audio tokens the block runs neither the audio stream nor the cross-modal attention.
        per_group["av_blocks"].update({
            "audio_self_attn": attention_macs(block.audio_attn1, audio, audio, attention_matmuls) if audio else 0.0,
            "audio_cross_attn": attention_macs(block.audio_attn2, audio, txt, attention_matmuls) if audio else 0.0,
            "audio_to_video_attn":
                attention_macs(block.audio_to_video_attn, n, audio, attention_matmuls) if audio else 0.0,
            "video_to_audio_attn":
                attention_macs(block.video_to_audio_attn, audio, n, attention_matmuls) if audio else 0.0,
            "audio_ffn": module_linear_macs(block.audio_ff, audio)})
    # Projections in and out run on every token; each adaLN on its rows (per batch row, or per token with a mask);
    # the text projection on the prompt's tokens unless LTX-2.3 ran it with the connector, at conditioning time.
    constant = (module_linear_macs(dm.patchify_proj, n) + module_linear_macs(dm.adaln_single, rows)
                + module_linear_macs(dm.proj_out, n))
    if not getattr(dm, "caption_proj_before_connector", False):
        constant += _module_macs(dm.caption_projection, txt)
    if getattr(dm, "prompt_adaln_single", None) is not None:
        constant += module_linear_macs(dm.prompt_adaln_single, 1)
    if av:
        constant += (module_linear_macs(dm.audio_patchify_proj, audio) + module_linear_macs(dm.audio_proj_out, audio)
                     + module_linear_macs(dm.audio_adaln_single, audio_rows)
                     + module_linear_macs(dm.av_ca_video_scale_shift_adaln_single, rows)
                     + module_linear_macs(dm.av_ca_a2v_gate_adaln_single, rows)
                     + module_linear_macs(dm.av_ca_audio_scale_shift_adaln_single, audio_rows)
                     + module_linear_macs(dm.av_ca_v2a_gate_adaln_single, audio_rows))
        if not dm.caption_proj_before_connector:
            constant += _module_macs(dm.audio_caption_projection, txt)
        if getattr(dm, "audio_prompt_adaln_single", None) is not None:
            constant += module_linear_macs(dm.audio_prompt_adaln_single, 1)
    return CostTable.from_components(LTXVAdapter().layout(dm), per_group, constant)


# ------------------------------------------------------------------ adapter


def _video_and_audio(x: Any) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """LTX-2's latents (a NestedTensor or a list: video, audio) or LTX-Video's single video latent."""
    parts = x.unbind() if getattr(x, "is_nested", False) and not isinstance(x, torch.Tensor) else x
    if isinstance(parts, (list, tuple)):
        return parts[0], (parts[1] if len(parts) > 1 else None)
    return parts, None


def _reference_audio_tokens(extra: dict) -> int:
    reference = extra.get("ref_audio")
    return int(reference["tokens"].shape[1]) if reference is not None else 0


class LTXVAdapter(FamilyAdapter):
    family = "ltxv"
    model_classes = (("comfy.ldm.lightricks.model", "LTXVModel"), ("comfy.ldm.lightricks.av_model", "LTXAVModel"))
    variants = {"LTXV": "ltxv", "LTXAV": "ltx-2"}
    groups = (TRANSFORMER_BLOCKS, AV_BLOCKS)

    def variant(self, base_model: Any) -> Optional[str]:
        found = super().variant(base_model)
        if found == "ltx-2" and getattr(base_model.diffusion_model, "cross_attention_adaln", False):
            return "ltx-2.3"   # ComfyUI configures LTX-2.3 as LTX-2, with adaLN-modulated cross-attention
        return found

    def tokens(self, dm: torch.nn.Module, x: Any, context: Optional[torch.Tensor]) -> LTXTokens:
        """``x``: the video latent, or LTX-2's latents (video, audio; a NestedTensor or a list). Patches are 1×1×1."""
        video, audio = _video_and_audio(x)
        return LTXTokens(image=math.prod(video.shape[2:]), text=0 if context is None else int(context.shape[1]),
                         audio=0 if audio is None else int(audio.shape[2]))

    def call_tokens(self, dm: torch.nn.Module, x: Any, context: Optional[torch.Tensor], extra: dict) -> LTXTokens:
        shapes = extra.get("latent_shapes")
        if shapes is not None and len(shapes) > 1:   # LTX-2: the sampler packs video and audio into one tensor
            import comfy.utils
            x = comfy.utils.unpack_latents(x, shapes)
        found = self.tokens(dm, x, context)
        video_mask, audio_mask = extra.get("denoise_mask"), extra.get("audio_denoise_mask")
        reference = _reference_audio_tokens(extra)
        image, audio = found.image, found.audio + reference
        if video_mask is not None and extra.get("keyframe_idxs") is not None and hasattr(dm, "_process_input"):
            # ComfyUI v0.20 drops the tokens a negative mask marks (``grid_mask``), at every step alike.
            patches = dm.patchifier.patchify(video_mask)[0]
            image = int((~torch.any(patches < 0, dim=-1)[0]).sum())
        # Reference audio (ID-LoRA) gets timestep 0, so the audio timesteps are per token with it too.
        return LTXTokens(image=image, text=found.text, audio=audio,
                         timestep_rows=image if video_mask is not None else 1,
                         audio_timestep_rows=audio if audio_mask is not None or reference else 1)

    def stream_variant(self, extra: dict) -> Optional[tuple]:
        """LTX-2's reference audio (LTXVReferenceAudio, ID-LoRA) puts its tokens ahead of the audio stream; the node's
        identity guidance predicts the positive prompt again without them in the same step: other caches."""
        reference = _reference_audio_tokens(extra)
        return ("reference audio", reference) if reference else None

    def costs(self, dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
        return ltxv_costs(dm, tokens, attention_matmuls)


ADAPTERS = (LTXVAdapter(),)



# ------------------------------------------------------------------ tiny models and presets

LATENT_CHANNELS = 128          # LTX-Video's VAE: 128 channels, 32× in space, 8× in time
AUDIO_CHANNELS, AUDIO_BINS = 8, 16   # LTX-2's audio VAE latent: 8 channels × 16 frequency bins
AUDIO_LATENTS_PER_SECOND = 25        # 16 kHz, hop 160, 4× downsampling


@dataclass(frozen=True)
class TinyLTXV(TinyModel):
    """LTX-Video as its checkpoints look to ComfyUI's detection, at a small width.

    Detection reads the block count and the text width of ``attn2`` and takes the head size as that width over
    32 heads; the head count and the T5 width are the constructor's released values, so both are overrides.
    """

    heads: int = 2
    head_dim: int = 32
    depth: int = 2
    text_dim: int = 32             # T5-XXL hidden states in the real model (4096)
    frames: int = 9                # video frames; the latent has (frames - 1) // 8 + 1 of them
    latent_channels = LATENT_CHANNELS
    compression = 32
    test_size = 128                # a 4×4 latent per frame, 2 latent frames: 32 video tokens

    @property
    def inner(self) -> int:
        return self.heads * self.head_dim

    def checkpoint(self) -> dict[str, tuple[int, ...]]:
        keys = {"adaln_single.emb.timestep_embedder.linear_1.bias": (self.inner,),
                "patchify_proj.weight": (self.inner, LATENT_CHANNELS)}
        for i in range(self.depth):
            keys[f"transformer_blocks.{i}.attn2.to_k.weight"] = (self.inner, self.inner)  # text projected to the width
        return keys

    def overrides(self) -> dict[str, Any]:
        return {"num_attention_heads": self.heads, "attention_head_dim": self.head_dim,
                "caption_channels": self.text_dim}

    def conditioning(self, seed: int, tokens: Optional[int] = None) -> list:
        """As ComfyUI's T5 encoder and LTXVConditioning give it: T5 states with their attention mask, the frame rate."""
        gen = torch.Generator().manual_seed(seed)
        tokens = tokens or 16
        return [[text_states(gen, tokens, self.text_dim),
                 {"attention_mask": torch.ones(1, tokens, dtype=torch.long), "frame_rate": 25}]]

    def video_latent(self, height: int, width: int, batch: int) -> torch.Tensor:
        """As ComfyUI's EmptyLTXVLatentVideo makes it."""
        return torch.zeros(batch, LATENT_CHANNELS, (self.frames - 1) // 8 + 1, height // 32, width // 32)

    def empty_latent(self, height: int, width: int, batch: int = 1) -> torch.Tensor:
        return self.video_latent(height, width, batch)


@dataclass(frozen=True)
class TinyLTX2(TinyLTXV):
    """LTX-2 (``LTXAVModel``): video and audio streams. Detection reads what it reads for LTX-Video and takes the rest
    from the checkpoint's metadata (not a synthetic checkpoint's), so the audio widths, the text connector and the
    rotary settings of the released model are overrides.

    The prompt reaches the model as the text encoder leaves it (``unprocessed_ltxav_embeds``); ComfyUI's connector
    pads it with learned registers to 1024 tokens when the conditioning is made. The tiny connector has no layers:
    it runs once per prompt, outside the steps ECAD caches, and its matmuls would only blur the cost check.
    """

    audio_heads: int = 2
    audio_head_dim: int = 16
    text_dim: int = 32             # Gemma 3 12B's projected features in the real model (3840)
    cross_attention_adaln: bool = False   # LTX-2.3: adaLN-modulated cross-attention, gated attention heads

    @property
    def audio_inner(self) -> int:
        return self.audio_heads * self.audio_head_dim

    def checkpoint(self) -> dict[str, tuple[int, ...]]:
        return {**super().checkpoint(), "audio_adaln_single.linear.weight": (6 * self.audio_inner, self.audio_inner)}

    def overrides(self) -> dict[str, Any]:
        config = {**super().overrides(), "audio_num_attention_heads": self.audio_heads,
                  "audio_attention_head_dim": self.audio_head_dim, "audio_cross_attention_dim": self.audio_inner,
                  "rope_type": "split", "frequencies_precision": "float64", "use_middle_indices_grid": True,
                  "connector_num_layers": 0}
        if self.cross_attention_adaln:
            # LTX-2.3's text encoder projects to both streams' widths itself, and the connectors run at those widths
            config.update(cross_attention_adaln=True, apply_gated_attention=True, caption_proj_before_connector=True,
                          caption_projection_first_linear=False,
                          connector_num_attention_heads=self.heads, connector_attention_head_dim=self.head_dim,
                          audio_connector_num_attention_heads=self.audio_heads,
                          audio_connector_attention_head_dim=self.audio_head_dim)
        else:
            config.update(connector_num_attention_heads=1, connector_attention_head_dim=self.text_dim)
        return config

    requires = ("comfy.supported_models.LTXAV",)

    def conditioning(self, seed: int, tokens: Optional[int] = None) -> list:
        gen = torch.Generator().manual_seed(seed)
        width = self.inner + self.audio_inner if self.cross_attention_adaln else self.text_dim
        return [[text_states(gen, tokens or 16, width), {"frame_rate": 25, "unprocessed_ltxav_embeds": True}]]

    def audio_latent(self, batch: int) -> torch.Tensor:
        """As ComfyUI's LTXVEmptyLatentAudio makes it at 25 frames per second."""
        latents = math.ceil(self.frames / 25 * AUDIO_LATENTS_PER_SECOND)
        return torch.zeros(batch, AUDIO_CHANNELS, latents, AUDIO_BINS)

    def empty_latent(self, height: int, width: int, batch: int = 1) -> Any:
        """Video and audio latents together, as LTXVConcatAVLatent makes them."""
        import comfy.nested_tensor
        return comfy.nested_tensor.NestedTensor((self.video_latent(height, width, batch), self.audio_latent(batch)))


_T5 = ("t5xxl_fp16.safetensors",)

PRESETS = (
    # ComfyUI's template ltxv_text_to_video.json: ltx-video-2b-v0.9 (a checkpoint with its VAE) and T5-XXL, 768×512,
    # 97 frames, SamplerCustom euler, CFG 3, LTXVScheduler(30 steps, max_shift 2.05, base_shift 0.95, stretch to 0.1),
    # frame rate 25. At these 4992 tokens LTXVScheduler's shift is 2.37, the model's own (its default sampling), so
    # the "simple" schedule gives the template's sigmas except for the final stretch. The VAE is inside the checkpoint:
    # the optimizer needs it as a file of its own under models/vae (pass --vae).
    Preset(name="ltxv-2b", family="ltxv",
           description="LTX-Video 2B 0.9 (ComfyUI template: 768×512, 97 frames, 30 steps, CFG 3)",
           files=ModelFiles("ltx-video-2b-v0.9.safetensors", _T5, "LTXV", "ltx-video-2b-v0.9.safetensors"),
           steps=30, sampler="euler", scheduler="simple", cfg=3.0, width=768, height=512, frames=97,
           population=24, generations=50, metric="fidelity", prompts=50, images_per_prompt=1),
    # ComfyUI's template video_ltx2_t2v.json, first pass (before the 2× latent upscale and the distilled-LoRA pass):
    # ltx-2-19b-dev-fp8 with Gemma 3 12B (LTXAVTextEncoderLoader: the text encoder and the checkpoint's text
    # projection), 1280×720 halved to 640×360 (a 20×11 latent), 121 frames at 24 fps with audio, CFGGuider 4,
    # euler_ancestral, LTXVScheduler(20 steps, 2.05, 0.95, stretch to 0.1): a shift of 1.84 at its 3520 tokens, where
    # "simple" runs the model's 2.37. The optimizer samples video latents only, so it cannot run this preset yet.
    Preset(name="ltx-2-19b", family="ltxv",
           description="LTX-2 19B dev (ComfyUI template first pass: 640×352, 121 frames, 20 steps, CFG 4)",
           files=ModelFiles("ltx-2-19b-dev-fp8.safetensors",
                            ("gemma_3_12B_it_fp4_mixed.safetensors", "ltx-2-19b-dev-fp8.safetensors"), "LTXV",
                            "ltx-2-19b-dev-fp8.safetensors"),
           steps=20, sampler="euler_ancestral", scheduler="simple", cfg=4.0, width=640, height=352, frames=121,
           population=24, generations=50, metric="fidelity", prompts=50, images_per_prompt=1),
    tiny_preset("ltxv", TinyLTXV(), "A small random-weight LTX-Video built through ComfyUI's detection; 2 latent "
                "frames on a CPU", cfg=3.0, frames=9),
)

TINY_MODELS = {"ltx-2": TinyLTX2(), "ltx-2.3": TinyLTX2(cross_attention_adaln=True)}

# width 512 (8 heads), 8 blocks, 2 latent frames × 16 × 32 = 1024 video tokens (1024×512 pixels); CFG 3
BENCHMARK_MODELS = (
    BenchmarkModel("ltxv", TinyLTXV(heads=8, head_dim=64, depth=8, text_dim=256), width=1024, height=512, cfg=3.0),
)

"""CogVideoX (1.0 and 1.5; text-, image-to-video and the CogVideoX-Fun inpainting models ComfyUI runs
for VOID) in ComfyUI's ``comfy.ldm.cogvideo``.

A ``CogVideoXBlock`` runs one sequence of text and video tokens through two components: ``attn``
(joint self-attention over both) and ``ff`` (the feed-forward, also over both). Neither is one
submodule: the block computes q/k/v, the attention and its output projection inline, and the
feed-forward as two bare linear layers (``ff_proj``, ``ff_out``) with a GELU between. So a mirrored
block forward (``COGVIDEOX_MIRROR``) routes both. ``ff`` is also hooked on ``ff_out``, whose output is
the component's: where the copy is not trusted and the block runs ComfyUI's own forward, ``ff_out``
is still reused (``ff_proj`` then runs for nothing) and ``attn`` is computed at every step. Cached
outputs are the raw projections before the block's gates, which it applies out of place, so they are
never written into.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from ..costs import CostTable, attention_matmul_macs, linear_macs, module_linear_macs
from ..registry import BenchmarkModel, tiny_preset
from ..tiny import TinyModel, text_states
from .base import CallTokens, Component, FamilyAdapter, Group
from .mirror import Mirror


def cogvideox_block_forward(route, block, flags, hidden_states, encoder_hidden_states, temb, image_rotary_emb=None,
                            transformer_options=None):
    """``comfy.ldm.cogvideo.model.CogVideoXBlock.forward`` with its joint attention and feed-forward routed."""
    import comfy.ldm.cogvideo.model as cogvideo   # its own names at call time, as upstream's forward sees them
    if transformer_options is None:
        transformer_options = {}
    text_seq_length = encoder_hidden_states.size(1)
    norm_hidden, norm_encoder, gate_msa, enc_gate_msa = block.norm1(hidden_states, encoder_hidden_states, temb)

    def joint_attention() -> torch.Tensor:
        qkv_input = torch.cat([norm_encoder, norm_hidden], dim=1)
        b, s, _ = qkv_input.shape
        n, d = block.num_heads, block.head_dim
        q = block.q(qkv_input).view(b, s, n, d)
        k = block.k(qkv_input).view(b, s, n, d)
        v = block.v(qkv_input)
        q = block.norm_q(q).view(b, s, n, d)
        k = block.norm_k(k).view(b, s, n, d)
        if image_rotary_emb is not None:   # rotary embedding on the video tokens only
            q_img = cogvideo.apply_rotary_emb(q[:, text_seq_length:].transpose(1, 2), image_rotary_emb)
            k_img = cogvideo.apply_rotary_emb(k[:, text_seq_length:].transpose(1, 2), image_rotary_emb)
            q = torch.cat([q[:, :text_seq_length], q_img.transpose(1, 2)], dim=1)
            k = torch.cat([k[:, :text_seq_length], k_img.transpose(1, 2)], dim=1)
        out = cogvideo.optimized_attention(q.reshape(b, s, n * d), k.reshape(b, s, n * d), v, heads=block.num_heads,
                                           transformer_options=transformer_options)
        return block.attn_out(out)

    attn_out = route.component("attn", joint_attention)
    attn_encoder, attn_hidden = attn_out.split([text_seq_length, attn_out.shape[1] - text_seq_length], dim=1)
    hidden_states = hidden_states + gate_msa * attn_hidden
    encoder_hidden_states = encoder_hidden_states + enc_gate_msa * attn_encoder

    norm_hidden, norm_encoder, gate_ff, enc_gate_ff = block.norm2(hidden_states, encoder_hidden_states, temb)
    ff_output = route.component("ff", lambda: block.ff_out(
        F.gelu(block.ff_proj(torch.cat([norm_encoder, norm_hidden], dim=1)), approximate="tanh")))
    hidden_states = hidden_states + gate_ff * ff_output[:, text_seq_length:]
    encoder_hidden_states = encoder_hidden_states + enc_gate_ff * ff_output[:, :text_seq_length]
    return hidden_states, encoder_hidden_states


def _forward_of(block_class: type) -> tuple:
    return (block_class.forward,)


def _call_features(block, args, kwargs) -> tuple:
    """What selects code paths of a call: the rotary embedding (CogVideoX 1.0 5B, 1.5) and the dtype."""
    rotary = kwargs.get("image_rotary_emb", args[3] if len(args) > 3 else None)
    hidden = kwargs.get("hidden_states", args[0] if args else None)
    return (rotary is not None, getattr(hidden, "dtype", None))


#: Fingerprints of the upstream forward this copy was verified against (the contract test checks it).
COGVIDEOX_MIRROR = Mirror(
    "ECAD's copy of CogVideoX's CogVideoXBlock.forward", ("comfy.ldm.cogvideo.model.CogVideoXBlock",),
    cogvideox_block_forward, _forward_of, known={"75946f9065ab9961": "ComfyUI v0.20.1"}, features=_call_features)

BLOCKS = Group("blocks", "blocks", (
    Component("attn"),  # q/k/v, the attention and its projection are inline in the block: only the mirror skips them
    # ff_out's output is the feed-forward's: hooked, it is reused even where the copy is not trusted (ff_proj then
    # still runs); the mirror skips both layers.
    Component("ff", module="ff_out")), mirrors=(COGVIDEOX_MIRROR,))


def cogvideox_costs(dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
    img, txt = tokens.image, tokens.text
    both = img + txt
    block = dm.blocks[0]
    per_block = {
        "attn": sum(module_linear_macs(m, both) for m in (block.q, block.k, block.v, block.attn_out))
                + (attention_matmul_macs(both, both, block.num_heads * block.head_dim) if attention_matmuls else 0.0),
        "ff": module_linear_macs(block.ff_proj, both) + module_linear_macs(block.ff_out, both),
    }
    embed = dm.patch_embed
    proj = embed.proj
    patch_in = (module_linear_macs(proj, img) if isinstance(proj, torch.nn.Linear)
                else linear_macs(img, proj.in_channels * math.prod(proj.kernel_size), proj.out_channels))
    time = module_linear_macs(dm.time_embedding_linear_1, 1) + module_linear_macs(dm.time_embedding_linear_2, 1)
    if dm.ofs_embedding_linear_1 is not None:   # CogVideoX 1.5 image-to-video: ComfyUI always passes an ofs value
        time += module_linear_macs(dm.ofs_embedding_linear_1, 1) + module_linear_macs(dm.ofs_embedding_linear_2, 1)
    modulation = sum(module_linear_macs(b.norm1.linear, 1) + module_linear_macs(b.norm2.linear, 1) for b in dm.blocks)
    constant = (patch_in + module_linear_macs(embed.text_proj, txt) + time + modulation
                + module_linear_macs(dm.norm_out.linear, 1) + module_linear_macs(dm.proj_out, img))
    return CostTable.from_components(CogVideoXAdapter().layout(dm), {"blocks": per_block}, constant)


class CogVideoXAdapter(FamilyAdapter):
    family = "cogvideox"
    model_classes = (("comfy.ldm.cogvideo.model", "CogVideoXTransformer3DModel"),)
    variants = {"CogVideoX_T2V": "cogvideox-t2v", "CogVideoX_I2V": "cogvideox-i2v",
                "CogVideoX_Inpaint": "cogvideox-fun-inpaint"}
    groups = (BLOCKS,)

    def tokens(self, dm: torch.nn.Module, x: torch.Tensor, context: Optional[torch.Tensor]) -> CallTokens:
        """Patches of the (B, C, T, H, W) latent, padded to whole patches as ComfyUI pads it (CogVideoX 1.5 also
        patches time), and the text tokens."""
        p, pt = dm.patch_size, dm.patch_size_t or 1
        t, h, w = x.shape[-3:]
        return CallTokens(image=math.ceil(t / pt) * math.ceil(h / p) * math.ceil(w / p),
                          text=0 if context is None else int(context.shape[1]))

    def costs(self, dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
        return cogvideox_costs(dm, tokens, attention_matmuls)


ADAPTERS = (CogVideoXAdapter(),)

HEAD_DIM = 64            # ComfyUI's detection: heads = width // 64


@dataclass(frozen=True)
class TinyCogVideoX(TinyModel):
    """CogVideoX as its checkpoints look to ComfyUI's detection, at a small width (heads of 64, as detection assumes).

    Detection reads every size it uses from the weights (width, time-embedding width, depth, input channels, patch
    size, text width, the OFS embedding, learned or rotary positions), so there are no overrides.
    """

    hidden: int = 128                # 2 heads
    depth: int = 2
    time_dim: int = 32
    text_dim: int = 32               # T5-XXL in the released models (4096)
    in_channels: int = 16            # 32: image-to-video (the start frame's latent), 48: CogVideoX-Fun inpainting
    version_1_5: bool = False        # CogVideoX 1.5: patches of 2 latent frames, a linear patch embedding
    ofs: bool = False                # CogVideoX 1.5 image-to-video's OFS embedding
    learned_positions: bool = False  # CogVideoX 1.0 5B image-to-video: learned position embeddings instead of rotary
    frames: int = 5                  # video frames; the latent has (frames - 1) // 4 + 1 of them
    latent_channels = 16
    test_size = 64                   # an 8×8 latent per frame: 16 patches per latent frame

    def checkpoint(self) -> dict[str, tuple[int, ...]]:
        h = self.hidden
        patch = ((h, self.in_channels * 2 * 2 * 2) if self.version_1_5 else (h, self.in_channels, 2, 2))
        keys = {"patch_embed.proj.weight": patch, "patch_embed.text_proj.weight": (h, self.text_dim),
                "time_embedding_linear_1.weight": (self.time_dim, h),
                "proj_out.weight": (self.latent_channels * 4 * (2 if self.version_1_5 else 1), h)}
        if self.learned_positions:   # sized by the constructor's default sample size (49 frames of 480×720)
            keys["patch_embed.pos_embedding"] = (1, 226 + 13 * 30 * 45, h)
        if self.ofs:
            keys["ofs_embedding_linear_1.weight"] = (self.time_dim, self.time_dim)  # added to the time embedding
        for i in range(self.depth):
            keys[f"blocks.{i}.norm1.linear.weight"] = (6 * h, self.time_dim)
            keys[f"blocks.{i}.q.weight"] = (h, h)
        return keys

    def conditioning(self, seed: int, tokens: Optional[int] = None) -> list:
        gen = torch.Generator().manual_seed(seed)
        return [[text_states(gen, tokens or 16, self.text_dim), {}]]

    def empty_latent(self, height: int, width: int, batch: int = 1) -> torch.Tensor:
        frames = (self.frames - 1) // 4 + 1
        return torch.zeros(batch, self.latent_channels, frames, height // self.compression, width // self.compression)


# No preset of a released checkpoint: ComfyUI's only CogVideoX template (utility_void_video_inpainting.json) runs the
# VOID inpainting checkpoints (void_pass1/2, CogVideoX-Fun V1.5) on a source video with SAM3 masks, optical-flow-warped
# noise and its own VOID_DDIM sampler (30 steps, simple schedule): nothing the optimizer's text-to-video presets can
# express. Calibrate with the nodes on such a workflow, or against the tiny model below.
PRESETS = (
    tiny_preset("cogvideox", TinyCogVideoX(), "A small random-weight CogVideoX built through ComfyUI's detection; "
                "2 latent frames on a CPU", cfg=6.0, frames=5),
)

# width 512 (8 heads of 64), 8 blocks, 2 latent frames × 16 × 32 patches = 1024 video tokens; CFG batches cond and uncond
BENCHMARK_MODELS = (
    BenchmarkModel("cogvideox", TinyCogVideoX(hidden=512, depth=8, time_dim=128, text_dim=256), width=512, height=256,
                   cfg=6.0),
)

TINY_MODELS = {
    # CogVideoX 1.0 5B image-to-video: learned position embeddings (no rotary embedding in the blocks), 32 input
    # channels; a width divisible by 3 for the position embedding's three axes
    "cogvideox-i2v": TinyCogVideoX(hidden=192, in_channels=32, learned_positions=True),
    # CogVideoX 1.5 image-to-video: temporal patches, a linear patch embedding, the OFS embedding, 32 input channels
    "cogvideox-1.5-i2v": TinyCogVideoX(in_channels=32, version_1_5=True, ofs=True),
    # CogVideoX-Fun V1.5 inpainting, as ComfyUI's VOID workflow runs it: 48 input channels
    "cogvideox-fun-inpaint": TinyCogVideoX(in_channels=48, version_1_5=True),
}

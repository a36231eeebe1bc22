"""Genmo Mochi 1 (preview) in ComfyUI's ``comfy.ldm.genmo`` (``AsymmDiTJoint``).

Each ``AsymmetricJointBlock`` has three real submodules, the components: ``attn`` (the joint
attention of video and text tokens, both streams' projections, returning both outputs), ``mlp_x``
(video) and ``mlp_y`` (text). The last block does not update the text tokens: it has no ``mlp_y``,
and its attention's text projection is an identity, so it is its own group (``last_block``: ``attn``,
``mlp_x``), as SD3's last joint block is. Their ``forward`` is hooked through ModelPatcher object
patches; the block normalizes and gates the raw outputs out of place (``residual_tanh_gated_rmsnorm``),
so cached outputs are never written into.

The attention reads only the prompt's real tokens (``num_tokens``, from the text attention mask), the
text projections and MLP every token of the T5 states (padded to 256); the cost model counts both as
the call gives them (``MochiAdapter.call_tokens``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from ..costs import CostTable, attention_matmul_macs, linear_macs, module_linear_macs
from ..registry import BenchmarkModel, ModelFiles, Preset, tiny_preset
from ..tiny import TinyModel, text_states
from .base import CallTokens, Component, FamilyAdapter, Group


def _text_updating_blocks(blocks: torch.nn.ModuleList, dm: torch.nn.Module) -> Sequence[int]:
    return [i for i, block in enumerate(blocks) if block.update_y]


def _last_block(blocks: torch.nn.ModuleList, dm: torch.nn.Module) -> Sequence[int]:
    return [i for i, block in enumerate(blocks) if not block.update_y]


BLOCKS = Group("blocks", "blocks", (Component("attn", module="attn"), Component("mlp_x", module="mlp_x"),
                                    Component("mlp_y", module="mlp_y")), indices=_text_updating_blocks)
LAST_BLOCK = Group("last_block", "blocks", (Component("attn", module="attn"), Component("mlp_x", module="mlp_x")),
                   indices=_last_block)


@dataclass(frozen=True)
class MochiTokens(CallTokens):
    """``text``: the T5 states' tokens (padding included); ``attended_text``: the prompt's real tokens, which the joint
    attention reads (None: all of them)."""

    attended_text: Optional[int] = None


def _block_macs(block: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool) -> dict[str, float]:
    img, txt = tokens.image, tokens.text
    attended = img + min(txt, getattr(tokens, "attended_text", None) or txt)
    attn = block.attn
    macs = {
        "attn": module_linear_macs(attn.qkv_x, img) + module_linear_macs(attn.proj_x, img)
                + module_linear_macs(attn.qkv_y, txt) + module_linear_macs(attn.proj_y, txt)  # proj_y: none in the last block
                + (attention_matmul_macs(attended, attended, attn.dim_x) if attention_matmuls else 0.0),
        "mlp_x": module_linear_macs(block.mlp_x, img),
    }
    if block.update_y:
        macs["mlp_y"] = module_linear_macs(block.mlp_y, txt)
    return macs


def mochi_costs(dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
    img, txt = tokens.image, tokens.text
    layout = MochiAdapter().layout(dm)
    per_group = {}
    for group in layout.groups:
        first = MochiAdapter().group_spec(group.name).indices(dm.blocks, dm)[0]
        per_group[group.name] = _block_macs(dm.blocks[first], tokens, attention_matmuls)
    conv = dm.x_embedder.proj
    pool = dm.t5_y_embedder
    # The caption pool attends from one query (the mean token) to the mean token and the text tokens.
    pooling = (module_linear_macs(pool.to_kv, txt + 1) + module_linear_macs(pool.to_q, 1) + module_linear_macs(pool.to_out, 1)
               + (attention_matmul_macs(1, txt + 1, pool.to_q.out_features) if attention_matmuls else 0.0))
    heads, freqs = dm.pos_frequencies.shape[1:]
    constant = (linear_macs(img, conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1], conv.out_channels)
                + linear_macs(img, 3, heads * freqs)                  # the mixed rotary positions (an einsum)
                + module_linear_macs(dm.t_embedder, 1) + pooling + module_linear_macs(dm.t5_yproj, txt)
                + sum(module_linear_macs(b.mod_x, 1) + module_linear_macs(b.mod_y, 1) for b in dm.blocks)
                + module_linear_macs(dm.final_layer.mod, 1) + module_linear_macs(dm.final_layer.linear, img))
    return CostTable.from_components(layout, per_group, constant)


class MochiAdapter(FamilyAdapter):
    family = "mochi"
    model_classes = (("comfy.ldm.genmo.joint_model.asymm_models_joint", "AsymmDiTJoint"),)
    variants = {"GenmoMochi": "mochi-preview"}
    groups = (BLOCKS, LAST_BLOCK)

    def tokens(self, dm: torch.nn.Module, x: torch.Tensor, context: Optional[torch.Tensor]) -> MochiTokens:
        p = dm.patch_size
        t, h, w = x.shape[-3:]
        return MochiTokens(image=t * (h // p) * (w // p), text=0 if context is None else int(context.shape[1]))

    def call_tokens(self, dm: torch.nn.Module, x: torch.Tensor, context: Optional[torch.Tensor],
                    extra_conds: dict) -> MochiTokens:
        """With the prompt's real token count (``num_tokens``, from its attention mask; the first prompt's where cond
        and uncond differ: ComfyUI then runs them in separate calls)."""
        found = self.tokens(dm, x, context)
        real = extra_conds.get("num_tokens")
        return found if real is None else MochiTokens(found.image, found.text, attended_text=int(real))

    def costs(self, dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
        return mochi_costs(dm, tokens, attention_matmuls)


ADAPTERS = (MochiAdapter(),)

#: ComfyUI's Mochi asserts a video MLP 12288 wide (hidden_size_x × mlp_ratio_x; 3072 × 4 in the released model)
VIDEO_MLP = 12288


@dataclass(frozen=True)
class TinyMochi(TinyModel):
    """Mochi as its checkpoints look to ComfyUI's detection, at a small width.

    Detection fixes every size at the released model's, so they are overrides. ComfyUI's block asserts the video
    MLP's released width (12288), so the tiny model keeps it: a narrow model with a wide ``mlp_x``.
    """

    hidden_x: int = 64
    hidden_y: int = 32
    heads: int = 2
    depth: int = 2                   # the last block does not update the text
    t5_dim: int = 32                 # T5-XXL in the released model (4096); a multiple of the caption pool's 8 heads
    frames: int = 7                  # video frames; the latent has (frames - 1) // 6 + 1 of them
    latent_channels = 12
    test_size = 64                   # an 8×8 latent per frame: 16 patches per latent frame

    def checkpoint(self) -> dict[str, tuple[int, ...]]:
        hx, hy = self.hidden_x, self.hidden_y
        keys = {"t5_yproj.weight": (hy, self.t5_dim), "x_embedder.proj.weight": (hx, self.latent_channels, 2, 2),
                "pos_frequencies": (3, self.heads, hx // self.heads // 2)}
        for i in range(self.depth):
            keys[f"blocks.{i}.attn.qkv_x.weight"] = (3 * hx, hx)
            keys[f"blocks.{i}.mod_x.weight"] = (4 * hx, hx)
        return keys

    def overrides(self) -> dict[str, Any]:
        return {"depth": self.depth, "num_heads": self.heads, "hidden_size_x": self.hidden_x,
                "hidden_size_y": self.hidden_y, "mlp_ratio_x": VIDEO_MLP / self.hidden_x, "t5_feat_dim": self.t5_dim}

    def conditioning(self, seed: int, tokens: Optional[int] = None, padded_to: Optional[int] = None) -> list:
        """T5 states with their attention mask, as ComfyUI's Mochi text encoder gives them (it pads prompts to 256
        tokens and masks the padding; ``padded_to`` does the same here)."""
        gen = torch.Generator().manual_seed(seed)
        real = tokens or 16
        length = max(real, padded_to or real)
        mask = torch.zeros(1, length, dtype=torch.int64)   # integer, as the tokenizer's mask (num_tokens slices by it)
        mask[:, :real] = 1
        return [[text_states(gen, length, self.t5_dim), {"attention_mask": mask}]]

    def empty_latent(self, height: int, width: int, batch: int = 1) -> torch.Tensor:
        """As ComfyUI's EmptyMochiLatentVideo makes it."""
        frames = (self.frames - 1) // 6 + 1
        return torch.zeros(batch, self.latent_channels, frames, height // self.compression, width // self.compression)


PRESETS = (
    # ComfyUI's example workflow (comfyanonymous/ComfyUI_examples, mochi/mochi_text_to_video_example.webp): KSampler
    # 30 steps, CFG 4.5, euler, simple; EmptyMochiLatentVideo 848×480, 37 frames; t5xxl_fp16 (type mochi), mochi_vae.
    Preset(name="mochi-preview", family="mochi",
           description="Mochi 1 preview (ComfyUI example: 848×480, 37 frames, 30 steps, CFG 4.5, euler/simple)",
           files=ModelFiles("mochi_preview_bf16.safetensors", ("t5xxl_fp16.safetensors",), "MOCHI",
                            "mochi_vae.safetensors"),
           steps=30, sampler="euler", scheduler="simple", cfg=4.5, width=848, height=480, frames=37,
           population=24, generations=50, metric="fidelity", prompts=50, images_per_prompt=1),
    tiny_preset("mochi", TinyMochi(), "A small random-weight Mochi built through ComfyUI's detection; 2 latent frames "
                "on a CPU", cfg=4.5, frames=7),
)

# hidden 512 (4 heads of 128), 4 blocks (the video MLP at ComfyUI's fixed 12288 makes each block about 3× a FLUX
# benchmark block), 2 latent frames × 16 × 32 patches = 1024 video tokens; CFG batches cond and uncond
BENCHMARK_MODELS = (
    BenchmarkModel("mochi", TinyMochi(hidden_x=512, hidden_y=256, heads=4, depth=4, t5_dim=256), width=512, height=256,
                   cfg=4.5),
)

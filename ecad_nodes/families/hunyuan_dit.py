"""Hunyuan-DiT (1.0, 1.1, 1.2) in ComfyUI's ``comfy.ldm.hydit``.

Each ``HunYuanDiTBlock`` has three real submodules, the components: ``attn1`` (self-attention),
``attn2`` (cross-attention to the Chinese CLIP and mT5 text states) and ``mlp``. Their ``forward`` is
hooked through ModelPatcher object patches, as for PixArt; the block adds their raw outputs out of
place (``x + attn1(...)[0]``; no gates: only the self-attention's input is shifted by the timestep),
so cached outputs are never written into. The long skip connections of the second half (a linear
layer over the block input and the skipped activation) run at every step, outside the components.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..costs import CostTable, attention_matmul_macs, linear_macs, module_linear_macs
from ..registry import BenchmarkModel, ModelFiles, Preset, tiny_preset
from ..tiny import TinyModel, text_states
from .base import CallTokens, Component, FamilyAdapter, Group

BLOCKS = Group("blocks", "blocks", (Component("attn1", module="attn1"), Component("attn2", module="attn2"),
                                    Component("mlp", module="mlp")))


@dataclass(frozen=True)
class HunyuanDiTTokens(CallTokens):
    """``text``: what the cross-attention reads, the CLIP states followed by the mT5 states (``t5`` of them)."""

    t5: int = 256


def hunyuan_dit_costs(dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
    img, txt = tokens.image, tokens.text
    h = dm.hidden_size
    block = dm.blocks[0]
    cross = block.attn2
    per_block = {
        "attn1": module_linear_macs(block.attn1, img) + (attention_matmul_macs(img, img, h) if attention_matmuls else 0.0),
        "attn2": module_linear_macs(cross.q_proj, img) + module_linear_macs(cross.out_proj, img)
                 + module_linear_macs(cross.kv_proj, txt) + (attention_matmul_macs(img, txt, h) if attention_matmuls else 0.0),
        "mlp": module_linear_macs(block.mlp, img),
    }
    t5_tokens = getattr(tokens, "t5", dm.text_len_t5)
    pool = dm.pooler
    pooled = min(t5_tokens, pool.positional_embedding.shape[0] - 1) + 1   # the pooled tokens and their mean
    pooling = (module_linear_macs(pool.k_proj, pooled) + module_linear_macs(pool.v_proj, pooled)
               + module_linear_macs(pool.q_proj, 1) + module_linear_macs(pool.c_proj, 1)
               + (attention_matmul_macs(1, pooled, pool.embed_dim) if attention_matmuls else 0.0))
    conv = dm.x_embedder.proj
    skips = sum(module_linear_macs(b.skip_linear, img) for b in dm.blocks if b.skip_linear is not None)
    constant = (module_linear_macs(dm.mlp_t5, t5_tokens) + pooling
                + linear_macs(img, conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1], conv.out_channels)
                + module_linear_macs(dm.t_embedder, 1) + module_linear_macs(dm.extra_embedder, 1)
                + sum(module_linear_macs(b.default_modulation, 1) for b in dm.blocks) + skips
                + module_linear_macs(dm.final_layer.adaLN_modulation, 1) + module_linear_macs(dm.final_layer.linear, img))
    return CostTable.from_components(HunyuanDiTAdapter().layout(dm), {"blocks": per_block}, constant)


class HunyuanDiTAdapter(FamilyAdapter):
    family = "hunyuan_dit"
    model_classes = (("comfy.ldm.hydit.models", "HunYuanDiT"),)
    variants = {"HunyuanDiT": "hunyuan-dit-1.2", "HunyuanDiT1": "hunyuan-dit-1.0"}
    groups = (BLOCKS,)

    def tokens(self, dm: torch.nn.Module, x: torch.Tensor, context: Optional[torch.Tensor],
               t5: Optional[int] = None) -> HunyuanDiTTokens:
        """Image patches, and the text tokens the cross-attention reads: the CLIP states (``context``) followed by the
        mT5 states; without the call's mT5 states, as many as ComfyUI's mT5 tokenizer pads a prompt to
        (``text_len_t5``, 256)."""
        p = dm.patch_size
        h, w = x.shape[-2], x.shape[-1]
        clip = 0 if context is None else int(context.shape[1])
        t5 = dm.text_len_t5 if t5 is None else t5
        return HunyuanDiTTokens(image=((h + p // 2) // p) * ((w + p // 2) // p), text=clip + t5, t5=t5)

    def call_tokens(self, dm: torch.nn.Module, x: torch.Tensor, context: Optional[torch.Tensor],
                    extra_conds: dict) -> HunyuanDiTTokens:
        t5_states = extra_conds.get("encoder_hidden_states_t5")
        return self.tokens(dm, x, context, t5=None if t5_states is None else int(t5_states.shape[1]))

    def costs(self, dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
        return hunyuan_dit_costs(dm, tokens, attention_matmuls)


ADAPTERS = (HunyuanDiTAdapter(),)


@dataclass(frozen=True)
class TinyHunyuanDiT(TinyModel):
    """Hunyuan-DiT 1.2 as its checkpoints look to ComfyUI's detection, at a small width.

    Detection reads the width and depth; heads, the text widths and the text lengths the learned padding and the
    caption pool are sized for stay at the constructor's released defaults, so they are overrides.
    """

    hidden: int = 64
    heads: int = 2
    depth: int = 4                   # even, as the long skips need; the last block has a skip connection
    clip_dim: int = 32               # Chinese CLIP (BERT) in the released model (1024)
    t5_dim: int = 32                 # mT5-XL (2048); a multiple of the caption pool's 8 heads
    clip_tokens: int = 8             # the padded lengths: 77 and 256 in the released model
    t5_tokens: int = 8
    latent_channels = 4              # the SDXL VAE
    test_size = 64                   # an 8×8 latent: 16 patches

    def checkpoint(self) -> dict[str, tuple[int, ...]]:
        h = self.hidden
        keys = {"mlp_t5.0.weight": (4 * self.t5_dim, self.t5_dim), "x_embedder.proj.weight": (h, 4, 2, 2),
                "extra_embedder.0.weight": (4 * h, 1024),   # the pooled mT5 vector (1024 wide), no size/style conditions
                "text_embedding_padding": (self.clip_tokens + self.t5_tokens, self.clip_dim)}
        for i in range(self.depth):
            keys[f"blocks.{i}.attn1.Wqkv.weight"] = (3 * h, h)
            keys[f"blocks.{i}.attn2.kv_proj.weight"] = (2 * h, self.clip_dim)
        return keys

    def overrides(self) -> dict[str, Any]:
        return {"num_heads": self.heads, "text_states_dim": self.clip_dim, "text_states_dim_t5": self.t5_dim,
                "text_len": self.clip_tokens, "text_len_t5": self.t5_tokens}

    def conditioning(self, seed: int, tokens: Optional[int] = None) -> list:
        """As ComfyUI's Hunyuan-DiT text encoders give it: CLIP and mT5 states padded to at least ``clip_tokens`` and
        ``t5_tokens`` (longer prompts make longer ones), each with its attention mask."""
        gen = torch.Generator().manual_seed(seed)
        real = tokens or 12          # longer than the padding by default: shorter prompts make shorter calls (cfg apart)
        clip_len, t5_len = max(real, self.clip_tokens), max(real, self.t5_tokens)

        def mask(length: int) -> torch.Tensor:
            out = torch.zeros(1, length, dtype=torch.int64)
            out[:, :min(real, length)] = 1
            return out
        return [[text_states(gen, clip_len, self.clip_dim),
                 {"attention_mask": mask(clip_len), "conditioning_mt5xl": text_states(gen, t5_len, self.t5_dim),
                  "attention_mask_mt5xl": mask(t5_len)}]]


PRESETS = (
    # ComfyUI's example workflow (comfyanonymous/ComfyUI_examples, hunyuan_dit/hunyuan_dit_1.2_example.png):
    # CheckpointLoaderSimple hunyuan_dit_1.2.safetensors (model, text encoders and VAE in one file), KSampler 30 steps,
    # CFG 6, euler, sgm_uniform, 1024² (EmptyLatentImage).
    Preset(name="hunyuan-dit-1.2", family="hunyuan_dit",
           description="Hunyuan-DiT 1.2 (ComfyUI example: 1024², 30 steps, CFG 6, euler/sgm_uniform)",
           files=ModelFiles("hunyuan_dit_1.2.safetensors", (), "HUNYUAN_DIT", "", checkpoint=True),
           steps=30, sampler="euler", scheduler="sgm_uniform", cfg=6.0, width=1024, height=1024,
           population=24, generations=50, metric="image_reward"),
    tiny_preset("hunyuan_dit", TinyHunyuanDiT(), "A small random-weight Hunyuan-DiT built through ComfyUI's detection; "
                "runs on a CPU in minutes", scheduler="sgm_uniform", cfg=6.0),
)

# hidden 512 (4 heads of 128), 8 blocks (3 with long skips), 1024 image tokens (512² image); CFG batches cond and uncond
BENCHMARK_MODELS = (
    BenchmarkModel("hunyuan_dit", TinyHunyuanDiT(hidden=512, heads=4, depth=8, clip_dim=256, t5_dim=256, clip_tokens=77,
                                                 t5_tokens=256), width=512, height=512, cfg=6.0,
                   scheduler="sgm_uniform"),
)

"""Anima in ComfyUI's ``comfy.ldm.anima`` (ComfyUI detects it as a Cosmos Predict2 checkpoint with an LLM adapter).

``Anima`` is Cosmos Predict2's ``MiniTrainDIT`` plus ``llm_adapter``, a small transformer that turns
the Qwen3 0.6B text states and the prompt's T5 token ids into the 512 cross-attention tokens. In
sampling ComfyUI runs the adapter once per prompt while preparing the conditioning
(``model_base.Anima.extra_conds``), not at each step, so it is not part of the per-step cost. The
blocks, components and hooks are Cosmos Predict2's (``self_attn``, ``cross_attn``, ``mlp``; see
``cosmos_predict2.py``); Anima is its own family so that its schedules are not offered to Cosmos
Predict2 models of the same depth.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..costs import CostTable
from ..registry import BenchmarkModel, ModelFiles, Preset, tiny_preset
from ..tiny import text_states
from .base import CallTokens, FamilyAdapter
from .cosmos_predict2 import BLOCKS, TinyCosmosPredict2, predict2_block_macs, predict2_constant_macs, predict2_tokens

ADAPTER_WIDTH = 1024    # LLMAdapter's widths are fixed in ComfyUI (Anima passes it no sizes): Qwen3 0.6B in, 1024 out
ADAPTER_VOCABULARY = 32128   # T5's


class AnimaAdapter(FamilyAdapter):
    family = "anima"
    model_classes = (("comfy.ldm.anima.model", "Anima"),)
    variants = {"Anima": "anima"}
    groups = (BLOCKS,)

    def tokens(self, dm: torch.nn.Module, x: torch.Tensor, context: Optional[torch.Tensor]) -> CallTokens:
        return predict2_tokens(dm, x, context)   # context: the adapter's output, padded to 512 tokens

    def costs(self, dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
        return CostTable.from_components(self.layout(dm), {"blocks": predict2_block_macs(dm.blocks[0], tokens,
                                                                                          attention_matmuls)},
                                         predict2_constant_macs(dm, tokens.image))


ADAPTERS = (AnimaAdapter(),)


@dataclass(frozen=True)
class TinyAnima(TinyCosmosPredict2):
    """Anima as its checkpoints look to ComfyUI's detection: a small Cosmos Predict2 DiT with ComfyUI's LLM adapter
    (whose size ComfyUI fixes: about 130 M parameters, most of them its T5 vocabulary embedding).

    ``conditioning()`` gives the cross-attention states as the adapter hands them to the DiT (what ComfyUI's model
    receives at each step in sampling); ``conditioning_with_t5_ids()`` what Anima's text encoder gives, which ComfyUI
    runs through the adapter before sampling.
    """

    context_dim: int = ADAPTER_WIDTH  # the adapter's output width, fixed

    def checkpoint(self) -> dict[str, tuple[int, ...]]:
        keys = super().checkpoint()
        keys["llm_adapter.blocks.0.cross_attn.q_proj.weight"] = (ADAPTER_WIDTH, ADAPTER_WIDTH)
        return keys

    def conditioning_with_t5_ids(self, seed: int, tokens: Optional[int] = None) -> list:
        gen = torch.Generator().manual_seed(seed)
        n = tokens or 16
        return [[text_states(gen, n, ADAPTER_WIDTH),
                 {"t5xxl_ids": torch.randint(0, ADAPTER_VOCABULARY, (n,), generator=gen, dtype=torch.int),
                  "t5xxl_weights": torch.ones(n)}]]


PRESETS = (
    # ComfyUI's template image_anima_preview.json: KSampler 30 steps, CFG 4, er_sde, simple, 1024² (EmptyLatentImage),
    # the Qwen3 0.6B text encoder (CLIPLoader type stable_diffusion) and the Qwen-Image VAE.
    Preset(name="anima-preview", family="anima",
           description="Anima preview 3 (ComfyUI template: 1024², 30 steps, CFG 4, er_sde/simple)",
           files=ModelFiles("anima-preview3-base.safetensors", ("qwen_3_06b_base.safetensors",), "STABLE_DIFFUSION",
                            "qwen_image_vae.safetensors"),
           steps=30, sampler="er_sde", scheduler="simple", cfg=4.0, width=1024, height=1024,
           population=24, generations=50, metric="image_reward"),
    tiny_preset("anima", TinyAnima(), "A small random-weight Anima built through ComfyUI's detection (with ComfyUI's "
                "full-size LLM adapter); runs on a CPU in minutes", cfg=4.0),
)

# hidden 512 (4 heads), 8 blocks, 1024 image tokens (512² image); CFG batches cond and uncond
BENCHMARK_MODELS = (
    BenchmarkModel("anima", TinyAnima(hidden=512, heads=4, depth=8, adaln_lora_dim=64), width=512, height=512,
                   cfg=4.0),
)

"""Lumina Image 2.0 (NextDiT; also Neta Lumina) in ComfyUI's ``comfy.ldm.lumina``.

Every ``JointTransformerBlock`` has two real submodules, the components: ``attn`` (``attention``)
and ``mlp`` (``feed_forward``). Their ``forward`` is wrapped through ModelPatcher object patches,
so their raw outputs are cached; the block still applies the current step's ``*_norm2`` RMSNorm and
``tanh`` gate to them, out of place. Three block groups, in the order they run:

* ``context_refiner``: unmodulated blocks over the text alone (inside ``patchify_and_embed``);
  their input does not depend on the step, so reusing them is exact;
* ``noise_refiner``: modulated blocks over the image tokens alone;
* ``layers``: the main blocks over ``cat(text, image)``.

Lumina passes ``transformer_options`` to its blocks but has no ``patches_replace``; the wrapped
forwards find the run through ``active_runtime()``. Costs count the text as the text encoder's
tokens; a padded prompt (attention mask with zeros) makes the main blocks run on fewer, which the
cost model does not see.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..costs import CostTable, attention_matmul_macs, linear_macs
from ..schedule import BlockGroup, Layout
from .base import CallTokens, FamilyAdapter, install_forward_hooks

COMPONENTS = ("attn", "mlp")
MODULE_OF = {"attn": "attention", "mlp": "feed_forward"}
GROUPS = ("context_refiner", "noise_refiner", "layers")
TIMESTEP_FEATURES = 256       # TimestepEmbedder input width


@dataclass(frozen=True)
class LuminaDims:
    hidden: int
    qkv_features: int          # (heads + 2 · kv heads) · head dim
    ffn_hidden: int
    adaln: int                 # modulation input width, min(hidden, 1024)
    context_refiners: int
    noise_refiners: int
    depth: int
    patch_features: int        # x_embedder fan-in (latent channels × patch²)
    out_features: int          # final layer fan-out
    caption_features: int      # cap_embedder fan-in

    @classmethod
    def of(cls, dm: torch.nn.Module) -> "LuminaDims":
        block = dm.layers[0]
        return cls(hidden=dm.dim, qkv_features=block.attention.qkv.out_features,
                   ffn_hidden=block.feed_forward.w1.out_features, adaln=block.adaLN_modulation[1].in_features,
                   context_refiners=len(dm.context_refiner), noise_refiners=len(dm.noise_refiner), depth=len(dm.layers),
                   patch_features=dm.x_embedder.in_features, out_features=dm.final_layer.linear.out_features,
                   caption_features=dm.cap_embedder[1].in_features)


def lumina_layout(context_refiners: int, noise_refiners: int, depth: int) -> Layout:
    return Layout("lumina2", (BlockGroup("context_refiner", context_refiners, COMPONENTS),
                              BlockGroup("noise_refiner", noise_refiners, COMPONENTS),
                              BlockGroup("layers", depth, COMPONENTS)))


def lumina_costs(dims: LuminaDims, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
    h, img, txt = dims.hidden, tokens.image, tokens.text

    def block(n: int) -> dict[str, float]:
        return {"attn": linear_macs(n, h, dims.qkv_features) + linear_macs(n, h, h)
                        + (attention_matmul_macs(n, n, h) if attention_matmuls else 0.0),
                "mlp": 3 * linear_macs(n, h, dims.ffn_hidden)}

    per_group = {"context_refiner": block(txt), "noise_refiner": block(img), "layers": block(txt + img)}
    constant = (TIMESTEP_FEATURES * dims.adaln + dims.adaln * dims.adaln + linear_macs(txt, dims.caption_features, h)
                + linear_macs(img, dims.patch_features, h)
                + (dims.noise_refiners + dims.depth) * dims.adaln * 4 * h
                + dims.adaln * h + linear_macs(txt + img, h, dims.out_features))  # the final layer sees the text too
    return CostTable.from_components(lumina_layout(dims.context_refiners, dims.noise_refiners, dims.depth),
                                     per_group, constant)


class LuminaAdapter(FamilyAdapter):
    family = "lumina2"
    model_classes = (("comfy.ldm.lumina.model", "NextDiT"),)
    variants = {"Lumina2": "lumina-image-2.0"}

    def layout(self, dm: torch.nn.Module) -> Layout:
        return lumina_layout(len(dm.context_refiner), len(dm.noise_refiner), len(dm.layers))

    def install(self, patcher: Any, layout: Layout) -> None:
        offsets = layout.offsets()
        install_forward_hooks(patcher, (
            (f"diffusion_model.{group}.{i}.{MODULE_OF[component]}", offsets[group] + len(COMPONENTS) * i + c)
            for group in GROUPS for i in range(layout.group(group).blocks) for c, component in enumerate(COMPONENTS)))

    def tokens(self, dm: torch.nn.Module, x: torch.Tensor, context: Optional[torch.Tensor]) -> CallTokens:
        p = dm.patch_size
        return CallTokens(image=((x.shape[-2] + p - 1) // p) * ((x.shape[-1] + p - 1) // p),
                          text=0 if context is None else int(context.shape[1]))

    def costs(self, dm: torch.nn.Module, tokens: CallTokens, attention_matmuls: bool = False) -> CostTable:
        return lumina_costs(LuminaDims.of(dm), tokens, attention_matmuls)


ADAPTERS = (LuminaAdapter(),)

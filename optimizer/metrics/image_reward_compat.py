"""Importing and building the `image-reward` 1.5 package's model with current torch/transformers.

The package as released does not import any more:

- ``ImageReward/__init__.py`` imports everything: the CLIP and aesthetic scores (``import clip``,
  OpenAI's package, which needs ``pkg_resources``) and ReFL training (diffusers, datasets,
  accelerate). Scoring needs none of it, so the ``ImageReward`` and ``ImageReward.models``
  packages are entered without running their ``__init__`` and only ``ImageReward.ImageReward``
  and ``ImageReward.models.BLIP`` are imported. (In the same process, a later ``import ImageReward``
  then gets that bare package, without ``ImageReward.load``; its full ``__init__`` fails here anyway.)
- BLIP's ``med.py`` imports ``apply_chunking_to_forward``, ``prune_linear_layer`` and
  ``find_pruneable_heads_and_indices`` from ``transformers.modeling_utils``; transformers moved
  the first two to ``pytorch_utils`` and removed the last (used only to prune heads). They are
  provided there for the duration of that import only.
- transformers 5 dropped ``PreTrainedModel.get_head_mask``/``invert_attention_mask`` (BLIP's
  ``BertModel.forward`` calls them) and ``init_weights`` now needs ``post_init`` to have run
  (BLIP's ``BertModel.__init__`` calls ``init_weights`` only). BLIP's own ``BertPreTrainedModel``
  gets those methods, with transformers 4's semantics, when they are missing.
- BLIP's modules switch off all Python warnings and transformers' logging when imported; the
  settings are put back afterwards.
- BLIP's ``init_tokenizer`` downloads ``bert-base-uncased`` and ``ImageReward`` hard-codes a
  ViT-L/16 at 224 px; ``build_image_reward`` swaps both for the duration of construction: the
  tokenizer comes from a local folder, the vision transformer's size from the checkpoint.

Nothing here reaches the network. Nothing of the user's transformers is changed for good.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

import torch

IMAGE_SIZE = 224                # ImageReward's preprocessing and ViT input
VISION_HEAD_DIM = 64            # BLIP's ViT-B (768/12) and ViT-L (1024/16)
VISION_DROP_PATH = 0.1          # as BLIP's create_vit("large"); inactive in eval mode
TOKENIZER_MAX_LENGTH = 35       # ImageReward.score/inference_rank tokenise prompts to 35 tokens


@dataclass(frozen=True)
class VisionConfig:
    """Size of BLIP's vision transformer, read from a checkpoint's shapes."""

    image_size: int
    patch_size: int
    width: int
    depth: int
    mlp_ratio: float

    @property
    def heads(self) -> int:
        return self.width // VISION_HEAD_DIM

    @classmethod
    def of_state_dict(cls, state: Mapping[str, torch.Tensor]) -> "VisionConfig":
        """Raises KeyError when the state dict has no BLIP vision encoder."""
        prefix = "blip.visual_encoder."
        pos_embed = state[prefix + "pos_embed"]
        patch_size = int(state[prefix + "patch_embed.proj.weight"].shape[-1])
        width = int(pos_embed.shape[-1])
        side = round((pos_embed.shape[1] - 1) ** 0.5)
        depth = len({k.split(".")[3] for k in state if k.startswith(prefix + "blocks.")})
        hidden = int(state[prefix + "blocks.0.mlp.fc1.weight"].shape[0])
        return cls(image_size=side * patch_size, patch_size=patch_size, width=width, depth=depth,
                   mlp_ratio=hidden / width)


def _enter_package_without_init(name: str, directory: Path) -> None:
    module = types.ModuleType(name)
    module.__path__ = [str(directory)]
    module.__package__ = name
    sys.modules[name] = module


@contextmanager
def _transformers_names_for_blip() -> Iterator[None]:
    import transformers.modeling_utils as modeling_utils
    import transformers.pytorch_utils as pytorch_utils

    def find_pruneable_heads_and_indices(*args, **kwargs):
        raise NotImplementedError("pruning attention heads of BLIP is not supported with this transformers version")

    provided = {
        "apply_chunking_to_forward": getattr(pytorch_utils, "apply_chunking_to_forward", None),
        "prune_linear_layer": getattr(pytorch_utils, "prune_linear_layer", None),
        "find_pruneable_heads_and_indices": getattr(pytorch_utils, "find_pruneable_heads_and_indices",
                                                    find_pruneable_heads_and_indices),
    }
    added = [name for name, value in provided.items() if value is not None and not hasattr(modeling_utils, name)]
    for name in added:
        setattr(modeling_utils, name, provided[name])
    try:
        yield
    finally:
        for name in added:
            delattr(modeling_utils, name)


def _get_head_mask(self, head_mask, num_hidden_layers):
    if head_mask is not None:
        raise NotImplementedError("head masks are not supported by ECAD's ImageReward compatibility layer")
    return [None] * num_hidden_layers


def _invert_attention_mask(self, encoder_attention_mask: torch.Tensor) -> torch.Tensor:
    """1 = attend, 0 = masked -> an additive mask (0 or the dtype's minimum), as transformers 4 did."""
    if encoder_attention_mask.dim() == 3:
        extended = encoder_attention_mask[:, None, :, :]
    else:
        extended = encoder_attention_mask[:, None, None, :]
    extended = extended.to(dtype=self.dtype)
    return (1.0 - extended) * torch.finfo(self.dtype).min


def _patch_blip_bert(med: types.ModuleType) -> None:
    from transformers.modeling_utils import PreTrainedModel

    cls = med.BertPreTrainedModel
    if not hasattr(cls, "get_head_mask"):
        cls.get_head_mask = _get_head_mask
    if not hasattr(cls, "invert_attention_mask"):
        cls.invert_attention_mask = _invert_attention_mask
    if hasattr(PreTrainedModel, "get_expanded_tied_weights_keys") and "init_weights" not in cls.__dict__:
        # transformers 5: init_weights() needs the attributes post_init() sets; post_init() then calls it.
        def init_weights(self):
            if not hasattr(self, "all_tied_weights_keys"):
                self.post_init()
            else:
                PreTrainedModel.init_weights(self)
        cls.init_weights = init_weights


def import_image_reward() -> types.ModuleType:
    """The ``ImageReward.ImageReward`` module (the model class and its preprocessing)."""
    loaded = sys.modules.get("ImageReward.ImageReward")
    if loaded is not None and hasattr(loaded, "ImageReward"):  # imported already (by us or in full)
        _patch_blip_bert(sys.modules["ImageReward.models.BLIP.med"])
        return loaded
    spec = importlib.util.find_spec("ImageReward")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the image-reward package is not installed: pip install image-reward "
                          "(see requirements-optimizer.txt)")
    package_dir = Path(list(spec.submodule_search_locations)[0])
    if "ImageReward" not in sys.modules:
        _enter_package_without_init("ImageReward", package_dir)
    if "ImageReward.models" not in sys.modules:
        _enter_package_without_init("ImageReward.models", package_dir / "models")
    with _transformers_names_for_blip(), _global_settings_kept():
        med = importlib.import_module("ImageReward.models.BLIP.med")
        _patch_blip_bert(med)
        return importlib.import_module("ImageReward.ImageReward")


@contextmanager
def _global_settings_kept() -> Iterator[None]:
    """BLIP's modules silence all Python warnings and transformers' logging when imported; undo that."""
    import transformers

    ignore_all = ("ignore", None, Warning, None, 0)  # what warnings.filterwarnings("ignore") adds
    had_ignore_all, verbosity = ignore_all in warnings.filters, transformers.logging.get_verbosity()
    try:
        yield
    finally:
        if not had_ignore_all:
            warnings.filters[:] = [f for f in warnings.filters if f != ignore_all]
            warnings._filters_mutated()
        transformers.logging.set_verbosity(verbosity)


def load_tokenizer(folder: Path):
    """BLIP's tokenizer (``init_tokenizer``) from a local ``bert-base-uncased`` folder."""
    from transformers import BertTokenizer

    tokenizer = BertTokenizer.from_pretrained(str(folder), local_files_only=True)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    tokenizer.enc_token_id = tokenizer.convert_tokens_to_ids("[ENC]")
    return tokenizer


def build_image_reward(med_config: Path, tokenizer_folder: Path, vision: VisionConfig) -> torch.nn.Module:
    """An ``ImageReward.ImageReward.ImageReward`` (random weights, CPU) with the given vision size."""
    image_reward = import_image_reward()
    blip_pretrain = importlib.import_module("ImageReward.models.BLIP.blip_pretrain")
    vit = importlib.import_module("ImageReward.models.BLIP.vit")

    def create_vit(*args, **kwargs):
        encoder = vit.VisionTransformer(img_size=vision.image_size, patch_size=vision.patch_size,
                                        embed_dim=vision.width, depth=vision.depth, num_heads=vision.heads,
                                        mlp_ratio=vision.mlp_ratio, drop_path_rate=VISION_DROP_PATH)
        return encoder, vision.width

    saved = blip_pretrain.create_vit, blip_pretrain.init_tokenizer
    blip_pretrain.create_vit = create_vit
    blip_pretrain.init_tokenizer = lambda: load_tokenizer(tokenizer_folder)
    try:
        model = image_reward.ImageReward(med_config=str(med_config), device="cpu")
    finally:
        blip_pretrain.create_vit, blip_pretrain.init_tokenizer = saved
    model.preprocess = image_reward._transform(vision.image_size)
    return model

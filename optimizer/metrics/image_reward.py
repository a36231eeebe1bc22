"""ImageReward (Xu et al., NeurIPS 2023): how well an image matches its prompt, as people judge it.

The objective of the ECAD paper; higher is better, about N(0, 1) over its training images. Loaded
from local files only, never from the network:

    ComfyUI/models/image_reward/ImageReward.pt               the weights (huggingface.co/THUDM/ImageReward)
    ComfyUI/models/image_reward/med_config.json              BLIP's text encoder config (same place)
    ComfyUI/models/image_reward/bert-base-uncased/vocab.txt  the BERT tokenizer folder
                                                             (huggingface.co/google-bert/bert-base-uncased)

Inside ComfyUI (``folder_paths`` imported) the folders registered as ``image_reward`` come first,
then ComfyUI's ``models/image_reward``; otherwise ``models/image_reward`` under the ComfyUI root
(``comfyui=`` option, ``COMFYUI_PATH``, or the ComfyUI this pack is installed in). ``weights=``, ``med_config=`` and
``tokenizer=`` name the files directly instead.

Scores are computed in batches with ImageReward's own batched method (``score_gard``: BLIP ViT image
embedding, BERT text encoder cross-attending to it, MLP head, normalised), on CUDA when available.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from . import MetricUnavailable
from .image_reward_compat import TOKENIZER_MAX_LENGTH, VisionConfig, build_image_reward, import_image_reward

FOLDER_NAME = "image_reward"  # ComfyUI model folder (folder_paths name and models/ subfolder)
WEIGHTS_FILE = "ImageReward.pt"
MED_CONFIG_FILE = "med_config.json"
TOKENIZER_FOLDER = "bert-base-uncased"
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json")  # either is enough
OPTION_FLAGS = {"weights": "--image-reward-weights", "med_config": "--image-reward-config",
                "tokenizer": "--image-reward-tokenizer"}  # the optimizer's options that give each file
SOURCES = {
    "weights": "huggingface.co/THUDM/ImageReward",
    "med_config": "huggingface.co/THUDM/ImageReward",
    "tokenizer": "huggingface.co/google-bert/bert-base-uncased (vocab.txt, tokenizer_config.json)",
}


@dataclass(frozen=True)
class ImageRewardFiles:
    weights: Path
    med_config: Path
    tokenizer: Path  # a folder


def _model_folders(comfyui: Optional[str | Path]) -> list[Path]:
    """Where ImageReward's files are looked for, the place to put them first; [] when no ComfyUI is known."""
    folder_paths = sys.modules.get("folder_paths")  # imported: running inside ComfyUI (or after import_comfy)
    if comfyui is None and folder_paths is not None:
        folders = []
        if FOLDER_NAME in getattr(folder_paths, "folder_names_and_paths", {}):  # registered, e.g. extra_model_paths.yaml
            folders = [Path(p) for p in folder_paths.get_folder_paths(FOLDER_NAME)]
        default = Path(folder_paths.models_dir) / FOLDER_NAME
        return folders + ([default] if default not in folders else [])
    from optimizer.comfy_env import ComfyUINotFound, find_comfyui
    try:
        return [find_comfyui(comfyui) / "models" / FOLDER_NAME]
    except ComfyUINotFound:
        return []


def _tokenizer_ok(folder: Path) -> bool:
    return folder.is_dir() and any((folder / f).is_file() for f in TOKENIZER_FILES)


def find_files(weights: Optional[str | Path] = None, med_config: Optional[str | Path] = None,
               tokenizer: Optional[str | Path] = None, comfyui: Optional[str | Path] = None) -> ImageRewardFiles:
    """The three files, or MetricUnavailable naming each missing one and where to put it."""
    folders = _model_folders(comfyui)
    wanted = {  # option -> (explicit path, name in the folder, is it there?)
        "weights": (weights, WEIGHTS_FILE, Path.is_file),
        "med_config": (med_config, MED_CONFIG_FILE, Path.is_file),
        "tokenizer": (tokenizer, TOKENIZER_FOLDER, _tokenizer_ok),
    }
    found: dict[str, Path] = {}
    problems: list[str] = []
    for option, (explicit, name, present) in wanted.items():
        flag = OPTION_FLAGS[option]
        what = f"{name}/ (a folder with {' or '.join(TOKENIZER_FILES)})" if option == "tokenizer" else name
        if explicit is not None:
            path = Path(explicit)
            if present(path):
                found[option] = path
            else:
                problems.append(f"{what}: {path} (given as {flag}) "
                                f"{'has no ' + ' or '.join(TOKENIZER_FILES) if option == 'tokenizer' and path.is_dir() else 'does not exist'}")
            continue
        candidates = [folder / name for folder in folders]
        hit = next((c for c in candidates if present(c)), None)
        if hit is not None:
            found[option] = hit
        elif folders:
            problems.append(f"{what}: not found; put it at {candidates[0]} (from {SOURCES[option]}), "
                            f"or give its path with {flag}")
        else:
            problems.append(f"{what}: no ComfyUI is known to look in; put it in ComfyUI/models/{FOLDER_NAME}/ "
                            f"and pass --comfyui PATH or set COMFYUI_PATH (from {SOURCES[option]}), "
                            f"or give its path with {flag}")
    if problems:
        raise MetricUnavailable("Image Reward cannot be loaded, files are missing:\n  - " + "\n  - ".join(problems))
    return ImageRewardFiles(found["weights"], found["med_config"], found["tokenizer"])


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for corrupt or foreign files
        raise MetricUnavailable(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MetricUnavailable(f"{path}: expected a state dict of tensors (the ImageReward model's weights)")
    return state


def best_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


class ImageRewardMetric:
    name = "image_reward"
    short_name = "IR"
    needs_reference = False

    def __init__(self, model: torch.nn.Module, device: torch.device, batch_size: int = 16):
        self.model = model
        self.device = device
        self.batch_size = batch_size

    @classmethod
    def load(cls, weights: Optional[str | Path] = None, med_config: Optional[str | Path] = None,
             tokenizer: Optional[str | Path] = None, comfyui: Optional[str | Path] = None,
             device: Optional[str | torch.device] = None, batch_size: int = 16) -> "ImageRewardMetric":
        files = find_files(weights, med_config, tokenizer, comfyui)
        try:
            import_image_reward()
        except ImportError as e:
            raise MetricUnavailable(f"Image Reward needs the image-reward package and its dependencies "
                                    f"(pip install -r requirements-optimizer.txt): {e}") from e
        state = _load_state_dict(files.weights)
        try:
            vision = VisionConfig.of_state_dict(state)
        except KeyError as e:
            raise MetricUnavailable(f"{files.weights}: not an ImageReward checkpoint (no {e.args[0]})") from e
        try:
            model = build_image_reward(files.med_config, files.tokenizer, vision)
        except (OSError, ValueError) as e:
            raise MetricUnavailable(f"Image Reward could not be built from {files.med_config} and the tokenizer in "
                                    f"{files.tokenizer}: {e}") from e
        try:
            result = model.load_state_dict(state, strict=False)
        except RuntimeError as e:  # shape mismatches
            raise MetricUnavailable(f"{files.weights} does not fit the model {files.med_config} describes: {e}") from e
        missing = [k for k in result.missing_keys if not k.endswith("position_ids")]
        if missing:
            raise MetricUnavailable(f"{files.weights}: not an ImageReward checkpoint, {len(missing)} weights are "
                                    f"missing (e.g. {', '.join(missing[:3])})")
        device = torch.device(device) if device is not None else best_device()
        model.device = device  # ImageReward reads it to place its attention masks
        model.to(device).eval()
        return cls(model, device, batch_size)

    def score(self, images: Sequence[Image.Image], prompts: Sequence[str],
              references: Optional[Sequence[Image.Image]] = None) -> np.ndarray:
        if len(images) != len(prompts):
            raise ValueError(f"image_reward: {len(images)} images but {len(prompts)} prompts")
        tokenizer = self.model.blip.tokenizer
        scores: list[np.ndarray] = []
        for start in range(0, len(images), self.batch_size):
            batch_prompts = list(prompts[start:start + self.batch_size])
            text = tokenizer(batch_prompts, padding="max_length", truncation=True, max_length=TOKENIZER_MAX_LENGTH,
                             return_tensors="pt").to(self.device)
            pixels = torch.stack([self.model.preprocess(im) for im in images[start:start + self.batch_size]])
            with torch.inference_mode():
                rewards = self.model.score_gard(text.input_ids, text.attention_mask, pixels.to(self.device))
            scores.append(rewards.float().reshape(-1).cpu().numpy().astype(np.float64))
        return np.concatenate(scores) if scores else np.empty(0, dtype=np.float64)

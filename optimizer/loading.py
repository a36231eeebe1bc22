"""Models for the optimizer, loaded headlessly through ComfyUI's own loaders.

Real presets name files under ComfyUI's model folders (``models/diffusion_models``,
``models/text_encoders``, ``models/vae``, plus ``extra_model_paths.yaml``); ``find_model_files``
checks all of them and names every missing one before anything is loaded. ``load_real`` then uses
``comfy.sd.load_diffusion_model``, ``comfy.sd.load_clip`` and ``comfy.sd.VAE`` exactly as ComfyUI's
loader nodes do (``load_checkpoint_guess_config`` for all-in-one checkpoints); prompts are encoded as
CLIPTextEncode encodes them and empty latents are shaped by the VAE's compression.

Tiny presets build their model in-process (``preset.tiny.build``), map each prompt to seeded random
conditioning (seeded by a hash of the prompt) and decode latents with a small random-weight
``AutoencoderKL`` of ComfyUI's own classes (8× upsampling like the real VAEs; pixel-space models use
ComfyUI's identity "pixel_space" VAE). Random weights make no pictures, but the mapping is a real
decoder: fidelity to the full-compute image is measured on RGB pixels as it is for real models.
"""
from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from PIL import Image

from .calibration import prompt_seed
from .presets import ModelFiles, Preset

TINY_MODEL_SEED = 0          # the tiny presets' weights; the search seed does not change the model
_HASH_CHUNK = 4 << 20        # model identity: size plus the first and last 4 MiB of each file


class MissingModelFiles(RuntimeError):
    """Files a real preset needs are not there; the message names each one and where to put it."""


@dataclass(frozen=True)
class ModelPaths:
    diffusion_model: Path
    text_encoders: tuple[Path, ...]
    vae: Path
    clip_type: str
    checkpoint: bool = False    # diffusion_model is an all-in-one checkpoint (text encoder and VAE inside)


@dataclass
class LoadedModel:
    """Everything generation needs, whatever the model's origin."""

    model: Any                                      # ComfyUI ModelPatcher
    encode: Callable[[str], list]                   # prompt -> CONDITIONING (ComfyUI's format)
    decode: Callable[[torch.Tensor], list[Image.Image]]
    empty_latent: Callable[[int], torch.Tensor]     # batch size -> empty latent
    variant: Optional[str]


# ---------------------------------------------------------------- files

def _register_extra_paths(comfy_root: Path) -> None:
    """Read ComfyUI's extra_model_paths.yaml as main.py does, so the same folders are searched."""
    import folder_paths
    config = comfy_root / "extra_model_paths.yaml"
    if config.is_file() and not getattr(folder_paths, "_ecad_extra_paths_loaded", False):
        from utils.extra_config import load_extra_path_config
        load_extra_path_config(str(config))
        folder_paths._ecad_extra_paths_loaded = True


def _locate(name_or_path: str, folder: str) -> Optional[Path]:
    import folder_paths
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path.resolve()
    found = folder_paths.get_full_path(folder, name_or_path)
    return Path(found) if found else None


def find_model_files(files: ModelFiles, comfy_root: Path) -> ModelPaths:
    """The preset's files (names under ComfyUI's folders, or paths); MissingModelFiles naming every missing one."""
    import folder_paths
    _register_extra_paths(comfy_root)
    if files.checkpoint:
        wanted = [("checkpoint (model, text encoder and VAE in one file)", files.diffusion_model, "checkpoints",
                   "--diffusion-model PATH")]
    else:
        wanted = [("diffusion model", files.diffusion_model, "diffusion_models", "--diffusion-model PATH")]
        wanted += [("text encoder", name, "text_encoders", "--text-encoder PATH (once per file)")
                   for name in files.text_encoders]
        wanted += [("VAE", files.vae, "vae", "--vae PATH")]
    found: list[Path] = []
    problems: list[str] = []
    for what, name, folder, option in wanted:
        path = _locate(name, folder)
        if path is not None:
            found.append(path)
            continue
        # ComfyUI lists legacy folders first (models/unet for diffusion_models): name the current one
        folders = sorted(folder_paths.get_folder_paths(folder), key=lambda f: Path(f).name != folder)
        where = folders[0] if folders else os.path.join(folder_paths.models_dir, folder)
        problems.append(f"{what} '{name}': not found; put it in {where}{os.sep} or pass {option}")
    if problems:
        raise MissingModelFiles("model files are missing (nothing was loaded):\n  - " + "\n  - ".join(problems))
    if files.checkpoint:
        return ModelPaths(found[0], (), found[0], files.clip_type, checkpoint=True)
    return ModelPaths(found[0], tuple(found[1:-1]), found[-1], files.clip_type)


def file_identity(path: Path) -> dict[str, Any]:
    """Name, size and a digest of the first and last 4 MiB: cheap on 20 GB files, and it changes when they do."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        digest.update(f.read(_HASH_CHUNK))
        if size > 2 * _HASH_CHUNK:
            f.seek(size - _HASH_CHUNK)
            digest.update(f.read(_HASH_CHUNK))
    return {"name": path.name, "size": size, "sha256_ends": digest.hexdigest()[:16]}


def model_identity(paths: ModelPaths) -> dict[str, Any]:
    if paths.checkpoint:
        return {"checkpoint": file_identity(paths.diffusion_model)}
    return {"diffusion_model": file_identity(paths.diffusion_model),
            "text_encoders": [file_identity(p) for p in paths.text_encoders],
            "vae": file_identity(paths.vae), "clip_type": paths.clip_type}


def tiny_identity(preset: Preset) -> dict[str, Any]:
    return {"tiny": repr(preset.tiny), "weights_seed": TINY_MODEL_SEED}


# ---------------------------------------------------------------- images

def to_pil(pixels: torch.Tensor) -> list[Image.Image]:
    """ComfyUI IMAGE rows (B, H, W, 3) in 0..1, or videos (B, T, H, W, 3) with frames side by side, as 8-bit RGB
    (the conversion SaveImage makes)."""
    array = pixels.detach().float().cpu().numpy()
    if array.ndim == 5:
        array = np.concatenate(list(np.moveaxis(array, 1, 0)), axis=2)  # frames side by side
    return [Image.fromarray(np.clip(255.0 * a, 0, 255).astype(np.uint8)) for a in array]


def with_guidance(conditioning: list, guidance: Optional[float]) -> list:
    """What ComfyUI's FluxGuidance node does: the distilled guidance value in every conditioning entry."""
    if guidance is None:
        return conditioning
    return [[t, {**d, "guidance": guidance}] for t, d in conditioning]


def _patch_model_sampling(model: Any, extra: dict[str, Any]) -> Any:
    """Presets that run ComfyUI's ModelSampling* nodes in their template (e.g. AuraFlow shift) get the same patch."""
    kind = extra.get("model_sampling")
    if kind is None:
        return model
    from comfy_extras import nodes_model_advanced as advanced
    if kind == "AuraFlow":
        return advanced.ModelSamplingAuraFlow().patch_aura(model, extra["shift"])[0]
    if kind == "SD3":
        return advanced.ModelSamplingSD3().patch(model, extra["shift"])[0]
    raise ValueError(f"preset asks for model sampling {kind!r}, which the optimizer does not know")


def _vae_latent(model: Any, vae: Any, width: int, height: int, frames: int) -> Callable[[int], torch.Tensor]:
    """Empty latents shaped by the VAE's own compression (8× or 16× in space; 4× in time for video VAEs), as
    ComfyUI's empty-latent nodes for each model shape them."""
    import comfy.sample
    spatial = vae.spacial_compression_encode()
    ratio = vae.downscale_ratio
    time_axis = (ratio[0](frames),) if isinstance(ratio, tuple) and frames > 1 else ()

    def empty(batch: int) -> torch.Tensor:
        latent = torch.zeros(batch, vae.latent_channels, *time_axis, height // spatial, width // spatial)
        return comfy.sample.fix_empty_latent_channels(model, latent)
    return empty


# ---------------------------------------------------------------- real weights

def load_real(preset: Preset, paths: ModelPaths, width: int, height: int) -> LoadedModel:
    """The preset's files loaded as ComfyUI's loader nodes load them: under ``torch.inference_mode()``, as ComfyUI
    executes every node. Loaded outside it, ComfyUI v0.20's quantized (fp8) weights fail later inside ComfyUI
    ("Cannot set version_counter for inference tensor") when sampling patches them in inference mode."""
    with torch.inference_mode():
        return _load_real(preset, paths, width, height)


def _load_real(preset: Preset, paths: ModelPaths, width: int, height: int) -> LoadedModel:
    import comfy.sd
    import comfy.utils
    import folder_paths

    embeddings = folder_paths.get_folder_paths("embeddings")
    if paths.checkpoint:
        model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(str(paths.diffusion_model), output_vae=True,
                                                                     output_clip=True, embedding_directory=embeddings)
        if clip is None or vae is None:
            raise MissingModelFiles(f"{paths.diffusion_model}: the checkpoint holds no "
                                    f"{'text encoder' if clip is None else 'VAE'}; the preset needs all-in-one files")
    else:
        model = comfy.sd.load_diffusion_model(str(paths.diffusion_model))
        clip = comfy.sd.load_clip(ckpt_paths=[str(p) for p in paths.text_encoders], embedding_directory=embeddings,
                                  clip_type=getattr(comfy.sd.CLIPType, paths.clip_type))
        sd, metadata = comfy.utils.load_torch_file(str(paths.vae), return_metadata=True)
        vae = comfy.sd.VAE(sd=sd, metadata=metadata)
        vae.throw_exception_if_invalid()
    model = _patch_model_sampling(model, preset.extra)

    def encode(prompt: str) -> list:
        return with_guidance(clip.encode_from_tokens_scheduled(clip.tokenize(prompt)), preset.guidance)

    def decode(samples: torch.Tensor) -> list[Image.Image]:
        return to_pil(vae.decode(samples))

    from ecad_nodes.families import adapter_for
    variant = adapter_for(model.model).variant(model.model) or preset.name
    return LoadedModel(model, encode, decode, _vae_latent(model, vae, width, height, preset.frames), variant)


# ---------------------------------------------------------------- tiny models

def tiny_vae(latent_channels: int, upscale: int, seed: int = TINY_MODEL_SEED) -> Any:
    """A small random-weight AutoencoderKL of ComfyUI's classes (``comfy.sd.VAE`` with a config), or ComfyUI's
    pixel-space identity VAE for models that sample pixels."""
    import comfy.sd
    from comfy.ldm.models.autoencoder import AutoencoderKL
    from ecad_nodes.tiny import randomize

    if upscale == 1 and latent_channels == 3:
        return comfy.sd.VAE(sd={"pixel_space_vae": torch.tensor(1.0)})
    levels = int(round(math.log2(upscale)))
    if 2 ** levels != upscale:
        raise ValueError(f"a tiny VAE upsamples by a power of two, not {upscale}")
    ddconfig = {"double_z": True, "z_channels": latent_channels, "resolution": 256, "in_channels": 3, "out_ch": 3,
                "ch": 32, "ch_mult": [1] * (levels + 1), "num_res_blocks": 0, "attn_resolutions": [], "dropout": 0.0}
    config = {"params": {"ddconfig": ddconfig, "embed_dim": latent_channels}}
    autoencoder = AutoencoderKL(**config["params"])
    randomize(autoencoder, seed)
    vae = comfy.sd.VAE(sd=autoencoder.state_dict(), config=config, dtype=torch.float32)
    vae.downscale_ratio = vae.upscale_ratio = upscale  # ComfyUI assumes 8× for a VAE given by config
    return vae


def _decode_frames(vae: Any, samples: torch.Tensor) -> list[Image.Image]:
    if samples.ndim == 5:  # (B, C, T, H, W): decode each latent frame, frames side by side
        b, c, t, h, w = samples.shape
        frames = vae.decode(samples.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w))
        return to_pil(frames.reshape(b, t, *frames.shape[1:]))
    return to_pil(vae.decode(samples))


def build_tiny(preset: Preset, width: int, height: int) -> LoadedModel:
    """The tiny model, its conditioning and a tiny VAE, built under ``torch.inference_mode()`` like real weights."""
    spec = preset.tiny
    with torch.inference_mode():
        model = _patch_model_sampling(spec.build(seed=TINY_MODEL_SEED), preset.extra)
        probe = spec.empty_latent(height, width, 1)
        upscale = max(1, width // probe.shape[-1])
        vae = tiny_vae(int(probe.shape[1]), upscale)

    def encode(prompt: str) -> list:
        return with_guidance(spec.conditioning(prompt_seed(prompt)), preset.guidance)

    def empty(batch: int) -> torch.Tensor:
        import comfy.sample
        return comfy.sample.fix_empty_latent_channels(model, spec.empty_latent(height, width, batch))

    return LoadedModel(model, encode, lambda samples: _decode_frames(vae, samples), empty, preset.name)


def check_resolution(family: str, width: int, height: int) -> Optional[str]:
    """Why ComfyUI cannot sample this family at this size, if it cannot (checked before loading anything)."""
    if family == "pixart" and ((height // 8 + width // 8) // 2) / 64 <= 0.5:
        # comfy/ldm/pixart/pixartms.py: base_size = round(c_res / 64) * 64 // patch is 0 up to 256 px -> ZeroDivisionError
        return (f"ComfyUI's PixArt cannot sample at {width}×{height}: its position embedding's base size rounds to 0 "
                "at 256 px and below (ZeroDivisionError in comfy/ldm/pixart/pixartms.py); use --width/--height of 272 or more")
    return None


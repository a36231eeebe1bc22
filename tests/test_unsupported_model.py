"""UNet models inside real ComfyUI (COMFYUI_PATH): "ECAD Apply Cache" refuses them with an error that names the
model class and the supported families, and leaves the model as it was.

The tiny UNets are ComfyUI's own SD1.5 and SDXL model configs (``comfy.supported_models``) with a small
``unet_config``, built the way ComfyUI's loader builds a detected checkpoint.
"""
from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

pytestmark = pytest.mark.comfy

TINY_UNET = {"use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True, "legacy": False,
             "in_channels": 4, "out_channels": 4, "model_channels": 64, "num_res_blocks": [1, 1],
             "channel_mult": [1, 2], "transformer_depth_output": [1, 1, 1, 1], "transformer_depth_middle": 1,
             "context_dim": 32, "use_temporal_resblock": False, "use_temporal_attention": False}
CONFIGS = {  # ComfyUI model config -> what differs from TINY_UNET (as detection would report it)
    "SD15": {"adm_in_channels": None, "transformer_depth": [1, 1], "use_linear_in_transformer": False},
    "SDXL": {"adm_in_channels": 256 + 6 * 256, "num_classes": "sequential", "transformer_depth": [0, 1],
             "use_linear_in_transformer": True},
}


def tiny_unet(config_name: str, seed: int = 0) -> Any:
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models
    from ecad_nodes.tiny import randomize
    model_config = getattr(comfy.supported_models, config_name)({**TINY_UNET, **CONFIGS[config_name]})
    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model({}, "")
    randomize(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=comfy.model_management.get_torch_device(),
                                            offload_device=comfy.model_management.unet_offload_device())


class TinyUNetSpec:
    latent_channels = 4

    def conditioning(self, seed: int, tokens: int | None = None) -> list:
        gen = torch.Generator().manual_seed(seed)
        return [[torch.randn(1, tokens or 8, TINY_UNET["context_dim"], generator=gen), {}]]

    def empty_latent(self, height: int, width: int, batch: int = 1) -> torch.Tensor:
        return torch.zeros(batch, 4, height // 8, width // 8)


@pytest.mark.parametrize("config_name, model_type", [("SD15", "BaseModel"), ("SDXL", "SDXL")])
def test_apply_cache_names_the_unet_class_and_the_supported_families(config_name, model_type):
    from ecad_nodes import library
    from ecad_nodes.families import UnsupportedModelError, supported_families
    from ecad_nodes.nodes import ECADApplyCache, ECADLoadSchedule
    model = tiny_unet(config_name)
    assert type(model.model).__name__ == model_type
    assert type(model.model.diffusion_model).__name__ == "UNetModel"
    (choice,) = ECADLoadSchedule().load(library.HEURISTICS_SOURCE, "FORA every 2 steps")
    with pytest.raises(UnsupportedModelError) as raised:
        ECADApplyCache().apply(model, choice)
    message = str(raised.value)
    assert "comfy.ldm.modules.diffusionmodules.openaimodel.UNetModel" in message
    assert f"ComfyUI model type {model_type}" in message
    families = supported_families()
    assert {"flux", "pixart", "sd3", "auraflow", "lumina2"} <= set(families)
    listed = message.split("Supported families: ", 1)[1]
    assert all(family in listed for family in families)


def test_a_refused_model_is_left_as_it_was_and_still_samples():
    from ecad_nodes.families import UnsupportedModelError
    from ecad_nodes.heuristics import HEURISTICS
    from ecad_nodes.choice import ScheduleChoice
    from ecad_nodes.nodes import ECADApplyCache
    from support import sample
    model, spec = tiny_unet("SD15"), TinyUNetSpec()
    reference = sample(model, spec, steps=3, cfg=3.0, width=64, height=64)
    options = copy.deepcopy(model.model_options)
    with pytest.raises(UnsupportedModelError):
        ECADApplyCache().apply(model, ScheduleChoice.of_heuristic(HEURISTICS[1]))
    assert model.model_options == options and not model.object_patches
    assert torch.equal(sample(model, spec, steps=3, cfg=3.0, width=64, height=64), reference)

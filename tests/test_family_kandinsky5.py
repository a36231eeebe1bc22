"""Kandinsky 5 inside real ComfyUI (COMFYUI_PATH, v0.20 and later), beyond the family contract
(tests/test_family_contract.py): image-to-video as Kandinsky5ImageToVideo sets it up, the start image's latent
written over the first latent frame of the model's input (``time_dim_replace``, in place, at every step) and the
mask of the frames it fixes as an input channel."""
from __future__ import annotations

import pytest
import torch

from family_checks import assert_all_compute_is_identical, assert_runs_as_planned

pytestmark = [pytest.mark.comfy, pytest.mark.needs("kandinsky5")]

SIZE = 64               # an 8×8 latent per frame, 2 latent frames, 32 image tokens


@pytest.fixture(scope="module")
def kandinsky5():
    from ecad_nodes.families.kandinsky5 import TinyKandinsky5
    spec = TinyKandinsky5()
    return spec, spec.build(seed=0)


def image_to_video(spec, seed: int, tokens: int | None = None) -> list:
    """Kandinsky5ImageToVideo's conditioning: the encoded start image and the mask of the latent frames it fixes."""
    latent = spec.empty_latent(SIZE, SIZE)
    start = torch.randn(1, latent.shape[1], 1, *latent.shape[3:], generator=torch.Generator().manual_seed(100))
    mask = torch.ones(1, 1, *latent.shape[2:])
    mask[:, :, :1] = 0.0
    cond = spec.conditioning(seed, tokens)
    cond[0][1].update(time_dim_replace=start, concat_mask=mask)
    return cond


@pytest.mark.parametrize("negative_tokens", [None, 5], ids=["cfg-batched", "cfg-separate-calls"])
def test_image_to_video_all_compute_is_bit_identical(kandinsky5, negative_tokens):
    spec, model = kandinsky5
    assert_all_compute_is_identical(model, spec, steps=4, cfg=5.0, width=SIZE, height=SIZE,
                                    positive=image_to_video(spec, 1), negative=image_to_video(spec, 2, negative_tokens))


def test_image_to_video_runs_exactly_where_the_mask_says(kandinsky5):
    spec, model = kandinsky5
    assert_runs_as_planned(model, spec, cfg=5.0, width=SIZE, height=SIZE, positive=image_to_video(spec, 1),
                           negative=image_to_video(spec, 2, tokens=5))


def test_presets_and_the_benchmark_model(kandinsky5):
    from ecad_nodes.families.kandinsky5 import Kandinsky5Adapter
    from ecad_nodes.registry import benchmark_models, preset
    video, image = preset("kandinsky5-video-lite"), preset("kandinsky5-image-lite")
    assert video.files.diffusion_model == "kandinsky5lite_t2v_sft_5s.safetensors" and video.frames == 121
    assert image.files.clip_type == "KANDINSKY5_IMAGE" and image.extra == {"model_sampling": "SD3", "shift": 3.0}
    [bench] = [b for b in benchmark_models() if b.name == "kandinsky5"]
    dm = bench.spec.meta_model().diffusion_model
    tokens = Kandinsky5Adapter().tokens(dm, bench.spec.empty_latent(bench.height, bench.width), None)
    assert dm.model_dim == 512 and tokens.image == 1024


def test_the_video_models_width_names_lite_and_pro(kandinsky5):
    """ComfyUI has one config for every Kandinsky 5 video model; the width tells the released ones apart."""
    from ecad_nodes.families.kandinsky5 import Kandinsky5Adapter, TinyKandinsky5
    adapter = Kandinsky5Adapter()
    assert adapter.variant(kandinsky5[1].model) == "kandinsky5-video"
    lite = TinyKandinsky5(model_dim=1792, ff_dim=7168, time_dim=512, text_blocks=2, visual_blocks=32, text_dim=3584)
    assert adapter.variant(lite.meta_model()) == "kandinsky5-video-lite"

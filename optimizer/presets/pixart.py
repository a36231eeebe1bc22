"""PixArt-α/Σ presets. Calibration follows the ECAD paper (20 DPM-Solver++ steps, CFG 4.5) except the size.

The paper calibrated the 256-px checkpoints at 256². ComfyUI (a125cd8, v0.3.64) cannot sample PixArt at
256 px or below: ``comfy/ldm/pixart/pixartms.py`` derives the position embedding's base size as
``round(c_res / 64) * 64 // patch``, which is 0 there (ZeroDivisionError). The presets therefore use the
512-px checkpoints at 512², the smallest size their position embeddings were trained for.
"""
from ..tiny_models import TinyPixArt
from . import BenchmarkModel, ModelFiles, Preset

PRESETS = (
    Preset(name="pixart-alpha", family="pixart",
           description="PixArt-α 512 (ECAD paper: 20 steps, CFG 4.5; 512², as ComfyUI cannot sample PixArt at 256²)",
           files=ModelFiles("PixArt-XL-2-512x512.pth", ("t5xxl_fp16.safetensors",), "PIXART",
                            "sd-vae-ft-ema.safetensors"),
           steps=20, sampler="dpmpp_2m", scheduler="normal", cfg=4.5, width=512, height=512,
           population=72, generations=550, metric="image_reward"),
    Preset(name="pixart-sigma", family="pixart",
           description="PixArt-Σ 512 (ECAD paper: 20 steps, CFG 4.5; 512², as ComfyUI cannot sample PixArt at 256²)",
           files=ModelFiles("PixArt-Sigma-XL-2-512-MS.pth", ("t5xxl_fp16.safetensors",), "PIXART",
                            "sdxl_vae.safetensors"),
           steps=20, sampler="dpmpp_2m", scheduler="normal", cfg=4.5, width=512, height=512,
           population=72, generations=50, metric="image_reward"),
    # 320² is the smallest common size ComfyUI's PixArt samples (see above): 400 image tokens
    Preset(name="tiny-pixart", family="pixart",
           description="A small random-weight PixArt-α built from ComfyUI's classes; runs on a CPU in minutes",
           tiny=TinyPixArt(), steps=10, sampler="dpmpp_2m", scheduler="normal", cfg=4.5,
           width=320, height=320, population=12, generations=8, metric="fidelity", prompts=8, images_per_prompt=1),
)

BENCHMARK_MODELS = (
    BenchmarkModel("pixart", TinyPixArt(hidden=384, heads=6, depth=12, caption_channels=256, max_tokens=64),
                   width=512, height=512, cfg=4.5, sampler="dpmpp_2m", scheduler="normal"),
)

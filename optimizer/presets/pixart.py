"""PixArt-α/Σ presets. Calibration settings follow the ECAD paper: 20 DPM-Solver++ steps at 256², CFG 4.5."""
from ..tiny_models import TinyPixArt
from . import BenchmarkModel, ModelFiles, Preset

PRESETS = (
    Preset(name="pixart-alpha", family="pixart", description="PixArt-α 256 (ECAD paper: 20 steps, 256², CFG 4.5)",
           files=ModelFiles("PixArt-XL-2-256x256.pth", ("t5xxl_fp16.safetensors",), "PIXART",
                            "sd-vae-ft-ema.safetensors"),
           steps=20, sampler="dpmpp_2m", scheduler="normal", cfg=4.5, width=256, height=256,
           population=72, generations=550, metric="image_reward"),
    Preset(name="pixart-sigma", family="pixart", description="PixArt-Σ 256 (ECAD paper: 20 steps, 256², CFG 4.5)",
           files=ModelFiles("PixArt-Sigma-XL-2-256x256.pth", ("t5xxl_fp16.safetensors",), "PIXART",
                            "sdxl_vae.safetensors"),
           steps=20, sampler="dpmpp_2m", scheduler="normal", cfg=4.5, width=256, height=256,
           population=72, generations=50, metric="image_reward"),
    Preset(name="tiny-pixart", family="pixart",
           description="A small random-weight PixArt-α built from ComfyUI's classes; runs on a CPU in minutes",
           tiny=TinyPixArt(), steps=10, sampler="dpmpp_2m", scheduler="normal", cfg=4.5,
           width=512, height=512, population=12, generations=8, metric="fidelity", prompts=8, images_per_prompt=1),
)

BENCHMARK_MODELS = (
    BenchmarkModel("pixart", TinyPixArt(hidden=384, heads=6, depth=12, caption_channels=256, max_tokens=64),
                   width=512, height=512, cfg=4.5, sampler="dpmpp_2m", scheduler="normal"),
)

"""FLUX.1 presets. Calibration settings follow the ECAD paper: 20 steps at 256², guidance 5."""
from ..tiny_models import TinyFlux
from . import BenchmarkModel, ModelFiles, Preset

_FLUX_TEXT = ("clip_l.safetensors", "t5xxl_fp16.safetensors")

PRESETS = (
    Preset(name="flux-dev", family="flux", description="FLUX.1-dev (ECAD paper: 20 steps, 256², guidance 5)",
           files=ModelFiles("flux1-dev.safetensors", _FLUX_TEXT, "FLUX", "ae.safetensors"),
           steps=20, sampler="euler", scheduler="simple", cfg=1.0, guidance=5.0, width=256, height=256,
           population=24, generations=250, metric="image_reward"),
    Preset(name="flux-schnell", family="flux", description="FLUX.1-schnell (4 steps, 256², no guidance)",
           files=ModelFiles("flux1-schnell.safetensors", _FLUX_TEXT, "FLUX", "ae.safetensors"),
           steps=4, sampler="euler", scheduler="simple", cfg=1.0, width=256, height=256,
           population=24, generations=100, metric="image_reward"),
    Preset(name="tiny-flux", family="flux",
           description="A small random-weight FLUX built from ComfyUI's classes; runs on a CPU in minutes",
           tiny=TinyFlux(), steps=10, sampler="euler", scheduler="simple", cfg=1.0, guidance=3.5,
           width=128, height=128, population=12, generations=8, metric="fidelity", prompts=8, images_per_prompt=2),
)

# hidden 512, 4 double + 8 single blocks, 1024 image tokens (512² image)
BENCHMARK_MODELS = (
    BenchmarkModel("flux", TinyFlux(hidden=512, heads=4, depth=4, depth_single=8, context_dim=256, vec_dim=128,
                                    mlp_ratio=4.0, axes_dim=(16, 56, 56)), width=512, height=512),
)

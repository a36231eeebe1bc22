"""The toy preset: the plain-PyTorch toy DiT (no ComfyUI), for CI and for trying the optimizer anywhere.

Its schedules are for the "toy" family, which no ComfyUI model has: they exercise the optimizer,
not the nodes.
"""
from ..toy_backend import ToySpec
from ecad_nodes.registry import Preset

PRESETS = (
    Preset(name="toy", family="toy",
           description="The plain-PyTorch toy DiT of optimizer/toy_dit.py; needs no ComfyUI (CI, trying the optimizer)",
           tiny=ToySpec(), steps=8, sampler="euler", scheduler="linear", cfg=1.0, width=16, height=16,
           population=8, generations=4, metric="fidelity", prompts=6, images_per_prompt=2),
)

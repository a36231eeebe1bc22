"""A ComfyUI node pack for ECAD's server tests: small random-weight models and inputs, no weight files.

Loaded by the tests' ComfyUI server next to ComfyUI-ECAD, as ComfyUI's own execution tests load
their testing pack.
"""
import os
import sys

import torch

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__)))))
if _REPO not in sys.path:
    sys.path.append(_REPO)

from ecad_nodes.families.flux import TinyFlux
from ecad_nodes.families.pixart import TinyPixArt  # noqa: E402

SPECS = {"flux": TinyFlux(), "pixart": TinyPixArt()}
FAMILY = (list(SPECS), {"default": "flux"})


class ECADTestTinyModel:
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "build"
    CATEGORY = "ECAD testing"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"family": FAMILY, "seed": ("INT", {"default": 0, "min": 0})}}

    def build(self, family, seed):
        return (SPECS[family].build(seed=seed),)


class ECADTestConditioning:
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"
    CATEGORY = "ECAD testing"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"family": FAMILY, "seed": ("INT", {"default": 0, "min": 0}),
                             "tokens": ("INT", {"default": 8, "min": 1, "max": 64})}}

    def encode(self, family, seed, tokens):
        return (SPECS[family].conditioning(seed, tokens=tokens),)


class ECADTestLatent:
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "make"
    CATEGORY = "ECAD testing"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"family": FAMILY, "width": ("INT", {"default": 64, "min": 16, "max": 1024, "step": 16}),
                             "height": ("INT", {"default": 64, "min": 16, "max": 1024, "step": 16}),
                             "batch": ("INT", {"default": 1, "min": 1, "max": 8})}}

    def make(self, family, width, height, batch):
        return ({"samples": SPECS[family].empty_latent(height, width, batch)},)


class ECADTestTinyVAE:
    """A random-weight TAESD-style VAE for FLUX's 16-channel latents, loaded the way ComfyUI loads taef1."""

    RETURN_TYPES = ("VAE",)
    FUNCTION = "build"
    CATEGORY = "ECAD testing"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0})}}

    def build(self, seed):
        import comfy.sd
        from comfy.taesd.taesd import TAESD
        with torch.random.fork_rng(devices=[]):  # seeded weights without touching the server's global generator
            torch.manual_seed(seed)
            state = TAESD(latent_channels=16).state_dict()
        state["vae_scale"], state["vae_shift"] = torch.tensor(0.3611), torch.tensor(0.1159)  # taef1's, as nodes.VAELoader sets them
        return (comfy.sd.VAE(sd=state),)


class ECADTestLatentStats:
    """An output node reporting the sampled latent's statistics through the history API."""

    RETURN_TYPES = ()
    FUNCTION = "stats"
    OUTPUT_NODE = True
    CATEGORY = "ECAD testing"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"latent": ("LATENT",)}}

    def stats(self, latent):
        x = latent["samples"].float()
        return {"ui": {"stats": [{"shape": list(x.shape), "mean": x.mean().item(), "std": x.std().item(),
                                  "finite": bool(torch.isfinite(x).all())}]}}


class AnyType(str):
    """The type other packs' switch and "anything" nodes output: equal to every type (ComfyUI compares with !=)."""

    def __ne__(self, other):
        return False

    __hash__ = str.__hash__


class ECADTestAnyText:
    """Text of any type, as switch and "anything" nodes of other packs give it: linkable to a dropdown input too."""

    RETURN_TYPES = (AnyType("*"),)
    FUNCTION = "text"
    CATEGORY = "ECAD testing"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("STRING", {"default": ""})}}

    def text(self, value):
        return (value,)


NODE_CLASS_MAPPINGS = {c.__name__: c for c in (ECADTestTinyModel, ECADTestConditioning, ECADTestLatent, ECADTestTinyVAE,
                                                ECADTestLatentStats, ECADTestAnyText)}

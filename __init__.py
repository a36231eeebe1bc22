"""ComfyUI-ECAD: per-step, per-component caching for diffusion transformers (ECAD, ICLR 2026).

ComfyUI imports this file when the pack sits in ``ComfyUI/custom_nodes/``.
"""
from .ecad_nodes import library
from .ecad_nodes.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web"

library.register_user_folder()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]

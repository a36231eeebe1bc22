"""ComfyUI-ECAD: per-step, per-component caching for diffusion transformers (ECAD, ICLR 2026).

ComfyUI imports this folder as a package when the pack sits in ``ComfyUI/custom_nodes/``.
"""
WEB_DIRECTORY = "./web"

if __package__:  # pytest may import this file on its own while collecting the repository: nothing to register then
    from .ecad_nodes import library
    from .ecad_nodes.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

    library.register_user_folder()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]

"""ComfyUI-ECAD: per-step, per-component caching for diffusion transformers (ECAD, ICLR 2026).

ComfyUI imports this folder as a package when the pack sits in ``ComfyUI/custom_nodes/``.
"""
WEB_DIRECTORY = "./web"

if __package__:  # pytest may import this file on its own while collecting the repository: nothing to register then
    from .ecad_nodes import library
    from .ecad_nodes.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

    library.register_user_folder()
    from .ecad_nodes.routes import register_with_comfyui

    register_with_comfyui()  # the web extension's /ecad/... routes; nothing outside a ComfyUI server

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]

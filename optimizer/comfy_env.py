"""Finding ComfyUI and importing it headlessly.

ComfyUI is not a package on any registry: it is a checkout whose root goes on ``sys.path``. It is
found, in order, from an explicit path, ``COMFYUI_PATH``, or the ComfyUI this pack is installed in
(``ComfyUI/custom_nodes/<pack>``). ``comfy.model_management`` reads its command-line flags when
first imported, so the device is chosen here, before anything imports it.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

PACK_ROOT = Path(__file__).resolve().parent.parent


class ComfyUINotFound(RuntimeError):
    pass


def _is_comfyui(path: Path) -> bool:
    return (path / "comfy" / "model_management.py").is_file() and (path / "main.py").is_file()


def find_comfyui(explicit: Optional[str | Path] = None) -> Path:
    candidates: list[tuple[str, Path]] = []
    if explicit:
        candidates.append(("--comfyui", Path(explicit)))
    env = os.environ.get("COMFYUI_PATH")
    if env:
        candidates.append(("COMFYUI_PATH", Path(env)))
    if explicit or env:
        source, path = candidates[0]
        if not _is_comfyui(path):
            raise ComfyUINotFound(f"{source} points at {path}, which is not a ComfyUI checkout "
                                  "(expected comfy/model_management.py and main.py there)")
        return path.resolve()
    host = PACK_ROOT.parent.parent  # ComfyUI/custom_nodes/<this pack>
    if PACK_ROOT.parent.name == "custom_nodes" and _is_comfyui(host):
        return host
    raise ComfyUINotFound("ComfyUI was not found: pass --comfyui PATH, set COMFYUI_PATH to a ComfyUI checkout, "
                          "or install this pack into ComfyUI/custom_nodes/")


def import_comfy(explicit: Optional[str | Path] = None, cpu: Optional[bool] = None) -> Path:
    """Put ComfyUI on sys.path and choose the device; returns the ComfyUI root. Idempotent."""
    root = find_comfyui(explicit)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    if "comfy.model_management" not in sys.modules:
        import torch
        from comfy.cli_args import args
        if cpu is None:
            cpu = not torch.cuda.is_available()
        args.cpu = bool(cpu)
    return root


def comfyui_available() -> tuple[bool, str]:
    """Whether ComfyUI can be imported here, and if not, why (for skip messages)."""
    try:
        find_comfyui()
    except ComfyUINotFound as e:
        return False, str(e)
    return True, ""

"""Test set-up: ComfyUI from COMFYUI_PATH (tests that need it skip without it) and the ECAD reference data."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from optimizer.comfy_env import ComfyUINotFound, import_comfy  # noqa: E402

try:
    COMFYUI_ROOT = import_comfy(cpu=True) if os.environ.get("COMFYUI_PATH") else None
    COMFY_SKIP_REASON = ("ComfyUI is not available: set COMFYUI_PATH to a ComfyUI checkout (scripts/dev.sh test does, for "
                         "every tree in ../shared/comfyui) to run this test")
except ComfyUINotFound as e:
    COMFYUI_ROOT = None
    COMFY_SKIP_REASON = f"ComfyUI is not available ({e}); set COMFYUI_PATH to a ComfyUI checkout to run this test"

requires_comfy = pytest.mark.skipif(COMFYUI_ROOT is None, reason=COMFY_SKIP_REASON)


def _find_reference() -> Path | None:
    candidates = [os.environ.get("ECAD_REFERENCE_PATH"), ROOT.parent / "shared" / "ecad-reference"]
    for c in candidates:
        if c and (Path(c) / "schedules_in_paper").is_dir():
            return Path(c)
    return None


REFERENCE = _find_reference()
requires_reference = pytest.mark.skipif(
    REFERENCE is None, reason="the ECAD reference data is not here: set ECAD_REFERENCE_PATH to shared/ecad-reference")


def pytest_configure(config):
    config.addinivalue_line("markers", "comfy: needs ComfyUI (COMFYUI_PATH)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("comfy") and COMFYUI_ROOT is None:
            item.add_marker(pytest.mark.skip(reason=COMFY_SKIP_REASON))

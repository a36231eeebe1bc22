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
    config.addinivalue_line(
        "markers", "needs(*what): what the test needs of ComfyUI: registry tiny-model names, dotted names "
        "(module.attribute), TinyModel instances or callables returning why not; where this ComfyUI lacks one, the test "
        "does not apply and is deselected (a parameter that names a registry tiny model counts too)")


def _flatten(values):
    for v in values:
        if isinstance(v, (tuple, list)):
            yield from _flatten(v)
        else:
            yield v


def _lacks(what) -> str | None:
    """Why this ComfyUI lacks ``what`` (see the ``needs`` marker), or None."""
    from ecad_nodes.registry import tiny_models
    from ecad_nodes.tiny import comfyui_has
    if isinstance(what, str):
        entry = tiny_models().get(what)
        if entry is not None:
            return entry.unavailable()
        return None if comfyui_has(what) else f"this ComfyUI has no {what}"
    if hasattr(what, "unavailable"):
        return what.unavailable()
    return what()


def not_applicable(item) -> str | None:
    """Why a test does not apply to the ComfyUI under test (a model or feature newer than the release), or None."""
    from ecad_nodes.registry import tiny_models
    wanted = [arg for marker in item.iter_markers("needs") for arg in marker.args]
    callspec = getattr(item, "callspec", None)
    if callspec is not None:
        wanted += [v for v in _flatten(callspec.params.values()) if isinstance(v, str) and v in tiny_models()]
    return next((why for why in map(_lacks, wanted) if why), None)


def pytest_collection_modifyitems(config, items):
    if COMFYUI_ROOT is None:
        for item in items:
            if item.get_closest_marker("comfy"):
                item.add_marker(pytest.mark.skip(reason=COMFY_SKIP_REASON))
        return
    kept, dropped, reasons = [], [], {}
    for item in items:
        why = not_applicable(item)
        if why:
            dropped.append(item)
            reasons[why] = reasons.get(why, 0) + 1
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
    config.stash[_NOT_APPLICABLE] = reasons


_NOT_APPLICABLE = pytest.StashKey[dict]()


def pytest_report_header(config):
    if COMFYUI_ROOT is None:
        return "ComfyUI: none (its tests skip)"
    from ecad_nodes.families.mirror import comfyui_version
    return f"ComfyUI: {comfyui_version()} at {COMFYUI_ROOT}"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    reasons = config.stash.get(_NOT_APPLICABLE, {})
    if reasons:
        terminalreporter.section("not applicable to this ComfyUI (deselected)")
        for why, count in sorted(reasons.items(), key=lambda kv: -kv[1]):
            terminalreporter.write_line(f"{count:4d}  {why}")

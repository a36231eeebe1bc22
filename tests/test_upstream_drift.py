"""When ComfyUI changes a block forward that ECAD mirrors, ECAD notices and never silently computes the old thing.

Each test copies the ComfyUI tree of COMFYUI_PATH, edits FLUX's ``DoubleStreamBlock.forward`` in the
copy, and runs tests/upstream_drift_probe.py against it in a fresh process.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import COMFYUI_ROOT

pytestmark = pytest.mark.comfy

PROBE = Path(__file__).resolve().parent / "upstream_drift_probe.py"
MARKER = "        return img, txt\n"  # the end of DoubleStreamBlock.forward in every ComfyUI release this pack knows


def run_probe(tmp_path: Path, inserted: str) -> dict:
    tree = tmp_path / "ComfyUI"
    shutil.copytree(COMFYUI_ROOT, tree, ignore=shutil.ignore_patterns("models", "output", "input", "user", "__pycache__"))
    layers = tree / "comfy" / "ldm" / "flux" / "layers.py"
    source = layers.read_text()
    start = source.index("class DoubleStreamBlock")
    end = source.index(MARKER, start)
    layers.write_text(source[:end] + inserted + source[end:])
    env = {**os.environ, "COMFYUI_PATH": str(tree), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(PROBE)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_changed_block_forward_is_detected_and_comfyuis_own_forward_runs(tmp_path):
    # A behaviour change upstream (here: the block scales its image stream) that ECAD's copy does not have.
    result = run_probe(tmp_path, "        img = img * 0.96875\n")
    assert len(result["warnings"]) == 1, result["warnings"]  # one warning per process, however many blocks and runs
    warning = result["warnings"][0]
    assert "DoubleStreamBlock.forward" in warning and "ComfyUI " in warning and "outputs differ" in warning
    assert result["all_compute_equals_unpatched"]
    # The fallback caches the blocks' MLPs through their hooks and computes the joint attention at every step:
    # exactly what an independent implementation on ComfyUI's (edited) forward gives, bit for bit.
    assert result["fora2_equals_reference"] and result["fora2_again_equals_first"]
    assert result["fora2_differs_from_unpatched"] and result["reused"] > 0
    assert any("computed at every step" in note for note in result["notes"])
    assert result["planned_fraction"] > 0.5  # FORA-2 alone plans 1/2; the attention bits are forced on


def test_a_rewritten_but_equivalent_forward_passes_its_check_and_keeps_the_copy(tmp_path):
    result = run_probe(tmp_path, "        txt = txt + 0.0 * 0\n")  # new source, same numbers
    assert result["warnings"] == []
    assert any("DoubleStreamBlock.forward" in m for m in result["checked_identical"])
    assert result["all_compute_equals_unpatched"]
    assert result["planned_fraction"] == pytest.approx(0.5)  # FORA-2 as planned: nothing forced

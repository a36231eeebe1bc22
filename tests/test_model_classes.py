"""Every diffusion-model class of the ComfyUI under test is in the README's table, and ECAD does what it says:
a supported class is claimed by its family's adapter, any other is refused by name (never claimed)."""
from __future__ import annotations

import importlib
import re

import pytest

from conftest import ROOT

pytestmark = pytest.mark.comfy

ROW = re.compile(r"^\| `(comfy\.[\w.]+)` \|[^|]*\|[^|]*\|[^|]*\| (.*) \|$")


def readme_rows() -> dict[str, str]:
    """ComfyUI class -> the ECAD column of the README's table."""
    rows = {}
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


def comfyui_model_classes() -> dict[str, type]:
    """The diffusion-model classes ``comfy.model_base`` builds (its ``unet_model=`` arguments), by qualified name."""
    import comfy.model_base
    source = open(comfy.model_base.__file__, encoding="utf-8").read()
    found = {}
    for name in set(re.findall(r"unet_model=([A-Za-z_][\w.]*)", source)) - {"unet_model"}:
        obj = comfy.model_base.__dict__.get(name)
        if obj is None:
            module, _, attr = name.rpartition(".")
            obj = getattr(importlib.import_module(module), attr)
        found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


def test_the_readme_lists_every_diffusion_model_class_of_this_comfyui():
    classes, rows = comfyui_model_classes(), readme_rows()
    assert len(classes) >= 25
    missing = sorted(set(classes) - set(rows))
    assert not missing, f"README's model table lacks {missing}"


def test_supported_classes_are_claimed_and_the_others_refused_by_name():
    from ecad_nodes.families import UnsupportedModelError, adapter_for, all_adapters
    rows = readme_rows()
    for name, cls in comfyui_model_classes().items():
        family = re.match(r"`(\w+)`", rows[name])
        bare = cls.__new__(cls)  # the class is all adapters look at
        claimed = [a.family for a in all_adapters() if a.matches(bare)]
        if family:
            assert claimed == [family.group(1)], f"{name}: README says {family.group(1)}, claimed by {claimed}"
        elif "refused:" in rows[name]:  # claimed by class, refused by its adapter's check (tested in the family's tests)
            assert len(claimed) == 1, name
        else:
            assert claimed == [], f"{name} is not supported but claimed by {claimed}"
            with pytest.raises(UnsupportedModelError, match=re.escape(cls.__name__)):
                adapter_for(bare)

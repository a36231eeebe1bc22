"""The demo's warning when other work keeps the CPU busy (its times would be nonsense; no ComfyUI needed)."""
from __future__ import annotations

import sys

from optimizer.demo import busy_share, busy_warning


def test_the_demo_warns_only_when_other_work_keeps_half_the_cpu_or_more_busy():
    assert busy_warning(None) == "" and busy_warning(0.2) == "" and busy_warning(0.49) == ""
    text = busy_warning(0.9)
    assert "90 % of the CPU busy" in text and "run the demo alone" in text


def test_the_busy_share_is_measured_on_linux():
    share = busy_share(0.05)
    if sys.platform.startswith("linux"):
        assert share is not None and 0.0 <= share <= 1.0
    else:
        assert share is None

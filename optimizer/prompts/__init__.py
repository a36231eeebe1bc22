"""Prompts the optimizer calibrates on.

``calibration.txt`` holds 100 prompts written for this project (people, animals, scenes, text
rendering, counting, abstract ideas, styles). ``load_prompts`` reads it or a user's file:

- plain text: one prompt per line; blank lines and lines starting with ``#`` are ignored;
- ``.tsv`` (PartiPrompts style): a header row with a ``Prompt`` column;
- ``.json``: a list of strings or of objects with a ``"prompt"`` key (ImageReward's prompt file).
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

DEFAULT_PROMPTS = Path(__file__).resolve().parent / "calibration.txt"


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"prompt file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"prompt file {path} cannot be read: {e}") from e


def _from_lines(text: str) -> list[str]:
    return [s for s in (line.strip() for line in text.splitlines()) if s and not s.startswith("#")]


def _from_tsv(text: str, path: Path) -> list[str]:
    reader = csv.DictReader(io.StringIO(text), delimiter="\t")
    if not reader.fieldnames or "Prompt" not in reader.fieldnames:
        raise ValueError(f"prompt file {path}: a .tsv file needs a header row with a 'Prompt' column "
                         f"(found columns: {', '.join(reader.fieldnames or []) or 'none'})")
    return [s for s in ((row.get("Prompt") or "").strip() for row in reader) if s]


def _from_json(text: str, path: Path) -> list[str]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"prompt file {path}: not valid JSON ({e})") from e
    if not isinstance(doc, list):
        raise ValueError(f"prompt file {path}: a .json prompt file holds a list of prompts")
    prompts = []
    for i, item in enumerate(doc):
        value = item.get("prompt") if isinstance(item, dict) else item
        if not isinstance(value, str):
            raise ValueError(f"prompt file {path}: item {i} is neither a string nor an object with a \"prompt\" string")
        if value.strip():
            prompts.append(value.strip())
    return prompts


def load_prompts(path: Optional[str | Path] = None) -> list[str]:
    """The prompts of ``path`` (default: the shipped calibration prompts), in file order."""
    path = Path(path) if path is not None else DEFAULT_PROMPTS
    text = _read_text(path)
    suffix = path.suffix.lower()
    if suffix == ".tsv":
        prompts = _from_tsv(text, path)
    elif suffix == ".json":
        prompts = _from_json(text, path)
    else:
        prompts = _from_lines(text)
    if not prompts:
        raise ValueError(f"prompt file {path} holds no prompts (plain text: one per line, '#' starts a comment; "
                         ".tsv: a 'Prompt' column)")
    return prompts


def split_prompts(prompts: Sequence[str], holdout: int | float, seed: int = 0) -> tuple[list[str], list[str]]:
    """(calibration, held-out): ``holdout`` prompts (a count, or a fraction in (0, 1)) chosen at random
    with ``seed``; both parts keep the input order. The calibration part is never empty."""
    n = len(prompts)
    count = round(holdout * n) if isinstance(holdout, float) else holdout
    if isinstance(holdout, float) and not 0.0 <= holdout < 1.0:
        raise ValueError(f"a held-out fraction must be in [0, 1), got {holdout}")
    if not 0 <= count < n:
        raise ValueError(f"cannot hold out {count} of {n} prompts: at least one must remain for calibration")
    held = set(np.random.default_rng(seed).permutation(n)[:count].tolist())
    return ([p for i, p in enumerate(prompts) if i not in held], [p for i, p in enumerate(prompts) if i in held])

"""The prompt × seed set every candidate schedule is scored on.

Every candidate sees the same prompts with the same seeds (common random numbers), and an image's
noise depends only on its own seed, so a candidate's score does not depend on the order in which
candidates, prompts or batches are run — the property that lets a resumed search match an
uninterrupted one exactly.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Sequence

HOLDOUT_SEED_BASE = 1_000_000   # held-out images use seeds from here on, never seen during the search


@dataclass(frozen=True)
class CalibrationItem:
    """One image of the calibration set: a prompt and the seed of its noise."""

    prompt_index: int
    prompt: str
    seed: int


def calibration_items(prompts: Sequence[str], images_per_prompt: int, first_seed: int = 0) -> list[CalibrationItem]:
    """``images_per_prompt`` images of each prompt, every image with a seed of its own: prompt i, image j has
    seed ``first_seed + i * images_per_prompt + j``. (The ECAD paper reuses seeds 0..9 for every prompt; with
    one image per prompt that would be one noise for the whole set, and a schedule tuned to that noise.)"""
    return [CalibrationItem(i, p, first_seed + i * images_per_prompt + j)
            for i, p in enumerate(prompts) for j in range(images_per_prompt)]


def seed_range(items: Sequence[CalibrationItem]) -> str:
    """The items' seeds as text for a file's provenance, e.g. "0..799"."""
    seeds = [it.seed for it in items]
    return f"{min(seeds)}..{max(seeds)}" if seeds else ""


def items_hash(items: Sequence[CalibrationItem]) -> str:
    """A short stable digest of the prompt/seed set, stored with every evaluation."""
    doc = json.dumps([[it.prompt, it.seed] for it in items], ensure_ascii=False)
    return hashlib.sha256(doc.encode("utf-8")).hexdigest()[:16]


def prompt_seed(prompt: str) -> int:
    """A deterministic 63-bit seed for a prompt (tiny models map prompts to seeded random conditioning)."""
    return int.from_bytes(hashlib.sha256(prompt.encode("utf-8")).digest()[:8], "big") >> 1


def sampling_batches(items: Sequence[CalibrationItem], batch_size: int) -> list[list[CalibrationItem]]:
    """The items in their order, ``batch_size`` at a time, images of different prompts together (each batch row has
    its own prompt's conditioning). A batch depends only on the items asked for, never on what ran before: every
    candidate rendered on the same items sees the same batches."""
    return [list(items[start:start + batch_size]) for start in range(0, len(items), max(1, batch_size))]

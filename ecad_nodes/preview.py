"""A picture of a schedule, and the "ECAD Schedule Preview" node that shows it.

The image has one column per sampling step and one row per component of every block, block groups
stacked top to bottom. A computed component is drawn in its component's colour, a reused one in a
dim shade of it, so the pattern of reuse reads at a glance and each colour names one component.
"""
from __future__ import annotations

import os
import random
import string
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from . import library
from .choice import ScheduleChoice
from .schedule import BlockGroup, Layout, Mask

BACKGROUND = (30, 30, 30)
TEXT = (222, 222, 222)
MUTED = (150, 150, 150)
# Distinct, colour-blind friendly hues (Okabe-Ito), one per component name in order of appearance.
PALETTE = ((86, 180, 233), (230, 159, 0), (0, 158, 115), (204, 121, 167), (240, 228, 66), (213, 94, 0),
           (0, 114, 178), (180, 180, 180))
REUSED_SHADE = 0.22  # how much of a component's colour a reused cell keeps

# Built-in heuristics are the same for every block and component, so without a model one row shows them fully.
ANY_MODEL_LAYOUT = Layout("any model", (BlockGroup("all blocks", 1, ("all components",)),))
HEURISTIC_DEFAULT_STEPS = 20


@dataclass(frozen=True)
class Geometry:
    cell_width: int
    row_height: int
    group_gap: int = 6
    left: int = 150
    top: int = 78
    bottom: int = 34
    right: int = 16

    @classmethod
    def fit(cls, steps: int, rows: int) -> "Geometry":
        """Cells sized so a 20-step FLUX (171 rows) or a 1-row heuristic both make a readable picture."""
        return cls(cell_width=int(np.clip(720 // max(steps, 1), 6, 32)), row_height=int(np.clip(520 // max(rows, 1), 2, 36)))


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _plain(text: str) -> str:
    """Pillow's built-in font has no '×'; 'x' reads the same and keeps the picture identical on every machine."""
    return text.replace("×", "x")


def component_colours(layout: Layout) -> dict[str, tuple[int, int, int]]:
    names: list[str] = []
    for g in layout.groups:
        names.extend(c for c in g.components if c not in names)
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def _shade(colour: tuple[int, int, int], amount: float) -> tuple[int, int, int]:
    return tuple(int(round(b + (c - b) * amount)) for c, b in zip(colour, BACKGROUND))


def render_mask(mask: Mask, title: str, subtitle: str = "") -> np.ndarray:
    """The mask as an RGB uint8 image (H, W, 3), columns numbered by workflow step."""
    title, subtitle = _plain(title), _plain(subtitle)
    layout = mask.layout
    rows = sum(g.bits for g in layout.groups)
    geo = Geometry.fit(mask.steps, rows)
    grid_w = mask.steps * geo.cell_width
    grid_h = rows * geo.row_height + geo.group_gap * (len(layout.groups) - 1)
    colours = component_colours(layout)
    legend_font, font, title_font = _font(12), _font(12), _font(15)
    legend_w = 10 + sum(24 + int(legend_font.getlength(n)) for n in colours) + 8 * len(colours)
    width = max(geo.left + grid_w + geo.right, legend_w + geo.left // 3, 420,
                int(title_font.getlength(title)) + 24, int(font.getlength(subtitle)) + 24)
    height = geo.top + grid_h + geo.bottom
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)

    draw.text((12, 8), title, fill=TEXT, font=title_font)
    draw.text((12, 30), subtitle, fill=MUTED, font=font)
    x = 12
    for name, colour in colours.items():  # legend: bright = computed, dim = reused
        draw.rectangle((x, 54, x + 8, 64), fill=colour)
        draw.rectangle((x + 9, 54, x + 17, 64), fill=_shade(colour, REUSED_SHADE))
        draw.text((x + 22, 52), name, fill=TEXT, font=legend_font)
        x += 24 + int(legend_font.getlength(name)) + 8
    draw.text((width - 12, 52), "bright: computed · dim: reused", fill=MUTED, font=legend_font, anchor="ra")

    cells = np.empty((grid_h, grid_w, 3), dtype=np.uint8)
    cells[:] = BACKGROUND
    y = 0
    for gi, (group, bits) in enumerate(mask.groups()):  # bits: (steps, blocks, components)
        group_start = y
        for block in range(group.blocks):
            for c, comp in enumerate(group.components):
                on, off = np.array(colours[comp], np.uint8), np.array(_shade(colours[comp], REUSED_SHADE), np.uint8)
                row = np.where(bits[:, block, c][:, None], on, off)              # (steps, 3)
                row = np.repeat(row, geo.cell_width, axis=0)                     # (steps·cell, 3)
                cells[y:y + geo.row_height] = row[None]
                y += geo.row_height
        label = f"{group.name}" + (f" ({group.blocks})" if group.blocks > 1 else "")
        draw.text((geo.left - 8, geo.top + (group_start + y) / 2), label, fill=TEXT, font=font, anchor="rm")
        y += geo.group_gap if gi < len(layout.groups) - 1 else 0
    if geo.cell_width >= 8:  # a thin gap between steps, where there is room for one
        cells[:, geo.cell_width - 1::geo.cell_width] = (np.asarray(cells[:, geo.cell_width - 1::geo.cell_width], np.float32) * 0.6).astype(np.uint8)
    image.paste(Image.fromarray(cells), (geo.left, geo.top))

    every = max(1, int(np.ceil(28 / geo.cell_width)))
    for s in range(0, mask.steps, every):
        draw.text((geo.left + s * geo.cell_width + geo.cell_width / 2, geo.top + grid_h + 4), str(s),
                  fill=MUTED, font=font, anchor="ma")
    draw.text((geo.left - 8, geo.top + grid_h + 4), "step", fill=MUTED, font=font, anchor="ra")
    return np.asarray(image, dtype=np.uint8)


def describe(choice: ScheduleChoice, mask: Mask, made_for: int) -> tuple[str, str]:
    """Title and subtitle of a preview."""
    if choice.heuristic is not None:
        title = f"{library.HEURISTICS_SOURCE}: {choice.name}"
    else:
        title = f"{choice.source} / {library.point_label(choice.point)}"
    parts = [mask.layout.family, f"{mask.steps} steps"]
    if made_for != mask.steps:
        parts.append(f"mapped from {made_for}")
    parts.append(f"computes {100 * mask.compute_fraction():.1f}% of component calls")
    return title, " · ".join(parts)


def preview_image(choice: ScheduleChoice, steps: int = 0, layout: Optional[Layout] = None) -> np.ndarray:
    """The picture of ``choice`` laid onto ``layout`` (a model's; by default the file's own) and ``steps`` (0: its own)."""
    if choice.heuristic is not None:
        layout = layout or ANY_MODEL_LAYOUT
        steps = steps or HEURISTIC_DEFAULT_STEPS
    else:
        layout = layout or choice.schedule.layout
        steps = steps or choice.schedule.steps
    resolved = choice.resolve(layout, steps)  # a ScheduleError naming the file if it does not fit the model
    title, subtitle = describe(choice, resolved.mask, resolved.schedule_steps)
    return render_mask(resolved.mask, title, subtitle)


def to_image_tensor(rgb: np.ndarray):
    """ComfyUI's IMAGE: float32 [B, H, W, 3] in 0..1."""
    import torch
    return torch.from_numpy(rgb.astype(np.float32) / 255.0)[None]


def save_temp_preview(rgb: np.ndarray, temp_dir: str, prefix: str = "ECAD_schedule") -> dict[str, str]:
    """Write a PNG where ComfyUI serves temporary previews from; the ``ui.images`` entry for it."""
    suffix = "".join(random.choice(string.ascii_lowercase) for _ in range(6))
    filename = f"{prefix}_{suffix}.png"
    os.makedirs(temp_dir, exist_ok=True)
    Image.fromarray(rgb).save(os.path.join(temp_dir, filename), compress_level=1)
    return {"filename": filename, "subfolder": "", "type": "temp"}


class ECADSchedulePreview:
    DESCRIPTION = ("Draw the chosen schedule: one column per step, one row per component of every block; bright = "
                   "computed, dim = reused from the cache. Connect a MODEL to see a built-in heuristic on that model's "
                   "blocks (and to check a file fits it); set steps to see the schedule mapped onto another step count.")
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("The picture as an IMAGE, e.g. for Save Image.",)
    FUNCTION = "preview"
    OUTPUT_NODE = True
    CATEGORY = "ECAD"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "schedule": ("ECAD_SCHEDULE", {"tooltip": "From \"ECAD Load Schedule\"."}),
            },
            "optional": {
                "steps": ("INT", {"default": 0, "min": 0, "max": 1000, "tooltip": (
                    "The workflow's step count. 0: the file's own steps (built-in heuristics: "
                    f"{HEURISTIC_DEFAULT_STEPS}).")}),
                "model": ("MODEL", {"tooltip": (
                    "Optional. Lays a built-in heuristic onto this model's blocks (without it, heuristics are drawn as "
                    "one row: they treat every block alike) and checks a file's schedule fits the model.")}),
            },
        }

    def preview(self, schedule: ScheduleChoice, steps: int = 0, model: Any = None):
        import folder_paths

        layout = None
        if model is not None:
            from .families import adapter_for
            layout = adapter_for(model.model).layout(model.get_model_object("diffusion_model"))
        rgb = preview_image(schedule, steps, layout)
        entry = save_temp_preview(rgb, folder_paths.get_temp_directory())
        return {"ui": {"images": [entry]}, "result": (to_image_tensor(rgb),)}

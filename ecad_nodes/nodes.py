"""The ComfyUI nodes: "ECAD Load Schedule", "ECAD Apply Cache", "ECAD Schedule Preview" (``preview``) and
"ECAD Calibrate" (``calibrate_node``)."""
from __future__ import annotations

import hashlib

from . import library
from .calibrate_node import ECADCalibrate
from .patching import apply_ecad
from .preview import ECADSchedulePreview
from .schedule import ScheduleError

CATEGORY = "ECAD"
SCHEDULE_TYPE = "ECAD_SCHEDULE"


class ECADLoadSchedule:
    DESCRIPTION = ("Pick a caching schedule: a file of learned schedules (its Pareto frontier of quality against speed) "
                   "and one point of it, or a built-in heuristic that fits any supported model.")
    RETURN_TYPES = (SCHEDULE_TYPE,)
    RETURN_NAMES = ("schedule",)
    OUTPUT_TOOLTIPS = ("The chosen schedule, for \"ECAD Apply Cache\".",)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "schedule": (library.list_sources(), {
                "tooltip": "A schedule file from ComfyUI-ECAD/schedules or models/ecad_schedules (the ECAD optimizer "
                           "writes them; official ECAD schedule JSON works too), or the built-in heuristics."}),
            "point": (library.all_point_labels(), {
                "tooltip": "A point of the file's frontier: its name, speedup (measured, or the MAC ratio) and quality. "
                           "Faster points skip more work and lose more quality."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, schedule, point):
        # Naming ``point`` here lets its options depend on the chosen file; it is checked against that file instead.
        # A linked input has no value yet (ComfyUI passes None): it is checked when the node runs.
        if schedule is None or point is None:
            return True
        try:
            library.choose(schedule, point)
        except ScheduleError as e:
            return str(e)
        return True

    @classmethod
    def IS_CHANGED(cls, schedule, point):
        # Re-run when the file changes on disk (e.g. a finished optimizer run rewrote it).
        # The file's stamp (device, inode, mtime, size) is what the library's cache is keyed by; reading the
        # whole file on every queued prompt would cost as much as parsing it.
        if schedule == library.HEURISTICS_SOURCE:
            return point
        return hashlib.sha256(f"{library.stamp(schedule)}\n{point}".encode()).hexdigest()

    def load(self, schedule, point):
        return (library.choose(schedule, point),)


class ECADApplyCache:
    DESCRIPTION = ("Make a diffusion transformer faster by reusing cached attention and MLP outputs at the steps the "
                   "schedule says. Returns a patched copy of the model; the input model is not changed.")
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The model with caching; connect it to the sampler instead of the original.",)
    FUNCTION = "apply"
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "A supported diffusion transformer (FLUX.1, PixArt-α/Σ, …). LoRAs may be "
                                           "applied before or after this node."}),
            "schedule": (SCHEDULE_TYPE, {"tooltip": "From \"ECAD Load Schedule\". A learned schedule must be for this "
                                                    "model's family and block counts; heuristics fit any model."}),
        }}

    def apply(self, model, schedule):
        return (apply_ecad(model, schedule),)


NODE_CLASS_MAPPINGS = {"ECADLoadSchedule": ECADLoadSchedule, "ECADApplyCache": ECADApplyCache,
                       "ECADSchedulePreview": ECADSchedulePreview, "ECADCalibrate": ECADCalibrate}
NODE_DISPLAY_NAME_MAPPINGS = {"ECADLoadSchedule": "ECAD Load Schedule", "ECADApplyCache": "ECAD Apply Cache",
                              "ECADSchedulePreview": "ECAD Schedule Preview", "ECADCalibrate": "ECAD Calibrate"}

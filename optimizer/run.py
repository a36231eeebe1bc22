"""Learn caching schedules for a model: NSGA-II over ECAD masks, headless, through ComfyUI.

    python -m optimizer.run --model flux-dev            # real weights from ComfyUI's models/ folders
    python -m optimizer.run --model tiny-flux           # a small random-weight FLUX on the CPU, minutes
    python -m optimizer.run --model tiny-flux --resume  # continue a killed run where it stopped

Every candidate schedule renders the same calibration prompts with the same seeds; its quality is
the mean metric score over those images and its cost the MACs of one image. Every evaluation is
committed to an SQLite database in the run directory and the search state is checkpointed after
every generation, so a killed run continues with ``--resume``. The frontier is written as a schedule
file that "ECAD Load Schedule" lists at once.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from typing import Optional

from .spec import (RunFailure, SetupError, add_calibration_options, add_model_options, add_objective_options, add_output_options,
                   add_preset_option, add_sampling_options, add_search_options, add_worker_options, preset_lines,
                   spec_from_args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m optimizer.run",
        description=__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n", 2)[2],
        epilog="presets:\n" + preset_lines() + "\n\nSee docs/optimizer.md for the method, the files a run writes "
               "and how to use the result.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_preset_option(p)
    add_model_options(p)
    add_sampling_options(p)
    add_calibration_options(p)
    add_search_options(p)
    add_objective_options(p)
    add_output_options(p)
    add_worker_options(p)
    return p


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if hasattr(sys.stdout, "reconfigure"):  # progress lines appear as they happen, also when piped to a file
        sys.stdout.reconfigure(line_buffering=True)
    args = build_parser().parse_args(argv)
    from . import pipeline
    from .database import DamagedRun
    try:
        pipeline.run(spec_from_args(args, command="python -m optimizer.run " + shlex.join(argv)))
        return 0
    except (SetupError, DamagedRun) as e:  # DamagedRun: "<file>: <problem>"
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RunFailure as e:
        print(f"error: {e}; every finished evaluation is in the database: continue with the same command and --resume",
              file=sys.stderr)
        return 1
    except OSError as e:
        if e.filename is None:
            raise
        print(f"error: {e.filename}: {e.strerror or type(e).__name__}", file=sys.stderr)  # e.g. a folder made read-only
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted; every finished evaluation is in the database. Continue with: python -m optimizer.run "
              f"--model {args.model} --resume" + (f" --run-dir {args.run_dir}" if args.run_dir else ""), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

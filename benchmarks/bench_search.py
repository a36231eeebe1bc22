"""Search benchmark: images needed to reach 90, 95 and 99 % of a reference hypervolume, for plain NSGA-II, the cheap
search and quick calibration, with every frontier re-scored on held-out prompts and seeds.

    python benchmarks/bench_search.py                               # the full configuration (see benchmarks/README.md)
    python benchmarks/bench_search.py --quick                       # a smoke test: toy, 2 seeds, short runs (minutes)
    python benchmarks/bench_search.py --presets tiny-flux --seeds 5 --metrics fidelity,random_critic
    python benchmarks/bench_search.py --presets tiny-pixart --json a.json   # then: --report a.json b.json
    python benchmarks/bench_search.py --presets tiny-flux --jobs 8 --batch-size 64 --work-dir W   # a GPU machine

Methods, each run through the optimizer's own entry points in this process (``optimizer.run``'s parser,
``spec_from_args`` and ``pipeline.run``; ``optimizer.calibrate.calibrate``), in run directories under
``--work-dir`` (a temporary folder unless given; given, an interrupted benchmark continues where it stopped, and one
made with other steps, population or calibration or held-out images is refused):

- **reference**: one long plain NSGA-II run with the paper's operators (``--no-racing --no-surrogate --no-paired
  --no-calibration-seeds --step-move-prob 0``), ``--reference-generations`` offspring generations, seed
  ``--reference-seed`` (not one of the compared seeds), the preset's population and calibration images (or
  ``--population``, ``--calibration-prompts``; ``--steps`` for every method);
- **plain**: the same at the preset's settings with seeds 0 … S−1;
- **cheap**: the optimizer's defaults (paired scoring, racing, surrogate, calibration seeds, step moves);
- **quick**: ``python -m optimizer.calibrate``'s defaults, ``--seed`` 0 … S−1 (other noise for each seed).

Plain and cheap runs first do the preset's generations, then continue (``--resume`` with more generations, as the
optimizer allows) in steps of ``--extend`` until their held-out frontier reaches 99 % of the reference's or they
have done ``--plain-generations`` (plain; the reference's count unless given) generations; a cheap run, which
evaluates only a few candidates per generation, until it has rendered as many images as the reference run (or
``--cheap-generations``): a run's figures up to any generation are those of an uninterrupted run of that length. A
cheap run that steers on few images (``--steer-images``) verifies its frontier on every image at its end, and a
continued run would carry every earlier end's verification, which an uninterrupted run of that length does not have;
so such a run is started anew for each length (the preset's generations, or ``--cheap-lengths``, then ``--extend``
more each time), in its own run directory, and each length gives one entry: its frontier and every image it
rendered, its one verification included.

**Held-out re-scoring.** Every frontier is re-scored on ``--holdout-prompts`` prompts that no run calibrates on
(the last ones of the built-in prompt file; the runs use the first ones), one image each with seeds from
1 000 000 (as ``optimizer.run --holdout`` does). Each preset's model is loaded once here; each distinct schedule
is rendered once on the held-out images and scored with every metric of the benchmark (the images do not depend
on the metric), cost = its MACs (linear layers) as a fraction of no caching on those images. A run's frontier
after generation g is the Pareto frontier, in calibration quality and cost, of its evaluations on every
calibration image up to g (what the run would write, all of its points); its held-out hypervolume is that of
those points' held-out figures (their held-out non-dominated subset), with one reference point per preset and
metric for every method: cost 1 (no caching) and the held-out quality of the worst FORA baseline (FORA-2 … 5).

**Images to reach X %** = ``provenance.search.images`` (every image rendered, references and every fidelity
included) at the end of the first generation whose held-out hypervolume reaches X % of the reference run's final
one; "—" if the run never did. Quick calibration has one frontier: its images reach X % or not.

Targets (issue 12): the cheap search needs ≥ 10× fewer images than plain NSGA-II for the same hypervolume; quick
calibration reaches ≥ 90 % of the reference hypervolume with ≤ 2 % of its images.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import math
import os
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

LEVELS = (0.90, 0.95, 0.99)
CHEAP_TARGET = 10.0               # plain images / cheap images at the same hypervolume
QUICK_HV_TARGET = 0.90            # of the reference hypervolume ...
QUICK_IMAGES_TARGET = 0.02        # ... with at most this share of its images
PLAIN_FLAGS = ("--no-racing", "--no-surrogate", "--no-paired", "--no-calibration-seeds", "--step-move-prob", "0")
METHODS = ("reference", "plain", "cheap", "quick")
REFERENCE_SEED = 1000
DEFAULT_HOLDOUT = {"tiny-pixart": 8}   # held-out prompts per preset (others: 16); PixArt's renders are the slowest


# ---------------------------------------------------------------- the measures (pure; tested)

def images_to_reach(curve: Sequence[tuple[int, float]], level: float) -> Optional[int]:
    """Images at the first (images, hypervolume) entry whose hypervolume reaches ``level``; None if none does."""
    for images, hv in curve:
        if hv >= level - 1e-12 * max(1.0, abs(level)):
            return images
    return None


def next_length(current: int, lengths: Sequence[int], extend: int) -> int:
    """The length a run continues to after ``current`` generations: the next of ``lengths``, then ``extend`` more."""
    later = [n for n in lengths if n > current]
    return min(later) if later else current + extend


def median_reached(values: Sequence[Optional[int]]) -> Optional[float]:
    """The median over seeds with "not reached" (None) as infinitely many images: None when half or more never
    reached it."""
    ordered = sorted(math.inf if v is None else v for v in values)
    if not ordered:
        return None
    m = statistics.median(ordered)
    return None if math.isinf(m) else m


def frontier_keys_by_generation(rows: Sequence[tuple[str, float, float, int]],
                                generations: Sequence[int]) -> dict[int, list[str]]:
    """``rows``: (key, calibration quality, cost, generation) of a run's evaluations on every calibration image;
    for each of ``generations``, the keys on the Pareto frontier of the rows of that generation and before."""
    from optimizer.report import pareto_front
    fronts = {}
    for g in generations:
        fronts[g] = pareto_front([(k, (q, c)) for k, q, c, gen in rows if 0 <= gen <= g])
    return fronts


# ---------------------------------------------------------------- what a run directory holds

def run_rows(run_dir: Path) -> list[tuple[str, Any, float, float, int]]:
    """(genome hash, genome, quality, cost, generation) of every evaluation on all calibration images."""
    from optimizer.genome import unpack
    db = sqlite3.connect(f"file:{run_dir / 'run.sqlite'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT genome_hash, genome, n_var, quality, cost, generation FROM evaluations "
                          "WHERE full = 1 ORDER BY seq").fetchall()
    finally:
        db.close()
    return [(h, unpack(blob, n), q, c, g) for h, blob, n, q, c, g in rows]


def run_generations(run_dir: Path) -> list[dict[str, Any]]:
    """``generations.jsonl``: one entry per generation (generation, images rendered so far, hypervolume, ...)."""
    path = run_dir / "generations.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ---------------------------------------------------------------- held-out scoring

@contextlib.contextmanager
def shared_work_dir(work: Path):
    """One benchmark process at a time merges into the work directory's shared files (results, held-out scores)."""
    with open(work / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class HeldOut:
    """A preset's model, loaded once, and every schedule's held-out cost and quality under every metric, each
    schedule rendered once (cached by genome hash, also in a file of the work directory)."""

    def __init__(self, preset: str, metrics: Sequence[str], prompts: int, threads: int, work: Path, say,
                 model_options: Sequence[str] = ()):
        from optimizer.calibration import HOLDOUT_SEED_BASE, calibration_items
        from optimizer.genome import GenomeCodec
        from optimizer.metrics import make_metric
        from optimizer.pipeline import baseline_genomes, set_threads
        from optimizer.prompts import load_prompts
        from optimizer.run import build_parser
        from optimizer.spec import model_kind, spec_from_args

        self.say, self.work = say, work
        folder = work / f"{preset}-heldout"
        spec = spec_from_args(build_parser().parse_args(
            ["--model", preset, "--run-dir", str(folder), "--out", str(folder / "unused.json"), "--threads", str(threads),
             "--no-progress", *model_options]))
        everything = load_prompts()
        held = everything[len(everything) - prompts:]
        used = set(everything[:max(spec.preset.prompts, 8)])          # the runs' and quick calibration's prompts
        if used & set(held):
            raise SystemExit(f"{preset}: {prompts} held-out prompts would overlap the calibration prompts")
        self.items = calibration_items(held, 1, first_seed=HOLDOUT_SEED_BASE)
        self.metrics = {name: make_metric(name) for name in metrics}
        set_threads(spec)
        self.backend = model_kind(spec.preset).open(spec)
        self.steps = spec.steps
        start = time.perf_counter()
        rendered = self.backend.render(None, self.items)
        self.references = rendered.images
        self.image_cost = self.backend.image_cost(attention_matmuls=False)
        self.full_macs = self.image_cost.full_macs(self.steps)
        self.codec = GenomeCodec(self.backend.layout, self.steps)
        self.no_caching = {name: float(sum(self._scores(name, self.references))) / len(self.items) for name in metrics}
        self.cache_path = folder / "cache.json"
        self.cache: dict[str, dict[str, Any]] = {}
        if self.cache_path.is_file():
            stored = json.loads(self.cache_path.read_text())
            if stored.get("items") == [[it.prompt, it.seed] for it in self.items]:
                self.cache = {k: v for k, v in stored["points"].items() if set(metrics) <= set(v["quality"])}
        self.rendered = 0
        self.seconds = time.perf_counter() - start
        self.baselines = baseline_genomes(spec, self.codec, self.backend.layout)
        self.quality_ref = {m: min(self.point(g)["quality"][m] for g in self.baselines.values()) for m in metrics}
        self.save()
        say(f"{preset}: held-out set of {len(self.items)} images (prompts {len(everything) - prompts + 1}…"
            f"{len(everything)} of the built-in file, seeds {HOLDOUT_SEED_BASE}…); hypervolume reference: cost 1, "
            + ", ".join(f"{m} {q:.4f} (worst FORA)" for m, q in self.quality_ref.items()))

    def _scores(self, metric: str, images) -> list[float]:
        m = self.metrics[metric]
        return list(m.score(images, [it.prompt for it in self.items],
                            references=self.references if m.needs_reference else None))

    def point(self, genome) -> dict[str, Any]:
        """{"cost": fraction of no caching, "quality": {metric: mean held-out score}} of a genome."""
        from optimizer.genome import genome_hash
        key = genome_hash(genome)
        found = self.cache.get(key)
        if found is None:
            start = time.perf_counter()
            mask = self.codec.mask(genome)
            images = self.backend.render(mask, self.items).images
            found = self.cache[key] = {
                "cost": self.image_cost.macs(mask) / self.full_macs,
                "quality": {name: float(sum(self._scores(name, images))) / len(images) for name in self.metrics}}
            self.rendered += len(images)
            self.seconds += time.perf_counter() - start
        return found

    def hypervolume(self, genomes: Sequence, metric: str) -> float:
        """Of the genomes' held-out points (a calibration frontier need not be one on held-out data: the
        hypervolume counts only what its non-dominated points dominate)."""
        from optimizer.report import hypervolume
        points = [self.point(g) for g in genomes]
        return hypervolume([(p["quality"][metric], p["cost"]) for p in points], self.quality_ref[metric])

    def save(self) -> None:
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        with shared_work_dir(self.work):
            if self.cache_path.is_file():  # another benchmark process may share the work directory
                stored = json.loads(self.cache_path.read_text())
                if stored.get("items") == [[it.prompt, it.seed] for it in self.items]:
                    for k, v in stored["points"].items():
                        if k not in self.cache and set(self.metrics) <= set(v["quality"]):
                            self.cache[k] = v
            tmp = self.cache_path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"items": [[it.prompt, it.seed] for it in self.items], "points": self.cache}))
            tmp.replace(self.cache_path)

    def close(self) -> None:
        self.save()
        self.backend.close()


# ---------------------------------------------------------------- runs

@dataclass
class Run:
    """One run's held-out hypervolume after each generation (a quick calibration: one entry)."""

    preset: str
    metric: str
    method: str
    seed: int
    curve: list[tuple[int, float]] = field(default_factory=list)      # (images so far, held-out hypervolume)
    generations: int = 0                                              # offspring generations done
    seconds: float = 0.0                                              # wall time of the run(s), held-out scoring not
    preset_generations: Optional[int] = None                          # the curve's entry at the preset's generations

    @classmethod
    def stored(cls, fields: dict[str, Any]) -> "Run":
        """A run as ``asdict`` wrote it to JSON (its curve's entries came back as lists)."""
        return cls(**{**fields, "curve": [tuple(e) for e in fields["curve"]]})

    @property
    def images(self) -> int:
        return self.curve[-1][0] if self.curve else 0

    @property
    def final(self) -> float:
        return self.curve[-1][1] if self.curve else 0.0


# Options that change what a stored run is: a work directory keeps runs made with one setting of them.
WORK_DIR_OPTIONS = ("steps", "population", "calibration_prompts", "calibration_seeds", "holdout_prompts", "batch_size")


def check_work_dir(work: Path, args) -> None:
    """Record ``WORK_DIR_OPTIONS`` in a new work directory; refuse (SystemExit naming the file) one whose runs were
    made with other values, whose finished runs would otherwise be reported as if made with these."""
    path = work / "options.json"
    current = {name: getattr(args, name) for name in WORK_DIR_OPTIONS}
    if not path.is_file():
        path.write_text(json.dumps(current, indent=1))
        return
    stored = json.loads(path.read_text())
    def shown(value):
        return "the default" if value is None else value
    differ = [f"--{name.replace('_', '-')}: the runs there have {shown(stored.get(name))}, now {shown(current[name])}"
              for name in WORK_DIR_OPTIONS if stored.get(name) != current[name]]
    if differ:
        raise SystemExit(f"{path}: the work directory holds runs made with other options (use another --work-dir):\n  "
                         + "\n  ".join(differ))


class Bench:
    def __init__(self, args, work: Path, say):
        check_work_dir(work, args)
        self.args, self.work, self.say = args, work, say
        self.log = open(work / "runs.log", "a", encoding="utf-8")
        self.results_path = work / "results.json"
        self.done: dict[str, dict] = json.loads(self.results_path.read_text()) if self.results_path.is_file() else {}

    def _pipeline_say(self, text: str) -> None:
        self.log.write(text + "\n")
        self.log.flush()

    # ------------------------------------------------------------ one optimizer run, through its own entry points

    def _argv(self, preset: str, metric: str, seed: int, method: str, generations: int, run_dir: Path) -> list[str]:
        return ["--model", preset, "--metric", metric, "--seed", str(seed), "--generations", str(generations),
                "--run-dir", str(run_dir), "--out", str(run_dir / "frontier.json"), "--threads", str(self.args.threads),
                "--no-progress", *search_options(self.args, method)]

    def steers(self, preset: str, metric: str, method: str) -> bool:
        """Whether a search of ``method`` steers on few images, and so verifies its frontier at its end."""
        from optimizer.run import build_parser
        from optimizer.spec import spec_from_args
        spec = spec_from_args(build_parser().parse_args(self._argv(preset, metric, 0, method, 1, self.work / "unused")))
        images = len(spec.prompts) * spec.images_per_prompt
        return spec.racing and spec.race_images < images and spec.steer_images < images

    def _search(self, preset: str, metric: str, seed: int, method: str, generations: int, run_dir: Path) -> float:
        from optimizer import pipeline
        from optimizer.run import build_parser
        from optimizer.spec import spec_from_args
        argv = self._argv(preset, metric, seed, method, generations, run_dir)
        if (run_dir / "run.sqlite").is_file():
            argv.append("--resume")
        self._pipeline_say(f"\n$ python -m optimizer.run {shlex.join(argv)}")
        start = time.perf_counter()
        pipeline.run(spec_from_args(build_parser().parse_args(argv), command="python -m optimizer.run " + shlex.join(argv)),
                     say=self._pipeline_say)
        return time.perf_counter() - start

    def _calibrate(self, preset: str, metric: str, seed: int, run_dir: Path):
        from optimizer.calibrate import build_parser, calibrate, quick_defaults
        from optimizer.spec import spec_from_args
        argv = ["--model", preset, "--metric", metric, "--seed", str(seed), "--run-dir", str(run_dir),
                "--out", str(run_dir / "frontier.json"), "--threads", str(self.args.threads), "--no-progress",
                *model_options(self.args)]
        self._pipeline_say(f"\n$ python -m optimizer.calibrate {shlex.join(argv)}")
        args = quick_defaults(build_parser().parse_args(argv))
        spec = spec_from_args(args, command="python -m optimizer.calibrate " + shlex.join(argv))
        return calibrate(spec, args.budgets, say=self._pipeline_say)

    # ------------------------------------------------------------ curves

    def _curve(self, run_dir: Path, held: HeldOut, metric: str) -> tuple[list[tuple[int, float]], int]:
        rows = run_rows(run_dir)
        generations = [g for g in run_generations(run_dir) if g["complete"]]
        genomes = {h: genome for h, genome, *_ in rows}
        fronts = frontier_keys_by_generation([(h, q, c, g) for h, _, q, c, g in rows],
                                             [g["generation"] for g in generations])
        curve = [(int(g["images"]), held.hypervolume([genomes[k] for k in fronts[g["generation"]]], metric))
                 for g in generations]
        held.save()
        return curve, max(0, len(generations) - 1)

    def search_run(self, preset: str, metric: str, method: str, seed: int, held: HeldOut,
                   stop_at: Optional[float], lengths: Sequence[int], cap: int, image_cap: Optional[int] = None) -> Run:
        """A search of ``lengths[0]`` generations, continued to its other ``lengths`` and then by ``--extend`` until
        its held-out hypervolume reaches
        ``stop_at``, it has ``cap`` generations or it has rendered ``image_cap`` images. A stored run that
        stopped short of these (an earlier, lower cap) is continued. A search that steers runs each length anew
        (the module's docstring says why): one run directory and one curve entry per length."""
        label = self.label(method)
        key = f"{preset}/{metric}/{label}/{seed}"
        base = self.work / preset / metric / f"{label.replace(' ', '_')}-{seed}"
        anew = self.steers(preset, metric, method)
        run_dir_of = (lambda generations: base / f"generations-{generations}") if anew else (lambda generations: base)
        run = Run(preset, metric, method, seed)
        first = min(lengths)
        generations = min(first, cap)
        if key in self.done:
            run = Run.stored(self.done[key])
            if self._finished(run, stop_at, cap, image_cap) or not (run_dir_of(run.generations) / "run.sqlite").is_file():
                return run
            generations = min(cap, next_length(run.generations, lengths, self.args.extend))
        while True:
            run_dir = run_dir_of(generations)
            run.seconds += self._search(preset, metric, seed, method, generations, run_dir)
            curve, done = self._curve(run_dir, held, metric)
            if anew:
                run.curve, run.generations = run.curve + curve[-1:], done
            else:
                run.curve, run.generations = curve, done
            self.say(f"  {key}: {run.generations} generations, {run.images} images, held-out HV {run.final:.4g}"
                     + (f" ({100 * run.final / stop_at * LEVELS[-1]:.1f} % of the reference)" if stop_at else "")
                     + f" [{run.seconds:.0f} s; held-out renders so far {held.rendered}]")
            if self._finished(run, stop_at, cap, image_cap) or run.generations < generations:  # <: space exhausted
                break
            generations = min(cap, next_length(generations, lengths, self.args.extend))
        if first <= run.generations and not anew:
            run.preset_generations = first
        self._store(key, run)
        return run

    @staticmethod
    def _finished(run: Run, stop_at: Optional[float], cap: int, image_cap: Optional[int]) -> bool:
        reached = stop_at is not None and images_to_reach(run.curve, stop_at) is not None
        return reached or run.generations >= cap or (image_cap is not None and run.images >= image_cap)

    def quick_run(self, preset: str, metric: str, seed: int, held: HeldOut) -> Run:
        from optimizer.report import pareto_front
        key = f"{preset}/{metric}/quick/{seed}"
        if key in self.done:
            return Run.stored(self.done[key])
        run_dir = self.work / preset / metric / f"quick-{seed}"
        if run_dir.exists():
            shutil.rmtree(run_dir)
        start = time.perf_counter()
        result = self._calibrate(preset, metric, seed, run_dir)
        seconds = time.perf_counter() - start
        verified = result.verified
        front = pareto_front([(k, (v.evaluation.quality, v.evaluation.cost)) for k, v in enumerate(verified)])
        genomes = [held.codec.genome(verified[k].mask.with_first_step_computed()) for k in front]
        run = Run(preset, metric, "quick", seed, [(result.images, held.hypervolume(genomes, metric))], 0, seconds)
        held.save()
        self.say(f"  {key}: {result.images} images, held-out HV {run.final:.4g} [{seconds:.0f} s]")
        self._store(key, run)
        return run

    def label(self, method: str) -> str:
        """The method's name in the work directory: the cheap search's with its extra options (variants)."""
        return f"cheap {self.args.cheap_options}".strip() if method == "cheap" else method

    def _store(self, key: str, run: Run) -> None:
        with shared_work_dir(self.work):
            self.reload()  # another benchmark process may share the work directory
            self.done[key] = asdict(run)
            tmp = self.results_path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self.done, indent=1))
            tmp.replace(self.results_path)

    def reload(self) -> None:
        """Add what other benchmark processes stored in the work directory."""
        if self.results_path.is_file():
            self.done.update(json.loads(self.results_path.read_text()))

    # ------------------------------------------------------------ one preset

    def preset(self, preset: str) -> dict[str, Any]:
        from optimizer.presets import preset as get_preset
        a = self.args
        p = get_preset(preset)
        holdout = a.holdout_prompts or DEFAULT_HOLDOUT.get(preset, 16)
        scored = list(dict.fromkeys(["fidelity", "random_critic", *a.metrics]))  # the cache serves every benchmark
        held = HeldOut(preset, scored, holdout, a.threads, self.work, self.say, model_options(a))
        per_candidate = (a.calibration_prompts * a.calibration_seeds if a.calibration_prompts
                         else p.prompts * p.images_per_prompt)
        out: dict[str, Any] = {"preset": preset, "population": a.population or p.population,
                               "preset_generations": p.generations,
                               "images_per_candidate": per_candidate, "holdout_images": len(held.items),
                               "cheap_options": a.cheap_options,
                               "metrics": {}}
        try:
            for metric in a.metrics:
                self.say(f"{preset} · {metric}: reference (plain NSGA-II, {a.reference_generations} generations, "
                         f"seed {a.reference_seed})")
                reference = self.search_run(preset, metric, "reference", a.reference_seed, held, None,
                                            [a.reference_generations], a.reference_generations)
                target = reference.final
                runs = [reference]
                for seed in range(a.first_seed, a.first_seed + a.seeds):
                    if "plain" in a.methods:
                        runs.append(self.search_run(preset, metric, "plain", seed, held, LEVELS[-1] * target,
                                                    [p.generations], a.plain_generations))
                    if "cheap" in a.methods:
                        runs.append(self.search_run(preset, metric, "cheap", seed, held, LEVELS[-1] * target,
                                                    a.cheap_lengths or [p.generations], a.cheap_generations,
                                                    image_cap=reference.images))
                    if "quick" in a.methods:
                        runs.append(self.quick_run(preset, metric, seed, held))
                out["metrics"][metric] = {
                    "reference_hv": target, "quality_ref": held.quality_ref[metric],
                    "no_caching_quality": held.no_caching[metric],
                    "runs": [asdict(r) for r in runs]}
        finally:
            out["holdout_renders"], out["holdout_seconds"] = held.rendered, held.seconds
            held.close()
        return out


# ---------------------------------------------------------------- tables

def _n(value: Optional[float]) -> str:
    return "—" if value is None else f"{value:,.0f}".replace(",", " ")


def _spread(values: Sequence[Optional[int]]) -> str:
    """median (min–max) and how many reached, e.g. "1 040 (800–1 232) 5/5"; "—" (k/n) when the median is not."""
    reached = [v for v in values if v is not None]
    m = median_reached(values)
    count = f"{len(reached)}/{len(values)}"
    if m is None:
        return f"— ({count})" if not reached else f"— ({count}; {_n(min(reached))}–{_n(max(reached))})"
    return (f"{_n(m)} ({_n(min(reached))}–{_n(max(reached))}) {count}" if len(reached) > 1 else f"{_n(m)} {count}")


def _percent(values: Sequence[float]) -> str:
    if not values:
        return "—"
    return f"{statistics.median(values):.1f} % ({min(values):.1f}–{max(values):.1f})"


def ratio_text(plain: Sequence[Optional[int]], cheap: Sequence[Optional[int]]) -> tuple[str, Optional[float]]:
    """Median plain images over median cheap images at one level (with the per-seed range), and the ratio."""
    if not plain or not cheap:
        return "not measured", None
    mp, mc = median_reached(plain), median_reached(cheap)
    per_seed = [p / c for p, c in zip(plain, cheap) if p is not None and c is not None]
    spread = f" (per seed {min(per_seed):.1f}–{max(per_seed):.1f}×)" if per_seed else ""
    if mc is None:
        return "cheap search does not reach it", None
    if mp is None:
        bound = max((p for p in plain if p is not None), default=None)
        return f"plain NSGA-II does not reach it (> {_n(bound) if bound else 'all its'} images)", None
    return f"{mp / mc:.1f}×{spread}", mp / mc


def report(results: Sequence[dict[str, Any]], args_text: str) -> str:
    lines = []
    summary = [["preset", "metric", "cheap vs plain at 95 %", "at 99 %", "quick: HV of reference", "quick: images",
                "cheap ≥ 10×", "quick ≥ 90 % with ≤ 2 %"]]
    for r in results:
        for metric, m in r["metrics"].items():
            runs = [Run.stored(x) for x in m["runs"]]
            ref = next(x for x in runs if x.method == "reference")
            levels = {lv: lv * m["reference_hv"] for lv in LEVELS}
            by = {method: [x for x in runs if x.method == method] for method in METHODS}
            lines.append(f"\n### {r['preset']} · {metric}\n")
            lines.append(f"Population {r['population']}, {r['images_per_candidate']} calibration images per candidate; "
                         f"held-out: {r['holdout_images']} images. Reference: plain NSGA-II, {ref.generations} generations "
                         f"(seed {ref.seed}), {_n(ref.images)} images, held-out HV {m['reference_hv']:.4g} (reference point: "
                         f"cost 1, {metric} {m['quality_ref']:.4g} = the worst FORA baseline; no caching scores "
                         f"{m['no_caching_quality']:.4g}).\n")
            header = ["method", *(f"images to {100 * lv:.0f} %" for lv in LEVELS), "held-out HV at the end",
                      "images at the end", "generations"]
            rows = [header]
            for method in METHODS:
                group = by[method]
                if not group:
                    continue
                reach = {lv: [images_to_reach(x.curve, level) for x in group] for lv, level in levels.items()}
                finals = [100 * x.final / m["reference_hv"] for x in group]
                cheap = "cheap search" + (f" ({r.get('cheap_options')})" if r.get("cheap_options") else "")
                label = {"reference": "reference (plain, long)", "plain": "plain NSGA-II", "cheap": cheap,
                         "quick": "quick calibration"}[method]
                gens = sorted({x.generations for x in group})
                rows.append([label, *(_spread(reach[lv]) for lv in LEVELS), _percent(finals),
                             _spread([x.images for x in group]).rsplit(" ", 1)[0],
                             "–" if method == "quick" else (f"{gens[0]}" if len(gens) == 1 else f"{gens[0]}–{gens[-1]}")])
                if method == "plain":
                    at = [x.curve[x.preset_generations] for x in group
                          if x.preset_generations is not None and x.preset_generations < len(x.curve)]
                    rows.append([f"plain NSGA-II after {r['preset_generations']} generations (the preset's count)", "", "", "",
                                 _percent([100 * hv / m["reference_hv"] for _, hv in at]),
                                 _spread([images for images, _ in at]).rsplit(" ", 1)[0], str(r["preset_generations"])])
            lines.append(_markdown(rows))
            ratios = {lv: ratio_text([images_to_reach(x.curve, levels[lv]) for x in by["plain"]],
                                     [images_to_reach(x.curve, levels[lv]) for x in by["cheap"]]) for lv in LEVELS}
            lines.append("")
            lines.append("Plain / cheap images at the same held-out hypervolume: "
                         + "; ".join(f"{100 * lv:.0f} %: {ratios[lv][0]}" for lv in LEVELS) + ".")
            quick = by["quick"]
            q_hv = [x.final / m["reference_hv"] for x in quick]
            q_share = [x.images / ref.images for x in quick]
            plain_for_quick = [median_reached([images_to_reach(p.curve, x.final) for p in by["plain"]]) for x in quick]
            met_quick = sum(h >= QUICK_HV_TARGET and s <= QUICK_IMAGES_TARGET for h, s in zip(q_hv, q_share))
            if quick:
                lines.append(f"Quick calibration: {_percent([100 * h for h in q_hv])} of the reference hypervolume with "
                             f"{_percent([100 * s for s in q_share])} of its images ({met_quick}/{len(quick)} seeds meet "
                             f"both targets); plain NSGA-II needs {_spread(plain_for_quick).rsplit(' ', 1)[0]} images "
                             "(median over its seeds) for each seed's quick-calibration hypervolume.")
            cheap_verdict = []
            for lv in (0.95, 0.99):
                ratio = ratios[lv][1]
                cheap_verdict.append("—" if ratio is None else f"{'yes' if ratio >= CHEAP_TARGET else 'no'} ({ratio:.1f}×)")
            summary.append([r["preset"], metric, ratios[0.95][0], ratios[0.99][0], _percent([100 * h for h in q_hv]),
                            _percent([100 * s for s in q_share]) + " of the reference's",
                            " / ".join(cheap_verdict), f"{met_quick}/{len(quick)} seeds"])
        lines.append(f"\nHeld-out renders for {r['preset']}: {_n(r['holdout_renders'])} images "
                     f"({r['holdout_seconds']:.0f} s); the runs' own time (held-out scoring not counted; summed over runs that "
                     "ran side by side): "
                     + ", ".join(f"{metric} {sum(run['seconds'] for run in m['runs']) / 60:.1f} min"
                                 for metric, m in r["metrics"].items()) + ".")
    return (f"## Search benchmark\n\n{args_text}\n\n### Summary\n\n{_markdown(summary)}\n" + "\n".join(lines))


def _markdown(rows: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows[1:]]
    return "\n".join(out)


# ---------------------------------------------------------------- command line

def calibration_options(args) -> list[str]:
    """The searches' calibration images: the preset's, or --calibration-prompts prompts with --calibration-seeds
    images each."""
    n = args.calibration_prompts
    return ["--num-prompts", str(n), "--images-per-prompt", str(args.calibration_seeds)] if n else []


def model_options(args) -> list[str]:
    """Sampling steps other than the preset's and the images sampled together, for every run and the held-out renders
    alike."""
    return ((["--steps", str(args.steps)] if args.steps else [])
            + (["--batch-size", str(args.batch_size)] if args.batch_size else []))


def search_options(args, method: str) -> list[str]:
    """What a search of ``method`` runs with beyond its seed, generations and files."""
    return [*calibration_options(args), *model_options(args),
            *(["--population", str(args.population)] if args.population else []),
            *(PLAIN_FLAGS if method in ("reference", "plain") else shlex.split(args.cheap_options))]


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[2:]))
    p.add_argument("--presets", default="toy,tiny-flux,tiny-pixart", help="comma-separated (default toy,tiny-flux,tiny-pixart)")
    p.add_argument("--metrics", default="fidelity,random_critic",
                   help="comma-separated; each is searched on and re-scored with (default fidelity,random_critic)")
    p.add_argument("--seeds", type=int, default=5, help="seeds 0 … N−1 of plain, cheap and quick (default 5)")
    p.add_argument("--first-seed", type=int, default=0, metavar="K",
                   help="seeds K … K+N−1 instead, e.g. to split the seeds over processes, each in a copy of the "
                        "work directory with the reference run done (default 0)")
    p.add_argument("--reference-generations", type=int, default=16,
                   help="offspring generations of the reference run (default 16)")
    p.add_argument("--plain-generations", type=int, default=None, metavar="N",
                   help="the most generations a plain run does (default: --reference-generations); more, where "
                        "plain runs end short of a level, turns \"does not reach it\" into a measured ratio")
    p.add_argument("--reference-seed", type=int, default=REFERENCE_SEED,
                   help=f"the reference run's seed (default {REFERENCE_SEED})")
    p.add_argument("--cheap-generations", type=int, default=None,
                   help="the most generations a cheap run does (default: 8 × --reference-generations); it also "
                        "stops once it has rendered as many images as the reference run")
    p.add_argument("--extend", type=int, default=4, help="generations added each time a run continues (default 4)")
    p.add_argument("--cheap-lengths", default=None, metavar="N,N,…",
                   help="the cheap search's first lengths, each a run of its own where it steers (default: the "
                        "preset's generations), then --extend more each time; e.g. 0,1,2,3,4 measures its first "
                        "generations on a finer grid (0: the initial generation only, then its verification)")
    p.add_argument("--holdout-prompts", type=int, default=None,
                   help="held-out prompts, one image each (default 16; tiny-pixart 8)")
    p.add_argument("--calibration-prompts", type=int, default=None, metavar="N",
                   help="the searches (reference, plain, cheap) calibrate on N prompts, --calibration-seeds images "
                        "each, instead of the preset's images (nearer the paper's 1000 images per candidate); quick "
                        "calibration keeps its own 8")
    p.add_argument("--calibration-seeds", type=int, default=1, metavar="K",
                   help="with --calibration-prompts: K images (seeds) of each prompt (default 1; the built-in "
                        "prompt file has 100 prompts, held-out ones included)")
    p.add_argument("--steps", type=int, metavar="N",
                   help="sampling steps of every run and of the held-out renders (default: the preset's); more steps, "
                        "a longer genome: a harder search")
    p.add_argument("--batch-size", type=int, metavar="N",
                   help="images sampled together in every run and the held-out renders (default: the optimizer's); "
                        "a tiny model's batches of 16 take a third less time per image on a CPU core than pairs, and "
                        "on a GPU a whole evaluation can be one batch; the images counted do not change")
    p.add_argument("--population", type=int, metavar="N",
                   help="population of the searches (reference, plain, cheap; default: the preset's)")
    p.add_argument("--methods", default="plain,cheap,quick",
                   help="compared with the reference: any of plain, cheap, quick (default all three)")
    p.add_argument("--cheap-options", default="", metavar="OPTIONS",
                   help="extra optimizer.run options of the cheap search, e.g. \"--race-margin 1\" (a variant of "
                        "its defaults; its runs are kept apart in the work directory)")
    p.add_argument("--threads", type=int, default=1, help="PyTorch CPU threads (default 1)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="benchmark processes: after the references, each seed's run of each method in a process of "
                        "its own, N at a time, in the one work directory (default 1: everything in this process)")
    p.add_argument("--comfyui", help="ComfyUI checkout (default: $COMFYUI_PATH)")
    p.add_argument("--work-dir", help="run directories and partial results; a benchmark interrupted there continues "
                   "when started again with the same options (default: a temporary folder, removed at the end)")
    p.add_argument("--json", help="write every run's curve and the settings to this file")
    p.add_argument("--report", nargs="+", metavar="JSON", help="only print the tables of earlier --json files")
    p.add_argument("--quick", action="store_true",
                   help="a smoke test in minutes: toy only (unless --presets is given), 2 seeds, a reference of 8 "
                        "generations, 8 held-out prompts")
    args = p.parse_args(argv)
    given = {a.split("=")[0] for a in (argv or sys.argv[1:]) if a.startswith("--")}
    if args.quick:
        if "--presets" not in given:
            args.presets = "toy"
        if "--seeds" not in given:
            args.seeds = 2
        if "--reference-generations" not in given:
            args.reference_generations = 8
        if "--holdout-prompts" not in given:
            args.holdout_prompts = 8
    args.presets = [s for s in args.presets.split(",") if s]
    args.methods = [s for s in args.methods.split(",") if s]
    if set(args.methods) - {"plain", "cheap", "quick"}:
        p.error(f"--methods: unknown {', '.join(sorted(set(args.methods) - {'plain', 'cheap', 'quick'}))}")
    args.metrics = [s for s in args.metrics.split(",") if s]
    if args.calibration_seeds < 1 or (args.calibration_seeds != 1 and not args.calibration_prompts):
        p.error("--calibration-seeds: a positive number of images per prompt, with --calibration-prompts")
    if args.cheap_generations is None:
        args.cheap_generations = 8 * args.reference_generations
    if args.plain_generations is None:
        args.plain_generations = args.reference_generations
    try:
        args.cheap_lengths = sorted({int(n) for n in args.cheap_lengths.split(",")}) if args.cheap_lengths else None
    except ValueError:
        p.error(f"--cheap-lengths: comma-separated generation counts, not {args.cheap_lengths!r}")
    if args.cheap_lengths and args.cheap_lengths[0] < 0:
        p.error("--cheap-lengths: generation counts of 0 (the initial generation only) or more")
    return args


def command_options(args) -> list[str]:
    """The options that make these runs, as a command line (``--quick`` spelled out)."""
    def given(flag: str, value: Any, shown: Optional[str] = None) -> list[str]:
        """``flag`` and ``shown`` (else ``value``) where ``value`` is set."""
        return [flag, shown if shown is not None else str(value)] if value else []
    return (["--presets", ",".join(args.presets), "--metrics", ",".join(args.metrics), "--seeds", str(args.seeds),
             "--reference-generations", str(args.reference_generations),
             "--cheap-generations", str(args.cheap_generations), "--extend", str(args.extend),
             "--threads", str(args.threads)]
            + given("--plain-generations", args.plain_generations != args.reference_generations,
                    str(args.plain_generations))
            + given("--cheap-lengths", args.cheap_lengths, ",".join(map(str, args.cheap_lengths or ())))
            + given("--first-seed", args.first_seed)
            + given("--reference-seed", args.reference_seed != REFERENCE_SEED, str(args.reference_seed))
            + given("--holdout-prompts", args.holdout_prompts)
            + given("--calibration-prompts", args.calibration_prompts)
            + given("--calibration-seeds", args.calibration_seeds != 1, str(args.calibration_seeds))
            + given("--steps", args.steps) + given("--batch-size", args.batch_size)
            + given("--population", args.population)
            + given("--methods", args.methods != ["plain", "cheap", "quick"], ",".join(args.methods))
            + given("--cheap-options", args.cheap_options))


def settings_text(args, seconds: Optional[float] = None) -> str:
    command = "python benchmarks/bench_search.py " + shlex.join(command_options(args))
    return f"`{command}`" + (f" ({seconds / 60:.0f} min)" if seconds else "")


def run_jobs(args, work: Path, say) -> None:
    """``--jobs``: the references here first (every run is measured against them), then each seed's run of each
    method in a benchmark process of its own, ``args.jobs`` at a time, all in ``work`` (the longest, plain, first)."""
    references = Bench(argparse.Namespace(**{**vars(args), "methods": []}), work, say)
    for preset in args.presets:
        references.preset(preset)
    jobs = [(preset, method, seed) for method in ("plain", "cheap", "quick") if method in args.methods
            for preset in args.presets for seed in range(args.first_seed, args.first_seed + args.seeds)]

    def run(job: tuple[str, str, int]) -> Optional[str]:
        preset, method, seed = job
        one = argparse.Namespace(**{**vars(args), "presets": [preset], "methods": [method], "first_seed": seed,
                                    "seeds": 1})
        log = work / f"job-{preset}-{method.replace(' ', '_')}-{seed}.log"
        command = [sys.executable, str(Path(__file__).resolve()), *command_options(one), "--work-dir", str(work),
                   *(["--comfyui", args.comfyui] if args.comfyui else [])]
        start = time.perf_counter()
        with open(log, "w", encoding="utf-8") as out:
            done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT)
        say(f"  job {preset} {method} seed {seed}: {'done' if done.returncode == 0 else 'FAILED'} in "
            f"{time.perf_counter() - start:.0f} s ({log})")
        return None if done.returncode == 0 else f"{log}:\n{log.read_text()[-2000:]}"

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        failed = [why for why in pool.map(run, jobs) if why]
    if failed:
        raise SystemExit(f"{len(failed)} of {len(jobs)} benchmark jobs failed:\n" + "\n".join(failed))


def main(argv=None) -> int:
    args = parse(argv)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    if args.report:
        loaded = [json.loads(Path(f).read_text()) for f in args.report]
        print(report([r for doc in loaded for r in doc["results"]],
                     "; ".join(doc["settings"] for doc in loaded)))
        return 0
    from optimizer.presets import all_presets
    unknown = [p for p in args.presets if p not in all_presets()]
    if unknown:
        print(f"unknown preset(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    if any(not all_presets()[p].is_tiny for p in args.presets):
        print("real-weight presets are not benchmarked here (hours per run); use toy and tiny presets", file=sys.stderr)
        return 2
    if args.comfyui:
        os.environ["COMFYUI_PATH"] = args.comfyui
    with contextlib.ExitStack() as stack:
        if args.work_dir:
            work = Path(args.work_dir)
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_search-")))
        say = lambda text: print(text, flush=True)  # noqa: E731
        say(f"bench_search: {settings_text(args)}; work directory {work} (optimizer output in {work / 'runs.log'})")
        start = time.perf_counter()
        if args.jobs > 1:
            run_jobs(args, work, say)
        bench = Bench(args, work, say)   # with --jobs: every run is stored, and only reported here
        results = [bench.preset(preset) for preset in args.presets]
        seconds = time.perf_counter() - start
        text = settings_text(args, seconds)
        if args.json:
            Path(args.json).write_text(json.dumps({"settings": text, "results": results}, indent=1))
        print()
        print(report(results, text))
    return 0


if __name__ == "__main__":
    sys.exit(main())

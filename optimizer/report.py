"""Results of a search: the Pareto frontier, its hypervolume, a table, a plot and the schedule file.

Quality is maximised and cost (a fraction of the full computation) minimised. The frontier is taken
over every schedule the run evaluated, not only the last population (as in the ECAD paper).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Hashable, Optional, Sequence


from ecad_nodes.schedule import FrontierPoint, Layout, Mask, PointMetrics, ScheduleFile

Point = tuple[float, float]   # (quality, cost fraction)


def pareto_front(points: Sequence[tuple[Hashable, Point]]) -> list[Hashable]:
    """Keys of the non-dominated points, cheapest first; of equal points the smallest key is kept."""
    ordered = sorted(points, key=lambda kp: (kp[1][1], -kp[1][0], str(kp[0])))
    front, best = [], -math.inf
    for key, (quality, _cost) in ordered:
        if quality > best:
            front.append(key)
            best = quality
    return front


def hypervolume(front: Sequence[Point], quality_ref: float, cost_ref: float = 1.0) -> float:
    """Area dominated by the points of ``front`` above ``quality_ref`` and below ``cost_ref`` (exact in 2-D)."""
    pts = sorted((c, q) for q, c in front if q > quality_ref and c < cost_ref)
    area, best = 0.0, quality_ref
    for i, (cost, quality) in enumerate(pts):
        best = max(best, quality)  # a dominated point adds nothing (front may hold some)
        next_cost = pts[i + 1][0] if i + 1 < len(pts) else cost_ref
        area += (next_cost - cost) * (best - quality_ref)
    return area


def summary_line(front: Sequence[Point], hv: float, metric_short: str, new: int, reused: int) -> str:
    """E.g. "HV 12.31 · 7 on the frontier: PSNR 45.2 @ 1.35×, 36.1 @ 2.02×, 28.4 @ 3.10× · 12 new, 0 from the database"."""
    shown = list(front)
    if len(shown) > 3:  # best quality, middle, fastest
        shown = [shown[-1], shown[len(shown) // 2], shown[0]]
    else:
        shown = shown[::-1]
    best = ", ".join(f"{q:.2f} @ {1 / c:.2f}×" for q, c in shown)
    return (f"HV {hv:.4g} · {len(front)} on the frontier: {metric_short} {best} · "
            f"{new} new, {reused} from the database")


def select_points(front: Sequence[Any], count: int, cost_of=lambda p: p, anchors: Sequence[float] = ()) -> list[Any]:
    """At most ``count`` points of ``front`` (cheapest first; costs > 0): its two ends; for each anchor cost (a
    heuristic baseline's), the best point that costs no more; the rest spread evenly in speedup, each the point
    farthest in log cost from those chosen, so a file offers a ladder of speedups wherever the search happened to
    find points densely. Ends and anchored points are kept even beyond ``count``."""
    if count < 1:
        raise ValueError("a schedule file needs at least one point")
    n = len(front)
    if n <= count:
        return list(front)
    costs = [cost_of(p) for p in front]
    chosen = {0, n - 1}
    for limit in anchors:
        within = [i for i in range(n) if costs[i] <= limit]
        if within:
            chosen.add(within[-1])
    log_cost = [math.log(c) for c in costs]
    while len(chosen) < count:
        chosen.add(max((i for i in range(n) if i not in chosen),
                       key=lambda i: (min(abs(log_cost[i] - log_cost[c]) for c in chosen), -i)))
    return [front[i] for i in sorted(chosen)]


def point_names(speedups: Sequence[float], prefix: str = "ecad") -> list[str]:
    """Short, stable names from the speedups ("ecad-2.61x"), with more digits where two would collide."""
    for digits in range(2, 7):
        names = [f"{prefix}-{s:.{digits}f}x" for s in speedups]
        if len(set(names)) == len(names):
            return names
    return [f"{prefix}-{i + 1}-{s:.2f}x" for i, s in enumerate(speedups)]


@dataclass
class ResultPoint:
    """A frontier point or a baseline, with what the run measured about it."""

    name: str
    mask: Mask
    quality: float
    macs: float
    cost: float                                   # the search's cost objective (fraction of full)
    latency_ms: Optional[float] = None            # measured, when asked for
    speedup: Optional[float] = None               # measured wall-clock speedup, when asked for
    holdout_quality: Optional[float] = None       # on held-out prompts and seeds, when asked for
    extra: dict[str, Any] = field(default_factory=dict)


def to_frontier_point(p: ResultPoint, metric: str, full_macs: float, convention: str) -> FrontierPoint:
    extra = {"mac_convention": convention, **p.extra}
    if p.holdout_quality is not None:
        extra["holdout_quality"] = p.holdout_quality
    return FrontierPoint(p.name, p.mask, PointMetrics(
        quality_metric=metric, quality=p.quality, macs=p.macs, full_macs=full_macs, latency_ms=p.latency_ms,
        speedup=p.speedup, extra=extra))


def schedule_file(family: str, variant: Optional[str], layout: Layout, steps: int, points: Sequence[ResultPoint],
                  baselines: Sequence[ResultPoint], metric: str, full_macs: float, convention: str,
                  provenance: dict[str, Any]) -> ScheduleFile:
    return ScheduleFile(family, variant, layout, steps,
                        [to_frontier_point(p, metric, full_macs, convention) for p in points],
                        provenance, [to_frontier_point(b, metric, full_macs, convention) for b in baselines])


def table(points: Sequence[ResultPoint], baselines: Sequence[ResultPoint], metric_short: str, full_macs: float,
          full_quality: Optional[float] = None) -> str:
    """The frontier (slowest first), then the baselines, as aligned text."""
    show_holdout = any(p.holdout_quality is not None for p in [*points, *baselines])
    show_speed = any(p.speedup is not None for p in [*points, *baselines])
    header = ["point", "MAC speedup", "GMACs/image", "computed", metric_short]
    if show_holdout:
        header.append(f"{metric_short} held-out")
    if show_speed:
        header.append("measured speedup")
    rows = [header]

    def row(p: ResultPoint) -> list[str]:
        cells = [p.name, f"{full_macs / p.macs:.2f}×", f"{p.macs / 1e9:.3g}", f"{100 * p.mask.compute_fraction():.1f}%",
                 f"{p.quality:.3f}"]
        if show_holdout:
            cells.append("-" if p.holdout_quality is None else f"{p.holdout_quality:.3f}")
        if show_speed:
            cells.append("-" if p.speedup is None else f"{p.speedup:.2f}×")
        return cells

    rows += [row(p) for p in sorted(points, key=lambda p: p.macs, reverse=True)]
    separator = len(rows)
    rows += [row(b) for b in baselines]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    if baselines:
        lines.insert(separator + 1, "-" * len(lines[0]) + "  heuristic baselines:")
    if full_quality is not None:
        lines.append(f"(no caching: {full_macs / 1e9:.3g} GMACs/image, {metric_short} {full_quality:.3f})")
    return "\n".join(lines)


def plot(path: Path, evaluated: Sequence[Point], points: Sequence[ResultPoint], baselines: Sequence[ResultPoint],
         full_macs: float, metric_label: str, title: str) -> Path:
    """Quality against MAC speedup: every evaluated schedule, the frontier and the heuristic baselines."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=120)
    if evaluated:
        ax.scatter([1 / c for _, c in evaluated], [q for q, _ in evaluated], s=9, color="0.75", label="evaluated schedules")
    front = sorted(points, key=lambda p: p.macs, reverse=True)
    ax.plot([full_macs / p.macs for p in front], [p.quality for p in front], "o-", color="tab:blue", label="ECAD frontier")
    for p in front:
        ax.annotate(p.name, (full_macs / p.macs, p.quality), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if baselines:
        ax.scatter([full_macs / b.macs for b in baselines], [b.quality for b in baselines], marker="^", s=40,
                   color="tab:red", label="heuristics (FORA)", zorder=3)
        for b in baselines:
            ax.annotate(b.name, (full_macs / b.macs, b.quality), textcoords="offset points", xytext=(4, -10),
                        fontsize=7, color="tab:red")
    ax.set_xlabel("speedup in MACs (full computation / schedule)")
    ax.set_ylabel(metric_label)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path

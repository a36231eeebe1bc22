// Geometry of the frontier plot: which figures go on the axes, scales, ticks, mark positions, hit-testing.
// No DOM and no ComfyUI imports: unit-tested with node's test runner (tests/js/).
import { formatTick, qualityAxisTitle, speedupAxisTitle } from "./format.js";

/** Room around the plot area for tick labels and axis titles, in CSS pixels. */
export const MARGIN = Object.freeze({ left: 38, right: 12, top: 18, bottom: 32 });
/** How close (CSS px) the pointer must be to a mark to hover or pick it. */
export const HIT_RADIUS = 9;
/** Below this size the plot shows a note instead of cramped axes. */
export const MIN_SIZE = Object.freeze({ width: 140, height: 90 });

function finite(x) {
  return typeof x === "number" && Number.isFinite(x);
}

/** A step of 1, 2, 2.5 or 5 × 10^k that cuts ``span`` into about ``count`` parts. */
export function niceStep(span, count = 5) {
  if (!finite(span) || span <= 0) return 1;
  const raw = span / Math.max(1, count);
  const power = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5]) {
    if (raw <= m * power * (1 + 1e-9)) return m * power;
  }
  return 10 * power;
}

/** Ticks at multiples of a nice step covering [min, max]; the domain widens to the outer ticks. */
export function niceTicks(min, max, count = 5) {
  if (!finite(min) || !finite(max)) throw new RangeError(`niceTicks needs finite bounds, got ${min}, ${max}`);
  if (min > max) [min, max] = [max, min];
  if (min === max) {
    const pad = Math.abs(min) * 0.05 || 0.5;
    min -= pad;
    max += pad;
  }
  const step = niceStep(max - min, count);
  const lo = Math.floor(min / step + 1e-9) * step;
  const hi = Math.ceil(max / step - 1e-9) * step;
  const ticks = [];
  for (let i = 0; lo + i * step <= hi + step * 1e-6; i++) ticks.push(Number((lo + i * step).toFixed(12)));
  return { min: ticks[0], max: ticks[ticks.length - 1], step, ticks };
}

/** Maps [d0, d1] linearly onto [r0, r1]. */
export function linearScale([d0, d1], [r0, r1]) {
  const k = d1 === d0 ? 0 : (r1 - r0) / (d1 - d0);
  return (x) => r0 + (x - d0) * k;
}

/**
 * Which speedup goes on the x axis. Mixing measured and MAC speedups on one axis would misplace
 * points, so: "measured" if every point with a speedup has a measured one, else "macs" if every one
 * has a MAC ratio, else "mixed" (each point's best figure; the axis title says so). null: none has any.
 */
export function chooseSpeedupKind(items) {
  const known = items.filter((p) => finite(p.measured_speedup) || finite(p.mac_speedup));
  if (known.length === 0) return null;
  if (known.every((p) => finite(p.measured_speedup))) return "measured";
  if (known.every((p) => finite(p.mac_speedup))) return "macs";
  return "mixed";
}

export function speedupOf(point, kind) {
  if (kind === "measured") return point.measured_speedup;
  if (kind === "macs") return point.mac_speedup;
  return finite(point.measured_speedup) ? point.measured_speedup : point.mac_speedup;
}

/** The quality metric most points report (the first one seen on a tie); null when none reports any. */
export function chooseQualityMetric(items) {
  const counts = new Map();
  for (const p of items) {
    if (p.quality_metric && finite(p.quality)) counts.set(p.quality_metric, (counts.get(p.quality_metric) ?? 0) + 1);
  }
  let best = null;
  for (const [metric, n] of counts) if (best === null || n > counts.get(best)) best = metric;
  return best;
}

function padded(values, fraction) {
  const lo = Math.min(...values);
  const hi = Math.max(...values);
  const pad = (hi - lo) * fraction;
  return [lo - pad, hi + pad];
}

/**
 * Everything the plot draws, in CSS pixels of a ``width`` × ``height`` box.
 *
 * ``summary`` is /ecad/schedules/summary's answer; ``selected`` the selected point's name. Returns
 * ``{message}`` alone when there is nothing to plot (an error, the heuristics, a box too small), else
 * ``{area, xTitle, yTitle, xTicks, yTicks, marks, frontier, omitted}``: marks have ``name, label, role
 * ("point" | "baseline"), x, y, px, py, selected, point``; ``frontier`` is the file's points in x order.
 */
export function buildPlot(summary, { width, height, selected = null }) {
  if (!summary) return { message: "loading…" };
  if (summary.error) return { message: `${summary.name}: ${summary.error}` };
  if (summary.kind === "heuristics") return { message: summary.note ?? "Built-in heuristics have no figures to plot." };
  if (!(width >= MIN_SIZE.width && height >= MIN_SIZE.height)) return { message: "enlarge the node to see the plot" };

  const items = [
    ...(summary.points ?? []).map((point) => ({ point, role: "point" })),
    ...(summary.baselines ?? []).map((point) => ({ point, role: "baseline" })),
  ];
  const kind = chooseSpeedupKind(items.map((i) => i.point));
  const metric = chooseQualityMetric(items.map((i) => i.point));
  const plotted = items.filter(({ point }) => finite(speedupOf(point, kind))
    && (metric === null || (point.quality_metric === metric && finite(point.quality))));
  if (kind === null || plotted.length === 0) {
    return { message: "This file has no speedup figures (measured or MACs) to plot." };
  }

  const area = { left: MARGIN.left, top: MARGIN.top, right: width - MARGIN.right, bottom: height - MARGIN.bottom };
  const xs = niceTicks(...padded(plotted.map(({ point }) => speedupOf(point, kind)), 0.06), Math.max(2, Math.floor((area.right - area.left) / 55)));
  const sx = linearScale([xs.min, xs.max], [area.left, area.right]);
  let ys = null;
  let sy = () => (area.top + area.bottom) / 2; // no quality figures: one row of marks
  if (metric !== null) {
    ys = niceTicks(...padded(plotted.map(({ point }) => point.quality), 0.08), Math.max(2, Math.floor((area.bottom - area.top) / 28)));
    sy = linearScale([ys.min, ys.max], [area.bottom, area.top]);
  }
  const marks = plotted.map(({ point, role }) => {
    const x = speedupOf(point, kind);
    const y = metric === null ? null : point.quality;
    return {
      name: point.name, label: point.label ?? null, role, x, y, px: sx(x), py: metric === null ? sy() : sy(y),
      selected: role === "point" && point.name === selected, point,
    };
  });
  const short = plotted.find(({ point }) => point.quality_metric === metric)?.point.quality_short ?? metric;
  return {
    area,
    xTitle: speedupAxisTitle(kind),
    yTitle: qualityAxisTitle(short, metric),
    xTicks: xs.ticks.map((v) => ({ value: v, px: sx(v), text: `${formatTick(v, xs.step)}×` })),
    yTicks: ys ? ys.ticks.map((v) => ({ value: v, py: sy(v), text: formatTick(v, ys.step) })) : [],
    marks,
    frontier: marks.filter((m) => m.role === "point").sort((a, b) => a.x - b.x).map((m) => [m.px, m.py]),
    omitted: items.length - plotted.length,
    message: null,
  };
}

/** The mark nearest to (px, py) within ``radius``; a selectable point wins over a baseline at the same distance. */
export function hitTest(marks, px, py, radius = HIT_RADIUS) {
  let best = null;
  let bestDistance = Infinity;
  for (const mark of marks ?? []) {
    const d = Math.hypot(mark.px - px, mark.py - py);
    if (d > radius) continue;
    if (d < bestDistance - 1e-9 || (Math.abs(d - bestDistance) <= 1e-9 && mark.role === "point" && best.role !== "point")) {
      best = mark;
      bestDistance = d;
    }
  }
  return best;
}

// Text for the frontier plot and its dropdown: point names, speedups, quality, MACs, tick labels.
// No DOM and no ComfyUI imports: unit-tested with node's test runner (tests/js/).

/** Separates the parts of a dropdown label: "fast · 2.58× · IR 1.04" (ecad_nodes/library.py). */
export const LABEL_SEPARATOR = " · ";

/** The point name in a dropdown label: the part before the first " · " (figures after it may be stale). */
export function pointName(label) {
  return String(label ?? "").split(LABEL_SEPARATOR, 1)[0].trim();
}

function finite(x) {
  return typeof x === "number" && Number.isFinite(x);
}

/** "2.58×" for a measured speedup, "2.58× MACs" for a MAC ratio, null when unknown. */
export function formatSpeedup(value, kind) {
  if (!finite(value)) return null;
  return kind === "macs" ? `${value.toFixed(2)}× MACs` : `${value.toFixed(2)}×`;
}

/** "IR 1.04"; null when the point has no quality figure. */
export function formatQuality(short, value) {
  if (!finite(value) || !short) return null;
  return `${short} ${value.toFixed(2)}`;
}

const SI = [[1e15, "P"], [1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];

/** "31.5 TMAC": three significant digits with an SI prefix. */
export function formatMacs(macs) {
  if (!finite(macs)) return null;
  const [scale, prefix] = SI.find(([s]) => Math.abs(macs) >= s) ?? [1, ""];
  return `${Number((macs / scale).toPrecision(3))} ${prefix}MAC`;
}

/** Digits after the point that tell ticks ``step`` apart (0.25 -> 2, 0.5 -> 1, 2 -> 0). */
export function decimalsFor(step) {
  if (!finite(step) || step <= 0) return 0;
  for (let d = 0; d < 10; d++) {
    if (Math.abs(Math.round(step * 10 ** d) - step * 10 ** d) < 1e-9 * 10 ** d) return d;
  }
  return 10;
}

export function formatTick(value, step) {
  const text = value.toFixed(decimalsFor(step));
  return /^-0(\.0*)?$/.test(text) ? text.slice(1) : text; // no "-0.0" for a tick that is zero up to rounding
}

/** The x axis title for a speedup kind chosen by plot_geometry.chooseSpeedupKind. */
export function speedupAxisTitle(kind) {
  if (kind === "measured") return "speedup (measured)";
  if (kind === "macs") return "speedup (MAC ratio)";
  return "speedup (measured where known, else MAC ratio)";
}

/** The y axis title: the metric's short name and full name. */
export function qualityAxisTitle(short, metric) {
  if (!metric) return "no quality figures";
  return short && short.toLowerCase() !== metric.toLowerCase() ? `${short} (${metric})` : short || metric;
}

/** Lines of the hover box for a point or baseline summary (as /ecad/schedules/summary returns them). */
export function tooltipLines(point, role = "point") {
  const lines = [role === "baseline" ? `${point.name} (baseline)` : point.name];
  if (finite(point.measured_speedup)) {
    const macs = finite(point.mac_speedup) ? ` (MACs ${point.mac_speedup.toFixed(2)}×)` : "";
    lines.push(`${point.measured_speedup.toFixed(2)}× measured${macs}`);
  } else if (finite(point.mac_speedup)) {
    lines.push(`${point.mac_speedup.toFixed(2)}× by MACs, not measured`);
  }
  const quality = formatQuality(point.quality_short, point.quality);
  if (quality) lines.push(quality);
  const work = [];
  if (finite(point.macs)) work.push(finite(point.full_macs) ? `${formatMacs(point.macs)} of ${formatMacs(point.full_macs)}` : formatMacs(point.macs));
  if (finite(point.computed_fraction)) work.push(`${(100 * point.computed_fraction).toFixed(0)}% computed`);
  if (work.length) lines.push(work.join(" · "));
  if (finite(point.latency_ms)) lines.push(`${point.latency_ms.toFixed(0)} ms per image`);
  if (role === "baseline") lines.push("for comparison; not a point of this file");
  return lines;
}

// Refilling the "point" dropdown of "ECAD Load Schedule" from one schedule file's summary.
// No DOM and no ComfyUI imports: unit-tested with node's test runner (tests/js/).
import { pointName } from "./format.js";

/** The dropdown values of a summary from /ecad/schedules/summary: the server's labels, in file order. */
export function pointLabels(summary) {
  if (!summary || summary.error || !Array.isArray(summary.points)) return [];
  return summary.points.map((p) => p.label ?? p.name);
}

/**
 * The new options and value of the point dropdown.
 *
 * The current choice is kept when the new labels hold a point of the same name (its figures may have
 * changed, so the label is taken from the new list). Otherwise ``whenMissing`` decides: "first" picks
 * the file's first point (the user switched files), "keep" leaves the value alone so that running the
 * workflow reports the missing point by name instead of silently running another one (a loaded workflow).
 */
export function refillPoints(labels, current, { whenMissing = "first" } = {}) {
  const values = [...labels];
  if (values.includes(current)) return { values, value: current, kept: true };
  const name = pointName(current);
  const same = values.find((label) => pointName(label) === name);
  if (same !== undefined) return { values, value: same, kept: true };
  if (whenMissing === "keep" || values.length === 0) return { values, value: current, kept: false };
  return { values, value: values[0], kept: false };
}

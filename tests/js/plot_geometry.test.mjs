// Geometry of the frontier plot: axes, ticks, mark positions and hit-testing (web/lib/plot_geometry.js).
import assert from "node:assert/strict";
import test from "node:test";

import {
  HIT_RADIUS, MARGIN, buildPlot, chooseQualityMetric, chooseSpeedupKind, hitTest, linearScale, niceStep, niceTicks,
} from "../../web/lib/plot_geometry.js";

function point(name, speedup, quality, extra = {}) {
  return {
    name, label: `${name} · ${speedup.toFixed(2)}× · IR ${quality.toFixed(2)}`, measured_speedup: speedup, mac_speedup: speedup * 1.2,
    speedup, speedup_kind: "measured", quality_metric: "image_reward", quality_short: "IR", quality, ...extra,
  };
}

const SUMMARY = {
  name: "flux-dev.json", kind: "file", family: "flux", steps: 20,
  points: [point("fast", 1.5, 1.1), point("faster", 2.5, 0.9), point("fastest", 3.5, 0.5)],
  baselines: [{ name: "FORA every 2 steps", label: null, measured_speedup: 1.9, mac_speedup: 2.0, quality_metric: "image_reward", quality_short: "IR", quality: 0.7 }],
};

test("nice steps are 1, 2, 2.5 or 5 times a power of ten", () => {
  assert.equal(niceStep(10, 5), 2);
  assert.equal(niceStep(1, 4), 0.25);
  assert.equal(niceStep(0.7, 5), 0.2);
  assert.equal(niceStep(3, 5), 1);
  assert.equal(niceStep(0, 5), 1);
});

test("ticks cover the range at round values", () => {
  assert.deepEqual(niceTicks(1.3, 3.7, 5), { min: 1, max: 4, step: 0.5, ticks: [1, 1.5, 2, 2.5, 3, 3.5, 4] });
  const t = niceTicks(0.47, 1.13, 4);
  assert.deepEqual(t.ticks, [0.4, 0.6, 0.8, 1, 1.2]);
  assert.ok(t.min <= 0.47 && t.max >= 1.13);
  // one value: a small range around it
  const single = niceTicks(2, 2, 4);
  assert.ok(single.min < 2 && single.max > 2);
  assert.throws(() => niceTicks(Number.NaN, 1), RangeError);
});

test("a linear scale maps the domain ends onto the range ends, inverted ranges too", () => {
  const s = linearScale([1, 3], [40, 240]);
  assert.equal(s(1), 40);
  assert.equal(s(2), 140);
  assert.equal(s(3), 240);
  const y = linearScale([0, 1], [200, 10]);
  assert.equal(y(0), 200);
  assert.equal(y(1), 10);
});

test("the x axis uses one kind of speedup for every mark", () => {
  const measured = [{ measured_speedup: 2, mac_speedup: 2.2 }, { measured_speedup: 3 }];
  assert.equal(chooseSpeedupKind(measured), "measured");
  const macs = [{ measured_speedup: 2, mac_speedup: 2.2 }, { mac_speedup: 3 }];
  assert.equal(chooseSpeedupKind(macs), "macs");
  assert.equal(chooseSpeedupKind([{ measured_speedup: 2 }, { mac_speedup: 3 }]), "mixed");
  assert.equal(chooseSpeedupKind([{}, { quality: 1 }]), null);
});

test("the y axis uses the metric most points report", () => {
  const items = [
    { quality_metric: "psnr", quality: 30 }, { quality_metric: "image_reward", quality: 1 },
    { quality_metric: "image_reward", quality: 0.9 }, { quality_metric: "image_reward", quality: null },
  ];
  assert.equal(chooseQualityMetric(items), "image_reward");
  assert.equal(chooseQualityMetric([{ quality_metric: "psnr", quality: 30 }, { quality_metric: "ssim", quality: 0.9 }]), "psnr");
  assert.equal(chooseQualityMetric([{ quality: 1 }]), null);
});

test("marks sit inside the plot area: faster to the right, better quality higher", () => {
  const plot = buildPlot(SUMMARY, { width: 320, height: 170, selected: "faster" });
  assert.equal(plot.message, null);
  assert.deepEqual(plot.area, { left: MARGIN.left, top: MARGIN.top, right: 320 - MARGIN.right, bottom: 170 - MARGIN.bottom });
  for (const m of plot.marks) {
    assert.ok(m.px >= plot.area.left && m.px <= plot.area.right, `${m.name} x ${m.px}`);
    assert.ok(m.py >= plot.area.top && m.py <= plot.area.bottom, `${m.name} y ${m.py}`);
  }
  const [fast, faster, fastest] = ["fast", "faster", "fastest"].map((n) => plot.marks.find((m) => m.name === n));
  assert.ok(fast.px < faster.px && faster.px < fastest.px);
  assert.ok(fast.py < faster.py && faster.py < fastest.py); // canvas y grows downwards
  assert.equal(plot.marks.filter((m) => m.selected).map((m) => m.name).join(), "faster");
  assert.equal(plot.xTitle, "speedup (measured)");
  assert.equal(plot.yTitle, "IR (image_reward)");
  assert.equal(plot.omitted, 0);
});

test("ticks are placed by the same scales as the marks and labelled with ×", () => {
  const plot = buildPlot(SUMMARY, { width: 320, height: 170 });
  const xs = plot.xTicks.map((t) => t.value);
  assert.ok(xs[0] <= 1.5 && xs[xs.length - 1] >= 3.5);
  assert.ok(plot.xTicks.every((t) => t.text.endsWith("×")));
  const fast = plot.marks.find((m) => m.name === "fast");
  const [t0, t1] = plot.xTicks;
  const expected = t0.px + ((fast.x - t0.value) / (t1.value - t0.value)) * (t1.px - t0.px);
  assert.ok(Math.abs(fast.px - expected) < 1e-9);
  assert.equal(plot.xTicks[0].px, plot.area.left);
  assert.equal(plot.yTicks[0].py, plot.area.bottom);
});

test("baselines are their own kind of mark and never selected; the frontier joins only file points in x order", () => {
  const plot = buildPlot(SUMMARY, { width: 320, height: 170, selected: "FORA every 2 steps" });
  const baseline = plot.marks.find((m) => m.role === "baseline");
  assert.equal(baseline.name, "FORA every 2 steps");
  assert.equal(baseline.selected, false);
  assert.equal(plot.frontier.length, 3);
  const xs = plot.frontier.map(([x]) => x);
  assert.deepEqual(xs, [...xs].sort((a, b) => a - b));
});

test("MAC ratios are used for every mark when one point was not measured", () => {
  const summary = { ...SUMMARY, points: [...SUMMARY.points, { ...point("guess", 5, 0.2), measured_speedup: null, speedup_kind: "macs" }] };
  const plot = buildPlot(summary, { width: 320, height: 170 });
  assert.equal(plot.xTitle, "speedup (MAC ratio)");
  assert.equal(plot.marks.find((m) => m.name === "fast").x, 1.5 * 1.2);
});

test("points without the axis' figures are left out and counted", () => {
  const summary = { ...SUMMARY, points: [...SUMMARY.points, { ...point("other", 2, 30), quality_metric: "psnr" }, { ...point("bare", 2, 0), quality: null }] };
  const plot = buildPlot(summary, { width: 320, height: 170 });
  assert.equal(plot.omitted, 2);
  assert.ok(!plot.marks.some((m) => m.name === "other" || m.name === "bare"));
});

test("a file without quality figures is drawn as one row along the speedup axis", () => {
  const official = { name: "official.json", kind: "file", points: [{ name: "official", label: "official · 2.60× MACs", mac_speedup: 2.6 }], baselines: [] };
  const plot = buildPlot(official, { width: 300, height: 160 });
  assert.equal(plot.message, null);
  assert.equal(plot.yTitle, "no quality figures");
  assert.deepEqual(plot.yTicks, []);
  assert.equal(plot.marks[0].py, (plot.area.top + plot.area.bottom) / 2);
});

test("errors, heuristics, missing figures and a tiny box give a message instead of axes", () => {
  assert.match(buildPlot({ name: "corrupt.json", error: "is not valid JSON (line 1, column 2: x)" }, { width: 300, height: 160 }).message,
    /^corrupt\.json: is not valid JSON/);
  assert.match(buildPlot({ kind: "heuristics", note: "Built-in heuristics are laid onto the model" }, { width: 300, height: 160 }).message,
    /laid onto the model/);
  assert.match(buildPlot({ kind: "file", points: [{ name: "x" }], baselines: [] }, { width: 300, height: 160 }).message, /no speedup figures/);
  assert.match(buildPlot(SUMMARY, { width: 60, height: 30 }).message, /enlarge/);
  assert.equal(buildPlot(null, { width: 300, height: 160 }).message, "loading…");
});

test("hit-testing finds the nearest mark within the radius, preferring a file point on a tie", () => {
  const marks = [
    { name: "a", role: "point", px: 100, py: 50 },
    { name: "b", role: "point", px: 110, py: 50 },
    { name: "base", role: "baseline", px: 200, py: 80 },
    { name: "c", role: "point", px: 200, py: 80 },
  ];
  assert.equal(hitTest(marks, 103, 51).name, "a");
  assert.equal(hitTest(marks, 107, 50).name, "b");
  assert.equal(hitTest(marks, 100, 50 + HIT_RADIUS + 0.5), null);
  assert.equal(hitTest(marks, 201, 80).name, "c");
  assert.equal(hitTest([marks[2]], 201, 80).name, "base");
  assert.equal(hitTest([], 0, 0), null);
  assert.equal(hitTest(undefined, 0, 0), null);
});

test("hit-testing a built plot at a mark's position finds that mark", () => {
  const plot = buildPlot(SUMMARY, { width: 320, height: 170 });
  for (const m of plot.marks) assert.equal(hitTest(plot.marks, m.px + 2, m.py - 2).name, m.name);
});

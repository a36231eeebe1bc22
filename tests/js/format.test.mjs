// Label and number formatting of the web extension (web/lib/format.js).
import assert from "node:assert/strict";
import test from "node:test";

import {
  decimalsFor, formatMacs, formatQuality, formatSpeedup, formatTick, pointName, qualityAxisTitle, speedupAxisTitle,
  tooltipLines,
} from "../../web/lib/format.js";

test("the point name is the label's part before the first separator", () => {
  assert.equal(pointName("fast · 2.58× · IR 1.04"), "fast");
  assert.equal(pointName("FORA every 2 steps"), "FORA every 2 steps");
  assert.equal(pointName("  gen 12 #3  · 1.90× MACs"), "gen 12 #3");
  assert.equal(pointName(undefined), "");
});

test("speedups say whether they were measured or are MAC ratios, as the server's labels do", () => {
  assert.equal(formatSpeedup(2.5837, "measured"), "2.58×");
  assert.equal(formatSpeedup(2, "macs"), "2.00× MACs");
  assert.equal(formatSpeedup(null, "measured"), null);
  assert.equal(formatSpeedup(Number.NaN, "macs"), null);
});

test("quality is the metric's short name and two decimals", () => {
  assert.equal(formatQuality("IR", 1.0449), "IR 1.04");
  assert.equal(formatQuality("PSNR", 30), "PSNR 30.00");
  assert.equal(formatQuality("IR", null), null);
  assert.equal(formatQuality(null, 1.0), null);
});

test("MACs get three significant digits and an SI prefix", () => {
  assert.equal(formatMacs(3.15e13), "31.5 TMAC");
  assert.equal(formatMacs(9.93e13), "99.3 TMAC");
  assert.equal(formatMacs(1.2345e9), "1.23 GMAC");
  assert.equal(formatMacs(512), "512 MAC");
  assert.equal(formatMacs(undefined), null);
});

test("tick labels have as many decimals as the step needs", () => {
  assert.equal(decimalsFor(1), 0);
  assert.equal(decimalsFor(0.5), 1);
  assert.equal(decimalsFor(0.25), 2);
  assert.equal(decimalsFor(0.02), 2);
  assert.equal(formatTick(1.5, 0.5), "1.5");
  assert.equal(formatTick(2, 0.5), "2.0");
  assert.equal(formatTick(-0.0001, 0.5), "0.0");
  assert.equal(formatTick(-1e-13, 1), "0");
});

test("axis titles name the speedup kind and the quality metric", () => {
  assert.equal(speedupAxisTitle("measured"), "speedup (measured)");
  assert.equal(speedupAxisTitle("macs"), "speedup (MAC ratio)");
  assert.match(speedupAxisTitle("mixed"), /measured where known, else MAC ratio/);
  assert.equal(qualityAxisTitle("IR", "image_reward"), "IR (image_reward)");
  assert.equal(qualityAxisTitle("psnr", "psnr"), "psnr");
  assert.equal(qualityAxisTitle("PSNR", "psnr"), "PSNR"); // no "PSNR (psnr)"
  assert.equal(qualityAxisTitle(null, "clip_score"), "clip_score");
  assert.equal(qualityAxisTitle(null, null), "no quality figures");
});

test("the hover box lists what is known about a point, and marks baselines", () => {
  const point = {
    name: "fast", measured_speedup: 2.58, mac_speedup: 3.15, quality_short: "IR", quality_metric: "image_reward",
    quality: 1.04, macs: 3.15e13, full_macs: 9.93e13, latency_ms: 1016.6, computed_fraction: 0.3174,
  };
  assert.deepEqual(tooltipLines(point), [
    "fast", "2.58× measured (MACs 3.15×)", "IR 1.04", "31.5 TMAC of 99.3 TMAC · 32% computed", "1017 ms per image",
  ]);
  const baseline = { name: "FORA every 2 steps", mac_speedup: 1.9, quality_short: "IR", quality_metric: "image_reward", quality: 0.8 };
  assert.deepEqual(tooltipLines(baseline, "baseline"), [
    "FORA every 2 steps (baseline)", "1.90× by MACs, not measured", "IR 0.80", "for comparison; not a point of this file",
  ]);
  assert.deepEqual(tooltipLines({ name: "bare" }), ["bare"]);
});

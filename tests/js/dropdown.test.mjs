// Refilling the point dropdown when the schedule file changes (web/lib/dropdown.js).
import assert from "node:assert/strict";
import test from "node:test";

import { pointLabels, refillPoints } from "../../web/lib/dropdown.js";

const FILE_A = ["fast · 2.58× · IR 1.04", "faster · 3.10× · IR 0.91", "fastest · 4.02× · IR 0.62"];
const FILE_B = ["safe · 1.60× MACs · PSNR 33.10", "fast · 2.40× MACs · PSNR 28.20"];

test("the dropdown values are the server's labels in file order", () => {
  const summary = { kind: "file", points: [{ name: "fast", label: FILE_A[0] }, { name: "faster", label: FILE_A[1] }] };
  assert.deepEqual(pointLabels(summary), FILE_A.slice(0, 2));
  const heuristics = { kind: "heuristics", points: [{ name: "FORA every 2 steps", label: "FORA every 2 steps" }] };
  assert.deepEqual(pointLabels(heuristics), ["FORA every 2 steps"]);
});

test("an error entry or no summary gives no labels (the dropdown is left as it is)", () => {
  assert.deepEqual(pointLabels({ name: "corrupt.json", error: "is not valid JSON" }), []);
  assert.deepEqual(pointLabels(null), []);
});

test("an unchanged label is kept", () => {
  assert.deepEqual(refillPoints(FILE_A, FILE_A[1]), { values: FILE_A, value: FILE_A[1], kept: true });
});

test("a point of the same name is kept with its new figures", () => {
  const result = refillPoints(FILE_B, "fast · 2.58× · IR 1.04");
  assert.equal(result.value, "fast · 2.40× MACs · PSNR 28.20");
  assert.equal(result.kept, true);
  assert.deepEqual(result.values, FILE_B);
  // A label saved before the figures changed matches too (only the name counts).
  assert.equal(refillPoints(FILE_A, "faster · 9.99× · IR 0.00").value, FILE_A[1]);
});

test("when the file has no point of that name, a user's switch picks its first point", () => {
  assert.deepEqual(refillPoints(FILE_B, FILE_A[1]), { values: FILE_B, value: FILE_B[0], kept: false });
});

test("when a loaded workflow's point is gone, its value stays so that running it reports the missing point", () => {
  assert.deepEqual(refillPoints(FILE_B, FILE_A[2], { whenMissing: "keep" }), { values: FILE_B, value: FILE_A[2], kept: false });
});

test("the new values are a copy: changing them does not change the summary's list", () => {
  const labels = [...FILE_A];
  const { values } = refillPoints(labels, "x");
  values.pop();
  assert.equal(labels.length, 3);
});

test("an empty list keeps the current value", () => {
  assert.deepEqual(refillPoints([], FILE_A[0]), { values: [], value: FILE_A[0], kept: false });
});

// The frontier plot as a DOM element: a <canvas> drawn from plot_geometry's model, a hover box, and
// clicks that pick a point. It knows nothing of ComfyUI: the extension puts the element in a DOM widget.
import { tooltipLines } from "./format.js";
import { buildPlot, hitTest } from "./plot_geometry.js";

const FALLBACK_COLOURS = {
  background: "#222", text: "#ddd", muted: "#999", grid: "rgba(255,255,255,0.08)", axis: "#666",
  point: "#4ea3ff", frontier: "rgba(78,163,255,0.55)", selected: "#ffc53d", baseline: "#c8c8c8",
};

function cssColour(style, name, fallback) {
  const value = style?.getPropertyValue(name)?.trim();
  return value || fallback;
}

/** Theme colours from ComfyUI's palette variables where they exist. */
function themeColours() {
  const style = typeof getComputedStyle === "function" ? getComputedStyle(document.documentElement) : null;
  return {
    ...FALLBACK_COLOURS,
    background: cssColour(style, "--comfy-input-bg", FALLBACK_COLOURS.background),
    text: cssColour(style, "--input-text", FALLBACK_COLOURS.text),
    muted: cssColour(style, "--descrip-text", FALLBACK_COLOURS.muted),
    axis: cssColour(style, "--border-color", FALLBACK_COLOURS.axis),
  };
}

export class FrontierPlot {
  /**
   * @param {{onSelect?: (mark) => void, onError?: (error) => void}} handlers
   *   onSelect: a point of the file was clicked; onError: drawing failed (the caller falls back to the dropdown).
   */
  constructor({ onSelect = () => {}, onError = () => {} } = {}) {
    this.onSelect = onSelect;
    this.onError = onError;
    this.summary = null;
    this.selected = null;
    this.hovered = null;
    this.model = { message: "loading…" };
    this.failed = null;

    this.element = document.createElement("div");
    this.element.className = "ecad-frontier-plot";
    Object.assign(this.element.style, { position: "relative", overflow: "hidden", minHeight: "0" });
    this.canvas = document.createElement("canvas");
    Object.assign(this.canvas.style, { width: "100%", height: "100%", display: "block", cursor: "default" });
    this.tooltip = document.createElement("div");
    this.tooltip.className = "ecad-frontier-tooltip";
    Object.assign(this.tooltip.style, {
      position: "absolute", display: "none", pointerEvents: "none", whiteSpace: "pre", zIndex: "1",
      font: "10px sans-serif", lineHeight: "1.3", padding: "3px 5px", borderRadius: "4px",
      background: "rgba(20,20,20,0.92)", color: "#eee", border: "1px solid #555",
    });
    this.element.append(this.canvas, this.tooltip);

    this.canvas.addEventListener("pointermove", (e) => this.#hover(e));
    this.canvas.addEventListener("pointerleave", () => this.#setHovered(null));
    this.canvas.addEventListener("pointerdown", (e) => this.#press(e));
    if (typeof ResizeObserver === "function") {
      this.resizeObserver = new ResizeObserver(() => this.draw());
      this.resizeObserver.observe(this.element);
    }
  }

  /** Show a file summary (or an error entry) with ``selected`` (a point name) highlighted. */
  show(summary, selected) {
    this.summary = summary;
    this.selected = selected;
    this.hovered = null;
    this.draw();
  }

  select(name) {
    if (name === this.selected) return;
    this.selected = name;
    this.draw();
  }

  /** The marks in CSS pixels of the element (its untransformed box), for tests and tooling. */
  marks() {
    return (this.model.marks ?? []).map(({ name, role, px, py, selected }) => ({ name, role, px, py, selected }));
  }

  dispose() {
    this.resizeObserver?.disconnect();
  }

  /** Redraw; a failure is reported once through onError and leaves the element empty. */
  draw() {
    if (this.failed) return;
    try {
      this.#draw();
    } catch (error) {
      this.failed = error;
      this.onError(error);
    }
  }

  #size() {
    return { width: this.element.clientWidth, height: this.element.clientHeight };
  }

  #draw() {
    const { width, height } = this.#size();
    this.model = buildPlot(this.summary, { width, height, selected: this.selected });
    if (!width || !height) return; // not laid out yet (node off screen): drawn on the next resize
    // ComfyUI scales DOM widgets with a CSS transform: draw at the on-screen resolution to stay sharp.
    const rect = this.element.getBoundingClientRect();
    const zoom = rect.width > 0 ? rect.width / width : 1;
    const density = Math.min(4, Math.max(1, (globalThis.devicePixelRatio || 1) * zoom));
    const w = Math.round(width * density);
    const h = Math.round(height * density);
    if (this.canvas.width !== w || this.canvas.height !== h) {
      this.canvas.width = w;
      this.canvas.height = h;
    }
    const ctx = this.canvas.getContext("2d");
    if (!ctx) throw new Error("no 2D canvas context");
    ctx.setTransform(density, 0, 0, density, 0, 0);
    const colours = themeColours();
    ctx.clearRect(0, 0, width, height);
    ctx.fillStyle = colours.background;
    roundRect(ctx, 0, 0, width, height, 6);
    ctx.fill();
    if (this.model.message) {
      drawMessage(ctx, this.model.message, width, height, colours);
      this.canvas.dataset.state = "message";
      return;
    }
    drawAxes(ctx, this.model, colours);
    drawMarks(ctx, this.model, this.hovered, colours);
    this.canvas.dataset.state = "plot";
  }

  #local(e) {
    const rect = this.element.getBoundingClientRect();
    const { width, height } = this.#size();
    return [(e.clientX - rect.left) * (width / (rect.width || 1)), (e.clientY - rect.top) * (height / (rect.height || 1))];
  }

  #hover(e) {
    const [x, y] = this.#local(e);
    this.#setHovered(hitTest(this.model.marks, x, y));
  }

  #setHovered(mark) {
    if (mark?.name === this.hovered?.name && mark?.role === this.hovered?.role) return;
    this.hovered = mark;
    this.canvas.style.cursor = mark?.role === "point" ? "pointer" : "default";
    if (!mark) {
      this.tooltip.style.display = "none";
    } else {
      this.tooltip.textContent = tooltipLines(mark.point, mark.role).join("\n");
      this.tooltip.style.display = "block";
      // A frontier falls from top left to bottom right: the box goes up-right of a mark in the left half and
      // down-left of one in the right half, where the plot is empty.
      const { width, height } = this.#size();
      const boxWidth = this.tooltip.offsetWidth;
      const boxHeight = this.tooltip.offsetHeight;
      const leftHalf = mark.px < width / 2;
      const left = leftHalf ? mark.px + 12 : mark.px - 12 - boxWidth;
      const top = leftHalf ? mark.py - 8 - boxHeight : mark.py + 8;
      this.tooltip.style.left = `${Math.max(2, Math.min(left, width - boxWidth - 2))}px`;
      this.tooltip.style.top = `${Math.max(2, Math.min(top, height - boxHeight - 2))}px`;
    }
    this.draw();
  }

  #press(e) {
    if (e.button !== 0) return;
    const [x, y] = this.#local(e);
    const mark = hitTest(this.model.marks, x, y);
    if (mark?.role !== "point") return;
    e.stopPropagation(); // the click picks a point; it should not also start dragging the node
    this.selected = mark.name;
    this.draw();
    this.onSelect(mark);
  }
}

function roundRect(ctx, x, y, w, h, r) {
  ctx.beginPath();
  ctx.moveTo(x + r, y);
  ctx.arcTo(x + w, y, x + w, y + h, r);
  ctx.arcTo(x + w, y + h, x, y + h, r);
  ctx.arcTo(x, y + h, x, y, r);
  ctx.arcTo(x, y, x + w, y, r);
  ctx.closePath();
}

function drawMessage(ctx, message, width, height, colours) {
  ctx.fillStyle = colours.muted;
  ctx.font = "12px sans-serif";
  ctx.textAlign = "center";
  ctx.textBaseline = "middle";
  const lines = wrap(ctx, message, width - 24);
  const top = height / 2 - ((lines.length - 1) * 16) / 2;
  lines.forEach((line, i) => ctx.fillText(line, width / 2, top + i * 16));
}

function wrap(ctx, text, maxWidth) {
  const lines = [];
  let line = "";
  for (const word of String(text).split(/\s+/)) {
    const candidate = line ? `${line} ${word}` : word;
    if (line && ctx.measureText(candidate).width > maxWidth) {
      lines.push(line);
      line = word;
    } else {
      line = candidate;
    }
  }
  if (line) lines.push(line);
  return lines;
}

function drawAxes(ctx, model, colours) {
  const { area } = model;
  ctx.lineWidth = 1;
  ctx.strokeStyle = colours.grid;
  ctx.beginPath();
  for (const t of model.xTicks) {
    ctx.moveTo(Math.round(t.px) + 0.5, area.top);
    ctx.lineTo(Math.round(t.px) + 0.5, area.bottom);
  }
  for (const t of model.yTicks) {
    ctx.moveTo(area.left, Math.round(t.py) + 0.5);
    ctx.lineTo(area.right, Math.round(t.py) + 0.5);
  }
  ctx.stroke();
  ctx.strokeStyle = colours.axis;
  ctx.beginPath();
  ctx.moveTo(area.left + 0.5, area.top);
  ctx.lineTo(area.left + 0.5, area.bottom + 0.5);
  ctx.lineTo(area.right, area.bottom + 0.5);
  ctx.stroke();

  ctx.fillStyle = colours.muted;
  ctx.font = "10px sans-serif";
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  for (const t of model.xTicks) ctx.fillText(t.text, t.px, area.bottom + 3);
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (const t of model.yTicks) ctx.fillText(t.text, area.left - 4, t.py);
  ctx.font = "11px sans-serif";
  ctx.textAlign = "center";
  ctx.textBaseline = "bottom";
  ctx.fillText(model.xTitle, (area.left + area.right) / 2, area.bottom + 30);
  ctx.textAlign = "left";
  ctx.fillText(`↑ ${model.yTitle}`, area.left + 2, area.top - 3);
  if (model.omitted > 0) {
    ctx.font = "10px sans-serif";
    ctx.textAlign = "left";
    ctx.fillText(`${model.omitted} without figures not drawn`, 4, area.bottom + 30);
  }
  if (model.marks.some((m) => m.role === "baseline")) drawLegend(ctx, area, colours);
}

/** Top right: which mark is which (file points are joined by the frontier line). */
function drawLegend(ctx, area, colours) {
  ctx.font = "10px sans-serif";
  ctx.textAlign = "left";
  ctx.textBaseline = "middle";
  const y = area.top - 9;
  const baselineText = "baselines";
  const pointText = "points";
  let x = area.right - ctx.measureText(baselineText).width;
  ctx.fillStyle = colours.muted;
  ctx.fillText(baselineText, x, y);
  ctx.strokeStyle = colours.baseline;
  ctx.lineWidth = 1.5;
  ctx.strokeRect(x - 11, y - 3.5, 7, 7);
  x -= 22 + ctx.measureText(pointText).width;
  ctx.fillText(pointText, x, y);
  ctx.fillStyle = colours.point;
  ctx.beginPath();
  ctx.arc(x - 7, y, 3.5, 0, 2 * Math.PI);
  ctx.fill();
}

function drawMarks(ctx, model, hovered, colours) {
  if (model.frontier.length > 1) {
    ctx.strokeStyle = colours.frontier;
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    model.frontier.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    ctx.stroke();
  }
  const isHovered = (m) => hovered && hovered.name === m.name && hovered.role === m.role;
  for (const m of model.marks.filter((mark) => mark.role === "baseline")) {
    const r = isHovered(m) ? 5 : 4;
    ctx.strokeStyle = colours.baseline;
    ctx.lineWidth = 1.5;
    ctx.strokeRect(m.px - r, m.py - r, 2 * r, 2 * r);
  }
  for (const m of model.marks.filter((mark) => mark.role === "point" && !mark.selected)) {
    ctx.fillStyle = colours.point;
    ctx.beginPath();
    ctx.arc(m.px, m.py, isHovered(m) ? 5 : 3.5, 0, 2 * Math.PI);
    ctx.fill();
  }
  const selected = model.marks.find((m) => m.selected);
  if (selected) {
    ctx.fillStyle = colours.selected;
    ctx.beginPath();
    ctx.arc(selected.px, selected.py, 5.5, 0, 2 * Math.PI);
    ctx.fill();
    ctx.strokeStyle = colours.selected;
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    ctx.arc(selected.px, selected.py, 9, 0, 2 * Math.PI);
    ctx.stroke();
    ctx.fillStyle = colours.text;
    ctx.font = "11px sans-serif";
    const right = selected.px > (model.area.left + model.area.right) / 2;
    ctx.textAlign = right ? "right" : "left";
    ctx.textBaseline = "middle";
    ctx.fillText(selected.name, selected.px + (right ? -13 : 13), selected.py);
  }
}

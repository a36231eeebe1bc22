// ComfyUI-ECAD web extension: on "ECAD Load Schedule", the point dropdown follows the chosen file and a
// small plot of the file's frontier (quality against speedup) picks a point by clicking it.
//
// The server side is ecad_nodes/routes.py (GET /api/ecad/schedules/summary?name=...). Anything that goes
// wrong here is logged and leaves the node with its plain dropdowns, which work without this file.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { pointLabels, refillPoints } from "./lib/dropdown.js";
import { pointName } from "./lib/format.js";
import { FrontierPlot } from "./lib/plot_canvas.js";

const NODE_TYPE = "ECADLoadSchedule";
const PLOT_WIDGET = "ecad_frontier_plot";
const PLOT_HEIGHT = 180;
const LOG_PREFIX = "[ComfyUI-ECAD]";

/** Per-node state: the plot, the summary shown, and a counter that drops answers to superseded requests. */
const states = new WeakMap();

function stateOf(node) {
  let state = states.get(node);
  if (!state) {
    state = { request: 0, plot: null, plotWidget: null, summary: null };
    states.set(node, state);
  }
  return state;
}

function widget(node, name) {
  return node.widgets?.find((w) => w.name === name);
}

async function fetchSummary(source) {
  const response = await api.fetchApi(`/ecad/schedules/summary?name=${encodeURIComponent(source)}`, { cache: "no-store" });
  try {
    return await response.json(); // errors come as {name, error} entries with a 4xx status
  } catch {
    return { name: source, error: `the server answered ${response.status} ${response.statusText}` };
  }
}

/**
 * Refill the point dropdown from the chosen file and redraw the plot.
 * ``whenMissing``: "first" when the user switched files, "keep" for loaded workflows and refreshes.
 */
async function update(node, whenMissing) {
  const state = stateOf(node);
  const scheduleWidget = widget(node, "schedule");
  const pointWidget = widget(node, "point");
  if (!scheduleWidget || !pointWidget) return;
  const request = ++state.request;
  const source = scheduleWidget.value;
  let summary;
  try {
    summary = await fetchSummary(source);
  } catch (error) {
    summary = { name: source, error: `could not ask the server (${error?.message ?? error})` };
  }
  if (request !== state.request) return; // the file changed again while this answer was on its way
  state.summary = summary;
  const labels = pointLabels(summary);
  if (labels.length) {
    const { values, value } = refillPoints(labels, pointWidget.value, { whenMissing });
    pointWidget.options.values = values;
    if (value !== pointWidget.value) {
      pointWidget.value = value;
      pointWidget.callback?.(value);
    }
  } else if (summary.error) {
    console.warn(LOG_PREFIX, `schedule ${source}: ${summary.error}`);
  }
  state.plot?.show(summary, pointName(pointWidget.value));
  node.setDirtyCanvas?.(true, true);
}

function chainCallback(target, name, after) {
  const before = target[name];
  target[name] = function (...args) {
    const result = before?.apply(this, args);
    after.apply(this, args);
    return result;
  };
}

function removePlot(node, error) {
  console.error(LOG_PREFIX, "the frontier plot cannot draw here; the point dropdown still works.", error);
  const state = stateOf(node);
  if (state.plotWidget && node.widgets?.includes(state.plotWidget)) {
    state.plot?.dispose();
    node.removeWidget(state.plotWidget);
    node.setSize?.([node.size[0], node.computeSize()[1]]);
  }
  state.plot = null;
  state.plotWidget = null;
  node.setDirtyCanvas?.(true, true);
}

function addPlot(node) {
  const state = stateOf(node);
  const plot = new FrontierPlot({
    onSelect(mark) {
      const pointWidget = widget(node, "point");
      if (!pointWidget || !mark.label || pointWidget.value === mark.label) return;
      pointWidget.value = mark.label;
      pointWidget.callback?.(mark.label);
      node.setDirtyCanvas?.(true, true);
    },
    onError: (error) => removePlot(node, error),
  });
  // Right-click and wheel over the plot behave as over the canvas (menus, zoom), like ComfyUI's own DOM widgets.
  plot.element.addEventListener("pointerdown", (e) => {
    if (e.button !== 0) app.canvas?.processMouseDown?.(e);
  });
  plot.element.addEventListener("wheel", (e) => app.canvas?.processMouseWheel?.(e), { passive: true });
  const plotWidget = node.addDOMWidget(PLOT_WIDGET, "ecad-plot", plot.element, {
    serialize: false, // not an input of the node: kept out of the prompt
    getMinHeight: () => PLOT_HEIGHT,
    hideOnZoom: true,
  });
  plotWidget.serialize = false; // and out of the saved workflow's widgets_values
  plotWidget.plot = plot; // for tests and tooling: node.widgets[...].plot.marks()
  state.plot = plot;
  state.plotWidget = plotWidget;
  node.setSize?.([Math.max(node.size[0], 340), node.computeSize()[1]]);
}

function setUpNode(node) {
  const scheduleWidget = widget(node, "schedule");
  const pointWidget = widget(node, "point");
  if (!scheduleWidget || !pointWidget) return;
  chainCallback(scheduleWidget, "callback", () => void update(node, "first"));
  chainCallback(pointWidget, "callback", (value) => stateOf(node).plot?.select(pointName(value)));
  try {
    addPlot(node);
  } catch (error) {
    removePlot(node, error);
  }
  void update(node, "first");
}

/** Every "ECAD Load Schedule" in the graph, inside subgraphs too. */
function ecadNodes(graph, found = []) {
  for (const node of graph?.nodes ?? []) {
    if (node.isSubgraphNode?.() && node.subgraph) ecadNodes(node.subgraph, found);
    if (node.type === NODE_TYPE || node.comfyClass === NODE_TYPE) found.push(node);
  }
  return found;
}

app.registerExtension({
  name: "ECAD.ScheduleUI",

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE_TYPE) return;
    chainCallback(nodeType.prototype, "onNodeCreated", function () {
      try {
        setUpNode(this);
      } catch (error) {
        console.error(LOG_PREFIX, "could not set up the schedule picker; plain dropdowns remain.", error);
      }
    });
    // A loaded workflow (or a pasted node) sets its widget values after creation: refill for those values,
    // keeping a point that no longer exists so that running the workflow reports it by name.
    chainCallback(nodeType.prototype, "onConfigure", function () {
      void update(this, "keep");
    });
    chainCallback(nodeType.prototype, "onRemoved", function () {
      stateOf(this).plot?.dispose();
    });
  },

  // ComfyUI's refresh (R, or "Refresh Node Definitions") re-reads the file lists and resets the point list
  // to every file's points: narrow it again, and re-read the chosen file (an optimizer run may have rewritten it).
  async refreshComboInNodes() {
    await Promise.all(ecadNodes(app.graph).map((node) => update(node, "keep")));
  },
});

"""The web extension in ComfyUI's real frontend, in headless Chromium: the frontend package the ComfyUI under test
pins (1.27.x for v0.3.64, 1.43.x for v0.20.1; scripts/dev.sh installs each in its own venv).

Starts ``main.py --cpu`` from COMFYUI_PATH with this pack and two made-up schedule files, adds "ECAD Load
Schedule" to the canvas, switches files through the combo's own menu, clicks and hovers the plot, refreshes
after new files appear, and runs the "ECAD Schedule Preview" node. Screenshots go to the test's folder; with
ECAD_UPDATE_SCREENSHOTS=1 they are also copied to docs/images/.

Needs COMFYUI_PATH, the ``playwright`` package and Debian's ``chromium`` (/usr/bin/chromium, or ECAD_CHROMIUM).
"""
from __future__ import annotations

import json
import os
import shutil
import urllib.request
from pathlib import Path

import pytest

from comfy_server import REPO, start_server
from conftest import COMFYUI_ROOT
from frontier_files import write_flux, write_pixart

pytestmark = pytest.mark.comfy

CHROMIUM = Path(os.environ.get("ECAD_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"]
SCREENSHOTS = REPO / "docs" / "images"
TIMEOUT_MS = 30_000

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

if COMFYUI_ROOT is not None and sync_playwright is None:
    pytest.skip("the e2e test needs the playwright package (pip install playwright)", allow_module_level=True)
if COMFYUI_ROOT is not None and not CHROMIUM.exists():
    pytest.skip(f"the e2e test needs Chromium at {CHROMIUM} (apt-get install chromium, or set ECAD_CHROMIUM)",
                allow_module_level=True)

# Page helpers: the node, its widgets and where things are on screen.
HELPERS = """
window.ecadTest = {
  node: () => app.graph.nodes.find((n) => n.type === "ECADLoadSchedule"),
  widget: (name) => ecadTest.node().widgets.find((w) => w.name === name),
  plotWidget: () => ecadTest.widget("ecad_frontier_plot"),
  clientOf(graphX, graphY) {
    const [x, y] = app.canvas.ds.convertOffsetToCanvas([graphX, graphY]);
    const rect = app.canvas.canvas.getBoundingClientRect();
    return [rect.left + x, rect.top + y];
  },
  widgetCentre(name) {
    const node = ecadTest.node();
    const w = ecadTest.widget(name);
    return ecadTest.clientOf(node.pos[0] + node.size[0] / 2, node.pos[1] + w.y + (w.computedHeight ?? 20) / 2);
  },
  markClient(name) {
    const plot = ecadTest.plotWidget().plot;
    const mark = plot.marks().find((m) => m.name === name);
    const rect = plot.element.getBoundingClientRect();
    const k = rect.width / plot.element.clientWidth;
    return [rect.left + mark.px * k, rect.top + mark.py * k];
  },
  nodeBox(node, pad) {
    const [x0, y0] = ecadTest.clientOf(node.pos[0], node.pos[1] - LiteGraph.NODE_TITLE_HEIGHT);
    const [x1, y1] = ecadTest.clientOf(node.pos[0] + node.size[0], node.pos[1] + node.size[1]);
    return { x: x0 - pad, y: y0 - pad, width: x1 - x0 + 2 * pad, height: y1 - y0 + 2 * pad };
  },
  highlightPixels() {
    // Pixels of the selected point's colour (#ffc53d) on the plot canvas: proof that it drew and highlighted.
    const canvas = ecadTest.plotWidget().plot.canvas;
    const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let n = 0;
    for (let i = 0; i < data.length; i += 4) if (data[i] === 0xff && data[i + 1] === 0xc5 && data[i + 2] === 0x3d) n++;
    return n;
  },
};
"""


def write_initial(base: Path) -> None:
    folder = base / "models" / "ecad_schedules"
    write_flux(folder / "flux-dev.json")          # points gen40-a..e, measured speedups, IR, two FORA baselines
    write_pixart(folder / "pixart-alpha.json")    # points safe, gen40-b, quick: MAC ratios, PSNR, one baseline


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = start_server(COMFYUI_ROOT, tmp_path_factory.mktemp("comfy-e2e"), before_start=write_initial)
    yield s
    s.stop()


# A first visit opens the "Get Started with a Template" dialog over the canvas, and the minimap sits in a corner
# of it: both are settings of the (temporary) user.
QUIET_SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False}


def apply_settings(server) -> None:
    for key, setting in QUIET_SETTINGS.items():
        request = urllib.request.Request(f"{server.url}/api/settings/{key}", data=json.dumps(setting).encode(),
                                         method="POST", headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=30).close()


@pytest.fixture
def page(server):
    apply_settings(server)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 900}, device_scale_factor=2)  # a sharp screenshot
        page.set_default_timeout(TIMEOUT_MS)
        page.console_messages = []
        page.on("console", lambda m: page.console_messages.append((m.type, m.text)))
        page.on("pageerror", lambda e: page.console_messages.append(("pageerror", str(e))))
        page.goto(server.url + "/", wait_until="networkidle")
        page.wait_for_function("window.app && window.app.graph && window.LiteGraph")
        page.evaluate(HELPERS)
        yield page
        browser.close()


def options(page, name: str) -> list[str]:
    return page.evaluate(f"ecadTest.widget({name!r}).options.values")


def value(page, name: str) -> str:
    return page.evaluate(f"ecadTest.widget({name!r}).value")


def pick_from_combo(page, widget: str, entry: str) -> None:
    """What a user does: click the combo on the canvas, then the entry in LiteGraph's menu."""
    x, y = page.evaluate(f"ecadTest.widgetCentre({widget!r})")
    page.mouse.click(x, y)
    page.locator(".litecontextmenu .litemenu-entry", has_text=entry).first.click()


def save_screenshot(page, box: dict, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), clip=box)
    if os.environ.get("ECAD_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SCREENSHOTS / name)
    return path


def test_the_schedule_picker_follows_the_file_plots_the_frontier_and_picks_by_click(server, page, tmp_path):
    flux_points = server.get("/api/ecad/schedules/summary?name=flux-dev.json")["points"]
    flux = [p["label"] for p in flux_points]
    pixart = [p["label"] for p in server.get("/api/ecad/schedules/summary?name=pixart-alpha.json")["points"]]

    page.evaluate("""() => {
      app.graph.clear();
      const load = LiteGraph.createNode("ECADLoadSchedule");
      load.pos = [80, 180];
      app.graph.add(load);
      const preview = LiteGraph.createNode("ECADSchedulePreview");
      preview.pos = [460, 80];
      app.graph.add(preview);
      load.connect(0, preview, 0);
      app.canvas.ds.offset = [0, 0];
      app.canvas.ds.scale = 1;
      app.canvas.setDirty(true, true);
    }""")
    # A new node shows the first file: its points only, and a drawn plot.
    page.wait_for_function("ecadTest.plotWidget()?.plot.canvas.dataset.state === 'plot'")
    assert value(page, "schedule") == "flux-dev.json"
    page.wait_for_function(f"ecadTest.widget('point').options.values.length === {len(flux)}")
    assert options(page, "point") == flux
    assert page.evaluate("ecadTest.plotWidget().plot.marks().length") == 5 + 2  # points and FORA baselines

    # Picking a point in the dropdown moves the highlight.
    pick_from_combo(page, "point", "gen40-b")
    assert value(page, "point") == flux[1]
    assert page.evaluate("ecadTest.plotWidget().plot.marks().find((m) => m.selected).name") == "gen40-b"

    # Switching the file refills the dropdown at once and keeps the point of the same name.
    pick_from_combo(page, "schedule", "pixart-alpha.json")
    page.wait_for_function(f"ecadTest.widget('point').options.values.length === {len(pixart)} "
                           f"&& ecadTest.widget('point').options.values[0] === {json.dumps(pixart[0])}")
    assert options(page, "point") == pixart
    assert value(page, "point") == pixart[1] and pixart[1].startswith("gen40-b · ") and pixart[1] != flux[1]
    page.wait_for_function("ecadTest.plotWidget().plot.marks().length === 4")
    page.wait_for_timeout(200)
    assert page.evaluate("ecadTest.plotWidget().plot.canvas.dataset.state") == "plot"
    assert page.evaluate("ecadTest.highlightPixels()") > 20

    # Clicking a point of the plot selects it in the dropdown.
    x, y = page.evaluate("ecadTest.markClient('quick')")
    page.mouse.click(x, y)
    assert value(page, "point") == pixart[2]
    assert page.evaluate("ecadTest.plotWidget().plot.marks().find((m) => m.selected).name") == "quick"

    # Hovering shows the point's figures.
    x, y = page.evaluate("ecadTest.markClient('safe')")
    page.mouse.move(x, y)
    tooltip = page.locator(".ecad-frontier-tooltip")
    tooltip.wait_for(state="visible")
    text = tooltip.inner_text()
    assert text.startswith("safe\n") and "by MACs, not measured" in text and "PSNR" in text and "TMAC" in text

    # The built-in heuristics: their names in the dropdown, and a note instead of a plot (they have no figures).
    pick_from_combo(page, "schedule", "heuristics (any model)")
    page.wait_for_function("ecadTest.plotWidget().plot.canvas.dataset.state === 'message'")
    assert options(page, "point") == [h["label"] for h in server.get(
        "/api/ecad/schedules/summary?name=heuristics%20(any%20model)")["points"]]
    assert value(page, "point") == "no caching (reference)"

    # Back to the FLUX file, which has no point of that name: the user's switch picks its first point.
    pick_from_combo(page, "schedule", "flux-dev.json")
    page.wait_for_function(f"ecadTest.widget('point').options.values[0] === {json.dumps(flux[0])}")
    assert options(page, "point") == flux and value(page, "point") == flux[0]
    page.wait_for_function("ecadTest.plotWidget().plot.marks().length === 7")
    x, y = page.evaluate("ecadTest.markClient('gen40-c')")
    page.mouse.click(x, y)
    assert value(page, "point") == flux[2]

    # Queue the workflow: the plot widget stays out of the prompt, and the preview node shows the mask.
    page.evaluate("""() => {
      ecadTest.node().setSize([440, 440]);  // room for the plot in the picture
      const preview = app.graph.nodes.find((n) => n.type === 'ECADSchedulePreview');
      preview.pos = [560, 180];
      preview.setSize([560, 500]);
    }""")
    page.evaluate("app.queuePrompt(0, 1)")
    page.wait_for_function("app.graph.nodes.find((n) => n.type === 'ECADSchedulePreview').imgs?.length > 0", timeout=120_000)
    history = server.get("/api/history")
    (run,) = history.values()
    assert run["status"]["status_str"] == "success"
    assert run["prompt"][2]["1"]["inputs"] == {"schedule": "flux-dev.json", "point": flux[2]}  # no plot widget in it
    page.wait_for_timeout(500)
    box = page.evaluate("""() => {
      const boxes = app.graph.nodes.map((n) => ecadTest.nodeBox(n, 30));
      const x = Math.min(...boxes.map((b) => b.x)), y = Math.min(...boxes.map((b) => b.y));
      const right = Math.max(...boxes.map((b) => b.x + b.width)), bottom = Math.max(...boxes.map((b) => b.y + b.height));
      return { x, y, width: right - x, height: bottom - y };
    }""")
    page.evaluate("app.canvas.deselectAll(); app.canvas.setDirty(true, true)")  # no selection outline or toolbox
    x, y = page.evaluate("ecadTest.markClient('gen40-d')")
    page.mouse.move(x, y)  # a hover box in the picture
    tooltip.wait_for(state="visible")
    assert tooltip.inner_text().startswith(f"gen40-d\n{flux_points[3]['measured_speedup']:.2f}× measured")
    shot = save_screenshot(page, box, tmp_path, "ecad-load-schedule.png")
    assert shot.stat().st_size > 10_000

    errors = [m for m in page.console_messages if m[0] in ("error", "pageerror") and "ECAD" in m[1]]
    assert errors == []


def add_load_node(page) -> None:
    page.evaluate("""() => {
      app.graph.clear();
      const load = LiteGraph.createNode("ECADLoadSchedule");
      load.pos = [80, 180];
      app.graph.add(load);
    }""")
    page.wait_for_function("ecadTest.plotWidget()?.plot.canvas.dataset.state === 'plot'")


def test_a_refresh_picks_up_new_and_rewritten_files(server, page):
    folder = server.schedules
    write_pixart(folder / "refresh-me.json")
    page.reload(wait_until="networkidle")  # the new file is in the lists from the start
    page.wait_for_function("window.app && window.app.graph && window.LiteGraph")
    page.evaluate(HELPERS)
    add_load_node(page)
    pick_from_combo(page, "schedule", "refresh-me.json")
    page.wait_for_function("ecadTest.widget('point').options.values.length === 3")
    pick_from_combo(page, "point", "quick")
    before = value(page, "point")

    # An optimizer run finishes: a new file, and the open file rewritten with one more point and new figures.
    write_flux(folder / "run-2.json", names=("gen80-a", "gen80-b"), seed=7)
    write_pixart(folder / "refresh-me.json", names=("safe", "gen40-b", "quick", "gen80-new"), seed=2)
    page.mouse.click(1200, 800)  # focus the canvas, away from the node
    page.keyboard.press("r")     # ComfyUI's "Refresh Node Definitions"
    page.wait_for_function("ecadTest.widget('schedule').options.values.includes('run-2.json')")
    page.wait_for_function("ecadTest.widget('point').options.values.length === 4")
    labels = options(page, "point")
    assert [label.split(" · ")[0] for label in labels] == ["safe", "gen40-b", "quick", "gen80-new"]
    assert value(page, "point") == labels[2] != before  # the same point, with its new figures
    page.wait_for_function("ecadTest.plotWidget().plot.marks().filter((m) => m.role === 'point').length === 4")

    # A file that turns corrupt shows its error on the plot; the node keeps its values.
    (folder / "refresh-me.json").write_text("{")
    page.keyboard.press("r")
    page.wait_for_function("ecadTest.plotWidget().plot.canvas.dataset.state === 'message'")
    assert value(page, "schedule") == "refresh-me.json" and value(page, "point") == labels[2]
    assert page.evaluate("ecadTest.plotWidget().plot.model.message").startswith("refresh-me.json: is not valid JSON")


def test_a_loaded_workflow_keeps_its_point_by_name_and_keeps_a_missing_one_for_validation_to_report(server, page):
    pixart = [p["label"] for p in server.get("/api/ecad/schedules/summary?name=pixart-alpha.json")["points"]]
    add_load_node(page)
    workflow = page.evaluate("app.graph.serialize()")
    (node,) = workflow["nodes"]
    assert node["widgets_values"] == ["flux-dev.json", value(page, "point")]  # the plot is not saved

    node["widgets_values"] = ["pixart-alpha.json", "gen40-b · 0.00× · figures from an older run"]
    page.evaluate("(wf) => app.loadGraphData(wf)", workflow)
    page.wait_for_function(f"ecadTest.widget('point').value === {json.dumps(pixart[1])}")
    assert options(page, "point") == pixart

    # Another file, whose point was renamed since: the stale value stays (the list is the file's, 5 points).
    node["widgets_values"] = ["flux-dev.json", "renamed-point · 2.00× · IR 1.00"]
    page.evaluate("(wf) => app.loadGraphData(wf)", workflow)
    page.wait_for_function("ecadTest.widget('point').options.values.length === 5"
                           " && ecadTest.plotWidget().plot.summary?.name === 'flux-dev.json'")
    assert value(page, "point") == "renamed-point · 2.00× · IR 1.00"


def test_when_the_plot_cannot_draw_the_node_falls_back_to_the_plain_dropdowns(server, page):
    add_load_node(page)
    # A canvas that gives no 2D context (e.g. too many canvases in the browser) makes the next draw fail.
    page.evaluate("ecadTest.plotWidget().plot.canvas.getContext = () => null")
    pick_from_combo(page, "schedule", "pixart-alpha.json")
    page.wait_for_function("!ecadTest.plotWidget()")
    page.wait_for_function("ecadTest.widget('point').options.values.length === 3")
    assert value(page, "point").startswith("safe · ")
    logged = [text for kind, text in page.console_messages if kind == "error" and "[ComfyUI-ECAD]" in text]
    assert logged and "the frontier plot cannot draw here; the point dropdown still works" in logged[0]
    assert [w for w in page.evaluate("ecadTest.node().widgets.map((w) => w.name)")] == ["schedule", "point"]

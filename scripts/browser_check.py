"""Load UI workflows into a running ComfyUI's page in headless Chromium, convert them, queue them, and check what the
user would see: every node known, the prompt equal to the API twin, outputs arriving, players and previews filled.

usage: python -m scripts.browser_check --url http://127.0.0.1:8188 [--chromium /usr/bin/chromium]
           [--thumbnails DIR] [--clip-seconds 3] workflows/*.json
Needs the `playwright` Python package (any browser build; --chromium points at a system Chromium).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

# Widgets the frontend adds for display; their (empty) values appear in graphToPrompt but mean nothing to a node.
DISPLAY_ONLY_INPUTS = ("audioUI", "upload")

INSPECT = """() => app.graph._nodes.map((node) => {
  const player = (node.widgets || []).find((w) => w.name === "audioUI");
  const panel = (node.widgets || []).find((w) => w.name === "pae_players");
  return {id: String(node.id), type: node.type, known: !!node.constructor.nodeData, errors: !!node.has_errors,
          player: player?.element?.src || "", panel_audio: panel ? [...panel.element.querySelectorAll("audio")]
            .map((a) => a.src) : [], ab: panel ? panel.element.querySelectorAll("button.pae-ab").length : 0,
          // The classic renderer draws node.imgs on the canvas; the Vue renderer puts <img> in the node's element.
          images: Math.max((node.imgs || []).filter((img) => img.complete && img.naturalWidth > 0).length,
            [...document.querySelectorAll(`[data-node-id="${node.id}"] img`)]
              .filter((img) => img.complete && img.naturalWidth > 0).length),
          box: [node.pos[0], node.pos[1] - (window.LiteGraph?.NODE_TITLE_HEIGHT ?? 30), node.size[0],
                node.size[1] + (window.LiteGraph?.NODE_TITLE_HEIGHT ?? 30)],
          fit: node.computeSize ? node.computeSize() : node.size,
          buttons: (node.widgets || []).filter((w) => w.type === "button").map((w) => w.name),
          choices: Object.fromEntries((node.widgets || []).filter((w) => Array.isArray(w.options?.values))
            .map((w) => [w.name, w.options.values]))};
})"""
FRONTEND_NODES = ("Note", "MarkdownNote")  # the page's own nodes, never sent to the server
LOADERS = ("PAE_LoadModel", "PAE_LoadSAOInstruct", "PAE_LoadCLAP", "PAE_LoadMusicGen", "PAE_LoadAPAdapter")


def without_appended_defaults(prompt: dict[str, Any], api: dict[str, Any], node_info: dict[str, Any]) -> dict:
    """The page's prompt without optional inputs the API twin predates, where they hold their default (the
    frontend fills an appended widget with its default; the server does the same for a missing one)."""
    result = json.loads(json.dumps(prompt))
    for node_id, node in result.items():
        stored = api.get(node_id, {}).get("inputs", {})
        optional = node_info.get(node["class_type"], {}).get("input", {}).get("optional", {})
        for name in [k for k in node["inputs"] if k not in stored and k in optional]:
            spec = optional[name]
            default = spec[1].get("default") if len(spec) > 1 and isinstance(spec[1], dict) else None
            if node["inputs"][name] == default:
                del node["inputs"][name]
    return result


GAP = 30  # pixels between nodes moved apart


def relayout(nodes: list[dict[str, Any]]) -> dict[str, list[float]]:
    """New top-left corners (title bar included) that keep every node clear of the others at its run-time size:
    of two overlapping nodes the lower (or, level, the right) one moves down below the other, until none overlap."""
    boxes = {n["id"]: list(n["box"]) for n in nodes}
    for _ in range(200):
        moved = False
        order = sorted(boxes, key=lambda k: (boxes[k][1], boxes[k][0]))
        for i, a in enumerate(order):
            for b in order[i + 1:]:
                (ax, ay, aw, ah), (bx, by, bw, bh) = boxes[a], boxes[b]
                if ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah:
                    boxes[b][1] = ay + ah + GAP
                    moved = True
        if not moved:
            break
    return {k: v[:2] for k, v in boxes.items()}


def write_layout(path: Path, nodes: list[dict[str, Any]], title_height: float) -> None:
    """Store run-time sizes and overlap-free positions in the UI workflow file (nothing else changes)."""
    ui = json.loads(path.read_text())
    sizes = {n["id"]: n["box"][2:] for n in nodes}
    for n in nodes:  # widened to fit before moving apart
        n["box"][2] = max(n["box"][2], n["fit"][0])
    corners = relayout(nodes)
    for node in ui["nodes"]:
        key = str(node["id"])
        if key in corners:
            node["pos"] = [round(corners[key][0]), round(corners[key][1] + title_height)]
            fit = next(n["fit"] for n in nodes if n["id"] == key)  # wide enough for the title and labels
            node["size"] = [round(max(sizes[key][0], fit[0])), round(sizes[key][1] - title_height)]
    path.write_text(json.dumps(ui, indent=2, ensure_ascii=False) + "\n")


def fit_view_script() -> str:
    """Page script: zoom and pan the canvas so the whole graph fills it (for cropped thumbnails)."""
    return """() => {
      const c = app.canvas, nodes = app.graph._nodes, t = window.LiteGraph?.NODE_TITLE_HEIGHT ?? 30;
      const x0 = Math.min(...nodes.map((n) => n.pos[0])) - 20, y0 = Math.min(...nodes.map((n) => n.pos[1] - t)) - 20;
      const x1 = Math.max(...nodes.map((n) => n.pos[0] + n.size[0])) + 20;
      const y1 = Math.max(...nodes.map((n) => n.pos[1] + n.size[1])) + 20;
      const rect = c.canvas.getBoundingClientRect();
      const scale = Math.min(rect.width / (x1 - x0), rect.height / (y1 - y0));
      c.ds.scale = scale;
      c.ds.offset = [rect.width / (2 * scale) - (x0 + x1) / 2, rect.height / (2 * scale) - (y0 + y1) / 2];
      c.setDirty(true, true);
      return [rect.x, rect.y, rect.width, rect.height, scale, x0, y0, x1, y1];
    }"""


def shrink(png: Path, jpg: Path, width: int = 1024) -> None:
    """A screenshot scaled to the template browser's size, as JPEG."""
    from PIL import Image

    with Image.open(png) as image:
        image = image.convert("RGB")
        image.thumbnail((width, width))
        image.save(jpg, quality=80)
    png.unlink()


def check_get_models(page: Any, name: str, value: str) -> list[str]:
    """Press a loader's Get models… button, download `name` from the dialog and check the dropdown offers `value`."""
    problems = []
    node_type = page.evaluate("""(value) => { const n = app.graph._nodes.find((n) => (n.widgets || [])
        .some((w) => w.name === "Get models…")); if (!n) return null;
        n.widgets.find((w) => w.name === "Get models…").callback(); return n.type; }""", value)
    if node_type is None:
        return ["no loader node with a Get models… button in the graph"]
    page.wait_for_selector(f'.pae-models .pae-model[data-name="{name}"] button', timeout=20000)
    page.click(f'.pae-models .pae-model[data-name="{name}"] button')
    page.wait_for_function(f"""() => document.querySelector('.pae-model[data-name="{name}"] .pae-state')
        ?.textContent === 'installed'""", timeout=120000)
    page.wait_for_timeout(1500)  # the dropdowns refresh on the done event
    offered = page.evaluate("""(value) => app.graph._nodes.some((n) => (n.widgets || []).some((w) =>
        Array.isArray(w.options?.values) && w.options.values.includes(value)))""", value)
    if not offered:
        problems.append(f"after downloading {name} no dropdown offers {value}")
    page.click(".pae-models .pae-close")
    return problems


# Node types that drew a live sampling preview (ComfyUI's b_preview frames) on the page, in either renderer: the classic
# canvas keeps them in app.nodePreviewImages, the Vue renderer also draws them as <img> inside the node.
LIVE_PREVIEWS = """() => { const seen = new Set();
    for (const [id, urls] of Object.entries(app.nodePreviewImages || {}))
        if (urls && urls.length) seen.add(app.graph.getNodeById(id)?.type);
    const running = app.graph.getNodeById(app.runningNodeId ?? -1);
    if (running && document.querySelector(`[data-node-id="${running.id}"] img[src^="blob:"]`)) seen.add(running.type);
    return [...seen].filter(Boolean); }"""


def overlaps(nodes: list[dict[str, Any]]) -> list[str]:
    """Pairs of nodes whose boxes (title bar included) cover each other after the run."""
    found = []
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            (ax, ay, aw, ah), (bx, by, bw, bh) = a["box"], b["box"]
            if ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah:
                found.append(f"node {a['id']} ({a['type']}) overlaps node {b['id']} ({b['type']})")
    return found


def comparable(graph: dict[str, Any]) -> dict[str, Any]:
    """An API graph without display-only inputs, numbers as floats (the frontend writes 10 as 10, Python 10.0)."""
    def number(value: Any) -> Any:
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    return {node_id: {"class_type": node["class_type"],
                      "inputs": {k: number(v) for k, v in node["inputs"].items() if k not in DISPLAY_ONLY_INPUTS}}
            for node_id, node in graph.items()}


def check_workflows(url: str, ui_paths: list[Path], chromium: str | None = None, thumbnails: Path | None = None,
                    clip_seconds: float | None = 3.0, timeout_s: float = 600.0,
                    screenshots: Path | None = None, vue: bool = False,
                    relayout_files: bool = False, get_models: tuple[str, str] | None = None,
                    live_previews: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """Run each workflow through the page; return one report per workflow (problems listed, empty when all is well)."""
    from playwright.sync_api import sync_playwright

    reports = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        # Thumbnails are drawn large (the canvas drops text below 0.6 zoom) and scaled down afterwards.
        page = browser.new_page(viewport={"width": 2800, "height": 1600} if thumbnails else
                                {"width": 1600, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)[:300]))
        page.goto(url)
        page.wait_for_function("window.app && window.app.graph && window.LiteGraph", timeout=120000)
        page.wait_for_timeout(1500)
        # The Vue node renderer ("Nodes 2.0") or the classic canvas, as the user's setting says.
        page.evaluate("""async (on) => { const settings = app.extensionManager?.setting;
            await settings?.set('Comfy.VueNodes.Enabled', on);
            await settings?.set('Comfy.Minimap.Visible', false); }""", vue)
        page.wait_for_timeout(500)
        node_info = page.evaluate("async () => await (await fetch('/object_info')).json()")
        for path in ui_paths:
            problems: list[str] = []
            errors.clear()
            page.keyboard.press("Escape")
            page.evaluate("(ui) => app.loadGraphData(ui)", json.loads(path.read_text()))
            page.wait_for_timeout(1000)
            page.keyboard.press("Escape")
            nodes = page.evaluate(INSPECT)
            problems += [f"node {n['id']} ({n['type']}) is unknown to the page" for n in nodes
                         if not n["known"] and n["type"] not in FRONTEND_NODES]
            problems += [f"loader node {n['id']} ({n['type']}) has no Get models… button" for n in nodes
                         if n["type"] in LOADERS and "Get models…" not in n["buttons"]]
            prompt = page.evaluate("async () => (await app.graphToPrompt()).output")
            api_path = path.parent / "api" / f"{path.stem}_api.json"
            if api_path.is_file():
                prompt = without_appended_defaults(prompt, json.loads(api_path.read_text()), node_info)
            if api_path.is_file() and comparable(prompt) != comparable(json.loads(api_path.read_text())):
                ours, theirs = comparable(prompt), comparable(json.loads(api_path.read_text()))
                differ = sorted(set(ours) ^ set(theirs)) + [k for k in ours if k in theirs and ours[k] != theirs[k]]
                problems.append(f"graphToPrompt differs from {api_path.name} at nodes {differ}: "
                                + "; ".join(f"{k}: {ours.get(k)} vs {theirs.get(k)}" for k in differ[:2])[:600])
            if clip_seconds:
                page.evaluate("""(seconds) => app.graph._nodes.filter((n) => n.type === "PAE_LoadAudio")"""
                              """.forEach((n) => {
                    const w = n.widgets.find((w) => w.name === "duration"); w.value = seconds; })""", clip_seconds)
            before = page.evaluate("async () => Object.keys(await (await fetch('/history?max_items=10000'))"
                                   ".json()).length")
            page.evaluate("() => app.queuePrompt(0, 1)")
            deadline = time.monotonic() + timeout_s
            previewed: set[str] = set()
            while not page.evaluate("""async (count) => {
                    const queue = await (await fetch('/queue')).json();
                    const done = Object.keys(await (await fetch('/history?max_items=10000')).json()).length;
                    return done > count && !queue.queue_running.length && !queue.queue_pending.length; }""", before):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{path.name} did not finish within {timeout_s} s")
                shown = set(page.evaluate(LIVE_PREVIEWS)) - previewed
                if shown and screenshots is not None:  # the first live preview of each node, as the user sees it
                    screenshots.mkdir(parents=True, exist_ok=True)
                    for node_type in sorted(shown):
                        page.evaluate("""(type) => { const n = app.graph._nodes.find((n) => n.type === type);
                            app.canvas.centerOnNode(n); app.canvas.setDirty(true, true); }""", node_type)
                        page.wait_for_timeout(150)
                        page.screenshot(path=str(screenshots / f"{path.stem}_live_{node_type}.png"))
                previewed |= shown
                page.wait_for_timeout(250 if live_previews else 1000)
            if live_previews:
                missing = sorted(t for t in live_previews & {n["type"] for n in nodes} if t not in previewed)
                problems += [f"{t} showed no live preview while it ran" for t in missing]
            status = page.evaluate("""async () => {
                const history = Object.values(await (await fetch('/history?max_items=10000')).json());
                return history.sort((a, b) => b.prompt[0] - a.prompt[0])[0].status; }""")
            if status.get("status_str") != "success":
                problems.append(f"the run failed: {json.dumps(status.get('messages'))[:600]}")
            # The canvas loads a node's preview images when it draws the node: bring each output node into view.
            for node_id in page.evaluate("""() => app.graph._nodes.filter((n) => n.constructor.nodeData?.output_node)
                                            .map((n) => n.id)"""):
                page.evaluate("(id) => { app.canvas.centerOnNode(app.graph.getNodeById(id)); "
                              "app.canvas.setDirty(true, true); }", node_id)
                page.wait_for_timeout(700)
            nodes = page.evaluate(INSPECT)
            if screenshots is not None:  # the last output node in view, after the run
                screenshots.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshots / f"{path.stem}_after_run.png"))
            for node in nodes:
                if node["type"] == "PAE_SaveAudio":
                    if "/view?" not in node["player"]:
                        problems.append(f"Save Audio node {node['id']} has no player source")
                    if node["images"] < 1:
                        problems.append(f"Save Audio node {node['id']} shows no spectrogram")
                if node["type"] == "PAE_CompareAudio" and (len(node["panel_audio"]) < 2 or node["ab"] < 1):
                    problems.append(f"Before / After node {node['id']} has no paired players")
                if node["type"] == "PreviewImage" and node["images"] < 1:
                    problems.append(f"Preview Image node {node['id']} shows no image")
            if relayout_files:
                write_layout(path, nodes, page.evaluate("() => window.LiteGraph?.NODE_TITLE_HEIGHT ?? 30"))
                page.evaluate("(ui) => app.loadGraphData(ui)", json.loads(path.read_text()))
                page.wait_for_timeout(800)
            problems += overlaps(nodes if not relayout_files else page.evaluate(INSPECT))
            if get_models is not None:
                problems += check_get_models(page, *get_models)
                get_models = None  # once
            if thumbnails is not None:  # the graph alone, fitted to the canvas and cropped to it
                thumbnails.mkdir(parents=True, exist_ok=True)
                x, y, w, h, scale, x0, y0, x1, y1 = page.evaluate(fit_view_script())
                page.wait_for_timeout(600)
                width, height = min(w, (x1 - x0) * scale), min(h, (y1 - y0) * scale)
                shot = thumbnails / f"{path.stem}.png"
                page.screenshot(path=str(shot), clip={"x": x + (w - width) / 2, "y": y + (h - height) / 2,
                                                      "width": width, "height": height})
                shrink(shot, thumbnails / f"{path.stem}.jpg")
            problems += [f"page error: {e}" for e in errors if "reading 'id'" not in e]
            reports.append({"workflow": path.name, "problems": problems, "nodes": nodes})
        browser.close()
    return reports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workflows", nargs="+", type=Path)
    parser.add_argument("--url", required=True)
    parser.add_argument("--chromium", default=None, help="a Chromium executable (e.g. /usr/bin/chromium)")
    parser.add_argument("--thumbnails", type=Path, default=None, help="write <name>.jpg screenshots here")
    parser.add_argument("--screenshots", type=Path, default=None, help="write <name>_after_run.png here")
    parser.add_argument("--clip-seconds", type=float, default=3.0, help="shorten Load Audio to this; 0 keeps it")
    parser.add_argument("--vue", action="store_true", help="with the Vue node renderer (Comfy.VueNodes.Enabled)")
    parser.add_argument("--relayout", action="store_true", help="move overlapping nodes apart at their run-time "
                        "size and write the positions and sizes into the workflow files")
    parser.add_argument("--live-previews", default="", metavar="TYPES",
                        help="comma-separated node types that must draw a live preview while they run (ComfyUI "
                        "started with --preview-method auto), e.g. PAE_DDIMInvert,PAE_Fuser")
    parser.add_argument("--get-models", nargs=2, metavar=("NAME", "VALUE"), default=None,
                        help="press a loader's Get models… button, download NAME and check a dropdown offers VALUE")
    args = parser.parse_args(argv)
    reports = check_workflows(args.url, args.workflows, args.chromium, args.thumbnails, args.clip_seconds or None,
                               screenshots=args.screenshots, vue=args.vue, relayout_files=args.relayout,
                              get_models=tuple(args.get_models) if args.get_models else None,
                              live_previews=frozenset(t for t in args.live_previews.split(",") if t))
    for report in reports:
        shown = {n["type"]: n for n in report["nodes"]}
        summary = ", ".join(f"{t}: player={'yes' if n['player'] or n['panel_audio'] else 'no'} images={n['images']}"
                            for t, n in shown.items() if t in ("PAE_SaveAudio", "PAE_CompareAudio", "PreviewImage"))
        print(f"{report['workflow']}: {'ok' if not report['problems'] else 'PROBLEMS'} ({summary})")
        for problem in report["problems"]:
            print(f"  - {problem}")
    return 1 if any(r["problems"] for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())

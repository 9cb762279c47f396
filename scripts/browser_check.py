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
          images: (node.imgs || []).filter((img) => img.complete && img.naturalWidth > 0).length};
})"""


def comparable(graph: dict[str, Any]) -> dict[str, Any]:
    """An API graph without display-only inputs, numbers as floats (the frontend writes 10 as 10, Python 10.0)."""
    def number(value: Any) -> Any:
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    return {node_id: {"class_type": node["class_type"],
                      "inputs": {k: number(v) for k, v in node["inputs"].items() if k not in DISPLAY_ONLY_INPUTS}}
            for node_id, node in graph.items()}


def check_workflows(url: str, ui_paths: list[Path], chromium: str | None = None, thumbnails: Path | None = None,
                    clip_seconds: float | None = 3.0, timeout_s: float = 600.0,
                    screenshots: Path | None = None) -> list[dict[str, Any]]:
    """Run each workflow through the page; return one report per workflow (problems listed, empty when all is well)."""
    from playwright.sync_api import sync_playwright

    reports = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1600, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)[:300]))
        page.goto(url)
        page.wait_for_function("window.app && window.app.graph && window.LiteGraph", timeout=120000)
        page.wait_for_timeout(1500)
        for path in ui_paths:
            problems: list[str] = []
            errors.clear()
            page.keyboard.press("Escape")
            page.evaluate("(ui) => app.loadGraphData(ui)", json.loads(path.read_text()))
            page.wait_for_timeout(1000)
            page.keyboard.press("Escape")
            if thumbnails is not None:
                thumbnails.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(thumbnails / f"{path.stem}.jpg"), type="jpeg", quality=70,
                                clip={"x": 0, "y": 40, "width": 1600, "height": 860})
            nodes = page.evaluate(INSPECT)
            problems += [f"node {n['id']} ({n['type']}) is unknown to the page" for n in nodes if not n["known"]]
            prompt = page.evaluate("async () => (await app.graphToPrompt()).output")
            api_path = path.parent / "api" / f"{path.stem}_api.json"
            if api_path.is_file() and comparable(prompt) != comparable(json.loads(api_path.read_text())):
                problems.append(f"graphToPrompt differs from {api_path.name}")
            if clip_seconds:
                page.evaluate("""(seconds) => app.graph._nodes.filter((n) => n.type === "PAE_LoadAudio")"""
                              """.forEach((n) => {
                    const w = n.widgets.find((w) => w.name === "duration"); w.value = seconds; })""", clip_seconds)
            before = page.evaluate("async () => Object.keys(await (await fetch('/history?max_items=10000'))"
                                   ".json()).length")
            page.evaluate("() => app.queuePrompt(0, 1)")
            deadline = time.monotonic() + timeout_s
            while not page.evaluate("""async (count) => {
                    const queue = await (await fetch('/queue')).json();
                    const done = Object.keys(await (await fetch('/history?max_items=10000')).json()).length;
                    return done > count && !queue.queue_running.length && !queue.queue_pending.length; }""", before):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{path.name} did not finish within {timeout_s} s")
                page.wait_for_timeout(1000)
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
    args = parser.parse_args(argv)
    reports = check_workflows(args.url, args.workflows, args.chromium, args.thumbnails, args.clip_seconds or None,
                               screenshots=args.screenshots)
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

"""The pack on the real canvas: headless Chromium opens ComfyUI, loads a workflow from workflows/, queues
it, and the output image appears in the graph. The screenshot goes to a temporary folder, or with
ASSR_UPDATE_SCREENSHOT=1 to docs/screenshot_canvas.png (the README's picture), so a test run leaves the
clone as it was."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os

import harness
import numpy as np
import pytest
from PIL import Image

from assr_eic.bitstream import from_text

pytestmark = pytest.mark.comfy

SCREENSHOT = harness.REPO / "docs" / "screenshot_canvas.png"
MAX_SCREENSHOT_BYTES = 500_000


def strip_meta(prompt: dict) -> dict:
    return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in prompt.items()}


async def canvas_session(server, name: str, workflow: dict, assr_bytes: bytes, screenshot) -> dict:
    seen = {}
    async with harness.Browser(1280, 800) as b:
        await harness.open_canvas(b, server)
        assert await b.eval(harness.js_load_workflow(workflow, name)) == len(workflow["nodes"])
        assert await b.eval(harness.js_set_widget("LoadImage", "image", "coffee.png")) == 1

        # the frontend's own UI -> API conversion agrees with the tests' converter
        seen["frontend_prompt"] = await b.eval("(async () => (await app.graphToPrompt()).output)()")
        seen["graph"] = await b.eval("app.graph.serialize()")

        save_id = next(n["id"] for n in workflow["nodes"] if n["type"] == "SaveImage")
        await b.eval("(async () => { await app.queuePrompt(0); return 1 })()")
        await b.wait_for(harness.js_image_shown(save_id), 240, 0.5, harness.raise_on_failed_prompt(server))
        seen["natural"] = await b.eval(
            f"(() => {{ const i = app.graph.getNodeById({save_id}).imgs[0];"
            " return [i.naturalWidth, i.naturalHeight] })()"
        )
        seen["encode_text"] = await b.eval(
            "app.graph._nodes.find(n => n.type === 'ASSR_Encode').widgets.find(w => w.name === 'assr_info').value"
        )
        # Save ASSR Bitstream's download link, followed by the page itself: [text, href, download, base64 body]
        seen["downloads"] = await b.eval(
            "(async () => { const n = app.graph._nodes.find(n => n.type === 'ASSR_SaveBitstream');"
            " const links = [...n.widgets.find(w => w.name === 'assr_downloads').inputEl.querySelectorAll('a')];"
            " return Promise.all(links.map(async (a) => { const buf = new Uint8Array(await (await fetch(a.href))"
            ".arrayBuffer()); return [a.textContent, a.href, a.download, btoa(String.fromCharCode(...buf))] })) })()"
        )
        await b.eval("(async () => { await app.extensionManager.command.execute('Comfy.Canvas.FitView'); return 1 })()")
        await asyncio.sleep(1.5)  # let the canvas draw
        await b.screenshot(screenshot)

        # "embed in workflow": a new ASSR Embedded Bitstream node holds the saved file, and the saved workflow too
        seen["embedded"] = await b.eval(
            "(() => { const n = app.graph._nodes.find(n => n.type === 'ASSR_SaveBitstream');"
            " n.widgets.find(w => w.name === 'assr_downloads').inputEl.querySelector('button').click();"
            " const e = app.graph._nodes.find(n => n.type === 'ASSR_EmbeddedBitstream');"
            " const saved = app.graph.serialize().nodes.find(n => n.type === 'ASSR_EmbeddedBitstream');"
            " return [e.widgets.find(w => w.name === 'text').value, saved.widgets_values[0]] })()"
        )

        # reports that stay: after a reload the restored (or reopened) workflow shows the last run's report
        report_js = (
            "(() => { const e = app.graph._nodes.find(n => n.type === 'ASSR_Encode');"
            " const s = app.graph._nodes.find(n => n.type === 'ASSR_SaveBitstream');"
            " if (!e || !s) return null;"
            " return [e.widgets.find(w => w.name === 'assr_info').value,"
            " [...s.widgets.find(w => w.name === 'assr_downloads').inputEl.querySelectorAll('a')]"
            ".map(a => a.textContent)] })()"
        )
        seen["report_before"] = await b.eval(report_js)
        saved_graph = await b.eval("app.graph.serialize()")
        await b.goto(server.url, harness.JS_APP_READY, 90)
        await b.wait_for("app.graph && Object.keys(LiteGraph.registered_node_types).includes('ASSR_Encode')", 30)
        seen["restored_by_frontend"] = await b.eval(report_js) is not None
        if not seen["restored_by_frontend"]:  # this frontend opened an empty tab: reopen the saved workflow
            await b.eval(harness.js_load_workflow(saved_graph))
        seen["report_after"] = await b.eval(report_js)

        # the pack's upload path: a .assr file dropped on Load ASSR Bitstream lands in the input folder
        data = json.dumps(base64.b64encode(assr_bytes).decode())
        seen["upload_widgets"] = await b.eval(
            "(() => { const n = LiteGraph.createNode('ASSR_LoadBitstream'); n.pos = [0, 0]; app.graph.add(n);"
            " window.__assr_node = n; return n.widgets.map(w => w.name) })()"
        )
        seen["dropped"] = await b.eval(
            f"(() => {{ const bytes = Uint8Array.from(atob({data}), c => c.charCodeAt(0));"
            " const file = new File([bytes], 'dropped.assr');"
            " return window.__assr_node.onDragDrop({ dataTransfer: { files: [file] } }) })()"
        )
        seen["combo"] = await b.wait_for(
            "(() => { const v = window.__assr_node.widgets.find(w => w.name === 'bitstream').value;"
            " return v === 'dropped.assr' ? v : null })()",
            30,
        )
        seen["console"] = list(b.console)
    return seen


def test_workflow_runs_on_the_canvas(server, object_info, tmp_path):
    name = "assr_compress_and_save"
    workflow = harness.load_workflow(name)
    assr = harness.example_bitstream(server.input_dir / "astronaut.png")
    screenshot = SCREENSHOT if os.environ.get("ASSR_UPDATE_SCREENSHOT") == "1" else tmp_path / SCREENSHOT.name
    seen = asyncio.run(canvas_session(server, name, workflow, assr, screenshot))

    assert strip_meta(seen["frontend_prompt"]) == strip_meta(harness.ui_to_api(seen["graph"], object_info))
    assert seen["natural"] == [600, 400], "the decoded photo is shown on the Save Image node"
    assert " bytes, " in seen["encode_text"] and " bpp, 600x400," in seen["encode_text"]
    assert "scale " in seen["encode_text"] and "quality " in seen["encode_text"]
    ((text, href, download, body),) = seen["downloads"]  # one link for the one saved file
    saved = server.output_dir / "assr" / download  # the workflow's prefix is assr/compressed
    assert text == f"download assr/{download}" and download.startswith("compressed_") and download.endswith("_.assr")
    assert "/view?" in href and "subfolder=assr" in href and "type=output" in href
    assert base64.b64decode(body) == saved.read_bytes(), "the link returns the exact bytes of the saved file"
    assert seen["report_before"][0] == seen["encode_text"] and seen["report_before"][1] == [text]
    assert seen["report_after"] == seen["report_before"], "the report survives the reload"
    widget_text, workflow_text = seen["embedded"]
    assert widget_text == workflow_text and from_text(workflow_text) == saved.read_bytes()
    assert "upload .assr file" in seen["upload_widgets"]
    assert seen["dropped"] is True and seen["combo"] == "dropped.assr"
    assert (server.input_dir / "dropped.assr").read_bytes() == assr
    assert not [c for c in seen["console"] if "assr_eic" in c and "EXCEPTION" in c]

    raw = screenshot.read_bytes()
    shot = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))
    assert shot.shape == (800, 1280, 3)
    assert shot.std() > 20, "the screenshot shows a drawn canvas, not a blank page"
    if len(raw) > MAX_SCREENSHOT_BYTES:  # keep the committed picture small: 256 colours are plenty for a UI shot
        Image.fromarray(shot).quantize(256, dither=Image.Dither.NONE).save(screenshot, optimize=True)
    assert screenshot.stat().st_size < MAX_SCREENSHOT_BYTES

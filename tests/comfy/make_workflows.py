"""Author the example workflows on the real ComfyUI canvas and save them as the canvas saves them.

    .venv/bin/python tests/comfy/make_workflows.py

Starts the fetched ComfyUI with the pack, opens the page in headless Chromium, builds each graph with
the frontend's own LiteGraph API (createNode, connect, widget values), fits the view, and writes
``app.graph.serialize()`` (exactly what Workflow > Save writes) to ``workflows/<name>.json``. Then it
runs the graph on a real photograph and saves a JPEG thumbnail of the canvas as ``workflows/<name>.jpg``
(the name the template browser asks for: ``/api/workflow_templates/<pack>/<name>.jpg``).

The workflows read ``example.png``, the picture every ComfyUI install ships in its input folder, so a
new user gets a result without any further step; the tests run them on real photographs instead.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

NOTE_COMPRESS = (
    "ASSR-EIC compresses a picture to an .assr file of a chosen size (0.005-0.3 bits per pixel).\n\n"
    "1. Pick an image in Load Image.\n2. Set the target bpp on ASSR Encode (or switch the mode to scale + quality).\n"
    "3. Queue. The .assr file lands in ComfyUI's output folder; the decoded picture is saved beside it."
)
NOTE_DECODE = (
    "Decode an .assr file.\n\n1. Put the file in ComfyUI's input folder, or press 'upload .assr file' on Load ASSR "
    "Bitstream (files saved by the compress workflow are in the output folder).\n2. Choose the output size: the "
    "original, a factor, or any width x height.\n3. Queue."
)
NOTE_SWEEP = (
    "Rate sweep: the same picture at three rates, each next to JPEG, WebP and AVIF files no larger than ours "
    "(bpp and PSNR under every tile). The three grids are stitched into one image."
)

# Each workflow: nodes (id, type, pos, size, title, widgets) and links (from id, output, to id, input).
WORKFLOWS = {
    "assr_compress_and_save": {
        "nodes": [
            {"id": "note", "type": "Note", "pos": [40, 40], "size": [380, 220], "widgets": {"text": NOTE_COMPRESS}},
            {"id": "img", "type": "LoadImage", "pos": [40, 300], "size": [380, 420],
             "widgets": {"image": "example.png"}},
            {"id": "model", "type": "ASSR_LoadModel", "pos": [460, 40], "size": [320, 130]},
            {
                "id": "enc", "type": "ASSR_Encode", "pos": [460, 220], "size": [320, 400],
                "widgets": {"mode": "target bpp", "bpp": 0.05},
            },
            {"id": "save", "type": "ASSR_SaveBitstream", "pos": [820, 40], "size": [340, 200],
             "widgets": {"filename_prefix": "assr/compressed"}},
            {"id": "dec", "type": "ASSR_Decode", "pos": [820, 280], "size": [340, 300]},
            {"id": "saveimg", "type": "SaveImage", "pos": [1200, 40], "size": [420, 480],
             "widgets": {"filename_prefix": "assr/decoded"}},
        ],
        "links": [
            ["img", "IMAGE", "enc", "image"], ["model", "model", "enc", "model"],
            ["enc", "bitstream", "save", "bitstream"], ["enc", "bitstream", "dec", "bitstream"],
            ["model", "model", "dec", "model"], ["dec", "image", "saveimg", "images"],
        ],
    },
    "assr_load_and_decode": {
        "nodes": [
            {"id": "note", "type": "Note", "pos": [40, 40], "size": [380, 220], "widgets": {"text": NOTE_DECODE}},
            {"id": "load", "type": "ASSR_LoadBitstream", "pos": [40, 300], "size": [380, 200],
             "widgets": {"bitstream": "example.assr"}},
            {"id": "model", "type": "ASSR_LoadModel", "pos": [460, 40], "size": [320, 130]},
            {"id": "info", "type": "ASSR_BitstreamInfo", "pos": [460, 220], "size": [320, 330]},
            {"id": "dec", "type": "ASSR_Decode", "pos": [820, 40], "size": [340, 300],
             "widgets": {"size": "factor", "factor": 1.5}},
            {"id": "saveimg", "type": "SaveImage", "pos": [1200, 40], "size": [420, 480],
             "widgets": {"filename_prefix": "assr/decoded"}},
            {"id": "lowres", "type": "PreviewImage", "pos": [820, 380], "size": [340, 300], "title": "decoded low-res"},
        ],
        "links": [
            ["load", "bitstream", "info", "bitstream"], ["load", "bitstream", "dec", "bitstream"],
            ["model", "model", "dec", "model"], ["dec", "image", "saveimg", "images"],
            ["dec", "lowres", "lowres", "images"],
        ],
    },
    "assr_rate_sweep_compare": {
        "nodes": [
            {"id": "note", "type": "Note", "pos": [40, 40], "size": [380, 160], "widgets": {"text": NOTE_SWEEP}},
            {"id": "img", "type": "LoadImage", "pos": [40, 240], "size": [380, 420],
             "widgets": {"image": "example.png"}},
            {"id": "model", "type": "ASSR_LoadModel", "pos": [40, 700], "size": [380, 130]},
            *[
                {"id": f"enc{i}", "type": "ASSR_Encode", "pos": [460, 40 + 330 * i], "size": [300, 300],
                 "title": f"ASSR Encode {bpp} bpp", "widgets": {"mode": "target bpp", "bpp": bpp}}
                for i, bpp in enumerate((0.02, 0.05, 0.1))
            ],
            *[
                {"id": f"cmp{i}", "type": "ASSR_Compare", "pos": [800, 40 + 330 * i], "size": [300, 260]}
                for i in range(3)
            ],
            {"id": "st1", "type": "ImageStitch", "pos": [1140, 40], "size": [260, 200],
             "widgets": {"direction": "down", "match_image_size": False, "spacing_width": 0}},
            {"id": "st2", "type": "ImageStitch", "pos": [1140, 300], "size": [260, 200],
             "widgets": {"direction": "down", "match_image_size": False, "spacing_width": 0}},
            {"id": "saveimg", "type": "SaveImage", "pos": [1440, 40], "size": [520, 700],
             "widgets": {"filename_prefix": "assr/sweep"}},
        ],
        "links": [
            *[link for i in range(3) for link in (
                ["img", "IMAGE", f"enc{i}", "image"], ["model", "model", f"enc{i}", "model"],
                ["img", "IMAGE", f"cmp{i}", "image"], [f"enc{i}", "bitstream", f"cmp{i}", "bitstream"],
                ["model", "model", f"cmp{i}", "model"],
            )],
            ["cmp0", "grid", "st1", "image1"], ["cmp1", "grid", "st1", "image2"],
            ["st1", "IMAGE", "st2", "image1"], ["cmp2", "grid", "st2", "image2"],
            ["st2", "IMAGE", "saveimg", "images"],
        ],
    },
}  # fmt: skip

# the photographs the thumbnails are made from (never the Kodak evaluation crops)
THUMB_INPUTS = {"assr_compress_and_save": "astronaut.png", "assr_rate_sweep_compare": "chelsea.png"}

JS_BUILD = r"""
async (spec) => {
  app.graph.clear();
  const made = {};
  for (const n of spec.nodes) {
    const node = LiteGraph.createNode(n.type);
    if (!node) throw new Error(`unknown node type ${n.type}`);
    if (n.title) node.title = n.title;
    node.pos = n.pos;
    app.graph.add(node);
    if (n.size) node.setSize(n.size);
    for (const [k, v] of Object.entries(n.widgets || {})) {
      const w = node.widgets?.find((w) => w.name === k);
      if (!w) throw new Error(`${n.type} has no widget ${k}`);
      w.value = v;
    }
    made[n.id] = node;
  }
  for (const [a, out, b, inp] of spec.links) {
    const src = made[a], dst = made[b];
    const oi = src.findOutputSlot(out), ii = dst.findInputSlot(inp);
    if (oi < 0 || ii < 0) throw new Error(`bad link ${a}.${out} -> ${b}.${inp}`);
    if (!src.connect(oi, dst, ii)) throw new Error(`link refused ${a}.${out} -> ${b}.${inp}`);
  }
  return Object.fromEntries(Object.entries(made).map(([k, n]) => [k, n.id]));
}
"""


async def fit_view(b: harness.Browser) -> None:
    await b.eval("(async () => { await app.extensionManager.command.execute('Comfy.Canvas.FitView'); return 1 })()")
    await asyncio.sleep(0.5)


async def run_on_canvas(b: harness.Browser, srv: harness.ComfyServer, output_node_id: int, timeout=240.0) -> None:
    """Queue the graph on the canvas and wait until ``output_node_id`` shows its image."""
    await b.eval("(async () => { await app.queuePrompt(0); return 1 })()")
    await b.wait_for(harness.js_image_shown(output_node_id), timeout, 0.5, harness.raise_on_failed_prompt(srv))
    await asyncio.sleep(1.0)  # let the canvas draw the new image


async def author_one(b: harness.Browser, srv: harness.ComfyServer, out_dir: Path, name: str, spec: dict,
                     before_run: list[str] = (), timeout: float = 240.0) -> None:  # fmt: skip
    """Build ``spec`` on a fresh canvas, save it as ``name``.json, run it (after the ``before_run``
    scripts, e.g. widget values for the thumbnail only) and save the canvas as ``name``.jpg."""
    from PIL import Image

    await harness.open_canvas(b, srv)  # a fresh page: no outputs of the previous graph linger
    ids = await b.eval(f"({JS_BUILD})({json.dumps(spec)})")
    await fit_view(b)
    workflow = await b.eval("app.graph.serialize()")
    workflow["id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"assr-eic/workflows/{name}"))
    (out_dir / f"{name}.json").write_text(json.dumps(workflow, indent=2) + "\n")
    for script in before_run:
        await b.eval(script)
    await run_on_canvas(b, srv, ids["saveimg"], timeout=timeout)
    png = out_dir / f".{name}.png"
    await b.screenshot(png)
    im = Image.open(png).convert("RGB")
    im.thumbnail((800, 500))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=82, optimize=True)
    (out_dir / f"{name}.jpg").write_bytes(buf.getvalue())
    png.unlink()
    print(f"wrote workflows/{name}.json and .jpg ({len(buf.getvalue()) // 1024} KB)", flush=True)


async def author(srv: harness.ComfyServer, out_dir: Path) -> None:
    async with harness.Browser(1600, 1000) as b:
        for name, spec in WORKFLOWS.items():
            photo = THUMB_INPUTS.get(name)
            scripts = [harness.js_set_widget("LoadImage", "image", photo)] if photo else []
            await author_one(b, srv, out_dir, name, spec, scripts)


def main() -> int:
    harness.fetch_comfyui()
    base = harness.make_base(Path(tempfile.mkdtemp(prefix="assr-workflows-")))
    harness.put_photos(base / "input")
    shutil.copy(harness.COMFY_ROOT / "input" / "example.png", base / "input" / "example.png")
    example = harness.example_bitstream(base / "input" / "astronaut.png")
    (base / "input" / "example.assr").write_bytes(example)
    return author_with_server(base, author)


def author_with_server(base: Path, author_fn, start_timeout: float = 90.0) -> int:
    """Start a server on ``base``, run ``author_fn(srv, out_dir)`` into workflows/, then stop and clean up."""
    srv = harness.ComfyServer(base).start(timeout=start_timeout)
    try:
        harness.quiet_first_run(srv)
        asyncio.run(author_fn(srv, harness.WORKFLOWS))
    finally:
        srv.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Author the example workflows on the real ComfyUI canvas and save them as the canvas saves them.

    .venv/bin/python tests/comfy/make_workflows.py

Starts the fetched ComfyUI with the pack (0.33.0, what users run today, where the shared folder has it; else
0.3.75), opens the page in headless Chromium, builds each graph with the frontend's own LiteGraph API
(createNode, connect, widget values), stacks nodes that would overlap at their real drawn size, frames the
view at a zoom where the widgets keep their text, and writes ``app.graph.serialize()`` (exactly what Workflow
> Save writes) to ``example_workflows/<title>.json``. Then it runs the graph on a real photograph and saves
its result (the Save Image node's picture) as the JPEG thumbnail ``example_workflows/<title>.jpg`` (the name
the template list asks for: ``/api/workflow_templates/<pack>/<title>.jpg``).

The workflows read ``example.png``, the picture every ComfyUI install ships in its input folder, and a sample
.assr the pack ships, so a new user gets a result on the first Run; the tests run them on photographs.
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
    "Decode an .assr file. It runs as it is on a sample the pack ships (coffee.assr [sample]).\n\n1. Pick your "
    "file on Load ASSR Bitstream: one in ComfyUI's input folder, 'upload .assr file', or drop the file on the "
    "canvas (files saved by the compress workflow are in the output folder).\n2. Choose the output size: the "
    "original, a factor, or any width x height.\n3. Run."
)
NOTE_SWEEP = (
    "Rate sweep: the same picture at three rates, each next to JPEG, WebP and AVIF files no larger than ours "
    "(bpp and PSNR under every tile). The three grids are stitched into one image."
)

# Each workflow: nodes (id, type, pos, size, title, widgets) and links (from id, output, to id, input).
WORKFLOWS = {
    "assr_compress_and_save": {
        "nodes": [
            {"id": "note", "type": "Note", "pos": [40, 40], "size": [320, 200], "widgets": {"text": NOTE_COMPRESS}},
            {"id": "img", "type": "LoadImage", "pos": [40, 300], "size": [320, 360],
             "widgets": {"image": "example.png"}},
            {"id": "model", "type": "ASSR_LoadModel", "pos": [400, 40], "size": [300, 90]},
            {
                "id": "enc", "type": "ASSR_Encode", "pos": [400, 190], "size": [300, 330],
                "widgets": {"mode": "target bpp", "bpp": 0.05},
            },
            {"id": "save", "type": "ASSR_SaveBitstream", "pos": [740, 40], "size": [300, 170],
             "widgets": {"filename_prefix": "assr/compressed"}},
            {"id": "dec", "type": "ASSR_Decode", "pos": [740, 270], "size": [300, 260]},
            {"id": "saveimg", "type": "SaveImage", "pos": [1080, 40], "size": [340, 420],
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
            {"id": "note", "type": "Note", "pos": [40, 40], "size": [320, 230], "widgets": {"text": NOTE_DECODE}},
            {"id": "load", "type": "ASSR_LoadBitstream", "pos": [40, 330], "size": [320, 200],
             "widgets": {"bitstream": "coffee.assr [sample]"}},
            {"id": "model", "type": "ASSR_LoadModel", "pos": [400, 40], "size": [300, 90]},
            {"id": "info", "type": "ASSR_BitstreamInfo", "pos": [400, 190], "size": [300, 330]},
            {"id": "dec", "type": "ASSR_Decode", "pos": [740, 40], "size": [300, 260],
             "widgets": {"size": "factor", "factor": 1.5}},
            {"id": "saveimg", "type": "SaveImage", "pos": [1080, 40], "size": [340, 420],
             "widgets": {"filename_prefix": "assr/decoded"}},
            {"id": "lowres", "type": "PreviewImage", "pos": [740, 360], "size": [300, 240], "title": "decoded low-res"},
        ],
        "links": [
            ["load", "bitstream", "info", "bitstream"], ["load", "bitstream", "dec", "bitstream"],
            ["model", "model", "dec", "model"], ["dec", "image", "saveimg", "images"],
            ["dec", "lowres", "lowres", "images"],
        ],
    },
    "assr_rate_sweep_compare": {
        "nodes": [
            {"id": "note", "type": "Note", "pos": [40, 40], "size": [280, 110], "widgets": {"text": NOTE_SWEEP}},
            {"id": "img", "type": "LoadImage", "pos": [40, 210], "size": [280, 330],
             "widgets": {"image": "example.png"}},  # (its picture, once loaded, makes it 314 high)
            {"id": "model", "type": "ASSR_LoadModel", "pos": [40, 600], "size": [280, 60], "collapsed": True},
            {"id": "saveimg", "type": "SaveImage", "pos": [40, 660], "size": [280, 260],
             "widgets": {"filename_prefix": "assr/sweep"}},
            *[
                {"id": f"enc{i}", "type": "ASSR_Encode", "pos": [360 + 340 * i, 40], "size": [300, 300],
                 "title": f"ASSR Encode {bpp} bpp", "widgets": {"mode": "target bpp", "bpp": bpp}}
                for i, bpp in enumerate((0.02, 0.05, 0.1))
            ],
            *[
                {"id": f"cmp{i}", "type": "ASSR_Compare", "pos": [360 + 340 * i, 420], "size": [300, 200]}
                for i in range(3)
            ],
            {"id": "st1", "type": "ImageStitch", "pos": [360, 800], "size": [260, 200], "collapsed": True,
             "widgets": {"direction": "down", "match_image_size": False, "spacing_width": 0}},
            {"id": "st2", "type": "ImageStitch", "pos": [700, 800], "size": [260, 200], "collapsed": True,
             "widgets": {"direction": "down", "match_image_size": False, "spacing_width": 0}},
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
  for (const n of spec.nodes) if (n.collapsed) made[n.id].collapse(true);  // plumbing: just its title bar
  // the frontend draws a node at least at its computed size (widgets, DOM widgets); stack the nodes of a column
  // at that real size so none overlaps the next, whatever size the spec guessed
  const gap = 30 + (LiteGraph.NODE_TITLE_HEIGHT ?? 30);
  for (const node of Object.values(made)) {
    if (node.flags?.collapsed) continue;
    const min = node.computeSize();
    node.setSize([Math.max(node.size[0], min[0]), Math.max(node.size[1], min[1])]);
  }
  const placed = Object.values(made).sort((a, b) => a.pos[0] - b.pos[0] || a.pos[1] - b.pos[1]);
  placed.forEach((node, i) => {
    for (const other of placed.slice(0, i)) {
      const sideBySide = node.pos[0] >= other.pos[0] + other.size[0] || other.pos[0] >= node.pos[0] + node.size[0];
      if (!sideBySide && node.pos[1] < other.pos[1] + other.size[1] + gap) {
        node.pos = [node.pos[0], other.pos[1] + other.size[1] + gap];
      }
    }
  });
  for (const [a, out, b, inp] of spec.links) {
    const src = made[a], dst = made[b];
    const oi = src.findOutputSlot(out), ii = dst.findInputSlot(inp);
    if (oi < 0 || ii < 0) throw new Error(`bad link ${a}.${out} -> ${b}.${inp}`);
    if (!src.connect(oi, dst, ii)) throw new Error(`link refused ${a}.${out} -> ${b}.${inp}`);
  }
  return Object.fromEntries(Object.entries(made).map(([k, n]) => [k, n.id]));
}
"""


READABLE_ZOOM = 0.8  # LiteGraph stops drawing widget text below 0.6


async def fit_view(b: harness.Browser) -> float:
    """Fit the graph in the window, but never below READABLE_ZOOM: a large graph then opens at its top left
    corner, readable, and scrolls. Returns the zoom the workflow is saved with."""
    await b.eval("(async () => { await app.extensionManager.command.execute('Comfy.Canvas.FitView'); return 1 })()")
    await asyncio.sleep(1.0)  # FitView animates the view: clamp after it settles
    scale = await b.eval(
        f"(() => {{ const ds = app.canvas.ds; if (ds.scale < {READABLE_ZOOM}) {{"
        " const xs = app.graph._nodes.map(n => n.pos[0]), ys = app.graph._nodes.map(n => n.pos[1]);"
        f" ds.scale = {READABLE_ZOOM}; ds.offset = [100 - Math.min(...xs), 80 - Math.min(...ys)];"
        " app.graph.setDirtyCanvas(true, true) } return ds.scale })()"
    )
    await asyncio.sleep(0.5)
    return scale


async def run_on_canvas(b: harness.Browser, srv: harness.ComfyServer, output_node_id: int, timeout=240.0) -> None:
    """Queue the graph on the canvas and wait until ``output_node_id`` shows its image."""
    await b.eval("(async () => { await app.queuePrompt(0); return 1 })()")
    await b.wait_for(harness.js_image_shown(output_node_id), timeout, 0.5, harness.raise_on_failed_prompt(srv))
    await asyncio.sleep(1.0)  # let the canvas draw the new image


async def author_one(b: harness.Browser, srv: harness.ComfyServer, out_dir: Path, name: str, spec: dict,
                     before_run: list[str] = (), timeout: float = 240.0, thumb: str = "result") -> None:  # fmt: skip
    """Build ``spec`` on a fresh canvas, save it as its title's .json, run it (after the ``before_run``
    scripts, e.g. widget values for the thumbnail only) and save as the .jpg thumbnail its result (``thumb``
    "result": the Save Image node's picture) or the canvas after the run ("canvas")."""
    from PIL import Image

    await harness.open_canvas(b, srv)  # a fresh page: no outputs of the previous graph linger
    ids = await b.eval(f"({JS_BUILD})({json.dumps(spec)})")
    await fit_view(b)
    workflow = await b.eval("app.graph.serialize()")
    workflow["id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"assr-eic/workflows/{name}"))
    file = harness.TEMPLATE_TITLES.get(name, name)
    (out_dir / f"{file}.json").write_text(json.dumps(workflow, indent=2) + "\n")
    for script in before_run:
        await b.eval(script)
    await run_on_canvas(b, srv, ids["saveimg"], timeout=timeout)
    shown = await b.eval(
        f"(() => {{ const q = new URL(app.graph.getNodeById({ids['saveimg']}).imgs[0].src).searchParams;"
        " return { filename: q.get('filename'), subfolder: q.get('subfolder') ?? '', type: q.get('type') } })()"
    )
    result = Image.open(io.BytesIO(srv.view(shown))).convert("RGB")
    if thumb == "canvas":
        png = out_dir / f".{name}.png"
        await b.screenshot(png)
        result = Image.open(png).convert("RGB")
        png.unlink()
    (out_dir / f"{file}.jpg").write_bytes(thumbnail(result))
    print(f"wrote {out_dir.name}/{file}.json and .jpg", flush=True)


def thumbnail(result, side: int = 512) -> bytes:
    """The workflow's result, whole, on a square dark card (the template list shows square thumbnails)."""
    from PIL import Image

    im = result.copy()
    im.thumbnail((side, side), Image.Resampling.LANCZOS)
    card = Image.new("RGB", (side, side), (32, 32, 32))
    card.paste(im, ((side - im.width) // 2, (side - im.height) // 2))
    buf = io.BytesIO()
    card.save(buf, "JPEG", quality=85, optimize=True)
    return buf.getvalue()


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
    return author_with_server(base, author)


def newest_comfy() -> harness.Comfy:
    """ComfyUI 0.33.0 where the shared folder has it, else 0.3.75."""
    try:
        return harness.fetch_comfy("0.33.0")
    except LookupError as e:
        print(f"{e}; authoring on ComfyUI 0.3.75", flush=True)
        return harness.fetch_comfy("0.3.75")


def author_with_server(base: Path, author_fn, start_timeout: float = 90.0, comfy: harness.Comfy | None = None) -> int:
    """Start a server (``comfy``, default the newest) on ``base``, run ``author_fn(srv, out_dir)`` into
    example_workflows/, then stop and clean up."""
    comfy = comfy or newest_comfy()
    srv = comfy.server(base).start(timeout=start_timeout)
    try:
        harness.quiet_first_run(srv)
        asyncio.run(author_fn(srv, harness.WORKFLOWS))
    finally:
        srv.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

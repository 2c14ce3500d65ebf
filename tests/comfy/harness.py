"""A real ComfyUI for the node-pack tests: fetch it, lay out a base folder, start and stop the server,
talk to its HTTP API, convert UI-format workflows to API format, and drive headless Chromium over the
DevTools protocol. Nothing here is a mock: every function talks to the real program.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[2]
COMFY_ROOT = REPO / ".cache" / "comfyui"
PYTHON = REPO / ".venv" / "bin" / "python"
PACK_NAME = "assr-eic"  # the folder name a user gets by cloning the repository into custom_nodes/
WORKFLOWS = REPO / "example_workflows"  # the folder name ComfyUI prefers for a pack's templates
# ComfyUI's template list (0.3.75 and 0.33.0 alike) shows a pack's workflow by its file name, as title and
# description, so each file is named as a numbered title (web/assr_eic.js lists them in that order). The tests
# and the authoring scripts name a workflow by its id; an id without a title is its own file name.
TEMPLATE_TITLES = {
    "assr_compress_and_save": "1 Compress a photo to ASSR",
    "assr_load_and_decode": "2 Decode an ASSR file at any size",
    "assr_rate_sweep_compare": "3 Rate sweep vs JPEG, WebP, AVIF",
    "assr_diffusion_all_in_one": "4 Diffusion decode, one node",
    "assr_diffusion_split": "5 Diffusion decode, KSampler",
    "assr_diffusion_sdxl": "6 Diffusion decode, SDXL",
    "assr_diffusion_sd35": "7 Diffusion decode, SD 3.5",
}
CHROMIUM = "/usr/bin/chromium"
PHOTOS = ("astronaut", "coffee", "chelsea")  # scikit-image's bundled photographs (never the Kodak eval set)


def fetch_comfyui() -> Path:
    """Run scripts/fetch_comfyui.sh (idempotent; about a second once everything is there)."""
    subprocess.run(["bash", str(REPO / "scripts" / "fetch_comfyui.sh")], check=True, cwd=REPO)
    if not (COMFY_ROOT / "main.py").is_file():
        raise RuntimeError(f"scripts/fetch_comfyui.sh left no ComfyUI in {COMFY_ROOT}")
    return COMFY_ROOT


@dataclass(frozen=True)
class Comfy:
    """One ComfyUI version the tests run against: its tree, and the folder of packages it needs beyond
    .venv (prepended to PYTHONPATH; None when .venv alone runs it)."""

    version: str
    root: Path
    site: Path | None = None

    def server(self, base: Path, **kw) -> ComfyServer:
        """A (not yet started) server of this version on the base folder ``base``."""
        return ComfyServer(base, root=self.root, site=self.site, **kw)


COMFY_033_ROOT = REPO / ".cache" / "comfyui-0.33.0"
COMFY_033_SITE = REPO / ".cache" / "comfyui-0.33.0-site"
COMFY_VERSIONS = ("0.3.75", "0.33.0")


def fetch_comfy(version: str) -> Comfy:
    """The ComfyUI ``version`` (one of COMFY_VERSIONS), fetched if needed. 0.33.0 comes from the project's
    shared folder (scripts/fetch_comfyui_033.sh); where there is none it raises LookupError with the
    script's one-line reason."""
    if version == "0.3.75":
        return Comfy(version, fetch_comfyui())
    if version != "0.33.0":
        raise ValueError(f"no ComfyUI {version} for the tests (known: {', '.join(COMFY_VERSIONS)})")
    fetch_comfyui()  # .venv must hold 0.3.75's requirements: the overlay is what 0.33.0 needs beyond them
    r = subprocess.run(["bash", str(REPO / "scripts" / "fetch_comfyui_033.sh")], cwd=REPO, capture_output=True,
                       text=True)  # fmt: skip
    if r.returncode != 0:
        raise RuntimeError(f"scripts/fetch_comfyui_033.sh failed:\n{r.stderr[-3000:]}")
    if not (COMFY_033_ROOT / "main.py").is_file() or not (COMFY_033_SITE / ".assr-site").is_file():
        raise LookupError(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "no ComfyUI 0.33.0")
    return Comfy(version, COMFY_033_ROOT, COMFY_033_SITE)


def make_base(base: Path) -> Path:
    """A ComfyUI base folder (models, custom_nodes, input, output, temp, user) with this repository
    linked into custom_nodes/ as a user would clone it."""
    for sub in ("custom_nodes", "input", "output", "temp", "user", "models/assr_eic"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / PACK_NAME
    if not link.exists():
        link.symlink_to(REPO, target_is_directory=True)
    return base


def import_comfy(root: Path, base: Path):
    """ComfyUI at ``root`` imported into this process on the CPU (ENVIRONMENT.md's recipe), its folders in the
    base folder ``base`` (see :func:`make_base`), custom nodes loaded. Returns ComfyUI's ``nodes`` module."""
    sys.path.insert(0, str(root))
    import comfy.cli_args  # (ComfyUI's, first on sys.path now)

    comfy.cli_args.args.cpu = True
    comfy.cli_args.args.base_directory = str(base)
    import folder_paths
    import utils.install_util  # noqa: F401  (before `nodes`, else comfy/utils.py shadows the utils package)

    if Path(folder_paths.base_path) != base:
        raise RuntimeError("folder_paths was imported before the base folder was set")
    import nodes

    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
    return nodes


def photo(name: str):
    """A real photograph from scikit-image's bundled data, uint8 (H, W, 3)."""
    import numpy as np
    from skimage import data

    img = getattr(data, name)()
    return np.ascontiguousarray(img[..., :3])


def put_photos(input_dir: Path, names=PHOTOS) -> dict[str, Path]:
    """Write the photographs as PNG files into ComfyUI's input folder."""
    from PIL import Image

    out = {}
    for n in names:
        p = input_dir / f"{n}.png"
        if not p.exists():
            Image.fromarray(photo(n)).save(p)
        out[n] = p
    return out


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ComfyServer:
    """``python main.py`` of the fetched ComfyUI, on 127.0.0.1, with its own base/input/output folders."""

    base: Path
    port: int = 0
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    extra_args: list[str] = field(default_factory=list)
    prefix: list[str] = field(default_factory=list)  # e.g. a private mount namespace that exec's the server
    python: Path = PYTHON  # the interpreter ComfyUI runs in (another venv for the install test)
    root: Path = COMFY_ROOT  # the ComfyUI tree (main.py)
    site: Path | None = None  # packages this ComfyUI needs beyond the interpreter's, first on PYTHONPATH

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def input_dir(self) -> Path:
        return self.base / "input"

    @property
    def output_dir(self) -> Path:
        return self.base / "output"

    def start(self, timeout: float = 90.0) -> ComfyServer:
        self.port = self.port or free_port()
        self.log_path = self.base / "server.log"
        log = open(self.log_path, "wb")
        cmd = [
            str(self.python), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
            "--disable-api-nodes", "--database-url", f"sqlite:///{self.base / 'comfyui.db'}",
            "--base-directory", str(self.base), "--output-directory", str(self.output_dir),
            "--input-directory", str(self.input_dir), *self.extra_args,
        ]  # fmt: skip
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if self.site is not None:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(self.site), env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen([*self.prefix, *cmd], cwd=self.root, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                if requests.get(self.url + "/system_stats", timeout=2).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer /system_stats within {timeout:.0f} s:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        """Stop our server by its PID: SIGTERM, then SIGKILL if it does not exit."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)

    def rss_mb(self) -> float:
        """The server process's resident memory now, in MiB (from /proc; Linux)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS line in /proc/<pid>/status")

    def root_view(self, path: Path) -> Path:
        """``path`` as the server process sees it (through its own mounts, if it runs in a namespace)."""
        return Path(f"/proc/{self.proc.pid}/root") / Path(path).resolve().relative_to("/")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    # --- HTTP API ---
    def get(self, path: str, **kw):
        r = requests.get(self.url + path, timeout=kw.pop("timeout", 30), **kw)
        r.raise_for_status()
        return r.json()

    def queue(self, prompt: dict, client_id: str = "assr-tests") -> requests.Response:
        """POST /prompt; returns the response (200 with prompt_id, or 400 with node errors)."""
        return requests.post(self.url + "/prompt", json={"prompt": prompt, "client_id": client_id}, timeout=30)

    def wait(self, prompt_id: str, timeout: float = 180.0) -> dict:
        """Poll /history until the prompt finished; returns its history entry."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            h = self.get(f"/history/{prompt_id}")
            if prompt_id in h and h[prompt_id].get("status", {}).get("completed") is not None:
                entry = h[prompt_id]
                if entry["status"].get("status_str") in ("success", "error"):
                    return entry
            time.sleep(0.2)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout:.0f} s:\n{self.log()[-3000:]}")

    def run(self, prompt: dict, timeout: float = 180.0) -> dict:
        r = self.queue(prompt)
        if r.status_code != 200:
            raise AssertionError(f"POST /prompt gave {r.status_code}: {r.text[:2000]}")
        return self.wait(r.json()["prompt_id"], timeout)

    def fetch(self, path: str) -> bytes:
        r = requests.get(self.url + path, timeout=30)
        r.raise_for_status()
        return r.content

    def view(self, result: dict) -> bytes:
        """GET /view for one saved result ({filename, subfolder, type})."""
        r = requests.get(self.url + "/view", params=result, timeout=30)
        r.raise_for_status()
        return r.content


def history_error(entry: dict) -> dict | None:
    """The execution_error message of a history entry, or None."""
    for kind, msg in entry.get("status", {}).get("messages", []):
        if kind == "execution_error":
            return msg
    return None


# --- UI-format workflow -> API-format prompt -----------------------------------------------------

MODE_MUTED, MODE_BYPASS = 2, 4
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """Convert a workflow saved from the canvas to the prompt ``POST /prompt`` takes.

    Widget values are matched to input names in the order the frontend creates widgets (the node
    definition's input order, with the extra "control after generate" value after seeds); linked inputs
    come from the link table. Muted nodes are dropped; bypassed nodes and reroutes are resolved to the
    link that feeds them.
    """
    nodes = {n["id"]: n for n in workflow["nodes"]}
    links = {lk[0]: lk for lk in workflow.get("links", [])}  # id, from_node, from_slot, to_node, to_slot, type

    def source(link_id):
        """Follow a link back through reroutes and bypassed nodes to a real output."""
        lk = links[link_id]
        node = nodes[lk[1]]
        if node["type"] == "Reroute" or node.get("mode") == MODE_BYPASS:
            want = lk[5]
            for inp in node.get("inputs", []):
                if inp.get("link") is not None and (node["type"] == "Reroute" or inp["type"] == want):
                    return source(inp["link"])
            return None
        return [str(node["id"]), lk[2]]

    prompt = {}
    for node in workflow["nodes"]:
        t = node["type"]
        if t in FRONTEND_ONLY or node.get("mode") in (MODE_MUTED, MODE_BYPASS):
            continue
        if t not in object_info:
            raise KeyError(f"node type {t!r} (node {node['id']}) is not installed on this server")
        info = object_info[t]
        order = info.get("input_order") or {k: list(v) for k, v in info["input"].items() if k != "hidden"}
        spec = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        values = list(node.get("widgets_values") or [])
        if isinstance(node.get("widgets_values"), dict):
            raise ValueError(f"node {node['id']} ({t}) stores widget values by name; not supported")
        inputs = {}
        linked = {inp["name"]: inp.get("link") for inp in node.get("inputs", [])}
        vi = 0
        for name in order.get("required", []) + order.get("optional", []):
            kind, opts = spec[name][0], (spec[name][1] if len(spec[name]) > 1 else {})
            is_widget = isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
            if opts.get("forceInput"):
                is_widget = False
            if is_widget:
                value = values[vi] if vi < len(values) else opts.get("default")
                vi += 1
                if opts.get("control_after_generate") or (kind == "INT" and name in ("seed", "noise_seed")):
                    vi += 1
                inputs[name] = value
            if linked.get(name) is not None:
                src = source(linked[name])
                if src is not None:
                    inputs[name] = src
                elif not is_widget:
                    continue
        prompt[str(node["id"])] = {"class_type": t, "inputs": inputs, "_meta": {"title": node.get("title", t)}}
    return prompt


def workflow_path(name: str, suffix: str = ".json") -> Path:
    """The file of workflow ``name`` (an id of TEMPLATE_TITLES, or a file name) in WORKFLOWS."""
    return WORKFLOWS / f"{TEMPLATE_TITLES.get(name, name)}{suffix}"


def load_workflow(name: str) -> dict:
    return json.loads(workflow_path(name).read_text())


def template_files() -> list[str]:
    """The file names (without .json) of the example workflows, in the order the template list shows them."""

    def numbered(stem: str):
        head = stem.split(" ", 1)[0]
        return (int(head), stem) if head.isdigit() else (1 << 30, stem)

    return sorted((p.stem for p in WORKFLOWS.glob("*.json")), key=numbered)


def workflow_names() -> list[str]:
    """The ids of the example workflows, in the template list's order."""
    ids = {title: name for name, title in TEMPLATE_TITLES.items()}
    return [ids.get(stem, stem) for stem in template_files()]


# --- headless Chromium over the DevTools protocol ------------------------------------------------

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
    "--hide-scrollbars", "--mute-audio",
]  # fmt: skip


class Browser:
    """Chromium started with a fresh profile and a DevTools port; one page, driven by CDP commands
    sent over a plain websocket (aiohttp). Use inside ``async with``."""

    def __init__(self, width: int = 1600, height: int = 1000) -> None:
        self.width, self.height = width, height
        self.proc: subprocess.Popen | None = None
        self.profile = tempfile.mkdtemp(prefix="assr-chromium-")
        self.console: list[str] = []
        self._id = 0
        self._pending: dict[int, asyncio.Future] = {}

    async def __aenter__(self) -> Browser:
        import aiohttp

        port = free_port()
        self.proc = subprocess.Popen(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--remote-debugging-port={port}", "--remote-debugging-address=127.0.0.1",
             f"--user-data-dir={self.profile}", f"--window-size={self.width},{self.height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.session = aiohttp.ClientSession()
        deadline = time.monotonic() + 30
        targets = None
        while time.monotonic() < deadline:
            try:
                async with self.session.get(f"http://127.0.0.1:{port}/json/list") as r:
                    targets = [t for t in await r.json() if t["type"] == "page"]
                if targets:
                    break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
        if not targets:
            await self.close()
            raise RuntimeError("chromium did not open its DevTools port")
        self.ws = await self.session.ws_connect(targets[0]["webSocketDebuggerUrl"], max_msg_size=0)
        self._reader = asyncio.create_task(self._read())
        await self.send("Runtime.enable")
        await self.send("Page.enable")
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
        )
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        if getattr(self, "_reader", None):
            self._reader.cancel()
        if getattr(self, "ws", None) is not None:
            await self.ws.close()
        if getattr(self, "session", None) is not None:
            await self.session.close()
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.profile, ignore_errors=True)

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self._pending:
                self._pending.pop(data["id"]).set_result(data)
            elif data.get("method") == "Runtime.consoleAPICalled":
                args = data["params"]["args"]
                self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))
            elif data.get("method") == "Runtime.exceptionThrown":
                self.console.append("EXCEPTION " + json.dumps(data["params"]["exceptionDetails"])[:500])

    async def send(self, method: str, params: dict | None = None, timeout: float = 60.0) -> dict:
        self._id += 1
        fut = asyncio.get_running_loop().create_future()
        self._pending[self._id] = fut
        await self.ws.send_json({"id": self._id, "method": method, "params": params or {}})
        data = await asyncio.wait_for(fut, timeout)
        if "error" in data:
            raise RuntimeError(f"CDP {method} failed: {data['error']}")
        return data["result"]

    async def eval(self, expression: str, timeout: float = 60.0):
        """Evaluate JavaScript in the page (promises awaited); returns the value or raises with the
        page's exception text."""
        res = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            timeout=timeout,
        )
        if "exceptionDetails" in res:
            d = res["exceptionDetails"]
            raise RuntimeError(f"page exception: {d.get('exception', {}).get('description') or d.get('text')}")
        return res["result"].get("value")

    async def goto(self, url: str, ready: str, timeout: float = 60.0) -> None:
        await self.send("Page.navigate", {"url": url})
        await self.wait_for(ready, timeout)

    async def wait_for(self, expression: str, timeout: float = 60.0, interval: float = 0.25, check=None):
        """Poll ``expression`` until it is truthy; ``check()`` (optional) may raise to stop early."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                value = await self.eval(expression)
                if value:
                    return value
                last = value
            except RuntimeError as e:
                last = e
            if check is not None:
                check()
            await asyncio.sleep(interval)
        raise TimeoutError(
            f"page condition not met in {timeout:.0f} s: {expression}\nlast: {last}\nconsole: {self.console[-5:]}"
        )

    async def screenshot(self, path: Path, fmt: str = "png", quality: int | None = None, clip: dict | None = None):
        params = {"format": fmt, "captureBeyondViewport": False}
        if quality is not None:
            params["quality"] = quality
        if clip is not None:
            params["clip"] = {**clip, "scale": clip.get("scale", 1)}
        data = await self.send("Page.captureScreenshot", params)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data["data"]))
        return path


# JavaScript run in the ComfyUI page
JS_APP_READY = "!!(window.app && window.app.graph && window.app.canvas && window.LiteGraph)"


def js_load_workflow(workflow: dict, name: str | None = None) -> str:
    """Load a UI-format workflow as drag-and-drop does (``name`` titles its tab); returns the node count."""
    args = f"{json.dumps(workflow)}, true, true, {json.dumps(name)}" if name else json.dumps(workflow)
    return f"(async () => {{ await app.loadGraphData({args}); return app.graph._nodes.length; }})()"


def quiet_first_run(srv: ComfyServer) -> None:
    """Mark the canvas tutorial as done (server-side user setting), so no template dialog covers the graph."""
    settings = {"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False}
    r = requests.post(srv.url + "/settings", json=settings, timeout=10)
    r.raise_for_status()


def cli(*args: str) -> subprocess.CompletedProcess:
    """Run the project's real command-line tool."""
    return subprocess.run([str(REPO / ".venv" / "bin" / "assr-eic"), *args], capture_output=True, text=True)


def example_bitstream(image: Path, bpp: float = 0.05) -> bytes:
    """Compress a picture with the CLI (the shipped default model) and return the .assr bytes."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "x.assr"
        r = cli("compress", str(image), "-o", str(out), "--bpp", str(bpp))
        if r.returncode != 0:
            raise RuntimeError(f"assr-eic compress failed: {r.stderr}")
        return out.read_bytes()


async def open_canvas(b: Browser, srv: ComfyServer) -> None:
    """Open ComfyUI's page with the promotion banner dismissed and wait for the app."""
    await b.goto(srv.url, JS_APP_READY, 90)
    await b.eval("localStorage.setItem('vueNodesBannerDismissed', 'true'); 1")
    await b.goto(srv.url, JS_APP_READY, 90)
    await b.wait_for("app.graph && Object.keys(LiteGraph.registered_node_types).includes('ASSR_Encode')", 30)


def js_image_shown(node_id: int) -> str:
    """True once node ``node_id`` on the canvas holds a loaded output image."""
    return (
        f"(() => {{ const n = app.graph.getNodeById({node_id}); "
        "return !!(n && n.imgs && n.imgs.length && n.imgs[0].complete && n.imgs[0].naturalWidth > 0) })()"
    )


def raise_on_failed_prompt(srv: ComfyServer):
    """A ``check`` for wait_for: raises as soon as the newest prompt in /history failed."""

    def check():
        for entry in srv.get("/history?max_items=1").values():
            err = history_error(entry)
            if err is not None:
                raise AssertionError(f"the prompt failed in {err.get('node_type')}: {err.get('exception_message')}")

    return check


def js_set_widget(node_type: str, widget: str, value) -> str:
    """Set a widget on every node of a type as a user would (value + callback, so previews follow)."""
    v = json.dumps(value)
    return (
        f"(() => {{ let k = 0; for (const n of app.graph._nodes) if (n.type === {json.dumps(node_type)}) {{"
        f" const w = n.widgets.find(w => w.name === {json.dumps(widget)}); w.value = {v}; w.callback?.({v}); k++ }}"
        " return k })()"
    )

"""The pack's files outside ComfyUI: a harmless root __init__.py, the web extension, the example
workflows and their thumbnails, and a fetch script that is quick once everything is there."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import harness
import pytest
from PIL import Image

pytestmark = pytest.mark.comfy


def test_root_init_does_nothing_outside_comfyui():
    code = (
        "import importlib.util, sys\n"
        f"root = {str(harness.REPO)!r}\n"
        "spec = importlib.util.spec_from_file_location('assr_pack', root + '/__init__.py',"
        " submodule_search_locations=[root])\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['assr_pack'] = m; spec.loader.exec_module(m)\n"
        "assert not hasattr(m, 'comfy_entrypoint'), 'no ComfyUI here, so no nodes'\n"
        "assert 'assr_pack.nodes' not in sys.modules and 'torch' not in sys.modules\n"
        "import assr_eic\n"
        "print(m.WEB_DIRECTORY)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=harness.REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "./web"
    assert (harness.REPO / "web" / "assr_eic.js").is_file()


@pytest.mark.parametrize("name", harness.workflow_names())
def test_workflows_are_canvas_files_with_thumbnails(name):
    wf = harness.load_workflow(name)
    assert wf["version"] >= 0.4 and wf["nodes"] and wf["links"], "UI format, as saved from the canvas"
    assert "class_type" not in json.dumps(wf), "UI format, not API format"
    assert any(n["type"].startswith("ASSR_") for n in wf["nodes"])
    thumb = harness.workflow_path(name, ".jpg")
    with Image.open(thumb) as im:
        assert im.format == "JPEG" and im.width >= 400
    assert thumb.stat().st_size < 200_000


@pytest.mark.parametrize("name", harness.workflow_names())
def test_workflows_open_readable_and_run_on_what_a_fresh_comfyui_has(name):
    """Saved at a zoom where LiteGraph still draws widget text (it stops below 0.6), no node drawn over another
    (title bar included), and inputs a fresh install has: ComfyUI's example.png, a sample .assr of the pack."""
    wf = harness.load_workflow(name)
    assert wf["extra"]["ds"]["scale"] >= 0.75, wf["extra"]["ds"]
    title = 30
    boxes = [(n["id"], n["pos"][0], n["pos"][1] - title, n["size"][0], n["size"][1] + title) for n in wf["nodes"]]
    for i, (a, ax, ay, aw, ah) in enumerate(boxes):
        for b, bx, by, bw, bh in boxes[i + 1 :]:
            assert ax + aw <= bx or bx + bw <= ax or ay + ah <= by or by + bh <= ay, f"nodes {a} and {b} overlap"
    for n in wf["nodes"]:
        if n["type"] == "LoadImage":
            assert n["widgets_values"][0] == "example.png"
        if n["type"] == "ASSR_LoadBitstream":
            value = n["widgets_values"][0]
            assert value.endswith(" [sample]") and (harness.REPO / "samples" / value[: -len(" [sample]")]).is_file()


def test_template_files_are_numbered_titles_simplest_first():
    assert harness.workflow_names()[:3] == ["assr_compress_and_save", "assr_load_and_decode", "assr_rate_sweep_compare"]
    for stem in harness.template_files():
        number, title = stem.split(" ", 1)
        assert number.isdigit() and title[0].isupper() and "_" not in title


def test_at_least_the_three_example_workflows():
    assert {"assr_compress_and_save", "assr_load_and_decode", "assr_rate_sweep_compare"} <= set(
        harness.workflow_names()
    )


def test_fetch_script_is_idempotent_and_comfyui_is_never_committed(comfy_root):
    before = (comfy_root / "main.py").stat().st_mtime_ns
    t = time.monotonic()
    harness.fetch_comfyui()
    assert time.monotonic() - t < 15
    assert (comfy_root / "main.py").stat().st_mtime_ns == before
    assert not (comfy_root / "extra_model_paths.yaml").exists()
    ignored = subprocess.run(["git", "check-ignore", "-q", str(comfy_root / "main.py")], cwd=harness.REPO)
    assert ignored.returncode == 0, ".cache/ must stay git-ignored: ComfyUI (GPL) is fetched, never committed"


def test_pack_works_without_pip_install(comfy_root, tmp_path):
    """A user who copies the repository into custom_nodes/ without installing it: the nodes fall back to
    the library shipped beside them. Simulated with ``python -S`` (site-packages on PYTHONPATH, so the
    editable install's path hook never runs and ``assr_eic`` is not importable on its own)."""
    import site

    base = harness.make_base(tmp_path / "base")
    code = (
        "import asyncio, importlib.util, sys\n"
        "assert importlib.util.find_spec('assr_eic') is None, 'assr_eic must not be importable here'\n"
        f"sys.path.insert(0, {str(comfy_root)!r})\n"
        "import comfy.cli_args\n"
        f"comfy.cli_args.args.cpu = True; comfy.cli_args.args.base_directory = {str(base)!r}\n"
        "import utils.install_util, nodes\n"
        "asyncio.run(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))\n"
        "import assr_eic\n"
        "print(assr_eic.__file__)\n"
        "import json; print(json.dumps(sorted(k for k in nodes.NODE_CLASS_MAPPINGS if k.startswith('ASSR_'))))\n"
    )
    env = {"PYTHONPATH": ":".join(site.getsitepackages()), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    r = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.strip().splitlines()
    assert lines[-2] == str(harness.REPO / "assr_eic" / "__init__.py")
    assert len(json.loads(lines[-1])) == 11  # 8 codec nodes (ASSR Embedded Bitstream the 8th) + 3 diffusion nodes


def test_registry_metadata_read_by_comfyuis_own_parser(comfy_root):
    """ComfyUI's comfy_config reads the pack's pyproject: icon and banner point at pictures in the repository
    (made by scripts/make_brand.py), and the dependencies are requirements.txt's."""
    code = (
        f"import sys, json; sys.path.insert(0, {str(comfy_root)!r})\n"
        "from comfy_config import config_parser\n"
        f"c = config_parser.extract_node_configuration({str(harness.REPO)!r})\n"
        "print(json.dumps({'name': c.project.name, 'deps': c.project.dependencies, 'icon': c.tool_comfy.icon,\n"
        "  'banner': c.tool_comfy.banner_url, 'publisher': c.tool_comfy.publisher_id,\n"
        "  'comfyui': c.project.supported_comfyui_version}))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    meta = json.loads(r.stdout.strip().splitlines()[-1])
    assert meta["name"] == "assr-eic" and meta["publisher"] == "assr-eic" and meta["comfyui"] == ">=0.3.75"
    requirements = [
        ln.strip() for ln in (harness.REPO / "requirements.txt").read_text().splitlines() if ln and ln[0] != "#"
    ]
    assert [d for d in meta["deps"] if not d.startswith("torch")] == requirements
    for key, name in (("icon", "icon.png"), ("banner", "banner.png")):
        assert meta[key] == f"https://raw.githubusercontent.com/assr-eic/assr-eic/main/docs/{name}"
    with Image.open(harness.REPO / "docs" / "icon.png") as icon:
        assert icon.size == (400, 400)
    with Image.open(harness.REPO / "docs" / "banner.png") as banner:
        assert banner.width >= 3 * banner.height


def _ignored(path: str, patterns: list[str]) -> bool:
    """.comfyignore's patterns as gitignore reads the forms this file uses: 'dir/' and path globs."""
    import fnmatch

    return any(path.startswith(p) if p.endswith("/") else fnmatch.fnmatch(path, p) for p in patterns)


def test_published_pack_holds_what_a_user_needs_and_no_developer_files():
    lines = (harness.REPO / ".comfyignore").read_text().splitlines()
    patterns = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    files = ["git", "ls-files", "--cached", "--others", "--exclude-standard"]  # what a clone of the commit holds
    tracked = subprocess.run(files, cwd=harness.REPO, capture_output=True, text=True, check=True)
    published = [p for p in tracked.stdout.splitlines() if not _ignored(p, patterns)]
    assert not [p for p in published if p.startswith(("tests/", "bench/", ".ci/"))]
    for needed in ("__init__.py", "nodes/__init__.py", "assr_eic/weights/default.safetensors", "web/assr_eic.js",
                   "samples/astronaut.assr", "requirements.txt", "pyproject.toml", "README.md", "LICENSE",
                   "docs/icon.png", "docs/screenshot_canvas.png", "docs/screenshot_templates.png"):  # fmt: skip
        assert needed in published, needed
    assert any(p.startswith("example_workflows/") and p.endswith(".json") for p in published)
    size = sum((harness.REPO / p).stat().st_size for p in published)
    assert size < 12_000_000, f"the published pack is {size / 1e6:.1f} MB"

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
    thumb = harness.WORKFLOWS / f"{name}.jpg"
    with Image.open(thumb) as im:
        assert im.format == "JPEG" and im.width >= 400
    assert thumb.stat().st_size < 200_000


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
    assert len(json.loads(lines[-1])) == 10  # 7 codec nodes + 3 diffusion-decoder nodes

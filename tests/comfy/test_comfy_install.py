"""Installing the pack the way ComfyUI-Manager does, into a ComfyUI environment with numpy 2, changes none
of the packages already there; the pack then loads and the compress workflow runs.

A real fresh venv: torch and numpy 2 first, then ComfyUI's own requirements, then ``pip install -r
requirements.txt`` exactly as a user runs it (no constraints). Packages come from the registries (or pip's
cache), as any install does.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import harness
import pytest

from assr_eic.bitstream import parse

NUMPY = "2.4.6"  # a current ComfyUI's numpy (issue 18 found 2.4)
PIP = ["-m", "pip", "--disable-pip-version-check", "-q"]
TORCHES = ("torch", "torchvision", "torchaudio")  # ComfyUI's torch comes first, pinned


def _torch_pins() -> list[str]:
    """Just the torch and torchvision pins of constraints.txt (its numpy < 2 is the dev venv's, not ComfyUI's)."""
    lines = (harness.REPO / "constraints.txt").read_text().splitlines()
    return [ln for ln in lines if ln.startswith(("torch==", "torchvision=="))]


def _run(*cmd: str, timeout: float = 900) -> subprocess.CompletedProcess:
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


def _versions(python: Path) -> dict[str, str]:
    out = _run(python, "-m", "pip", "--disable-pip-version-check", "list", "--format=json").stdout  # -q hides it
    return {d["name"].lower(): d["version"] for d in json.loads(out)}


@pytest.fixture(scope="module")
def numpy2_comfy(tmp_path_factory, comfy_root) -> tuple[Path, dict[str, str], dict[str, str], str]:
    """(python of the venv, package versions before the pack's install, after it, pip check's output)."""
    root = tmp_path_factory.mktemp("numpy2-venv")
    venv = root / "venv"
    _run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    pins = root / "torch-pins.txt"
    pins.write_text("\n".join(_torch_pins()) + "\n")
    _run(python, *PIP, "install", "-c", pins, "torch", "torchvision", f"numpy=={NUMPY}")
    comfy_reqs = root / "comfy-requirements.txt"
    lines = (comfy_root / "requirements.txt").read_text().splitlines()
    keep = [ln for ln in lines if ln.strip() and re.split(r"[=<>~!\[ ;]", ln.strip())[0] not in TORCHES]
    comfy_reqs.write_text("\n".join([*keep, "requests"]) + "\n")  # 0.3.75's server imports requests unlisted
    _run(python, *PIP, "install", "-c", pins, "-r", comfy_reqs)
    before = _versions(python)
    assert before["numpy"] == NUMPY
    _run(python, *PIP, "install", "-r", harness.REPO / "requirements.txt")  # what ComfyUI-Manager runs
    after = _versions(python)
    check = subprocess.run([python, "-m", "pip", "check"], capture_output=True, text=True)
    return python, before, after, f"rc={check.returncode}\n{check.stdout}{check.stderr}"


def test_install_keeps_every_existing_package(numpy2_comfy):
    _, before, after, check = numpy2_comfy
    changed = {name: (v, after.get(name)) for name, v in before.items() if after.get(name) != v}
    assert changed == {}, f"the pack's requirements changed packages ComfyUI had: {changed}"
    assert after["numpy"] == NUMPY and "compressai" not in after
    added = sorted(set(after) - set(before))
    assert set(added) <= {"av", "pytorch-msssim", "safetensors", "pillow"}, added
    assert check.startswith("rc=0"), f"pip check found broken requirements:\n{check}"


def test_pack_loads_and_compress_workflow_runs(numpy2_comfy, tmp_path):
    python = numpy2_comfy[0]
    srv = harness.ComfyServer(harness.make_base(tmp_path / "base"), python=python)
    harness.put_photos(srv.input_dir, ("astronaut",))
    srv.start(timeout=180)
    try:
        info = srv.get("/object_info")
        assert {"ASSR_Encode", "ASSR_Decode", "ASSR_SaveBitstream"} <= set(info), srv.log()[-3000:]
        prompt = harness.ui_to_api(harness.load_workflow("assr_compress_and_save"), info)
        for n in prompt.values():
            if n["class_type"] == "LoadImage":
                n["inputs"]["image"] = "astronaut.png"
        entry = srv.run(prompt, timeout=300)
        assert entry["status"]["status_str"] == "success", harness.history_error(entry)
        saved = next(o["assr"] for o in entry["outputs"].values() if "assr" in o)[0]
        bs = parse((srv.output_dir / saved["subfolder"] / saved["filename"]).read_bytes())
        target = next(n for n in prompt.values() if n["class_type"] == "ASSR_Encode")["inputs"]["bpp"]
        assert bs.codec == "av1" and abs(bs.bpp - target) <= 0.1 * target
        numpy_seen = subprocess.run(
            [python, "-c", "import numpy; print(numpy.__version__)"], capture_output=True, text=True
        ).stdout.strip()
        assert numpy_seen == NUMPY

        # the learned codec is optional: asked for without compressai, one sentence says what to install
        for n in prompt.values():
            if n["class_type"] == "ASSR_Encode":
                n["inputs"]["codec"] = "learned"
        entry = srv.run(prompt, timeout=300)
        err = harness.history_error(entry)
        assert entry["status"]["status_str"] == "error" and err is not None
        assert "needs compressai, which is not installed: pip install compressai==1.2.8" in err["exception_message"]
    finally:
        srv.stop()

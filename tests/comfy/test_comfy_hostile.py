"""Hostile files with a valid CRC through the real ComfyUI server (issue 21): Load ASSR Bitstream + ASSR
Decode with regression-corpus files (``tests/data/hostile/``). Each bad one is a clear node error (a
``ValueError`` sentence with no absolute server path), each good one decodes to its declared size, and
the server answers afterwards with its memory near where it was."""

from __future__ import annotations

import json
import re
import sys
from io import BytesIO
from pathlib import Path

import harness
import pytest
from PIL import Image

from assr_eic.bitstream import parse

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import hostile  # noqa: E402

pytestmark = pytest.mark.comfy

MANIFEST = json.loads(hostile.MANIFEST.read_text())
_ABSOLUTE = re.compile(r"(?<![\w.])/(tmp|work|home|root|usr|proc|etc|var)/")


def _picks() -> list[str]:
    """Per generator family, its first bad file and its first good one (about 30 files)."""
    out = []
    for family in hostile.FAMILIES:
        files = sorted(n for n in MANIFEST if n.startswith(f"{family}-"))
        for good in (False, True):
            out += [n for n in files if (MANIFEST[n] == "ok") == good][:1]
    return out


PICKS = _picks()


@pytest.fixture(scope="module")
def hostile_prompt(server, object_info) -> dict:
    prompt = harness.ui_to_api(harness.load_workflow("assr_load_and_decode"), object_info)
    dec = next(k for k, v in prompt.items() if v["class_type"] == "ASSR_Decode")
    prompt[dec]["inputs"].update(max_pixels=hostile.DECODE_MAX_PIXELS, size="original")
    return prompt


def _run(server, prompt: dict, name: str, data: bytes) -> dict:
    target = f"hostile-{Path(name).name}"
    (server.input_dir / target).write_bytes(data)
    prompt = {k: {**v, "inputs": dict(v["inputs"])} for k, v in prompt.items()}
    load = next(k for k, v in prompt.items() if v["class_type"] == "ASSR_LoadBitstream")
    prompt[load]["inputs"]["bitstream"] = target
    r = server.queue(prompt)
    assert r.status_code == 200, r.text
    return server.wait(r.json()["prompt_id"], timeout=120)


@pytest.fixture(scope="module")
def rss_before(server, hostile_prompt) -> float:
    """The server's memory after a good decode of each codec (the models built)."""
    for seed in ("seeds/av1-s2.assr", "seeds/learned-s3.assr"):
        entry = _run(server, hostile_prompt, f"warm-{Path(seed).name}", (hostile.CORPUS / seed).read_bytes())
        assert entry["status"]["status_str"] == "success", harness.history_error(entry)
    return server.rss_mb()


def test_the_picks_cover_both_outcomes():
    assert 20 <= len(PICKS) <= 34
    assert {MANIFEST[n] == "ok" for n in PICKS} == {True, False}


@pytest.mark.parametrize("name", PICKS)
def test_hostile_file_through_the_server(server, hostile_prompt, rss_before, name):
    data = (hostile.CORPUS / name).read_bytes()
    entry = _run(server, hostile_prompt, name, data)
    err = harness.history_error(entry)
    if MANIFEST[name] == "ok":
        assert entry["status"]["status_str"] == "success", err
        bs = parse(data)
        save = next(k for k, v in hostile_prompt.items() if v["class_type"] == "SaveImage")
        png = server.view(entry["outputs"][save]["images"][0])
        assert Image.open(BytesIO(png)).size == (bs.width, bs.height)
        return
    assert entry["status"]["status_str"] == "error"
    assert err["node_type"] in ("ASSR_LoadBitstream", "ASSR_Decode")
    assert err["exception_type"] == "ValueError", err
    message = err["exception_message"]
    assert "Traceback" not in message and "\n" not in message.strip(), message
    assert str(server.base) not in message and not _ABSOLUTE.search(message), message


def test_server_answers_and_memory_is_back(server, hostile_prompt, rss_before):
    data = (hostile.CORPUS / "seeds/av1-s1-prompt.assr").read_bytes()
    entry = _run(server, hostile_prompt, "after-av1-s1-prompt.assr", data)
    assert entry["status"]["status_str"] == "success", harness.history_error(entry)
    assert server.get("/system_stats")["system"]
    assert server.rss_mb() < rss_before + 300, (rss_before, server.rss_mb())

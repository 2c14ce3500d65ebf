"""A long queue of good and bad prompts for the real ComfyUI server (tests/comfy/test_comfy_queue.py and
bench/server_queue.py share it).

``prepare`` lays out the server's folders: small photographs, good ``.assr`` files written by the
library, broken and hostile files (corrupt, truncated, junk, an absurd header, symlinks and names that
lead outside the input and models folders, a broken and a foreign model) and, where mount namespaces
work, a full and a read-only output subfolder (tmpfs mounted in the server's own namespace).
``cases`` builds N API prompts, good and bad interleaved; each good one carries a check of its
outputs by value, each bad one the node and the sentence it must fail with.
"""

from __future__ import annotations

import dataclasses
import io
import random
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import harness
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import mounts  # noqa: E402

from assr_eic.bitstream import pack, parse  # noqa: E402
from assr_eic.metrics import psnr  # noqa: E402
from assr_eic.pipeline import compress, decompress  # noqa: E402

H, W = 64, 96  # small images keep a 50-prompt queue to about a minute on two CPU cores
CROPS = {"astronaut": (40, 180), "coffee": (100, 200), "chelsea": (60, 150)}
ENC_PSNR_MIN = 20.0  # dB, encode -> decode at s=2 (measured 23-28 dB on these crops, see the test's notes)
DEFAULT = "default (built-in)"


@dataclass
class Layout:
    base: Path
    images: dict[str, np.ndarray]  # input file name -> pixels
    good: dict[str, bytes]  # input .assr name -> bytes
    setup: list[str]  # shell lines run before the server (mounts); empty where mounts are unavailable
    outside: Path


@dataclass
class Case:
    kind: str
    prompt: dict
    error: str | None = None  # the sentence part a bad prompt must fail with
    node_type: str | None = None  # the node that must raise it (None: refused by POST /prompt with HTTP 400)
    check: Callable[[harness.ComfyServer, dict], None] | None = None  # a good prompt's output check


def prepare(base: Path, foreign_model: str) -> Layout:
    """Lay out ``base`` (made by harness.make_base) for the queue; returns what the cases refer to."""
    inp, models = base / "input", base / "models" / "assr_eic"
    outside = base.parent / f"{base.name}-outside"
    outside.mkdir(exist_ok=True)
    images, good = {}, {}
    for name, (y, x) in CROPS.items():
        img = np.ascontiguousarray(harness.photo(name)[y : y + H, x : x + W])
        Image.fromarray(img).save(inp / f"q_{name}.png")
        images[f"q_{name}.png"] = img
        data = compress(img, scale=2.0, quality=0.5)
        (inp / f"q_{name}.assr").write_bytes(data)
        good[f"q_{name}.assr"] = data
    one = next(iter(good.values()))
    (inp / "q_corrupt.assr").write_bytes(one[:20] + bytes([one[20] ^ 0x40]) + one[21:])
    (inp / "q_truncated.assr").write_bytes(one[: len(one) // 2])
    (inp / "q_junk.assr").write_bytes(bytes(random.Random(0).randrange(256) for _ in range(300)))
    bs = parse(one)
    (inp / "q_huge.assr").write_bytes(pack(dataclasses.replace(bs, height=16384, width=16384)))
    (outside / "secret.assr").write_bytes(one)
    (base / "q_beside.assr").write_bytes(one)
    link = inp / "q_escape.assr"
    if not link.is_symlink():
        link.symlink_to(outside / "secret.assr")
    (models / "q_broken.safetensors").write_bytes(b"not a safetensors file")
    shutil.copy(foreign_model, models / "q_foreign.safetensors")
    shutil.copy(foreign_model, outside / "model.safetensors")
    mlink = models / "q_escape.safetensors"
    if not mlink.is_symlink():
        mlink.symlink_to(outside / "model.safetensors")
    setup = []
    if mounts.can_mount():
        out = base / "output"
        setup = [mounts.full_disk(out / "full", 16), mounts.read_only(out / "ro")]
    return Layout(base, images, good, setup, outside)


def read_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


# --- prompt builders (API format) ----------------------------------------------------------------


def _model(name: str = DEFAULT) -> dict:
    return {"class_type": "ASSR_LoadModel", "inputs": {"model_name": name}}


def _decode(src: list, size: str = "original", factor: float = 1.0, width: int = W, height: int = H) -> dict:
    return {
        "class_type": "ASSR_Decode",
        "inputs": {"bitstream": src, "model": ["m", 0], "size": size, "factor": factor, "width": width,
                   "height": height},
    }  # fmt: skip


def _save_image(prefix: str) -> dict:
    return {"class_type": "SaveImage", "inputs": {"images": ["d", 0], "filename_prefix": prefix}}


def load_decode(name: str, model: str = DEFAULT, **size) -> dict:
    return {
        "m": _model(model),
        "l": {"class_type": "ASSR_LoadBitstream", "inputs": {"bitstream": name}},
        "d": _decode(["l", 0], **size),
        "s": _save_image("q/dec"),
    }


def encode(image: str, quality: float, then: str, prefix: str = "q/enc", **size) -> dict:
    """Load Image -> ASSR Encode (s=2, q) -> ``then``: 'decode' (SaveImage) or 'save' (Save Bitstream)."""
    p = {
        "m": _model(),
        "i": {"class_type": "LoadImage", "inputs": {"image": image}},
        "e": {
            "class_type": "ASSR_Encode",
            "inputs": {"image": ["i", 0], "model": ["m", 0], "mode": "scale + quality", "bpp": 0.05, "scale": 2.0,
                       "quality": quality, "codec": "model default", "prompt": ""},
        },
    }  # fmt: skip
    if then == "decode":
        p["d"] = _decode(["e", 0], **size)
        p["s"] = _save_image(prefix)
    else:
        p["b"] = {"class_type": "ASSR_SaveBitstream", "inputs": {"bitstream": ["e", 0], "filename_prefix": prefix}}
    return p


# --- the cases -----------------------------------------------------------------------------------


def good_cases(lay: Layout, i: int) -> list[Case]:
    """Three good kinds; ``i`` varies the settings so ComfyUI's cache never answers for them."""
    names = sorted(lay.images)
    image = names[i % len(names)]
    quality = round(0.30 + 0.005 * i, 3)
    src = image.replace(".png", ".assr")
    w, h = 40 + i, 30 + (i * 7) % 50

    def check_encode_decode(srv, entry):
        out = read_png(srv.view(entry["outputs"]["s"]["images"][0]))
        assert out.shape == (H, W, 3), out.shape
        assert psnr(lay.images[image], out) > ENC_PSNR_MIN

    def check_load_decode(srv, entry):
        out = read_png(srv.view(entry["outputs"]["s"]["images"][0]))
        ref = decompress(lay.good[src], size=(h, w))
        diff = np.abs(out.astype(int) - ref.astype(int))
        # bit-exact latents; the float decoder may round a pixel to the next level under other thread counts
        assert out.shape == (h, w, 3) and diff.max() <= 1 and (diff > 0).mean() < 0.01, (
            f"node vs library pixels: max diff {diff.max()}, {100 * (diff > 0).mean():.2f}% differ"
        )

    def check_encode_save(srv, entry):
        (saved,) = entry["outputs"]["b"]["assr"]
        data = (srv.output_dir / saved["subfolder"] / saved["filename"]).read_bytes()
        bs = parse(data)
        assert (bs.width, bs.height, bs.scale) == (W, H, 2.0) and abs(bs.quality - quality) < 0.003
        assert psnr(lay.images[image], decompress(data)) > ENC_PSNR_MIN

    return [
        Case("good: encode -> decode", encode(image, quality, "decode"), check=check_encode_decode),
        Case("good: load -> decode", load_decode(src, size="width x height", width=w, height=h),
             check=check_load_decode),
        Case("good: encode -> save", encode(image, quality, "save", prefix="q/run"), check=check_encode_save),
    ]  # fmt: skip


def bad_cases(lay: Layout) -> list[Case]:
    """Every bad kind, each with the node and the sentence it must fail with."""
    img = sorted(lay.images)[0]
    good = sorted(lay.good)[0]
    unreachable = encode(img, 0.5, "decode")
    unreachable["e"]["inputs"].update(mode="target bpp", bpp=0.001)
    cases = [
        Case("bad: corrupt .assr", load_decode("q_corrupt.assr"), "CRC-32 check failed", "ASSR_LoadBitstream"),
        Case("bad: truncated .assr", load_decode("q_truncated.assr"), "not a usable .assr file", "ASSR_LoadBitstream"),
        Case("bad: junk .assr", load_decode("q_junk.assr"), "wrong magic bytes", "ASSR_LoadBitstream"),
        Case("bad: missing file", load_decode("q_gone.assr"), "is not a file in ComfyUI's input folder",
             "ASSR_LoadBitstream"),
        Case("bad: symlink out of input", load_decode("q_escape.assr"), "outside ComfyUI's input folder",
             "ASSR_LoadBitstream"),
        Case("bad: ../ out of input", load_decode("../q_beside.assr"), "outside ComfyUI's input folder",
             "ASSR_LoadBitstream"),
        Case("bad: absurd output size", load_decode("q_huge.assr", size="factor", factor=2.0),
             "must be at least 1x1 and at most 268435456 pixels", "ASSR_Decode"),
        Case("bad: width beyond the schema", load_decode(good, size="width x height", width=100000),
             "bigger than max of 16384", None),
        Case("bad: broken model file", load_decode(good, model="q_broken.safetensors"),
             "cannot load the ASSR model 'q_broken.safetensors'", "ASSR_LoadModel"),
        Case("bad: model symlink out of models", load_decode(good, model="q_escape.safetensors"),
             "outside models/assr_eic/", "ASSR_LoadModel"),
        Case("bad: wrong model for the file", load_decode(good, model="q_foreign.safetensors"),
             "decode it with the model that wrote it", "ASSR_Decode"),
        Case("bad: unreachable rate", unreachable, f"below what this {W}x{H} image can reach", "ASSR_Encode"),
        Case("bad: control character in prefix", encode(img, 0.5, "save", prefix="q/bad\x07name"),
             "not allowed in file names", "ASSR_SaveBitstream"),
        Case("bad: prefix out of output", encode(img, 0.5, "save", prefix="../../q_escaped"),
             "outside ComfyUI's output folder", "ASSR_SaveBitstream"),
    ]  # fmt: skip
    if lay.setup:
        cases += [
            Case("bad: full disk", encode(img, 0.5, "save", prefix="full/x"),
                 "no space left on the device; nothing was written", "ASSR_SaveBitstream"),
            Case("bad: read-only folder", encode(img, 0.5, "save", prefix="ro/x"),
                 "read-only file system; nothing was written", "ASSR_SaveBitstream"),
        ]  # fmt: skip
    return cases


def cases(lay: Layout, n: int, seed: int = 0) -> list[Case]:
    """``n`` prompts: first one of every kind (so one-time costs such as loading each model happen
    early), then about half good and half bad in a seeded order."""
    bad = bad_cases(lay)
    warm = good_cases(lay, 0) + bad
    rest_n = max(0, n - len(warm))
    rest_bad = [bad[k % len(bad)] for k in range(rest_n // 2)]
    rest_good = [g for i in range(1, n + 1) for g in good_cases(lay, i)][: rest_n - len(rest_bad)]
    rest = rest_good + rest_bad
    random.Random(seed).shuffle(rest)
    return (warm + rest)[:n]


@dataclass
class Result:
    index: int
    kind: str
    ok: bool  # the prompt behaved as expected (succeeded and passed its check, or failed as required)
    status: str  # success | error | http400
    message: str
    seconds: float  # wall time from POST /prompt to the finished history entry (polled every 0.2 s)
    exec_seconds: float | None  # the server's own execution_start -> success/error timestamps
    rss_mb: float


def run_case(srv: harness.ComfyServer, case: Case, index: int, timeout: float = 300.0) -> Result:
    """Queue one case, wait for it, check it; returns what happened (never raises for a wrong outcome)."""
    t = time.perf_counter()
    r = srv.queue(case.prompt)
    if r.status_code == 400:
        errs = r.json().get("node_errors", {})
        msg = " | ".join(f"{e['message']}: {e.get('details', '')}" for ne in errs.values() for e in ne["errors"])
        ok = case.error is not None and case.node_type is None and case.error in msg
        return Result(index, case.kind, ok, "http400", msg, time.perf_counter() - t, None, srv.rss_mb())
    r.raise_for_status()
    entry = srv.wait(r.json()["prompt_id"], timeout)
    dt = time.perf_counter() - t
    status = entry["status"]["status_str"]
    if status == "success":
        msg, ok = "", case.error is None
        if ok and case.check is not None:
            try:
                case.check(srv, entry)
            except AssertionError as e:
                ok, msg = False, f"output check failed: {e}"
    else:
        err = harness.history_error(entry) or {}
        msg = err.get("exception_message", "")
        ok = (
            case.error is not None
            and err.get("node_type") == case.node_type
            and err.get("exception_type") == "ValueError"
            and case.error in msg
            and "Traceback" not in msg
        )
    stamps = {kind: m.get("timestamp") for kind, m in entry["status"].get("messages", []) if isinstance(m, dict)}
    end = stamps.get("execution_success") or stamps.get("execution_error")
    exec_s = (end - stamps["execution_start"]) / 1000 if end and stamps.get("execution_start") else None
    return Result(index, case.kind, ok, status, msg.strip(), dt, exec_s, srv.rss_mb())

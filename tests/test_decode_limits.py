"""Decoding memory and size limits (issue 21): banded colour conversion bit for bit, the user's
``max_pixels`` refused from the header, one meaning per size limit."""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from assr_eic import limits
from assr_eic.bitstream import Bitstream, BitstreamError, lowres_size, pack, parse
from assr_eic.codec import av1, check_lowres_size
from assr_eic.image import ImageError, load_image
from assr_eic.limits import DEFAULT_MAX_DECODE_PIXELS
from assr_eic.pipeline import OutputTooLargeError, decode, decompress

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = sorted((ROOT / "samples").glob("*.assr"))
HASHES = Path(__file__).resolve().parent / "data" / "decoded_pixels_before.json"


def whole_frame_yuv420_to_rgb(yuv: np.ndarray, h: int, w: int) -> torch.Tensor:
    """The conversion as it was before issue 21 (whole frame in float32): the reference."""
    flat = yuv.reshape(-1).astype(np.float32)
    y = torch.from_numpy(flat[: h * w].reshape(h, w))
    uv = torch.from_numpy(flat[h * w :].reshape(2, 1, h // 2, w // 2))
    uv = torch.nn.functional.interpolate(uv, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    u, v = uv[0] - 128.0, uv[1] - 128.0
    r = y + v / 0.713
    b = y + u / 0.564
    g = (y - 0.299 * r - 0.114 * b) / 0.587
    return (torch.stack([r, g, b])[None] / 255.0).clamp_(0, 1)


def decoded_hashes() -> dict[str, str]:
    """SHA-256 of ``decompress`` pixels of the shipped samples: original size, other sizes, both decoders.

    Recorded in ``tests/data/decoded_pixels_before.json`` with the code before the banded conversion
    (``ASSR_EIC_PRECISION=float32 python tests/test_decode_limits.py`` at commit b8b6cc5)."""
    from assr_eic.model import load_model

    model = load_model()
    out = {}
    for f in SAMPLES:
        data = f.read_bytes()
        bs = parse(data)
        bicubic = pack(Bitstream(bs.codec, bs.fingerprint, bs.height, bs.width, bs.scale_code, bs.quality_code,
                                 bs.streams, bs.prompt, decoder_strength=0))  # fmt: skip
        for name, d in (("decoder", data), ("bicubic", bicubic)):
            for size in (None, (bs.height * 2 + 1, bs.width * 2 - 3), (97, 1203)):
                px = decompress(d, size=size, model=model)
                out[f"{f.stem}/{name}/{size}"] = hashlib.sha256(px.tobytes()).hexdigest()
    return out


@pytest.mark.parametrize("hw", [(64, 64), (100, 150), (338, 512), (1026, 130)])
@pytest.mark.parametrize("band", [2, 6, 1 << 14, 1 << 20])
def test_banded_conversion_is_the_whole_frame_conversion(hw, band):
    h, w = hw
    g = np.random.default_rng(h * w + band)
    yuv = g.integers(0, 256, (h * w * 3 // 2,), dtype=np.uint8)
    ref = whole_frame_yuv420_to_rgb(yuv, h, w)
    for crop in ((h, w), (h - 1, w - 1), (h - 2, w - 2), (1, 1)):
        got = av1._yuv420_to_rgb(yuv, h, w, crop=crop, band_pixels=band)
        assert got.shape == (1, 3, *crop)
        assert torch.equal(got, ref[..., : crop[0], : crop[1]]), (hw, band, crop)


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_real_files_decode_to_the_whole_frame_conversion(path):
    bs = parse(path.read_bytes())
    code = av1.AV1Codec().decode(bs.streams, bs.lowres_size, bs.quality_code)
    ph, pw = av1._padded_size(*bs.lowres_size)
    ref = whole_frame_yuv420_to_rgb(code.symbols[0].numpy(), ph, pw)[..., : bs.lowres_size[0], : bs.lowres_size[1]]
    assert torch.equal(code.x_hat, ref)


def test_decoded_pixels_are_those_before_the_change(monkeypatch):
    monkeypatch.setenv("ASSR_EIC_PRECISION", "float32")  # the recorded hashes are float32 mode's (any CPU)
    before = json.loads(HASHES.read_text())
    assert len(before) == 3 * len(SAMPLES) * 2
    assert decoded_hashes() == before


if __name__ == "__main__":  # record the reference hashes (run at the commit before the change)
    HASHES.parent.mkdir(exist_ok=True)
    HASHES.write_text(json.dumps(decoded_hashes(), indent=1) + "\n")


# --- the user's decoding limit, refused from the header ------------------------------------------------

CLI = [sys.executable, "-m", "assr_eic.cli"]


@pytest.fixture(scope="module")
def flat_av1_payloads() -> dict[tuple[int, int], bytes]:
    """Real AV1 payloads (libaom, flat grey) for the low-res sizes the crafted files below imply."""
    from assr_eic.codec import obu

    out = {}
    for h, w in ((2048, 2048), (96, 128), (64, 64)):
        out[h, w] = obu.compact(av1._avif_payload(np.full((h, w, 3), 128, np.uint8), 40, 9), h, w)
    return out


def crafted(payloads, fingerprint: bytes, H: int, W: int, scale_code: int, strength: int = 3) -> bytes:
    """A legal file declaring H x W around a real payload of the low-res size it implies (issue 21)."""
    lh, lw = lowres_size(H, W, scale_code)
    return pack(Bitstream("av1", fingerprint, H, W, scale_code, 128, (payloads[av1._padded_size(lh, lw)],),
                          decoder_strength=strength))  # fmt: skip


def test_a_large_declared_size_is_refused_from_the_header_before_the_model_loads(flat_av1_payloads, model, tmp_path):
    big = crafted(flat_av1_payloads, model.fingerprint, 16384, 16384, 448)  # 16384^2 at s = 8: low-res 2048^2
    assert len(big) < 4000
    missing_model = tmp_path / "no-such-model.safetensors"  # never opened: the refusal comes first
    t = time.perf_counter()
    for call in (decompress, decode):
        with pytest.raises(OutputTooLargeError) as e:
            call(big, model=missing_model)
        msg = str(e.value)
        assert "16384x16384" in msg and "268435456 pixels" in msg and str(DEFAULT_MAX_DECODE_PIXELS) in msg
        assert "max_pixels" in msg and "--max-pixels" in msg and "\n" not in msg and msg.count(". ") == 0
    assert time.perf_counter() - t < 1.0
    assert isinstance(e.value, BitstreamError)  # the format's one error type, for a hostile file too
    assert DEFAULT_MAX_DECODE_PIXELS == 1 << 26 and limits.MAX_OUTPUT_PIXELS == limits.MAX_PIXELS


def test_the_limit_can_be_raised(flat_av1_payloads, model):
    data = crafted(flat_av1_payloads, model.fingerprint, 768, 1024, 448)  # low-res 96 x 128 (padded 128 x 96)
    with pytest.raises(OutputTooLargeError, match="1024x768"):
        decompress(data, model=model, max_pixels=768 * 1024 - 1)
    out = decompress(data, model=model, max_pixels=768 * 1024)
    assert out.shape == (768, 1024, 3)
    assert np.array_equal(out, decompress(data, model=model))  # under the default, same pixels
    with pytest.raises(ValueError, match="decoding limit: at most 1000 pixels"):
        decompress(data, size=(40, 40), model=model, max_pixels=1000)
    assert decompress(data, size=(20, 50), model=model, max_pixels=1000).shape == (20, 50, 3)
    for bad in (0, -1, limits.MAX_OUTPUT_PIXELS + 1, 1.5):
        with pytest.raises(ValueError, match="max_pixels must be"):
            decompress(data, model=model, max_pixels=bad)


@pytest.mark.parametrize(
    "size,message",
    [((1, 4194304), "each side must be at most 32768"), ((4194304, 1), "each side must be at most 32768"),
     ((9000, 9000), f"at most {DEFAULT_MAX_DECODE_PIXELS} pixels"), ((20000, 20000), "at most 268435456 pixels")],
)  # fmt: skip
def test_requested_sizes_are_limited_per_side_and_in_pixels(flat_av1_payloads, model, size, message):
    data = crafted(flat_av1_payloads, model.fingerprint, 768, 1024, 448)
    with pytest.raises(ValueError, match=message) as e:
        decompress(data, size=size, model=model)
    assert "output size" in str(e.value) and "\n" not in str(e.value)


def test_cli_max_pixels(flat_av1_payloads, model, model_path, tmp_path):
    f = tmp_path / "big.assr"
    f.write_bytes(crafted(flat_av1_payloads, model.fingerprint, 768, 1024, 448))
    out = tmp_path / "y.png"
    r = subprocess.run([*CLI, "decompress", str(f), "-o", str(out), "--model", model_path, "--max-pixels", "786431"],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "1024x768" in lines[0] and "786431" in lines[0] and "--max-pixels" in lines[0]
    assert not out.exists()
    r = subprocess.run([*CLI, "decompress", str(f), "-o", str(out), "--model", model_path, "--size", "4194304x1"],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 2 and "at most 32768" in r.stderr and not out.exists()
    r = subprocess.run([*CLI, "decompress", str(f), "-o", str(out), "--model", model_path, "--max-pixels", "786432"],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    with Image.open(out) as im:
        assert im.size == (1024, 768)


# --- one limit, one meaning ----------------------------------------------------------------------------


def test_av1_limit_is_ffmpegs_and_the_encoder_respects_it(flat_av1_payloads, model):
    fits = limits.av1_frame_fits
    # the measured boundary (bench/av1_frame_limit.py, bench/results/decode_memory/av1_frame_limit.txt)
    assert fits(16128, 16128) and not fits(16130, 16130)
    assert fits(65536, 3840) and not fits(65536, 3842) and fits(3840, 65536) and not fits(3842, 65536)
    assert fits(64, 65536) and not fits(64, 65538)
    huge = torch.zeros(1, 3, 1, 1).expand(1, 3, 16130, 16130)  # no memory: refused from the shape
    with pytest.raises(ValueError, match="larger than the AV1 decoder") as e:
        av1.AV1Codec().encode(huge, 128)
    assert "16130x16130" in str(e.value) and "use a larger scale" in str(e.value)
    check_lowres_size("av1", (16128, 16128))  # the largest square low-res image is accepted
    # rate control's finest scale is the finest whose low-res image the decoder decodes
    from assr_eic.ratecontrol import finest_scale_code

    for H, W in ((16384, 16384), (32768, 8192), (8192, 32768), (1000, 1000)):
        c = finest_scale_code("av1", H, W)
        assert fits(*av1._padded_size(*lowres_size(H, W, c)))
        assert c == 0 or not fits(*av1._padded_size(*lowres_size(H, W, c - 1)))
    assert finest_scale_code("av1", 16384, 16384) == 2 and finest_scale_code("av1", 1000, 1000) == 0
    # a file that declares a frame beyond it (an older encoder could write one) is refused from the header
    bad = crafted(flat_av1_payloads, model.fingerprint, 64, 64, 0)
    bs = parse(bad)
    forged = pack(Bitstream("av1", bs.fingerprint, 16384, 16384, 0, 128, bs.streams))
    with pytest.raises(BitstreamError, match="invalid file: the av1 codec's low-res image would be 16384x16384"):
        decompress(forged, model=model, max_pixels=limits.MAX_OUTPUT_PIXELS)


def test_learned_limit_lives_in_limits():
    from assr_eic.codec import learned

    assert learned.MAX_LOWRES_PIXELS == limits.LEARNED_MAX_LOWRES_PIXELS == 2048 * 2048


def _png_header_only(path: Path, w: int, h: int) -> None:
    """A PNG whose header declares w x h RGB and whose pixel data is a few bytes (truncated)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)))


def test_pillow_bomb_limit_is_the_formats(tmp_path):
    from PIL import Image as PILImage

    before = PILImage.MAX_IMAGE_PIXELS
    big = tmp_path / "big.png"  # 196 Mpx: above Pillow's default bomb limit (179 Mpx), within the format's
    _png_header_only(big, 16384, 12000)
    with pytest.raises(ImageError) as e:
        load_image(big)
    assert "cannot read" in str(e.value) and "too large" not in str(e.value)  # read (and found truncated)
    over = tmp_path / "over.png"  # one row more than the format holds: refused from the header
    _png_header_only(over, 16384, 16385)
    with pytest.raises(ImageError, match="too large"):
        load_image(over)
    assert PILImage.MAX_IMAGE_PIXELS == before  # restored


@pytest.mark.slow
def test_largest_av1_frame_encodes_and_decodes():
    """The boundary itself through the codec: 16128 x 16128 (the largest square frame) round-trips,
    16130 x 16130 is refused by the codec before the decoder sees it (about 7 GB, 30 s)."""
    from assr_eic.codec import obu

    n = 16128
    data = obu.compact(av1._avif_payload(np.full((n, n, 3), 128, np.uint8), 40, 9), n, n)
    code = av1.AV1Codec().decode((data,), (n, n), 128)
    assert code.x_hat.shape == (1, 3, n, n)
    assert abs(code.x_hat[0, :, :: 997, :: 997].mean().item() - 128 / 255) < 2 / 255
    del code
    with pytest.raises(BitstreamError, match="larger than the AV1 decoder"):
        av1.AV1Codec().decode((data,), (n + 2, n + 2), 128)

"""Decoding memory and size limits (issue 21): banded colour conversion bit for bit, the user's
``max_pixels`` refused from the header, one meaning per size limit."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from assr_eic.bitstream import Bitstream, pack, parse
from assr_eic.codec import av1

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
    from assr_eic.pipeline import decompress

    model = load_model()
    out = {}
    for f in SAMPLES:
        data = f.read_bytes()
        bs = parse(data)
        bicubic = pack(Bitstream(bs.codec, bs.fingerprint, bs.height, bs.width, bs.scale_code, bs.quality_code,
                                 bs.streams, bs.prompt, strength=0))  # fmt: skip
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

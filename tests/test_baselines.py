"""Classical baselines at a byte budget, with the real encoders (no mocks)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from assr_eic.baselines import (
    BASELINES,
    BaselineCodec,
    available_codecs,
    best_classical,
    best_under_budget,
    budget_bytes,
    downscaled_size,
    get_codec,
    matched,
    pil_resize,
)
from assr_eic.metrics import psnr

H, W = 192, 256
BUDGET = budget_bytes(0.5, H, W)  # 3072 bytes: every codec fits at full size


@pytest.fixture(scope="module")
def img() -> np.ndarray:
    """A 256x192 crop of a real photograph (scikit-image's astronaut; never the Kodak eval set)."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[60:252, 120:376])


def require(name: str) -> BaselineCodec:
    c = get_codec(name)
    reason = c.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    return c


class TestCodecs:
    def test_registry(self):
        assert set(BASELINES) == {"jpeg", "webp", "avif", "jxl", "heic"}
        assert {"jpeg", "webp"} <= set(available_codecs())
        with pytest.raises(KeyError, match="known"):
            get_codec("bpg")

    @pytest.mark.parametrize("name", list(BASELINES))
    def test_round_trip_and_determinism(self, img, name):
        c = require(name)
        data = c.encode(img, (c.q_min + c.q_max) // 2)
        assert isinstance(data, bytes) and data == c.encode(img, (c.q_min + c.q_max) // 2)
        out = c.decode(data)
        assert out.shape == img.shape and out.dtype == np.uint8
        assert psnr(img, out) > 25

    def test_quality_range_enforced(self, img):
        c = get_codec("jpeg")
        with pytest.raises(ValueError, match="quality"):
            c.encode(img, c.q_max + 1)
        with pytest.raises(ValueError, match="uint8"):
            c.encode(img.astype(np.float32), 50)

    def test_missing_plugin_is_reported(self):
        fake = BaselineCodec(
            "fake", "FAKE", 0, 1, plugin="no-such-plugin", register=lambda: importlib.import_module("no_such_plugin")
        )
        assert not fake.available()
        assert "no-such-plugin" in fake.unavailable_reason()
        with pytest.raises(RuntimeError, match="unavailable"):
            fake.require()


class TestBestUnderBudget:
    @pytest.mark.parametrize("name", list(BASELINES))
    @pytest.mark.parametrize("scale", [1.0, 2.0])
    def test_fits_and_next_quality_does_not(self, img, name, scale):
        c = require(name)
        r = best_under_budget(img, name, BUDGET, scale=scale)
        assert r is not None and r.codec == name and r.scale == scale
        assert r.nbytes <= BUDGET
        lr = pil_resize(img, downscaled_size(H, W, scale))
        assert len(c.encode(lr, r.quality)) == r.nbytes  # deterministic: same file again
        if r.quality < c.q_max:
            assert len(c.encode(lr, r.quality + 1)) > BUDGET

    @pytest.mark.parametrize("scale", [1.0, 1.5, 3.0])
    def test_bpp_and_full_size_output(self, img, scale):
        odd = img[:191, :255]
        r = best_under_budget(odd, "webp", 2000, scale=scale)
        assert r is not None
        assert r.bpp == pytest.approx(r.nbytes * 8 / (191 * 255))
        assert r.image.shape == odd.shape and r.image.dtype == np.uint8
        assert r.psnr == pytest.approx(psnr(odd, r.image))
        assert 0 < r.ms_ssim <= 1

    def test_downscaled_size_rounds_half_up(self):
        assert downscaled_size(191, 255, 1.5) == (127, 170)
        assert downscaled_size(3, 5, 2) == (2, 3)
        assert downscaled_size(4, 4, 100) == (1, 1)

    def test_none_when_nothing_fits(self, img):
        assert best_under_budget(img, "jpeg", 100) is None

    def test_rejects_upscaling(self, img):
        with pytest.raises(ValueError, match="scale"):
            best_under_budget(img, "jpeg", BUDGET, scale=0.5)


class TestEnvelope:
    def test_envelope_beats_every_single_codec(self, img):
        max_bytes = budget_bytes(0.1, H, W)  # 614 bytes
        codecs, scales = ("jpeg", "webp", "avif"), (1, 2, 3)
        env = best_classical(img, max_bytes, codecs=codecs, scales=scales)
        assert env is not None and env.nbytes <= max_bytes and env.codec in codecs
        singles = [best_under_budget(img, c, max_bytes, scale=s) for c in codecs for s in scales]
        assert any(r is not None for r in singles)
        for r in singles:
            if r is not None:
                assert env.psnr >= r.psnr
        m = matched(img, env.codec, max_bytes, scales=scales)
        assert m is not None and m.psnr == pytest.approx(env.psnr)

    def test_extreme_budget_needs_downscaling(self, img):
        r = matched(img, "jpeg", budget_bytes(0.1, H, W))
        assert r is not None and r.scale > 1  # a full-size JPEG has more header than that
        assert best_classical(img, 10) is None

"""PSNR, MS-SSIM and Bjontegaard deltas against hand-computable values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pytorch_msssim import ssim as reference_ssim

from assr_eic.metrics import MS_SSIM_MIN_SIDE, bd_psnr, bd_rate, ms_ssim, psnr, to_bchw


def noisy(img: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).round().astype(np.uint8)


class TestPSNR:
    def test_identical_is_inf(self, photo):
        assert psnr(photo, photo.copy()) == math.inf
        t = torch.rand(2, 3, 16, 16)
        assert psnr(t, t.clone()) == math.inf

    def test_known_mse_uint8(self):
        a = np.full((8, 8, 3), 100, np.uint8)
        assert psnr(a, a + 1) == pytest.approx(20 * math.log10(255))  # MSE = 1 level^2
        assert psnr(a, a + 10) == pytest.approx(20 * math.log10(25.5))  # MSE = 100 levels^2
        b = a.copy()
        b[:4] += 16  # half the pixels off by 16: MSE = 128
        assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 128))

    def test_known_mse_float_tensor(self):
        a = torch.full((1, 3, 4, 4), 0.5)
        assert psnr(a, a + 0.1) == pytest.approx(20.0, abs=1e-5)  # MSE 0.01, peak 1

    def test_batch_is_mean_of_per_image_psnr(self):
        a = torch.full((2, 3, 4, 4), 0.5)
        b = a.clone()
        b[0] += 0.1  # 20 dB
        b[1] += 0.01  # 40 dB
        assert psnr(a, b) == pytest.approx(30.0, abs=1e-4)

    def test_array_and_tensor_layouts_agree(self, photo):
        deg = noisy(photo, 5)
        t = torch.from_numpy(photo).permute(2, 0, 1).float() / 255
        td = torch.from_numpy(deg).permute(2, 0, 1).float() / 255
        assert psnr(t, td) == pytest.approx(psnr(photo, deg), abs=1e-3)
        assert to_bchw(photo).shape == (1, 3, *photo.shape[:2])

    def test_shape_mismatch(self, photo):
        with pytest.raises(ValueError, match="differ in shape"):
            psnr(photo, photo[:-1])


class TestMSSSIM:
    def test_identical_is_one(self, photo):
        assert ms_ssim(photo, photo) == pytest.approx(1.0, abs=1e-6)

    def test_degradation_lowers_it(self, photo):
        mild, strong = ms_ssim(photo, noisy(photo, 4)), ms_ssim(photo, noisy(photo, 30))
        assert 0 < strong < mild < 1

    def test_uint8_and_float_agree(self, photo):
        deg = noisy(photo, 10)
        t = to_bchw(photo).float()
        td = to_bchw(deg).float()
        assert ms_ssim(t, td) == pytest.approx(ms_ssim(photo, deg), abs=1e-5)

    def test_small_image_falls_back_to_ssim(self, photo):
        a = photo[: MS_SSIM_MIN_SIDE - 1, :200]
        b = noisy(a, 10)
        expected = float(reference_ssim(to_bchw(a).float(), to_bchw(b).float(), data_range=1.0))
        assert ms_ssim(a, b) == pytest.approx(expected, abs=1e-6)
        assert math.isnan(ms_ssim(a, b, small="nan"))

    def test_min_side_uses_full_ms_ssim(self, photo):
        a = photo[:MS_SSIM_MIN_SIDE, :MS_SSIM_MIN_SIDE]
        assert ms_ssim(a, a) == pytest.approx(1.0, abs=1e-6)

    def test_tiny_image_is_nan(self):
        a = np.zeros((8, 8, 3), np.uint8)
        assert math.isnan(ms_ssim(a, a))


RATES = [0.05, 0.1, 0.2, 0.4, 0.8]
PSNRS = [22.0, 24.5, 27.0, 29.0, 31.5]


class TestBjontegaard:
    def test_curve_against_itself(self):
        assert bd_rate(RATES, PSNRS, RATES, PSNRS) == pytest.approx(0.0, abs=1e-9)
        assert bd_psnr(RATES, PSNRS, RATES, PSNRS) == pytest.approx(0.0, abs=1e-9)

    def test_half_and_double_rate(self):
        half = [r / 2 for r in RATES]
        assert bd_rate(RATES, PSNRS, half, PSNRS) == pytest.approx(-50.0, abs=1e-6)
        assert bd_rate(half, PSNRS, RATES, PSNRS) == pytest.approx(100.0, abs=1e-6)

    def test_constant_psnr_gain(self):
        better = [p + 1.5 for p in PSNRS]
        assert bd_psnr(RATES, PSNRS, RATES, better) == pytest.approx(1.5, abs=1e-9)
        assert bd_rate(RATES, PSNRS, RATES, better) < 0

    def test_fewer_than_four_points(self):
        r, p = RATES[:3], PSNRS[:3]
        assert bd_rate(r, p, [x / 2 for x in r], p) == pytest.approx(-50.0, abs=1e-6)

    def test_no_overlap_is_nan(self):
        assert math.isnan(bd_rate(RATES, PSNRS, RATES, [p + 20 for p in PSNRS]))
        assert math.isnan(bd_psnr(RATES, PSNRS, [r * 100 for r in RATES], PSNRS))

    @pytest.mark.parametrize(
        "rates,psnrs",
        [([0.1], [30.0]), ([0.1, 0.2], [30.0]), ([0.0, 0.2], [30.0, 31.0]), ([0.1, 0.2], [30.0, math.nan])],
    )
    def test_bad_curves(self, rates, psnrs):
        with pytest.raises(ValueError):
            bd_rate(rates, psnrs, RATES, PSNRS)

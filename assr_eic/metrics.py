"""Full-reference image metrics (PSNR, MS-SSIM) and Bjontegaard deltas between rate-distortion curves.

Images are either numpy arrays laid out (H, W), (H, W, C) or (B, H, W, C) or torch tensors laid out
(C, H, W) or (B, C, H, W). Integer arrays are 8-bit (divided by 255); float ones must already be in [0, 1].
Only PSNR and MS-SSIM are computed here: both need no downloaded weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

ImageLike = np.ndarray | torch.Tensor

#: Smallest image side the standard 5-scale MS-SSIM accepts: (11 - 1) * 2**4 + 1.
MS_SSIM_MIN_SIDE = 161
#: Smallest image side for single-scale SSIM with its 11x11 Gaussian window.
SSIM_MIN_SIDE = 11


def to_bchw(x: ImageLike) -> torch.Tensor:
    """Convert an image (see module docstring for layouts) to a float64 (B, C, H, W) tensor in [0, 1]."""
    if isinstance(x, np.ndarray):
        if x.ndim == 2:
            x = x[:, :, None]
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4:
            raise ValueError(f"expected an (H, W[, C]) or (B, H, W, C) array, got shape {x.shape}")
        x = np.ascontiguousarray(x)
        t = torch.from_numpy(x if x.flags.writeable else x.copy()).permute(0, 3, 1, 2)
    elif isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        if t.ndim == 3:
            t = t[None]
        if t.ndim != 4:
            raise ValueError(f"expected a (C, H, W) or (B, C, H, W) tensor, got shape {tuple(t.shape)}")
    else:
        raise TypeError(f"expected a numpy array or a torch tensor, got {type(x).__name__}")
    if t.dtype == torch.uint8:
        return t.to(torch.float64) / 255.0
    if t.is_floating_point():
        return t.to(torch.float64)
    raise TypeError(f"expected uint8 or floating-point pixels, got {t.dtype}")


def _pair(a: ImageLike, b: ImageLike) -> tuple[torch.Tensor, torch.Tensor]:
    ta, tb = to_bchw(a), to_bchw(b)
    if ta.shape != tb.shape:
        raise ValueError(f"images differ in shape: {tuple(ta.shape)} vs {tuple(tb.shape)} (as B, C, H, W)")
    return ta, tb


def psnr(a: ImageLike, b: ImageLike) -> float:
    """Peak signal-to-noise ratio in dB, peak 1.0 (= 255 for 8-bit); ``inf`` for identical images.

    For a batch, the mean of the per-image PSNRs (as CompressAI's evaluation does).
    """
    ta, tb = _pair(a, b)
    mse = ((ta - tb) ** 2).flatten(1).mean(dim=1)
    values = [math.inf if m == 0 else -10.0 * math.log10(m) for m in mse.tolist()]
    return float(sum(values) / len(values))


def ms_ssim(a: ImageLike, b: ImageLike, small: Literal["ssim", "nan"] = "ssim") -> float:
    """MS-SSIM (Wang et al. 2003; 5 scales, 11x11 Gaussian window, pytorch_msssim) in [0, 1], batch mean.

    The 5-scale pyramid needs both sides >= ``MS_SSIM_MIN_SIDE`` (161 px). For smaller images there is no
    standard MS-SSIM value: with ``small="ssim"`` (default) this returns single-scale SSIM instead (the
    finest scale alone, same window; usually a little lower than MS-SSIM, so do not mix the two in one
    table), and ``nan`` when a side is below ``SSIM_MIN_SIDE`` (11 px); with ``small="nan"`` it returns
    ``nan`` for every image smaller than 161 px.
    """
    from pytorch_msssim import ms_ssim as _ms_ssim
    from pytorch_msssim import ssim as _ssim

    ta, tb = _pair(a, b)
    ta, tb = ta.float(), tb.float()
    side = min(ta.shape[-2:])
    if side >= MS_SSIM_MIN_SIDE:
        return float(_ms_ssim(ta, tb, data_range=1.0))
    if small == "nan" or side < SSIM_MIN_SIDE:
        return math.nan
    return float(_ssim(ta, tb, data_range=1.0))


def _check_curve(rate: Sequence[float], quality: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(rate, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    if r.ndim != 1 or r.shape != q.shape or len(r) < 2:
        raise ValueError("each curve needs at least 2 (rate, quality) points, as two equal-length sequences")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(q)) and np.all(r > 0)):
        raise ValueError("rates must be positive and finite, qualities finite")
    return r, q


def _mean_of_fit(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    """Mean of the polynomial fit y(x) (cubic, or lower with fewer than 4 points) over [lo, hi]."""
    p = np.polyfit(x, y, min(3, len(x) - 1))
    integral = np.polyint(p)
    return float((np.polyval(integral, hi) - np.polyval(integral, lo)) / (hi - lo))


def bd_rate(
    rate_a: Sequence[float], psnr_a: Sequence[float], rate_b: Sequence[float], psnr_b: Sequence[float]
) -> float:
    """Bjontegaard delta rate (VCEG-M33) of curve B against anchor A, in percent.

    Fits log-rate as a cubic in PSNR for each curve, averages the gap over the overlapping PSNR range and
    returns ``(exp(mean gap) - 1) * 100``: negative when B needs fewer bits for the same PSNR (-50 means
    half the rate). ``nan`` when the PSNR ranges do not overlap.
    """
    ra, qa = _check_curve(rate_a, psnr_a)
    rb, qb = _check_curve(rate_b, psnr_b)
    lo, hi = max(qa.min(), qb.min()), min(qa.max(), qb.max())
    if not hi > lo:
        return math.nan
    gap = _mean_of_fit(qb, np.log(rb), lo, hi) - _mean_of_fit(qa, np.log(ra), lo, hi)
    return float((math.exp(gap) - 1.0) * 100.0)


def bd_psnr(
    rate_a: Sequence[float], psnr_a: Sequence[float], rate_b: Sequence[float], psnr_b: Sequence[float]
) -> float:
    """Bjontegaard delta PSNR of curve B against anchor A, in dB (positive: B is better at equal rate).

    Fits PSNR as a cubic in log-rate and averages the gap over the overlapping log-rate range; ``nan``
    when the rate ranges do not overlap.
    """
    ra, qa = _check_curve(rate_a, psnr_a)
    rb, qb = _check_curve(rate_b, psnr_b)
    la, lb = np.log(ra), np.log(rb)
    lo, hi = max(la.min(), lb.min()), min(la.max(), lb.max())
    if not hi > lo:
        return math.nan
    return _mean_of_fit(lb, qb, lo, hi) - _mean_of_fit(la, qa, lo, hi)

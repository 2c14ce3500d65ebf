"""Colour fixes of a diffusion output against the decoded image (diffusion samplers drift in colour).

- AdaIN (Huang & Belongie 2017): per-channel mean and standard deviation of the output set to the reference's.
- Wavelet: an a-trous (stationary wavelet) split into a low-frequency part and detail; the output keeps its
  own detail bands and takes the reference's low-frequency part (colour and shading), so colour follows the
  decoded image exactly at coarse scales while the generated texture is kept.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def _check(img: torch.Tensor, ref: torch.Tensor) -> None:
    if img.ndim != 4 or img.shape[1] != 3 or ref.ndim != 4 or ref.shape[1] != 3:
        raise ValueError(f"expected (B, 3, H, W) images, got {tuple(img.shape)} and {tuple(ref.shape)}")
    if ref.shape[0] not in (1, img.shape[0]):
        raise ValueError(f"reference batch {ref.shape[0]} does not match image batch {img.shape[0]}")


def adain_color_fix(img: torch.Tensor, ref: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Match each channel's mean and std of ``img`` to ``ref`` (any size), clamped to [0, 1]."""
    _check(img, ref)
    x, r = img.float(), ref.float().to(img.device)
    mu_x, sd_x = x.mean((2, 3), keepdim=True), x.std((2, 3), keepdim=True, unbiased=False)
    mu_r, sd_r = r.mean((2, 3), keepdim=True), r.std((2, 3), keepdim=True, unbiased=False)
    return ((x - mu_x) / (sd_x + eps) * sd_r + mu_r).clamp(0, 1).to(img.dtype)


def _atrous_lowpass(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Low-frequency residual of an a-trous decomposition: ``levels`` binomial [1,2,1]/4 blurs at dilation 2^i."""
    k1 = torch.tensor([0.25, 0.5, 0.25], dtype=x.dtype, device=x.device)
    k = (k1[:, None] * k1[None, :]).expand(x.shape[1], 1, 3, 3)
    for i in range(levels):
        d = 2**i
        pad_h, pad_w = min(d, x.shape[-2] - 1), min(d, x.shape[-1] - 1)
        if pad_h < d or pad_w < d:  # image smaller than the dilation: the remaining bands are empty
            x = x.mean((2, 3), keepdim=True).expand_as(x)
            break
        x = F.conv2d(F.pad(x, (d, d, d, d), mode="reflect"), k, dilation=d, groups=x.shape[1])
    return x


def wavelet_color_fix(img: torch.Tensor, ref: torch.Tensor, levels: int = 5) -> torch.Tensor:
    """Keep ``img``'s detail bands, take ``ref``'s low-frequency band (``ref`` resized to ``img``), clamp to [0, 1]."""
    _check(img, ref)
    x, r = img.float(), ref.float().to(img.device)
    if r.shape[-2:] != x.shape[-2:]:
        r = F.interpolate(r, size=x.shape[-2:], mode="bicubic", align_corners=False).clamp(0, 1)
    out = x - _atrous_lowpass(x, levels) + _atrous_lowpass(r, levels)
    return out.clamp(0, 1).to(img.dtype)

"""Training-free mode maths, backend-neutral (plain tensors in, tensors out; ComfyUI or diffusers call them).

Img2img from the fidelity decoder's output: the VAE latent of that image is noised to a denoise strength
set by the degradation (:func:`denoise_strength`), and at every step the sampler's x0 prediction has its
low frequencies pulled back to the reference latent (:func:`consistency_step`), weighted per location: full
pull where the codec was sure, less where it was unsure (weight = 1 - amount_of_uncertainty, typically).
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from .descriptor import Degradation

BPP_HIGH, BPP_LOW = 0.3, 0.003  # the operating range: severity 0 at 0.3 bpp, 1 at 0.003 bpp


def severity(deg: Degradation) -> float:
    """How much was lost, in [0, 1]: mostly from the bits per pixel, then the scale s and the quality q."""
    sev_bpp = (math.log10(BPP_HIGH) - math.log10(deg.bpp)) / (math.log10(BPP_HIGH) - math.log10(BPP_LOW))
    sev_s = math.log(deg.s) / math.log(8.0)
    sev = 0.5 * min(1.0, max(0.0, sev_bpp)) + 0.25 * sev_s + 0.25 * (1.0 - deg.q)
    return min(1.0, max(0.0, sev))


def denoise_strength(deg: Degradation, realism: float = 0.5) -> float:
    """Img2img denoise strength in (0, 1]: more for more degraded inputs, scaled by the realism knob in [0, 1].

    ``base = 0.2 + 0.5 * severity`` (0.2 at 0.3 bpp, s=1, q=1; 0.7 at 0.003 bpp, s=8, q=0); the knob scales it
    by ``0.4 + 1.2 * realism`` (0: fidelity, 0.4x; 0.5: neutral, 1x; 1: realism, 1.6x), clipped to [0.05, 1].
    """
    if not 0.0 <= realism <= 1.0:
        raise ValueError(f"realism must be in [0, 1], got {realism}")
    base = 0.2 + 0.5 * severity(deg)
    return min(1.0, max(0.05, base * (0.4 + 1.2 * realism)))


def _gauss_kernel(sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, device=device, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).to(dtype)


def gaussian_lowpass(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, h, w) with std ``sigma`` pixels (replicate borders); sigma 0: identity."""
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return x
    k = _gauss_kernel(sigma, x.device, x.dtype if x.is_floating_point() else torch.float32)
    r, c = k.numel() // 2, x.shape[1]
    y = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def consistency_step(
    x0_pred: torch.Tensor,
    x0_ref: torch.Tensor,
    weight: torch.Tensor | None = None,
    amount: float = 1.0,
    sigma_lowpass: float = 2.0,
) -> torch.Tensor:
    """Pull the low frequencies of ``x0_pred`` towards those of ``x0_ref`` (same space, e.g. VAE latents).

    ``x0 + amount * weight * (G_sigma * x0_ref - G_sigma * x0_pred)``: with ``amount * weight`` = 1 the low
    band is replaced by the reference's and the high band kept. ``weight`` (B or 1, 1, h, w) in [0, 1]
    (resampled to the latent grid if needed; None = 1 everywhere); 0 leaves the prediction untouched there.
    """
    if x0_pred.shape[-3:] != x0_ref.shape[-3:] or x0_ref.shape[0] not in (1, x0_pred.shape[0]):
        raise ValueError(f"x0_pred {tuple(x0_pred.shape)} and x0_ref {tuple(x0_ref.shape)} differ in shape")
    if not 0.0 <= amount <= 1.0:
        raise ValueError(f"amount must be in [0, 1], got {amount}")
    ref = x0_ref.to(x0_pred.device, x0_pred.dtype)
    delta = gaussian_lowpass(ref, sigma_lowpass) - gaussian_lowpass(x0_pred, sigma_lowpass)
    if weight is not None:
        weight = weight.to(x0_pred.device, x0_pred.dtype)
        if weight.ndim != 4 or weight.shape[1] != 1:
            raise ValueError(f"weight must be (B, 1, h, w), got {tuple(weight.shape)}")
        if weight.shape[-2:] != x0_pred.shape[-2:]:
            weight = F.adaptive_avg_pool2d(weight, x0_pred.shape[-2:])
        delta = delta * weight.clamp(0, 1)
    return x0_pred + amount * delta


def lowfreq_error(a: torch.Tensor, b: torch.Tensor, sigma: float = 2.0) -> float:
    """Root-mean-square difference of the Gaussian low-pass bands of ``a`` and ``b`` (same shape)."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    d = gaussian_lowpass(a.float(), sigma) - gaussian_lowpass(b.float(), sigma)
    return float(d.pow(2).mean().sqrt())

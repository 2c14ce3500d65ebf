"""Data consistency by construction: the band the file determines is kept, the band above it is the prior's.

The low-res image y the file carries fixes the output's content below the low-res Nyquist frequency,
``1 / (2 s_eff)`` cycles per output pixel (``s_eff`` = output size / low-res size). After sampling, the
generated image x_g is combined with the fidelity decode x_f as a range/null-space split (after DDNM,
Wang et al. 2023): ``x = x_f + m * HP(x_g - x_f)``, where HP removes everything below that cutoff, so the
prior only ever adds detail above it, in the proportion ``m`` (:func:`prior_share`: realism, raised where
the codec was unsure). Then projections onto the two convex sets "the encoder's own downsampler maps x to
y" (back-projection ``x += U(y - A x)``, Irani & Peleg 1991) and "pixels in [0, 1]" alternate (POCS) until
``A x`` matches y at least as well as the fidelity decode does: consistency holds whatever the prior
painted, on any checkpoint, random weights included.

During sampling, :func:`latent_hold` schedules how strongly each step's x0 prediction is pulled to the
fidelity decode's latent (more in the last steps, less with realism); that only steers the trajectory,
the guarantee is the projection.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.nn import functional as F

ROLL_OFF = 0.25  # the low-pass mask falls from 1 to 0 over the top quarter of the band below the cutoff
BP_ITERS = 12  # back-projection rounds at most (8 reach about 49 dB on uniform noise at s = 2-8)
BP_MARGIN_DB = 3.0  # stop once A(x) is this much closer to y than the fidelity decode's own A(x_f)


def nyquist(s_eff: float) -> float:
    """The low-res image's Nyquist frequency in cycles per output pixel: 1 / (2 s_eff)."""
    if not s_eff > 0:
        raise ValueError(f"the effective scale must be positive, got {s_eff}")
    return 0.5 / s_eff


def lowpass(x: torch.Tensor, cutoff: float, roll_off: float = ROLL_OFF) -> torch.Tensor:
    """Radial low-pass of (B, C, H, W) in the Fourier domain, reflect-padded (no wrap-around at the borders).

    Gain 1 below ``cutoff * (1 - roll_off)`` cycles per pixel, a raised-cosine fall to 0 at ``cutoff``;
    a cutoff at or above 0.5 * sqrt(2) (the grid's corner) is the identity.
    """
    if cutoff >= 0.5 * math.sqrt(2):
        return x
    H, W = x.shape[-2:]
    ph, pw = min(H - 1, H // 2), min(W - 1, W // 2)
    xp = F.pad(x.float(), (pw, pw, ph, ph), mode="reflect") if ph and pw else x.float()
    fy = torch.fft.fftfreq(xp.shape[-2], device=x.device)[:, None]
    fx = torch.fft.rfftfreq(xp.shape[-1], device=x.device)[None]
    f = (fy**2 + fx**2).sqrt()
    lo = cutoff * (1 - roll_off)
    t = ((f - lo) / max(cutoff - lo, 1e-12)).clamp(0, 1)
    mask = 0.5 * (1 + torch.cos(math.pi * t))
    y = torch.fft.irfft2(torch.fft.rfft2(xp) * mask, s=xp.shape[-2:])
    return y[..., ph : ph + H, pw : pw + W].to(x.dtype)


def prior_share(realism: float, uncertainty: torch.Tensor | None = None) -> torch.Tensor | float:
    """How much of the band above the cutoff comes from the prior, per location: ``r * (r + (1 - r) * u)``.

    0 at realism 0 (the fidelity decode's detail), 1 at realism 1, in between more where the codec was
    unsure (u near 1). It never touches the kept band.
    """
    if not 0.0 <= realism <= 1.0:
        raise ValueError(f"realism must be in [0, 1], got {realism}")
    if uncertainty is None:
        return realism * realism
    return realism * (realism + (1 - realism) * uncertainty.clamp(0, 1))


def latent_hold(realism: float, progress: float) -> float:
    """Weight of the pull of a step's x0 prediction to the reference latent: ``(1 - r) ** (2 - progress)``.

    ``progress`` in [0, 1] is how far sampling is (0 at the start sigma, 1 at the end): at realism 0 every
    step holds fully, at realism 1 none does, in between the last steps hold more than the first.
    """
    if not 0.0 <= realism <= 1.0:
        raise ValueError(f"realism must be in [0, 1], got {realism}")
    p = min(1.0, max(0.0, progress))
    return (1.0 - realism) ** (2.0 - p)


def _rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).pow(2).mean().sqrt())


def keep_low_band(
    generated: torch.Tensor,
    fidelity: torch.Tensor,
    lowres: torch.Tensor,
    downsample: Callable[[torch.Tensor], torch.Tensor],
    realism: float,
    uncertainty: torch.Tensor | None = None,
    iters: int = BP_ITERS,
) -> torch.Tensor:
    """The output: the fidelity decode's band below the low-res Nyquist, the prior's share above it.

    ``generated`` and ``fidelity`` are (B, 3, H, W) in [0, 1] at the output size; ``lowres`` the decoded
    low-res image y (B, 3, h, w); ``downsample`` the encoder's own downsampler from the output size to
    (h, w); ``uncertainty`` (B, 1, H, W) in [0, 1] or None. Returns (B, 3, H, W) in [0, 1].
    """
    if generated.shape != fidelity.shape or generated.ndim != 4:
        raise ValueError(f"generated {tuple(generated.shape)} and fidelity {tuple(fidelity.shape)} differ")
    H, W = fidelity.shape[-2:]
    h, w = lowres.shape[-2:]
    gen, fid, y = generated.float(), fidelity.float(), lowres.float().to(generated.device)
    cutoff = nyquist(min(H / h, W / w))
    share = prior_share(realism, None if uncertainty is None else uncertainty.to(gen.device).float())
    x = (fid + share * (gen - fid - lowpass(gen - fid, cutoff))).clamp(0, 1)
    target = _rms(downsample(fid), y) * 10 ** (-BP_MARGIN_DB / 20)
    for _ in range(iters):
        r = y - downsample(x)
        if _rms(r, torch.zeros(())) <= target:
            break
        x = (x + F.interpolate(r, size=(H, W), mode="bicubic", align_corners=False)).clamp(0, 1)
    return x.to(generated.dtype)


def band_energy(x: torch.Tensor, cutoff: float) -> float:
    """Mean squared amplitude of ``x`` above ``cutoff`` cycles per pixel (the freedom figure)."""
    hp = x.float() - lowpass(x.float(), cutoff, roll_off=0.0)
    return float(hp.pow(2).mean())


def latent_sigma(s: float, vae_factor: float = 8.0) -> float:
    """Std (latent pixels) of the Gaussian whose gain is 1/2 at the low-res Nyquist 1/(2s) cycles per image
    pixel, on a latent grid ``vae_factor`` image pixels apart: ``sqrt(2 ln 2) * 2 s / (2 pi * vae_factor)``.

    Below 1 latent pixel for every s <= 8 on an 8x VAE: the file determines all the latent grid can hold,
    so the latent pull is nearly the whole prediction and the freedom lives in the pixel-space split.
    """
    if not s > 0 or not vae_factor > 0:
        raise ValueError(f"need s > 0 and vae_factor > 0, got {s} and {vae_factor}")
    return math.sqrt(2 * math.log(2)) * 2 * s / (2 * math.pi * vae_factor)

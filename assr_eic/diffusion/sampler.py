"""A small, backend-neutral DDIM img2img loop (Song et al. 2021, eta = 0) and latent tiling.

ComfyUI users sample with ComfyUI's own samplers (the nodes only call :mod:`.guidance`); this loop is for
the library's tests, the benchmark and the training script's previews. ``eps_fn(x_t, t) -> eps`` is any
epsilon-predicting denoiser, e.g. a diffusers UNet with the adaptor's residuals.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .guidance import consistency_step

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def sd_alphas_cumprod(
    num_train_timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012
) -> torch.Tensor:
    """The SD 1.x/2.x noise schedule ("scaled_linear" betas): cumulative products of alphas, (T,) float64."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, 0)


def img2img_timesteps(steps: int, denoise: float, num_train_timesteps: int = 1000) -> list[int]:
    """The DDIM timesteps (descending, "leading" spacing as SD's scheduler config) an img2img run visits."""
    if steps < 1 or not 0.0 < denoise <= 1.0:
        raise ValueError(f"need steps >= 1 and denoise in (0, 1], got {steps} and {denoise}")
    ratio = num_train_timesteps // steps
    full = [i * ratio + 1 for i in range(steps)][::-1]  # steps_offset = 1, as SD 1.x
    keep = max(1, min(steps, round(steps * denoise)))
    return full[steps - keep :]


@torch.no_grad()
def img2img(
    eps_fn: EpsFn,
    x0_ref: torch.Tensor,
    denoise: float,
    steps: int,
    generator: torch.Generator | None = None,
    weight: torch.Tensor | None = None,
    amount: float = 0.0,
    sigma_lowpass: float = 2.0,
    alphas_cumprod: torch.Tensor | None = None,
) -> torch.Tensor:
    """Noise ``x0_ref`` (a latent) to ``denoise`` and denoise it with DDIM; returns the final x0 latent.

    With ``amount`` > 0 every step's x0 prediction goes through :func:`consistency_step` (low frequencies
    pulled to ``x0_ref``, weighted by ``weight``) and the step continues from the corrected prediction.
    """
    ac = (sd_alphas_cumprod() if alphas_cumprod is None else alphas_cumprod).to(x0_ref.device)
    ts = img2img_timesteps(steps, denoise, ac.numel())
    noise = torch.randn(x0_ref.shape, generator=generator, dtype=torch.float32).to(x0_ref.device, x0_ref.dtype)
    a = ac[ts[0]].to(x0_ref.dtype)
    x = a.sqrt() * x0_ref + (1 - a).sqrt() * noise
    x0 = x0_ref
    for i, t in enumerate(ts):
        a = ac[t].to(x.dtype)
        a_prev = ac[ts[i + 1]].to(x.dtype) if i + 1 < len(ts) else torch.ones((), dtype=x.dtype, device=x.device)
        eps = eps_fn(x, torch.full((x.shape[0],), t, device=x.device, dtype=torch.long))
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        if amount > 0:
            x0 = consistency_step(x0, x0_ref, weight, amount, sigma_lowpass)
            eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    return x0


def tile_boxes(h: int, w: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Overlapping (y0, y1, x0, x1) windows of at most ``tile`` covering an h x w grid."""
    if tile < 1 or not 0 <= overlap < tile:
        raise ValueError(f"need tile >= 1 and 0 <= overlap < tile, got {tile} and {overlap}")

    def starts(n: int) -> list[int]:
        if n <= tile:
            return [0]
        step = tile - overlap
        s = list(range(0, n - tile, step)) + [n - tile]
        return sorted(set(s))

    return [(y, min(y + tile, h), x, min(x + tile, w)) for y in starts(h) for x in starts(w)]


def tiled(
    fn: Callable[[torch.Tensor, tuple[int, int, int, int]], torch.Tensor],
    x: torch.Tensor,
    tile: int = 64,
    overlap: int = 16,
) -> torch.Tensor:
    """Apply ``fn(x_tile, box)`` to overlapping tiles of ``x`` (B, C, h, w) and blend with linear ramps.

    ``fn`` returns a tensor shaped like its tile (a denoiser's eps); ``box`` lets it slice its conditioning.
    A grid no larger than ``tile`` is one call, identical to ``fn(x, box)``.
    """
    h, w = x.shape[-2:]
    boxes = tile_boxes(h, w, tile, overlap)
    if len(boxes) == 1:
        return fn(x, boxes[0])
    out = torch.zeros_like(x)
    norm = torch.zeros((1, 1, h, w), dtype=x.dtype, device=x.device)
    for y0, y1, x0, x1 in boxes:
        ry = torch.minimum(torch.arange(1, y1 - y0 + 1), torch.arange(y1 - y0, 0, -1)).clamp(max=overlap + 1)
        rx = torch.minimum(torch.arange(1, x1 - x0 + 1), torch.arange(x1 - x0, 0, -1)).clamp(max=overlap + 1)
        wgt = (ry[:, None] * rx[None, :]).to(x.dtype).to(x.device)[None, None]
        out[..., y0:y1, x0:x1] += fn(x[..., y0:y1, x0:x1], (y0, y1, x0, x1)) * wgt
        norm[..., y0:y1, x0:x1] += wgt
    return out / norm

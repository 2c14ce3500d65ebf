"""Denoise strength as a starting noise level, the same for every scheduler.

A sampler's "denoise" usually keeps the last fraction of a longer schedule, so its starting sigma depends
on the scheduler's shape (0.35 starts at sigma 0.24 with exponential and 0.99 with simple on SD 1.5).
Here the strength picks the starting sigma once (the model's own sigma at that fraction of its training
time range), and each scheduler only shapes the steps below it.
"""

from __future__ import annotations

import torch


def from_start_sigma(full: torch.Tensor, start: float, steps: int) -> torch.Tensor:
    """``steps + 1`` sigmas from exactly ``start`` down to ``full``'s end, spaced as the schedule ``full``.

    ``full`` is a finely sampled (a few hundred steps) descending schedule ending at 0, as a scheduler
    gives it for denoise 1. Its part below ``start`` is resampled at ``steps`` equal index spacings,
    interpolated linearly, so the first value is ``start`` whatever the scheduler.
    """
    if steps < 1:
        raise ValueError(f"need steps >= 1, got {steps}")
    full = full.double().flatten()
    if full.numel() < 2 or bool((full[1:] > full[:-1]).any()):
        raise ValueError("the full schedule must be descending with at least two values")
    start = min(float(start), float(full[0]))
    if not start > float(full[-1]):
        raise ValueError(f"start sigma {start} is not above the schedule's end {float(full[-1])}")
    # fractional index where the schedule crosses ``start``
    i = int(torch.searchsorted(-full, torch.tensor([-start], dtype=full.dtype), right=True)) - 1
    i = max(0, min(i, full.numel() - 2))
    a, b = float(full[i]), float(full[i + 1])
    i0 = i + (a - start) / (a - b) if a > b else float(i)
    pos = torch.linspace(i0, full.numel() - 1, steps + 1, dtype=full.dtype)
    lo = pos.floor().long().clamp(max=full.numel() - 2)
    frac = pos - lo
    out = full[lo] * (1 - frac) + full[lo + 1] * frac
    out[0] = start
    return out.float()

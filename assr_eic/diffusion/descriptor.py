"""The degradation descriptor d = (codec, s, q, bpp) and the per-location uncertainty map."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from ..bitstream import CODECS, Bitstream
from ..codec.base import LowresCode

# The learned codec's predicted scales (mean |scale| per pixel, in latent units) that map to 1 - 1/e.
LEARNED_SCALE_REF = 2.0
# Local high-frequency energy of the luma (in [0, 1] pixel units) that maps to 1 - 1/e in the AV1 estimate.
AV1_DETAIL_REF = 0.04


@dataclass
class Degradation:
    """What was lost: base codec, downsampling scale s in [1, 8], quality q in [0, 1] and file bits per pixel."""

    codec: str
    s: float
    q: float
    bpp: float

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise ValueError(f"unknown codec {self.codec!r}; choose one of: {', '.join(CODECS)}")
        if not 1.0 <= self.s <= 8.0:
            raise ValueError(f"scale s must be in [1, 8], got {self.s}")
        if not 0.0 <= self.q <= 1.0:
            raise ValueError(f"quality q must be in [0, 1], got {self.q}")
        if not (self.bpp > 0 and math.isfinite(self.bpp)):
            raise ValueError(f"bpp must be a positive number, got {self.bpp}")

    def vector(self) -> torch.Tensor:
        """(3,) float32 [log(s)/log(8), q, log10(bpp)]: what the adaptor embeds (each roughly in [-3, 1])."""
        return torch.tensor([math.log(self.s) / math.log(8.0), self.q, math.log10(self.bpp)], dtype=torch.float32)

    @classmethod
    def from_bitstream(cls, bs: Bitstream) -> Degradation:
        """The descriptor of a parsed (or packed) ``.assr`` file; its bpp counts the whole file."""
        if bs.nbytes <= 0:
            raise ValueError("the bitstream has no size yet: parse() or pack() it first")
        return cls(bs.codec, bs.scale, bs.quality, bs.bpp)


def _luma(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def estimate_uncertainty(decoded: torch.Tensor) -> torch.Tensor:
    """Training-free estimate of where a block codec lost detail, from the decoded frame alone: (B,1,h,w) in [0,1].

    Two cues, both cheap: (1) local high-frequency energy of the luma (a codec at low rate spends its
    error where the content is busy: edges and texture are what gets smoothed, flat areas survive),
    (2) blockiness: luma steps across the 8-pixel transform grid larger than the steps beside them.
    """
    if decoded.ndim != 4 or decoded.shape[1] != 3:
        raise ValueError(f"expected a decoded image (B, 3, h, w), got {tuple(decoded.shape)}")
    y = _luma(decoded.float())
    pad = F.pad(y, (1, 1, 1, 1), mode="replicate")
    lap = (4 * y - pad[..., :-2, 1:-1] - pad[..., 2:, 1:-1] - pad[..., 1:-1, :-2] - pad[..., 1:-1, 2:]).abs()
    detail = F.avg_pool2d(F.pad(lap, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
    # blockiness: horizontal/vertical steps at columns/rows that sit on the 8-pixel grid, versus their neighbours
    dx = (y[..., :, 1:] - y[..., :, :-1]).abs()
    dy = (y[..., 1:, :] - y[..., :-1, :]).abs()
    block = torch.zeros_like(y)
    if dx.shape[-1] >= 8:
        on = torch.zeros(dx.shape[-1], dtype=torch.bool, device=y.device)
        on[7::8] = True
        excess = (dx - F.avg_pool2d(F.pad(dx, (1, 1, 0, 0), mode="replicate"), (1, 3), stride=1)).clamp(min=0)
        block[..., :, 1:] += excess * on
    if dy.shape[-2] >= 8:
        on = torch.zeros(dy.shape[-2], dtype=torch.bool, device=y.device)
        on[7::8] = True
        excess = (dy - F.avg_pool2d(F.pad(dy, (0, 0, 1, 1), mode="replicate"), (3, 1), stride=1)).clamp(min=0)
        block[..., 1:, :] += excess * on[:, None]
    block = F.avg_pool2d(F.pad(block, (4, 3, 4, 3), mode="replicate"), 8, stride=1)
    return 1.0 - torch.exp(-(detail + 4.0 * block) / AV1_DETAIL_REF)


def uncertainty_map(decoded: torch.Tensor, lowres_code: LowresCode | None = None) -> torch.Tensor:
    """Per-location uncertainty (1 = the codec was unsure / lost most) of the decoded low-res image, in [0, 1].

    ``decoded`` is (B, 3, h, w) in [0, 1]. With the learned codec's :class:`LowresCode`, its predicted
    entropy-model scales (``uncertainty``, upsampled to pixel resolution) are squashed to [0, 1] by
    ``1 - exp(-u / LEARNED_SCALE_REF)``; otherwise (AV1, or no code) :func:`estimate_uncertainty` estimates
    it from the decoded frame.
    """
    if decoded.ndim != 4 or decoded.shape[1] != 3:
        raise ValueError(f"expected a decoded image (B, 3, h, w), got {tuple(decoded.shape)}")
    u = None if lowres_code is None else lowres_code.uncertainty
    if u is None:
        return estimate_uncertainty(decoded)
    u = u.to(decoded.device, torch.float32)
    if u.shape[-2:] != decoded.shape[-2:]:
        u = F.interpolate(u, size=decoded.shape[-2:], mode="bilinear", align_corners=False)
    return (1.0 - torch.exp(-u.abs() / LEARNED_SCALE_REF)).clamp(0, 1)

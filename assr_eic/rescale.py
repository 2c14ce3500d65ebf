"""Arbitrary-scale downsampler: antialiased resampling by any real s in [1, 8] plus a learned refinement.

The low-res size is ``bitstream.lowres_size(H, W, scale_code)`` (round(H / s), round(W / s), exact
integers). A small scale-conditioned residual network then adjusts the resampled image toward what the
base codec and the fidelity decoder work best with; its output layer starts at zero, so an untrained
refinement is exactly the plain antialiased resampling.
"""

from __future__ import annotations

import torch
from torch import nn

from .bitstream import CODECS
from .configurable import ConfigModule
from .layers import DegradationEmbedding, FiLMResBlock, conv3x3


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Antialiased bicubic resampling of (B, C, H, W) to ``size`` (works both down and up)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    down = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return nn.functional.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=down)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Replicate-pad bottom/right to a multiple; returns the padded tensor and the original size."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph or pw:
        x = nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, (h, w)


def unpad(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Undo :func:`pad_to_multiple` exactly."""
    return x[..., : size[0], : size[1]]


DOWNSAMPLE_TILE = 512  # low-res pixels per tile side for the refinement network


class Downsampler(ConfigModule):
    """Antialiased bicubic downsampling followed by a residual refinement conditioned on (codec, s)."""

    def __init__(self, channels: int = 16, blocks: int = 2, emb_dim: int = 32) -> None:
        super().__init__()
        self.embed = DegradationEmbedding(emb_dim)
        self.head = conv3x3(3, channels)
        self.body = nn.ModuleList(FiLMResBlock(channels, emb_dim) for _ in range(blocks))
        self.tail = conv3x3(channels, 3)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor, size: tuple[int, int], codec: str, s: float) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, 3, h, w) in [0, 1] with (h, w) = ``size``."""
        return self.refine(resize(x, size), codec, s)

    @property
    def margin(self) -> int:
        """Low-res pixels of context a tile needs on each side: the receptive radius (head, two convs per
        block, tail) plus slack."""
        return 2 * self.config["blocks"] + 4

    def refine_tiled(self, base: torch.Tensor, codec: str, s: float, tile: int = DOWNSAMPLE_TILE) -> torch.Tensor:
        """:meth:`refine` in ``tile`` x ``tile`` tiles with a :attr:`margin` halo, so memory is bounded for any
        image (full-frame activations at s = 1 on a 16 Mpx image would take gigabytes); equal to the
        whole-frame refinement up to float rounding."""
        h, w = base.shape[-2:]
        if h <= tile and w <= tile:
            return self.refine(base, codec, s)
        m = self.margin
        out = torch.empty_like(base)
        for y0 in range(0, h, tile):
            for x0 in range(0, w, tile):
                y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
                ya, xa = max(0, y0 - m), max(0, x0 - m)
                r = self.refine(base[..., ya : min(h, y1 + m), xa : min(w, x1 + m)], codec, s)
                out[..., y0:y1, x0:x1] = r[..., y0 - ya : y1 - ya, x0 - xa : x1 - xa]
        return out

    def refine(self, base: torch.Tensor, codec: str, s: float) -> torch.Tensor:
        """The learned residual on an already resampled image.

        Conditioned on (codec, s) but not on q, so rate control reuses one low-res image per scale
        while it searches the quality.
        """
        if not (self.tail.weight.any() or self.tail.bias.any()):
            return base.clamp(0, 1)  # an untrained (zero) output layer adds exactly 0: skip the network
        b = base.shape[0]
        dev = base.device
        codec_id = torch.full((b,), CODECS.index(codec), dtype=torch.long, device=dev)
        emb = self.embed(codec_id, torch.full((b,), float(s), device=dev))
        h = self.head(base)
        for block in self.body:
            h = block(h, emb)
        return (base + self.tail(h)).clamp(0, 1)

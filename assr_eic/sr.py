"""The fidelity decoder: arbitrary-scale super-resolution of the decoded low-res image, to any size.

It undoes the downsampling and the base codec's artefacts together, conditioned on the degradation
(codec, s, q). The heavy part (a FiLM-conditioned residual trunk) runs at low resolution; at output
resolution a light head reads, for every output pixel, the bilinearly sampled trunk features, the
bicubic-upsampled image and the pixel's sub-pixel offset in the low-res grid (a local implicit
decoder in the LIIF spirit, with a 3x3 conv head instead of a per-pixel MLP, measured cheaper per
CPU millisecond), and adds a residual to the bicubic image.

Large outputs are processed in tiles over the output: each tile runs the trunk on its low-res
footprint plus a margin wider than the trunk's receptive field, so peak memory is bounded by the tile
size and tiled output equals whole-image output up to float rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .bitstream import CODECS
from .layers import ConfigModule, DegradationEmbedding, FiLMResBlock, conv3x3


@dataclass
class SROutput:
    """Output of :class:`SRDecoder`: ``sample`` is (1, 3, H, W) in [0, 1]."""

    sample: torch.Tensor


def _coords(n_out: int, n_in: int, start: int, stop: int) -> torch.Tensor:
    """Low-res coordinates (pixel centres, align_corners=False) of output pixels start..stop-1."""
    return (torch.arange(start, stop, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5


class SRDecoder(ConfigModule):
    """Degradation-aware arbitrary-scale upsampler."""

    def __init__(self, channels: int = 32, blocks: int = 4, feat: int = 16, head: int = 16, emb_dim: int = 64):
        super().__init__()
        self.config = {"channels": channels, "blocks": blocks, "feat": feat, "head": head, "emb_dim": emb_dim}
        self.embed = DegradationEmbedding(emb_dim)
        self.trunk_in = conv3x3(4, channels)  # RGB + uncertainty
        self.trunk = nn.ModuleList(FiLMResBlock(channels, emb_dim) for _ in range(blocks))
        self.trunk_out = conv3x3(channels, feat)
        self.head1 = nn.Conv2d(feat + 3 + 2, head, 3)
        self.head2 = nn.Conv2d(head, 3, 3)
        self.act = nn.LeakyReLU(0.2)
        nn.init.zeros_(self.head2.weight)
        nn.init.zeros_(self.head2.bias)

    @property
    def margin(self) -> int:
        """Low-res pixels of context a tile needs on each side (trunk receptive field + bicubic support)."""
        return 2 * self.config["blocks"] + 2 + 3

    def embedding(self, codec: str, s: float, q: float, batch: int = 1) -> torch.Tensor:
        return self.embed(
            torch.full((batch,), CODECS.index(codec), dtype=torch.long),
            torch.full((batch,), float(s)),
            torch.full((batch,), float(q)),
        )

    def features(self, x: torch.Tensor, unc: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.act(self.trunk_in(torch.cat([x, unc], 1)))
        for block in self.trunk:
            h = block(h, emb)
        return self.trunk_out(h)

    def _render(
        self, x: torch.Tensor, feat: torch.Tensor, uy: torch.Tensor, ux: torch.Tensor, offset: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Bicubic base and head input at output pixels with low-res coordinates uy (rows) x ux (cols)."""
        hc, wc = x.shape[-2:]
        gy = ((uy - offset[0] + 0.5) / hc * 2 - 1).float()
        gx = ((ux - offset[1] + 0.5) / wc * 2 - 1).float()
        grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)[None].expand(x.shape[0], -1, -1, -1)
        base = nn.functional.grid_sample(x, grid, mode="bicubic", padding_mode="border", align_corners=False)
        f = nn.functional.grid_sample(feat, grid, mode="bilinear", padding_mode="border", align_corners=False)
        ry = (uy - torch.round(uy)).float()[:, None].expand(-1, len(ux))
        rx = (ux - torch.round(ux)).float()[None, :].expand(len(uy), -1)
        rel = torch.stack([ry, rx])[None].expand(x.shape[0], -1, -1, -1)
        return base, torch.cat([f, base, rel], 1)

    def render_tile(
        self,
        x: torch.Tensor,
        uncertainty: torch.Tensor,
        emb: torch.Tensor,
        size: tuple[int, int],
        box: tuple[int, int, int, int],
    ) -> torch.Tensor:
        """Output pixels rows y0:y1, cols x0:x1 of the full ``size`` output (unclamped)."""
        H, W = size
        h, w = x.shape[-2:]
        y0, y1, x0, x1 = box
        m, halo = self.margin, 2  # the head is two valid 3x3 convs
        hy0, hy1, hx0, hx1 = max(y0 - halo, 0), min(y1 + halo, H), max(x0 - halo, 0), min(x1 + halo, W)
        uy, ux = _coords(H, h, hy0, hy1), _coords(W, w, hx0, hx1)
        ly0 = max(0, math.floor(uy[0].item()) - m)
        ly1 = min(h, math.ceil(uy[-1].item()) + m + 1)
        lx0 = max(0, math.floor(ux[0].item()) - m)
        lx1 = min(w, math.ceil(ux[-1].item()) + m + 1)
        xc = x[..., ly0:ly1, lx0:lx1]
        feat = self.features(xc, uncertainty[..., ly0:ly1, lx0:lx1], emb)
        base, inp = self._render(xc, feat, uy, ux, (ly0, lx0))
        # replicate where the halo was clipped by the image border, as a whole-image pass would
        pad = (halo - (x0 - hx0), halo - (hx1 - x1), halo - (y0 - hy0), halo - (hy1 - y1))
        inp = nn.functional.pad(inp, pad, mode="replicate")
        r = self.head2(self.act(self.head1(inp)))
        ty, tx = y0 - hy0, x0 - hx0
        return base[..., ty : ty + y1 - y0, tx : tx + x1 - x0] + r

    def forward(
        self,
        x: torch.Tensor,
        size: tuple[int, int],
        codec: str,
        s: float,
        q: float,
        uncertainty: torch.Tensor | None = None,
        tile: int = 512,
    ) -> SROutput:
        """Upsample (B, 3, h, w) in [0, 1] to ``size`` = (H, W), any size >= 1x1, in output tiles."""
        H, W = size
        if uncertainty is None:
            uncertainty = torch.zeros_like(x[:, :1])
        emb = self.embedding(codec, s, q, x.shape[0])
        out = torch.empty(x.shape[0], 3, H, W, dtype=x.dtype)
        for y0 in range(0, H, tile):
            for x0 in range(0, W, tile):
                y1, x1 = min(y0 + tile, H), min(x0 + tile, W)
                out[..., y0:y1, x0:x1] = self.render_tile(x, uncertainty, emb, size, (y0, y1, x0, x1))
        return SROutput(sample=out.clamp_(0, 1))

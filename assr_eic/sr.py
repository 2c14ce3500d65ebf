"""The fidelity decoder: arbitrary-scale super-resolution of the decoded low-res image, to any size.

It undoes the downsampling and the base codec's artefacts together, conditioned on the degradation
(codec, s, q). The heavy part (a FiLM-conditioned residual trunk) runs at low resolution; at output
resolution a per-pixel MLP (a local implicit decoder in the LIIF spirit) reads, for every output
pixel, the bilinearly sampled trunk features, the bicubic-upsampled colour and the pixel's sub-pixel
phase in the low-res grid (sin/cos of 2 pi u, continuous across pixel borders), and adds a residual to
the bicubic image. The MLP's first layer is linear in the features, so it runs at LOW resolution
before sampling: the work per output pixel is a few hundred multiply-adds.

Large outputs are processed in tiles over the output: each tile runs the trunk on its low-res
footprint plus a margin wider than the trunk's receptive field, so peak memory is bounded by the tile
size and tiled output equals whole-image output up to float rounding.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from .bitstream import CODECS
from .configurable import ConfigModule
from .layers import ALL_EDGES, DegradationEmbedding, Edges, FiLMResBlock, conv3x3, inference_dtype


@dataclass
class SROutput:
    """Output of :class:`SRDecoder`: ``sample`` is (1, 3, H, W) in [0, 1]."""

    sample: torch.Tensor


def _coords(n_out: int, n_in: int, start: int, stop: int) -> torch.Tensor:
    """Low-res coordinates (pixel centres, align_corners=False) of output pixels start..stop-1."""
    return (torch.arange(start, stop, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5


class SRDecoder(ConfigModule):
    """Degradation-aware arbitrary-scale upsampler."""

    def __init__(self, channels: int = 32, blocks: int = 4, head: int = 16, emb_dim: int = 64):
        super().__init__()
        self.embed = DegradationEmbedding(emb_dim)
        self.trunk_in = conv3x3(4, channels)  # RGB + uncertainty
        self.trunk = nn.ModuleList(FiLMResBlock(channels, emb_dim) for _ in range(blocks))
        # the first head layer's feature part, applied at low res (linear maps commute with bilinear sampling)
        self.trunk_out = conv3x3(channels, head)
        self.head_rgb = nn.Conv2d(3, head, 1, bias=False)  # bicubic colour of the output pixel
        self.head_pos = nn.Conv2d(4, head, 1, bias=False)  # sub-pixel phase: sin/cos of 2 pi u, per axis
        self.head_mid = nn.Conv2d(head, head, 1)
        self.head_out = nn.Conv2d(head, 3, 1)
        self.act = nn.LeakyReLU(0.2)
        nn.init.zeros_(self.head_out.weight)
        nn.init.zeros_(self.head_out.bias)

    @property
    def margin(self) -> int:
        """Low-res pixels of context a tile needs on each side (trunk receptive field + bicubic support)."""
        return self.config["blocks"] * 2 + 2 + 3

    def embedding(self, codec: str, s: float, q: float | torch.Tensor, batch: int = 1) -> torch.Tensor:
        """Degradation embedding (batch, emb_dim); ``q`` may be one value or one per image."""
        dev = self.embed.codec.weight.device
        q_ = torch.as_tensor(q, dtype=torch.float32, device=dev).expand(batch)
        codec_id = torch.full((batch,), CODECS.index(codec), dtype=torch.long, device=dev)
        return self.embed(codec_id, torch.full((batch,), float(s), device=dev), q_)

    def features(self, x: torch.Tensor, unc: torch.Tensor, emb: torch.Tensor, edges: Edges = ALL_EDGES) -> torch.Tensor:
        """The trunk's features of a low-res crop (``edges``: its sides that are the image's borders)."""
        # channels-last activations: oneDNN's convolutions run 15-20% faster on CPU (768x512 at s = 1)
        h = torch.cat([x, unc], 1).contiguous(memory_format=torch.channels_last)
        h = h.to(inference_dtype(h))
        h = self.trunk_in.forward_with(h, slope=self.act.negative_slope, edges=edges)
        for block in self.trunk:
            h = block(h, emb, edges)
        return self.trunk_out.forward_with(h, edges=edges).to(x.dtype)

    def render_tile(
        self,
        x: torch.Tensor,
        uncertainty: torch.Tensor,
        emb: torch.Tensor,
        size: tuple[int, int],
        box: tuple[int, int, int, int],
        residual: float = 1.0,
    ) -> torch.Tensor:
        """Output pixels rows y0:y1, cols x0:x1 of the full ``size`` output (unclamped).

        Every output pixel depends only on its own low-res neighbourhood, so tiles need no halo.
        ``residual`` weighs the decoder's correction of the plain bicubic image: 1 the decoder, 0 plain
        bicubic (the trunk is skipped), between them a blend (a file's decoder strength).
        """
        base, correction = self.render_tile_parts(x, uncertainty, emb, size, box, decoder=bool(residual))
        if correction is None:
            return base
        return base + (correction if residual == 1 else residual * correction)

    def render_tiles(
        self,
        x: torch.Tensor,
        uncertainty: torch.Tensor | None,
        emb: torch.Tensor,
        size: tuple[int, int],
        tile: int = 512,
        residual: float = 1.0,
    ) -> Iterator[tuple[tuple[int, int, int, int], torch.Tensor]]:
        """The output of ``size`` as (box, pixels) tiles of ``tile`` x ``tile``, row by row, for a caller that
        stores them as it likes (the float result of :meth:`forward`, the CLI's 8-bit image). No
        ``uncertainty`` (av1): a zero view, materialised per tile only, not a low-res plane of zeros."""
        if uncertainty is None:
            uncertainty = x.new_zeros(()).expand_as(x[:, :1])
        H, W = size
        for y0 in range(0, H, tile):
            for x0 in range(0, W, tile):
                box = (y0, min(y0 + tile, H), x0, min(x0 + tile, W))
                yield box, self.render_tile(x, uncertainty, emb, size, box, residual)

    def render_tile_parts(
        self,
        x: torch.Tensor,
        uncertainty: torch.Tensor,
        emb: torch.Tensor,
        size: tuple[int, int],
        box: tuple[int, int, int, int],
        decoder: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A tile's plain bicubic pixels and the decoder's correction of them (None without ``decoder``),
        for callers that weigh the correction several ways (see :meth:`render_tile`)."""
        H, W = size
        h, w = x.shape[-2:]
        y0, y1, x0, x1 = box
        m = self.margin
        uy, ux = _coords(H, h, y0, y1), _coords(W, w, x0, x1)
        ly0, ly1 = max(0, math.floor(uy[0].item()) - m), min(h, math.ceil(uy[-1].item()) + m + 1)
        lx0, lx1 = max(0, math.floor(ux[0].item()) - m), min(w, math.ceil(ux[-1].item()) + m + 1)
        xc = x[..., ly0:ly1, lx0:lx1]
        dev = x.device
        gy = ((uy - ly0 + 0.5) / (ly1 - ly0) * 2 - 1).float().to(dev)
        gx = ((ux - lx0 + 0.5) / (lx1 - lx0) * 2 - 1).float().to(dev)
        grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)[None].expand(x.shape[0], -1, -1, -1)

        def sample(t: torch.Tensor, mode: str) -> torch.Tensor:
            if (H, W) == (h, w):  # s = 1 at the file's own size: every output pixel is a low-res pixel centre
                return t[..., y0 - ly0 : y1 - ly0, x0 - lx0 : x1 - lx0]
            return nn.functional.grid_sample(t, grid, mode=mode, padding_mode="border", align_corners=False)

        base = sample(xc, "bicubic")
        if not decoder:
            return base, None
        g = self.features(xc, uncertainty[..., ly0:ly1, lx0:lx1], emb, (ly0 == 0, ly1 == h, lx0 == 0, lx1 == w))
        hid = sample(g, "bilinear")
        py, px = (2 * math.pi * uy).float().to(dev), (2 * math.pi * ux).float().to(dev)
        phase = torch.stack([py.sin(), py.cos()])[:, :, None].expand(-1, -1, len(px))
        phase = torch.cat([phase, torch.stack([px.sin(), px.cos()])[:, None, :].expand(-1, len(py), -1)])
        return base, self._head(hid, torch.cat([base, phase.expand(x.shape[0], -1, -1, -1)], 1))

    def _head(self, hid: torch.Tensor, pixel: torch.Tensor) -> torch.Tensor:
        """The per-pixel MLP on (B, C, h, w) maps: ``hid`` the sampled features, ``pixel`` the bicubic colour
        and the sub-pixel phase (sin, cos of rows, then of columns). Its 1x1 convolutions run as matrix
        products on (B, C, h * w) views: oneDNN's 1x1 convolutions on these NCHW maps reorder them to its
        blocked layout and back, 3-5x slower (a third of the decoder's time at s = 1.6)."""
        B, _, h, w = hid.shape

        def linear(add: torch.Tensor, weight: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            # add + weight @ v per image, with v and the result (B, C, h * w) contiguous (a broadcast
            # matmul would return a transposed result, and every pass over it would be strided)
            return torch.baddbmm(add, weight[:, :, 0, 0].expand(B, -1, -1), v)

        first = torch.cat([self.head_rgb.weight, self.head_pos.weight], 1)
        v = linear(hid.flatten(2), first, pixel.flatten(2))
        v = linear(self.head_mid.bias[:, None], self.head_mid.weight, self.act(v))
        return linear(self.head_out.bias[:, None], self.head_out.weight, self.act(v)).view(B, -1, h, w)

    def forward(
        self,
        x: torch.Tensor,
        size: tuple[int, int],
        codec: str,
        s: float,
        q: float | torch.Tensor,
        uncertainty: torch.Tensor | None = None,
        tile: int = 512,
        residual: float = 1.0,
    ) -> SROutput:
        """Upsample (B, 3, h, w) in [0, 1] to ``size`` = (H, W), any size >= 1x1, in output tiles
        (``residual``: the weight of the decoder's correction, see :meth:`render_tile`)."""
        emb = self.embedding(codec, s, q, x.shape[0])
        out = torch.empty(x.shape[0], 3, *size, dtype=x.dtype, device=x.device)
        for (y0, y1, x0, x1), pixels in self.render_tiles(x, uncertainty, emb, size, tile, residual):
            out[..., y0:y1, x0:x1] = pixels
        return SROutput(sample=out.clamp_(0, 1))

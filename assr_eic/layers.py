"""Small building blocks shared by the downsampler and the fidelity decoder."""

from __future__ import annotations

import functools
import math
import os

import torch
from torch import nn

from .bitstream import CODECS


def sinusoidal(v: torch.Tensor, dim: int, max_period: float = 100.0) -> torch.Tensor:
    """Timestep-style embedding of scalars ``v`` (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=v.device) / half)
    a = v.float()[:, None] * freqs[None] * 2 * math.pi
    return torch.cat([a.sin(), a.cos()], dim=1)


class DegradationEmbedding(nn.Module):
    """Embeds the degradation descriptor (base codec, scale s, quality q) into one vector.

    s enters as log(s) (bits fall roughly as 1/s**2), q as it is; both like diffusion timesteps.
    """

    def __init__(self, dim: int = 64) -> None:
        super().__init__()
        self.dim = dim
        self.codec = nn.Embedding(len(CODECS), dim)
        self.mlp = nn.Sequential(nn.Linear(2 * dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, codec_id: torch.Tensor, s: torch.Tensor, q: torch.Tensor | None = None) -> torch.Tensor:
        """``q`` None means the quality is not known or not used (embedded as zeros)."""
        e_s = sinusoidal(torch.log(s) / math.log(8.0), self.dim // 2, 10.0)
        e_q = torch.zeros_like(e_s) if q is None else sinusoidal(q, self.dim // 2, 10.0)
        e = torch.cat([e_s, e_q], dim=1)
        return self.mlp(torch.cat([e, self.codec(codec_id)], dim=1))


#: Which sides of a tensor (top, bottom, left, right) are the image's own borders, where convolutions
#: replicate the edge pixels. At the other sides (a tile cut from inside the image, whose margin is wider
#: than the receptive field, so those pixels never reach its output) zero padding is used and the ring's
#: recomputation skipped: on the rate control's sample tiles that was most of the decoder's time.
Edges = tuple[bool, bool, bool, bool]
ALL_EDGES: Edges = (True, True, True, True)
# the 1-pixel border ring of a 3x3 conv, top, bottom, left, right: (output region, input strip, replicate
# padding of the strip); the column strips run last and so write the corners
_RING = (
    ((..., slice(0, 1), slice(None)), (..., slice(0, 2), slice(None)), (1, 1, 1, 0)),
    ((..., slice(-1, None), slice(None)), (..., slice(-2, None), slice(None)), (1, 1, 0, 1)),
    ((..., slice(None), slice(0, 1)), (..., slice(None), slice(0, 2)), (1, 0, 1, 1)),
    ((..., slice(None), slice(-1, None)), (..., slice(None), slice(-2, None)), (0, 1, 1, 1)),
)


_FUSED_DTYPES = (torch.float32, torch.bfloat16)


@functools.cache
def onednn_fusion() -> bool:
    """Whether oneDNN's fused convolutions (convolution + leaky ReLU, convolution + sum: the ops PyTorch's
    own compiler emits on CPU) are here and match the unfused ones on a small probe (to float rounding:
    the algorithm oneDNN picks may differ by shape; at the fidelity decoder's 32 channels the results are
    identical on these machines)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        op = torch.ops.mkldnn._convolution_pointwise
        g = torch.Generator().manual_seed(0)
        x = torch.rand(1, 8, 9, 9, generator=g).contiguous(memory_format=torch.channels_last)
        w, b, r = torch.randn(8, 8, 3, 3, generator=g), torch.rand(8, generator=g), torch.rand(1, 8, 9, 9, generator=g)
        with torch.inference_mode():
            ref = nn.functional.conv2d(x, w, b, padding=1)
            act = op(x, w, b, [1, 1], [1, 1], [1, 1], 1, "leaky_relu", [0.2], None)
            add = op.binary(x, r, w, b, [1, 1], [1, 1], [1, 1], 1, "add", 1.0, None, [], None)
            close = functools.partial(torch.allclose, rtol=1e-5, atol=1e-5)
            return close(act, nn.functional.leaky_relu(ref, 0.2)) and close(add, ref + r)
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


@functools.cache
def _native_bf16() -> bool:
    try:  # AVX512-BF16 or AMX: bfloat16 dot products in hardware, 3x the float32 rate of a 3x3 conv here
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    except AttributeError:  # a PyTorch without these probes
        return False


def inference_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a conv trunk runs in for ``x``: bfloat16 in inference on a CPU with native bfloat16 and
    oneDNN's fused convolutions, else ``x``'s own. ``ASSR_EIC_PRECISION=float32`` keeps float32.

    Measured for the fidelity decoder on the Kodak files: the decoded images change by at most 2 levels
    (1-6% of pixels by 1), the mean PSNR by under 0.001 dB, and its pass at 768x512 and s = 1 takes 0.3
    s instead of 0.7 on 2 cores.
    """
    if (
        torch.is_grad_enabled() or x.device.type != "cpu" or x.dtype != torch.float32
        or os.environ.get("ASSR_EIC_PRECISION", "auto") == "float32"
    ):  # fmt: skip
        return x.dtype
    return torch.bfloat16 if _native_bf16() and onednn_fusion() else x.dtype


class ReplicateConv3x3(nn.Conv2d):
    """3x3 conv with replicate padding, computed without padding the whole input.

    ``padding_mode="replicate"`` copies the input into a padded tensor before every conv (a quarter of
    the conv's time on CPU). Zero padding gives the same result everywhere except the 1-pixel border
    ring, which is then recomputed from replicate-padded 2-pixel strips: the same sums, a fraction of
    the copying.
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(cin, cout, 3, padding=1)

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return self.forward_with(x, weight, bias)

    def forward_with(
        self, x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None, *,
        slope: float | None = None, residual: torch.Tensor | None = None, edges: Edges = ALL_EDGES,
    ) -> torch.Tensor:  # fmt: skip
        """The conv with other ``weight`` and ``bias`` (default its own), followed by a leaky ReLU of
        negative ``slope`` or by adding ``residual``. Only the sides named by ``edges`` get replicate
        padding; the others are zero-padded (see :data:`Edges`).

        In inference on CPU (:func:`onednn_fusion`) the activation or the sum runs inside oneDNN's
        convolution instead of as one more pass over the features: the same numbers to float rounding,
        and 25-30% less time for the fidelity decoder's trunk at 768x512 on 2 cores.
        """
        weight = (self.weight if weight is None else weight).to(x.dtype)
        bias = (self.bias if bias is None else bias).to(x.dtype)
        conv, pad = nn.functional.conv2d, nn.functional.pad
        if x.shape[-2] < 3 or x.shape[-1] < 3:
            return self._post(conv(pad(x, (1, 1, 1, 1), mode="replicate"), weight, bias), slope, residual)
        fused = not torch.is_grad_enabled() and x.device.type == "cpu" and x.dtype in _FUSED_DTYPES and onednn_fusion()
        if fused:
            y = self._fused(x, weight, bias, slope, residual)
        else:
            y = self._post(conv(x, weight, bias, padding=1), slope, residual)
        for (out, strip, p), edge in zip(_RING, edges, strict=True):
            if edge:
                ring = conv(pad(x[strip], p, mode="replicate"), weight, bias)
                y[out] = self._post(ring, slope, None if residual is None else residual[out])
        return y

    @staticmethod
    def _fused(
        x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, slope: float | None, residual: torch.Tensor | None
    ) -> torch.Tensor:
        """The zero-padded conv with its leaky ReLU or residual sum in one oneDNN call."""
        op, one = torch.ops.mkldnn._convolution_pointwise, [1, 1]
        if residual is not None:
            return op.binary(x, residual, weight, bias, one, one, one, 1, "add", 1.0, None, [], None)
        if slope is not None:
            return op(x, weight, bias, one, one, one, 1, "leaky_relu", [slope], None)
        return op(x, weight, bias, one, one, one, 1, "none", [], None)

    @staticmethod
    def _post(y: torch.Tensor, slope: float | None, residual: torch.Tensor | None) -> torch.Tensor:
        if slope is not None:
            y = nn.functional.leaky_relu(y, slope)
        return y if residual is None else y + residual


def conv3x3(cin: int, cout: int) -> ReplicateConv3x3:
    """3x3 conv with replicate padding (so tiled and whole-image passes agree inside the margin)."""
    return ReplicateConv3x3(cin, cout)


class FiLMResBlock(nn.Module):
    """conv-act-conv residual block whose features are modulated by (1 + gamma) * h + beta."""

    def __init__(self, channels: int, emb_dim: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(channels, channels)
        self.conv2 = conv3x3(channels, channels)
        self.act = nn.LeakyReLU(0.2)
        self.film = nn.Linear(emb_dim, 2 * channels)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, edges: Edges = ALL_EDGES) -> torch.Tensor:
        """``edges``: the sides where ``x`` ends at the image's border (:data:`Edges`)."""
        gamma, beta = self.film(emb)[:, :, None, None].chunk(2, 1)
        h = self.conv1.forward_with(x, slope=self.act.negative_slope, edges=edges)
        if emb.shape[0] == 1 and not torch.is_grad_enabled():
            # inference on one image: (1 + gamma) and beta fold into conv2's weights and bias (replicate
            # padding keeps a constant offset constant), saving two full-resolution passes per block
            w = self.conv2.weight
            w2 = w * (1 + gamma[0, :, 0, 0])[None, :, None, None]
            b2 = self.conv2.bias + w.sum((2, 3)) @ beta[0, :, 0, 0]
            return self.conv2.forward_with(h, w2, b2, residual=x, edges=edges)
        h = h * (1 + gamma).to(h.dtype) + beta.to(h.dtype)
        return self.conv2.forward_with(h, residual=x, edges=edges)

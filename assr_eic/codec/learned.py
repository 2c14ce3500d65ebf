"""``learned``: a variable-rate mean-scale hyperprior (Minnen et al. 2018) with gain units.

One set of weights covers a continuous quality range: the latent ``y`` is multiplied by a gain vector
interpolated (geometrically) between L learned gains, and divided by a matching inverse gain before
synthesis (Cui et al., "Asymmetric Gained Deep Image Compression", CVPR 2021). Training samples the
quality q in [0, 1] per batch with ``lmbda(q) = lmbda_min * (lmbda_max / lmbda_min) ** q``.

Determinism across processes, thread counts and machines: the entropy coder needs the encoder and
the decoder to pick the same CDF for every symbol. Two things guarantee it here:

* the CDF tables are computed once by :meth:`update` and stored in the model file, never recomputed
  at load time;
* at coding time the hyper-synthesis ``h_s`` runs in fixed point: weights and activations are
  integers carried in float64, where every product and partial sum is an exact integer below 2**53,
  so summation order (threads, SIMD, BLAS) cannot change a single bit of the scales and means;
* its outputs, the entropy parameters, are snapped to a coarse grid: scales and means are integers in
  units of ``2**-PARAM_FRAC_BITS`` (1/64), scales clamped to [0.11, 256] and means to [-256, 256].
  Every consumer re-snaps them (:meth:`VariableRateHyperprior.entropy_parameters`), so relative noise
  up to ``2**-(PARAM_FRAC_BITS + 1) / 256`` (3e-5; e.g. a float path, another BLAS or a GPU carrying
  the parameters) cannot move a scale index or a mean: they return exactly to the grid.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

with warnings.catch_warnings():
    # importing compressai imports torch_geometric, whose torch.jit.script calls warn on every start
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    from compressai.entropy_models import EntropyBottleneck, GaussianConditional
    from compressai.layers import GDN
    from compressai.models import CompressionModel
    from compressai.models.utils import conv, deconv

from ..bitstream import BitstreamError
from ..configurable import register_to_config
from ..limits import LEARNED_MAX_LOWRES_PIXELS
from ..rescale import pad_to_multiple
from . import check_lowres_size
from .base import LowresCode, Speed
from .rans import CheckedEntropyCoder

STRIDE = 64  # g_a downsamples by 16, h_a by 4 more
_FA, _FW = 8, 12  # fractional bits of activations and weights in the exact h_s
SCALES_MIN, SCALES_MAX, SCALES_LEVELS = 0.11, 256.0, 64
PARAM_FRAC_BITS = 6  # entropy parameters are multiples of 2**-6: 256 * 1e-5 = 2.6e-3 < 2**-7, half a step
MEANS_MAX = 256.0
MAX_LOWRES_PIXELS = LEARNED_MAX_LOWRES_PIXELS  # 2048 x 2048 (its reason: assr_eic.limits)


def snap(v: torch.Tensor, frac_bits: int | None = None) -> torch.Tensor:
    """Round to the entropy-parameter grid: multiples of 2**-frac_bits (float64, exact)."""
    k = PARAM_FRAC_BITS if frac_bits is None else frac_bits
    return torch.round(v.double() * 2**k) / 2**k


def scale_table() -> torch.Tensor:
    return torch.exp(torch.linspace(math.log(SCALES_MIN), math.log(SCALES_MAX), SCALES_LEVELS))


class VariableRateHyperprior(CompressionModel):
    """Mean-scale hyperprior with gain units; quality q in [0, 1] from one set of weights."""

    @register_to_config
    def __init__(
        self, N: int = 64, M: int = 96, levels: int = 6, lmbda_min: float = 0.0018, lmbda_max: float = 0.13
    ) -> None:
        super().__init__()
        if levels < 2:
            raise ValueError(f"gain units need at least 2 levels, got {levels}")
        self.entropy_bottleneck = EntropyBottleneck(N)
        self.gaussian_conditional = GaussianConditional(None)
        self.g_a = nn.Sequential(conv(3, N), GDN(N), conv(N, N), GDN(N), conv(N, N), GDN(N), conv(N, M))
        self.g_s = nn.Sequential(
            deconv(M, N), GDN(N, inverse=True), deconv(N, N), GDN(N, inverse=True),
            deconv(N, N), GDN(N, inverse=True), deconv(N, 3),
        )  # fmt: skip
        self.h_a = nn.Sequential(conv(M, N, stride=1, kernel_size=3), nn.ReLU(), conv(N, N), nn.ReLU(), conv(N, N))
        self.h_s = nn.Sequential(
            deconv(N, M), nn.ReLU(), deconv(M, M * 3 // 2), nn.ReLU(),
            conv(M * 3 // 2, M * 2, stride=1, kernel_size=3),
        )  # fmt: skip
        for em in (self.entropy_bottleneck, self.gaussian_conditional):
            em.entropy_coder = CheckedEntropyCoder()  # never let a crafted file crash the process
        init = torch.exp(torch.linspace(math.log(0.5), math.log(4.0), levels))
        self.gain = nn.Parameter(init[:, None].repeat(1, M))
        self.inv_gain = nn.Parameter((1.0 / init)[:, None].repeat(1, M))

    @property
    def downsampling_factor(self) -> int:
        return STRIDE

    def lmbda(self, q: torch.Tensor | float) -> torch.Tensor | float:
        c = self.config
        return c["lmbda_min"] * (c["lmbda_max"] / c["lmbda_min"]) ** q

    def _interp(self, table: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Geometric interpolation of a (L, M) gain table at q (B,) -> (B, M, 1, 1)."""
        t = q.clamp(0, 1) * (table.shape[0] - 1)
        i = t.floor().long().clamp(max=table.shape[0] - 2)
        a = (t - i)[:, None]
        g = table.abs() + 1e-5
        return (g[i] ** (1 - a) * g[i + 1] ** a)[:, :, None, None]

    def forward(self, x: torch.Tensor, q: torch.Tensor) -> dict:
        """Training pass; ``q`` is (B,) in [0, 1]. Returns x_hat, likelihoods, scales."""
        y = self.g_a(x) * self._interp(self.gain, q)
        z = self.h_a(y)
        z_hat, z_likelihoods = self.entropy_bottleneck(z)
        scales_hat, means_hat = self.h_s(z_hat).chunk(2, 1)
        y_hat, y_likelihoods = self.gaussian_conditional(y, scales_hat, means=means_hat)
        x_hat = self.g_s(y_hat * self._interp(self.inv_gain, q))
        return {"x_hat": x_hat, "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}, "scales": scales_hat}

    def update(self, scale_table_: torch.Tensor | None = None, force: bool = False) -> bool:
        """Build the CDF tables (once, after training; they are saved with the weights)."""
        return super().update(scale_table=scale_table() if scale_table_ is None else scale_table_, force=force)

    def _require_tables(self) -> None:
        if self.entropy_bottleneck._offset.numel() == 0 or self.gaussian_conditional._offset.numel() == 0:
            raise RuntimeError("the entropy models have no CDF tables: run update() first")

    @torch.no_grad()
    def h_s_exact(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h_s in fixed point (bit-identical everywhere) -> (scales_hat, means_hat) on the parameter grid.

        The outputs are multiples of ``2**-PARAM_FRAC_BITS`` (the last fixed-point result rounded in
        integers), as float32 (exact); :meth:`entropy_parameters` clamps them to their ranges.
        """
        a = torch.round(z_hat.double() * 2**_FA)
        for layer in self.h_s:
            if isinstance(layer, nn.ReLU):
                a = a.clamp_(min=0)
                continue
            w = torch.round(layer.weight.double() * 2**_FW)
            b = torch.round(layer.bias.double() * 2 ** (_FA + _FW))
            if isinstance(layer, nn.ConvTranspose2d):
                o = nn.functional.conv_transpose2d(a, w, b, layer.stride, layer.padding, layer.output_padding)
            else:
                o = nn.functional.conv2d(a, w, b, layer.stride, layer.padding)
            a = torch.floor(o / 2**_FW)
        scales, means = (a / 2**_FA).chunk(2, 1)
        return snap(scales).float(), snap(means).float()

    @staticmethod
    def snap_parameters(
        scales: torch.Tensor, means: torch.Tensor, frac_bits: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scales and means -> the grid, clamped to their ranges, as float32 (idempotent)."""
        scales = snap(scales, frac_bits).clamp_(SCALES_MIN, SCALES_MAX).float()
        means = snap(means, frac_bits).clamp_(-MEANS_MAX, MEANS_MAX).float()
        return scales, means

    def entropy_parameters(
        self, scales: torch.Tensor, means: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Hyper-decoder outputs -> (scale indexes, scales, means) for the Gaussian conditional.

        Re-snaps its inputs first, so small float noise on them (relative 3e-5 or less) changes nothing.
        """
        scales, means = self.snap_parameters(scales, means)
        return self.gaussian_conditional.build_indexes(scales), scales, means

    def _lowres_out(self, y_hat_g: torch.Tensor, scales: torch.Tensor, q: torch.Tensor, size) -> LowresCode:
        inv = self._interp(self.inv_gain, q)
        x_hat = self.g_s(y_hat_g * inv).clamp_(0, 1)[..., : size[0], : size[1]]
        unc = (scales * inv).mean(1, keepdim=True)
        unc = nn.functional.interpolate(unc, scale_factor=16, mode="nearest")[..., : size[0], : size[1]]
        return LowresCode(streams=(), x_hat=x_hat, uncertainty=unc)

    @torch.no_grad()
    def compress(self, x: torch.Tensor, q: float) -> dict:
        """(1, 3, h, w) in [0, 1] -> {"strings": [y, z], "shape": z size, "y_hat", "scales"}."""
        self._require_tables()
        qt = torch.tensor([q], dtype=torch.float32)
        y = self.g_a(pad_to_multiple(x, STRIDE)[0]) * self._interp(self.gain, qt)
        z = self.h_a(y)
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.shape[-2:])
        indexes, scales, means = self.entropy_parameters(*self.h_s_exact(z_hat))
        y_strings = self.gaussian_conditional.compress(y, indexes, means=means)
        y_hat = self.gaussian_conditional.quantize(y, "dequantize", means)
        return {"strings": [y_strings, z_strings], "shape": z.shape[-2:], "y_hat": y_hat, "scales": scales}

    @torch.no_grad()
    def decompress(self, strings: list, shape: tuple[int, int]) -> dict:
        """Entropy-decode -> {"y_hat", "scales"} (the gain-domain latent; see :meth:`synthesize`)."""
        self._require_tables()
        z_hat = self.entropy_bottleneck.decompress(strings[1], shape)
        indexes, scales, means = self.entropy_parameters(*self.h_s_exact(z_hat))
        y_hat = self.gaussian_conditional.decompress(strings[0], indexes, means=means)
        return {"y_hat": y_hat, "scales": scales}


class LearnedCodec:
    """Adapter from :class:`VariableRateHyperprior` to the base-codec interface."""

    name = "learned"

    has_draft = False
    network = VariableRateHyperprior  # what ``ASSRModel.learned_net`` builds
    log_bytes_per_level = 0.012

    def __init__(self, net: VariableRateHyperprior) -> None:
        self.net = net.eval()

    @classmethod
    def from_model(cls, model) -> LearnedCodec:
        return cls(model.learned_net)

    @classmethod
    def quality_levels(cls) -> list[int]:
        """Every code: the gain units interpolate continuously, so each of the 256 codes is its own rate."""
        return list(range(256))

    def encode(
        self, x: torch.Tensor, quality_code: int, reconstruct: bool = True, speed: Speed = "final"
    ) -> LowresCode:
        """Code ``x`` (``speed`` is ignored: this codec has one)."""
        check_lowres_size("learned", tuple(x.shape[-2:]))
        q = quality_code / 255
        out = self.net.compress(x, q)
        y_strings, z_strings = out["strings"]
        if not reconstruct:
            return LowresCode(streams=(z_strings[0], y_strings[0]), x_hat=None)
        code = self.net._lowres_out(out["y_hat"], out["scales"], torch.tensor([q]), x.shape[-2:])
        code.streams = (z_strings[0], y_strings[0])
        code.symbols = (out["y_hat"],)  # bit-exact: integer symbols + fixed-point means
        return code

    def decode(self, streams: tuple[bytes, ...], size: tuple[int, int], quality_code: int) -> LowresCode:
        if len(streams) != 2:
            raise BitstreamError(f"invalid file: a learned payload has 2 streams, this one has {len(streams)}")
        check_lowres_size("learned", size, BitstreamError)
        h, w = size
        zh, zw = -(-h // STRIDE), -(-w // STRIDE)
        try:
            out = self.net.decompress([[streams[1]], [streams[0]]], (zh, zw))
        except (RuntimeError, ValueError, IndexError, OverflowError) as e:
            raise BitstreamError(f"invalid file: the learned payload does not decode ({e})") from None
        if not torch.isfinite(out["y_hat"]).all():
            raise BitstreamError("invalid file: the learned payload decodes to non-finite values")
        q = quality_code / 255
        code = self.net._lowres_out(out["y_hat"], out["scales"], torch.tensor([q]), size)
        if not torch.isfinite(code.x_hat).all():  # absurd latents (crafted bypass values) overflow g_s
            raise BitstreamError("invalid file: the learned payload decodes to non-finite pixels")
        code.streams = tuple(streams)
        code.symbols = (out["y_hat"],)  # bit-exact: integer symbols + fixed-point means
        return code

"""Small building blocks shared by the downsampler and the fidelity decoder."""

from __future__ import annotations

import math

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
        conv = nn.functional.conv2d
        pad = nn.functional.pad
        if x.shape[-2] < 3 or x.shape[-1] < 3:
            return conv(pad(x, (1, 1, 1, 1), mode="replicate"), weight, bias)
        y = conv(x, weight, bias, padding=1)
        y[..., :1, :] = conv(pad(x[..., :2, :], (1, 1, 1, 0), mode="replicate"), weight, bias)
        y[..., -1:, :] = conv(pad(x[..., -2:, :], (1, 1, 0, 1), mode="replicate"), weight, bias)
        y[..., :, :1] = conv(pad(x[..., :, :2], (1, 0, 1, 1), mode="replicate"), weight, bias)
        y[..., :, -1:] = conv(pad(x[..., :, -2:], (0, 1, 1, 1), mode="replicate"), weight, bias)
        return y


def conv3x3(cin: int, cout: int) -> nn.Conv2d:
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

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.film(emb)[:, :, None, None].chunk(2, 1)
        h = self.act(self.conv1(x))
        if emb.shape[0] == 1 and not torch.is_grad_enabled():
            # inference on one image: (1 + gamma) and beta fold into conv2's weights and bias (replicate
            # padding keeps a constant offset constant), saving two full-resolution passes per block
            w = self.conv2.weight
            w2 = w * (1 + gamma[0, :, 0, 0])[None, :, None, None]
            b2 = self.conv2.bias + w.sum((2, 3)) @ beta[0, :, 0, 0]
            return x + self.conv2._conv_forward(h, w2, b2)
        h = h * (1 + gamma) + beta
        return x + self.conv2(h)


class ConfigModule(nn.Module):
    """A module whose constructor arguments are its config (kept in ``self.config``).

    Same idea as diffusers' ``register_to_config`` without importing diffusers, which costs about
    5 s on these CPUs and would slow every command-line call.
    """

    config: dict

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

"""The control branch of the diffusion decoder: residuals for the SD UNet, told what the codec lost.

One light branch with the SD UNet's skip layout (diffusers' ``down_block_additional_residuals`` order,
12 tensors for SD 1.x, plus ``mid_block_additional_residual``), in the spirit of ControlNet (Zhang et al.
2023) but narrow (``base_channels``), reading the decoded image, its uncertainty map and the noisy latent.

- Global compression-rescaling adaptor: the degradation vector [log s / log 8, q, log10 bpp] is embedded
  like a timestep and ADDED to the branch's time embedding (holistic rate guidance).
- Local compression-rescaling modulator: spatial FiLM on every residual, r <- r * (1 + gamma) + beta, with
  (gamma, beta) computed per location from the uncertainty map (area-resampled to the residual's grid) and
  the degradation embedding, so the same residual is rescaled differently where the codec was unsure.
- The residual projections and the FiLM heads are zero-initialised: an untrained adaptor returns all-zero
  residuals and leaves the UNet's output unchanged.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from ..configurable import ConfigModule
from ..files import atomic_write_bytes, read_safetensors
from ..layers import sinusoidal

FORMAT = "assr_eic.diffusion_adaptor"
FORMAT_VERSION = "1"
DEFAULT_FAMILY = "sd1"  # the checkpoint family an adaptor is for (metadata "family"); files before it: SD 1.x


class AdaptorFileError(ValueError):
    """A file that is not a readable ASSR adaptor (missing, corrupt, foreign, or of another layout)."""


@dataclass
class AdaptorOutput:
    """Residuals for the UNet: ``down`` in diffusers' ``down_block_additional_residuals`` order, and ``mid``."""

    down: list[torch.Tensor]
    mid: torch.Tensor


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """The SD UNet's sinusoidal timestep embedding (cos first, as diffusers' ``flip_sin_to_cos``): (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    a = t.float()[:, None] * freqs[None]
    return torch.cat([a.cos(), a.sin()], dim=1)


def zero_module(m: nn.Module) -> nn.Module:
    """Zero every parameter of ``m`` (the ControlNet trick: the branch starts as a no-op)."""
    for p in m.parameters():
        nn.init.zeros_(p)
    return m


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, c), c)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, plus the (time + degradation) embedding, then GroupNorm-SiLU-conv, with a skip."""

    def __init__(self, cin: int, cout: int, emb_dim: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2, self.conv2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class SinusoidalDegradationEmbedding(nn.Module):
    """(B, 3) degradation vectors -> (B, dim), each component embedded like a timestep (sinusoids), then an MLP."""

    def __init__(self, dim: int, freq_dim: int = 32) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(3 * freq_dim + 3, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        parts = [sinusoidal(d[:, i], self.freq_dim, 10.0) for i in range(3)]
        return self.mlp(torch.cat([*parts, d.float()], dim=1))


class LocalModulator(nn.Module):
    """Spatial FiLM on each residual from the uncertainty map and the degradation embedding.

    ``hidden = SiLU(W_u u(x) + W_d e_d)`` per location (1x1: a change of the map at one place changes only
    the residuals at that place), then one zero-initialised 1x1 head per residual gives (gamma, beta).
    """

    def __init__(self, emb_dim: int, channels: list[int], hidden: int = 32) -> None:
        super().__init__()
        self.from_map = nn.Conv2d(1, hidden, 1)
        self.from_deg = nn.Linear(emb_dim, hidden)
        self.heads = nn.ModuleList(zero_module(nn.Conv2d(hidden, 2 * c, 1)) for c in channels)

    def forward(
        self, residuals: list[torch.Tensor], emb: torch.Tensor, uncertainty: torch.Tensor
    ) -> list[torch.Tensor]:
        e = self.from_deg(emb)[:, :, None, None]
        out = []
        for r, head in zip(residuals, self.heads, strict=True):
            u = F.adaptive_avg_pool2d(uncertainty, r.shape[-2:])
            gamma, beta = head(F.silu(self.from_map(u) + e)).chunk(2, 1)
            out.append(r * (1 + gamma) + beta)
        return out


class ASSRAdaptor(ConfigModule):
    """Degradation-aware control branch for an SD-style UNet (defaults: the SD 1.x UNet).

    ``model_channels``, ``channel_mult``, ``num_res_blocks`` and ``in_channels`` describe the UNet the
    residuals are for (its ``block_out_channels = model_channels * channel_mult``); ``base_channels`` is the
    width of this light branch; ``hint_channels`` is 4 (decoded RGB + uncertainty) or 3 (RGB only: then the
    uncertainty map reaches the residuals only through the modulator).
    """

    def __init__(
        self,
        model_channels: int = 320,
        channel_mult: tuple[int, ...] = (1, 2, 4, 4),
        num_res_blocks: int = 2,
        in_channels: int = 4,
        hint_channels: int = 4,
        base_channels: int = 64,
        modulator_hidden: int = 32,
    ) -> None:
        super().__init__()
        channel_mult = tuple(int(m) for m in channel_mult)
        if hint_channels not in (3, 4):
            raise ValueError(f"hint_channels must be 4 (RGB + uncertainty) or 3 (RGB), got {hint_channels}")
        if not channel_mult or min(channel_mult) < 1 or num_res_blocks < 1 or model_channels < 1:
            raise ValueError(
                f"invalid UNet layout: model_channels={model_channels}, channel_mult={channel_mult}, "
                f"num_res_blocks={num_res_blocks}"
            )
        if base_channels < 4:
            raise ValueError(f"base_channels must be at least 4, got {base_channels}")
        self.gradient_checkpointing = False
        b = base_channels
        emb_dim = 4 * b
        self.time_embed = nn.Sequential(nn.Linear(b, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.degradation_embed = SinusoidalDegradationEmbedding(emb_dim)
        # hint encoder: decoded image (+ map) at 8x the latent size -> branch features at the latent size
        c1, c2 = max(4, b // 4), max(4, b // 2)
        self.hint = nn.Sequential(
            nn.Conv2d(hint_channels, c1, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(c1, c1, 3, padding=1, stride=2),
            nn.SiLU(),
            nn.Conv2d(c1, c2, 3, padding=1, stride=2),
            nn.SiLU(),
            nn.Conv2d(c2, c2, 3, padding=1, stride=2),
            nn.SiLU(),
            nn.Conv2d(c2, b * channel_mult[0], 3, padding=1),
        )
        self.conv_in = nn.Conv2d(in_channels, b * channel_mult[0], 3, padding=1)
        branch_ch, unet_ch = [b * channel_mult[0]], [model_channels * channel_mult[0]]
        self.blocks = nn.ModuleList()
        self.downs = nn.ModuleList()
        ch = b * channel_mult[0]
        for i, m in enumerate(channel_mult):
            level = nn.ModuleList()
            for _ in range(num_res_blocks):
                level.append(ResBlock(ch, b * m, emb_dim))
                ch = b * m
                branch_ch.append(ch)
                unet_ch.append(model_channels * m)
            self.blocks.append(level)
            if i < len(channel_mult) - 1:
                self.downs.append(nn.Conv2d(ch, ch, 3, padding=1, stride=2))
                branch_ch.append(ch)
                unet_ch.append(model_channels * m)
        self.mid_block = ResBlock(ch, ch, emb_dim)
        pairs = zip(branch_ch, unet_ch, strict=True)
        self.zero_convs = nn.ModuleList(zero_module(nn.Conv2d(c, u, 1)) for c, u in pairs)
        self.mid_out = zero_module(nn.Conv2d(ch, model_channels * channel_mult[-1], 1))
        self.modulator = LocalModulator(emb_dim, [*unet_ch, model_channels * channel_mult[-1]], modulator_hidden)

    @classmethod
    def for_unet_config(cls, unet_config: Mapping[str, Any], **overrides: Any) -> ASSRAdaptor:
        """An adaptor whose residuals fit a diffusers ``UNet2DConditionModel`` config (``unet.config``)."""
        boc = [int(c) for c in unet_config["block_out_channels"]]
        lpb = unet_config.get("layers_per_block", 2)
        if not isinstance(lpb, int):
            if len(set(lpb)) != 1:
                raise ValueError(f"layers_per_block must be the same for every block, got {list(lpb)}")
            lpb = int(lpb[0])
        if any(c % boc[0] for c in boc):
            raise ValueError(f"block_out_channels {boc} are not multiples of the first one")
        kw: dict[str, Any] = {
            "model_channels": boc[0],
            "channel_mult": tuple(c // boc[0] for c in boc),
            "num_res_blocks": lpb,
            "in_channels": int(unet_config.get("in_channels", 4)),
        }
        kw.update(overrides)
        return cls(**kw)

    @property
    def num_down_residuals(self) -> int:
        return len(self.zero_convs)

    def enable_gradient_checkpointing(self, on: bool = True) -> None:
        """Recompute the branch's blocks in the backward pass (less memory, about 30% more time)."""
        self.gradient_checkpointing = on

    def embedding(self, timesteps: torch.Tensor, degradation: torch.Tensor) -> torch.Tensor:
        """The branch's time embedding with the global adaptor's degradation embedding added: (B, 4 * base)."""
        e_t = self.time_embed(timestep_embedding(timesteps, self.config["base_channels"]))
        return e_t + self.degradation_embed(degradation)

    def _block(self, block: ResBlock, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, h, emb, use_reentrant=False)
        return block(h, emb)

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor | float,
        decoded: torch.Tensor,
        degradation: torch.Tensor,
        uncertainty: torch.Tensor | None = None,
        residual_scale: float = 1.0,
    ) -> AdaptorOutput:
        """Residuals for the UNet denoising latent ``x`` (B, C, h, w) at ``timesteps`` (B,) (0..999 for SD).

        ``decoded`` (B, 3, H, W) in [0, 1] is the fidelity decoder's output at the output size, 8x the latent
        (resampled to 8h x 8w if it is another size); ``degradation`` (B, 3) are :meth:`Degradation.vector`
        rows; ``uncertainty`` (B, 1, H, W) in [0, 1] (zeros when None). Residuals are scaled by ``residual_scale``.
        """
        B, C, h, w = x.shape
        if C != self.config["in_channels"]:
            raise ValueError(f"latent has {C} channels, the adaptor expects {self.config['in_channels']}")
        if decoded.ndim != 4 or decoded.shape[:2] != (B, 3):
            raise ValueError(f"decoded must be ({B}, 3, H, W), got {tuple(decoded.shape)}")
        degradation = degradation.to(x.device, torch.float32)
        if degradation.ndim == 1:
            degradation = degradation[None].expand(B, -1)
        if degradation.shape != (B, 3):
            raise ValueError(f"degradation must be ({B}, 3), got {tuple(degradation.shape)}")
        dtype = self.conv_in.weight.dtype
        size = (8 * h, 8 * w)
        decoded = decoded.to(x.device, dtype)
        if decoded.shape[-2:] != size:
            decoded = F.interpolate(decoded, size=size, mode="bilinear", align_corners=False, antialias=True)
        if uncertainty is None:
            uncertainty = torch.zeros_like(decoded[:, :1])
        uncertainty = uncertainty.to(x.device, dtype)
        if uncertainty.ndim != 4 or uncertainty.shape[:2] != (B, 1):
            raise ValueError(f"uncertainty must be ({B}, 1, H, W), got {tuple(uncertainty.shape)}")
        if uncertainty.shape[-2:] != size:
            uncertainty = F.interpolate(uncertainty, size=size, mode="bilinear", align_corners=False)
        t = torch.as_tensor(timesteps, device=x.device).reshape(-1).expand(B)
        emb = self.embedding(t, degradation).to(dtype)

        hint_in = torch.cat([decoded * 2 - 1, uncertainty], 1) if self.config["hint_channels"] == 4 else decoded * 2 - 1
        h = self.conv_in(x.to(dtype)) + self.hint(hint_in)
        feats = [h]
        for i, level in enumerate(self.blocks):
            for block in level:
                h = self._block(block, h, emb)
                feats.append(h)
            if i < len(self.downs):
                h = self.downs[i](h)
                feats.append(h)
        h = self._block(self.mid_block, h, emb)
        residuals = [zc(f) for zc, f in zip(self.zero_convs, feats, strict=True)] + [self.mid_out(h)]
        residuals = self.modulator(residuals, emb, uncertainty)
        if residual_scale != 1.0:
            residuals = [r * residual_scale for r in residuals]
        return AdaptorOutput(down=residuals[:-1], mid=residuals[-1])


def save_adaptor(module: ASSRAdaptor, path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Write the adaptor as one safetensors file (config JSON and the checkpoint family it is for, the
    module's ``family`` attribute or SD 1.x, in its metadata), atomically (``files.atomic_write_bytes``:
    an existing file is replaced in one step, never half written)."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": json.dumps(module.config)}
    meta["family"] = getattr(module, "family", DEFAULT_FAMILY)
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()})
    atomic_write_bytes(path, save(tensors, metadata=meta), overwrite=True)


def adaptor_from_state(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, str], name: str = "file") -> ASSRAdaptor:
    """Build an adaptor from already-read tensors and safetensors metadata (what a ComfyUI loader has in hand)."""
    if (meta or {}).get("format") != FORMAT:
        raise AdaptorFileError(f"{name} is not an ASSR diffusion adaptor (no '{FORMAT}' format tag in its metadata)")
    if meta.get("format_version") != FORMAT_VERSION:
        raise AdaptorFileError(
            f"{name} is adaptor format version {meta.get('format_version')}, this assr-eic reads {FORMAT_VERSION}"
        )
    try:
        module = ASSRAdaptor.from_config(json.loads(meta["config"]))
        module.load_state_dict(dict(tensors))
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        raise AdaptorFileError(f"{name} does not match the ASSR adaptor layout ({e})") from None
    module.family = meta.get("family", DEFAULT_FAMILY)
    return module


def load_adaptor(path: str | os.PathLike, label: str | None = None) -> ASSRAdaptor:
    """Load an adaptor file; raises :class:`AdaptorFileError` with one clear sentence on any problem, naming
    the file as ``label`` (default: its path)."""
    path = Path(path)
    label = str(path) if label is None else label
    tensors, meta = read_safetensors(path, AdaptorFileError, "adaptor file", label)
    module = adaptor_from_state(tensors, meta, label)
    module.eval()
    return module

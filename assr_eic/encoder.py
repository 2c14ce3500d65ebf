"""The encoder's core: the downsampler at an exact scale, one encode at exact stored codes, and the
fidelity decode of a candidate. Rate control and the public API both build on it (neither imports the
other's internals, so the library's import graph has no cycle)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .bitstream import Bitstream, dequantize_scale, lowres_size, pack, parse
from .codec.base import LowresCode, Speed
from .model import ASSRModel
from .rescale import resize


@dataclass
class Encoded:
    """One candidate encoding: the file bytes, the parsed header and the low-res reconstruction."""

    data: bytes
    bitstream: Bitstream
    lowres: LowresCode
    # rate control's measure on a sample of the image: the MSE at the best decoder strength over plain
    # bicubic's, and that strength
    decoder_ratio: float | None = None
    decoder_strength: int | None = None


def downsample(model: ASSRModel, x: torch.Tensor, codec: str, scale_code: int) -> torch.Tensor:
    """The low-res image the base codec codes at this scale: resampling, then the learned refinement (in
    tiles, :meth:`~assr_eic.rescale.Downsampler.refine_tiled`)."""
    size = lowres_size(*x.shape[-2:], scale_code)
    with torch.inference_mode():
        return model.downsampler[codec].refine_tiled(resize(x, size), codec, dequantize_scale(scale_code))


def encode_at(
    model: ASSRModel,
    x: torch.Tensor,
    codec: str,
    scale_code: int,
    quality_code: int,
    prompt: str | None = None,
    *,
    fingerprint: bytes | None = None,
    x_lr: torch.Tensor | None = None,
    reconstruct_lowres: bool = True,
    speed: Speed = "final",
) -> Encoded:
    """Encode at exact stored codes (the encoder uses the same quantized s and q the decoder reads).

    Rate control passes the model ``fingerprint`` and the low-res image ``x_lr`` once per scale, and
    asks for the low-res reconstruction only for the candidates it compares, and sets the codec's
    ``speed`` per encode (see :class:`~assr_eic.codec.base.BaseCodec`).
    """
    H, W = x.shape[-2:]
    if x_lr is None:
        x_lr = downsample(model, x, codec, scale_code)
    with torch.inference_mode():
        code = model.codec(codec).encode(x_lr, quality_code, reconstruct=reconstruct_lowres, speed=speed)
    fp = model.fingerprint if fingerprint is None else fingerprint
    data = pack(Bitstream(codec, fp, H, W, scale_code, quality_code, code.streams, prompt))
    return Encoded(data, parse(data), code)


def reconstruct(model: ASSRModel, bs: Bitstream, lowres: LowresCode, size: tuple[int, int] | None = None):
    """Fidelity-decode a low-res reconstruction to ``size`` (default: the original size), with as much of
    the decoder's correction as the file asks for (``Bitstream.decoder_strength``; 0: plain bicubic)."""
    size = size or (bs.height, bs.width)
    sr = model.sr[bs.codec]
    with torch.inference_mode():
        out = sr(lowres.x_hat, size, bs.codec, bs.scale, bs.quality, lowres.uncertainty, residual=bs.decoder_weight)
    return out.sample

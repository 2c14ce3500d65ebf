"""The public API: ``compress(image, ...) -> bytes`` and ``decompress(data, ...) -> image``."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .bitstream import (
    Bitstream,
    BitstreamError,  # noqa: F401  (public here too)
    ModelMismatchError,
    parse,
    quantize_quality,
    quantize_scale,
    read_bitstream,  # noqa: F401  (public here too)
)
from .codec.base import LowresCode
from .decode_size import OutputTooLargeError, check_decode_size  # noqa: F401  (public here too)
from .encoder import Encoded, downsample, encode_at, reconstruct  # noqa: F401  (public here too)
from .image import (  # noqa: F401  (ImageError, check_image_size, composite_over_white: public here too)
    ImageError,
    ImageLike,
    check_image_size,
    composite_over_white,
    load_image,
    to_tensor,
    to_uint8,
)
from .limits import DEFAULT_MAX_DECODE_PIXELS
from .model import ASSRModel, load_model
from .rescale import DOWNSAMPLE_TILE  # noqa: F401  (public here too)


def compress(
    image: ImageLike,
    *,
    target_bpp: float | None = None,
    scale: float | None = None,
    quality: float | None = None,
    codec: str | None = None,
    prompt: str | None = None,
    model: ASSRModel | str | os.PathLike | None = None,
    progress: Callable[[int, int], None] | None = None,
    effort: str = "normal",
) -> bytes:
    """Compress an image to ``.assr`` bytes.

    Give either ``target_bpp`` (rate control picks the scale s and quality q per image) or both
    ``scale`` (s in [1, 8]) and ``quality`` (q in [0, 1]). ``codec`` is "av1" or "learned" (default:
    the model's). ``prompt`` is stored in the file (its bytes count in the bpp). ``effort`` is rate
    control's: "normal", "fast" (quicker, slightly lower quality) or "best" (slower from 0.1 bpp up, a
    little better there); see :mod:`assr_eic.ratecontrol`.
    """
    model = model if isinstance(model, ASSRModel) else load_model(model)
    codec = codec or model.config["default_codec"]
    model.codec(codec)  # validates the name early
    x = to_tensor(image)
    if target_bpp is not None:
        if scale is not None or quality is not None:
            raise ValueError("give either target_bpp, or scale and quality, not both")
        from .ratecontrol import search

        return search(model, x, target_bpp, codec, prompt, progress=progress, effort=effort).data
    if scale is None or quality is None:
        raise ValueError("give target_bpp, or both scale and quality")
    return encode_at(model, x, codec, quantize_scale(scale), quantize_quality(quality), prompt).data


@dataclass
class Decoded:
    """Result of :func:`decode`: the output image, the decoded low-res image and the parsed header."""

    image: torch.Tensor
    lowres: LowresCode
    bitstream: Bitstream


def _decode_lowres(
    data: bytes | Bitstream,
    size: tuple[int, int] | None,
    model: ASSRModel | str | os.PathLike | None,
    max_pixels: int = DEFAULT_MAX_DECODE_PIXELS,
) -> tuple[Bitstream, ASSRModel, LowresCode]:
    """Parse, check the output size and the model fingerprint, decode the low-res image."""
    bs = data if isinstance(data, Bitstream) else parse(data)
    check_decode_size(bs, size, max_pixels)
    model = model if isinstance(model, ASSRModel) else load_model(model)
    if bs.fingerprint != model.fingerprint:
        raise ModelMismatchError(
            f"this file was written with model {bs.fingerprint.hex()}, but the loaded model is "
            f"{model.fingerprint.hex()} ({model.source}); decode it with the model that wrote it"
        )
    with torch.inference_mode():
        lowres = model.codec(bs.codec).decode(bs.streams, bs.lowres_size, bs.quality_code)
    return bs, model, lowres


def decode(
    data: bytes | Bitstream,
    size: tuple[int, int] | None = None,
    model: ASSRModel | str | os.PathLike | None = None,
    *,
    max_pixels: int = DEFAULT_MAX_DECODE_PIXELS,
) -> Decoded:
    """Parse, check the model fingerprint, decode the low-res image and fidelity-decode it to ``size``.

    The output is a float (1, 3, H, W) tensor (12 bytes per pixel); :func:`decompress` needs 3.
    ``max_pixels``: as in :func:`decompress`."""
    bs, model, lowres = _decode_lowres(data, size, model, max_pixels)
    return Decoded(reconstruct(model, bs, lowres, size), lowres, bs)


def decompress(
    data: bytes | Bitstream,
    size: tuple[int, int] | None = None,
    model: ASSRModel | str | os.PathLike | None = None,
    *,
    tile: int = 512,
    max_pixels: int = DEFAULT_MAX_DECODE_PIXELS,
) -> np.ndarray:
    """Decode ``.assr`` bytes to a uint8 (H, W, 3) image at ``size`` = (H, W) (default: original).

    The fidelity decoder renders ``tile`` x ``tile`` output tiles straight into the uint8 result: the
    same pixels as ``to_uint8(decode(...).image)``, without its float (H, W) buffer. Peak memory is
    bounded by the formula of :mod:`assr_eic.limits` (the output, a few bytes per low-res pixel, one
    tile's work). An output of more than ``max_pixels`` pixels (default
    :data:`~assr_eic.limits.DEFAULT_MAX_DECODE_PIXELS`, 64 Mpx; at most 2**28) is refused from the header,
    before anything is allocated: raise it to decode larger images.
    """
    return decompress_with_lowres(data, size, model, tile=tile, max_pixels=max_pixels)[0]


def decompress_with_lowres(
    data: bytes | Bitstream,
    size: tuple[int, int] | None = None,
    model: ASSRModel | str | os.PathLike | None = None,
    *,
    tile: int = 512,
    max_pixels: int = DEFAULT_MAX_DECODE_PIXELS,
) -> tuple[np.ndarray, LowresCode]:
    """:func:`decompress`, also returning the decoded low-res image (for the nodes)."""
    bs, model, lowres = _decode_lowres(data, size, model, max_pixels)
    H, W = size or (bs.height, bs.width)
    sr = model.sr[bs.codec]
    out = np.empty((H, W, 3), np.uint8)
    with torch.inference_mode():
        emb = sr.embedding(bs.codec, bs.scale, bs.quality, lowres.x_hat.shape[0])
        tiles = sr.render_tiles(lowres.x_hat, lowres.uncertainty, emb, (H, W), tile, residual=bs.decoder_weight)
        for (y0, y1, x0, x1), pixels in tiles:
            out[y0:y1, x0:x1] = to_uint8(pixels)
    return out, lowres

"""The public API: ``compress(image, ...) -> bytes`` and ``decompress(data, ...) -> image``."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .bitstream import (
    Bitstream,
    BitstreamError,
    ModelMismatchError,
    lowres_size,
    pack,
    parse,
    quantize_quality,
    quantize_scale,
)
from .codec.av1 import to_uint8  # noqa: F401 - part of the public API
from .codec.base import LowresCode
from .model import ASSRModel, load_model

MAX_OUTPUT_PIXELS = 1 << 28  # decoding to a larger size is refused before anything is allocated

ImageLike = np.ndarray | torch.Tensor


class ImageError(ValueError):
    """An input image that cannot be compressed (wrong shape or type, unreadable file)."""


def to_tensor(image: ImageLike) -> torch.Tensor:
    """uint8 (H, W, 3) array or float (1, 3, H, W) / (3, H, W) tensor in [0, 1] -> float (1, 3, H, W)."""
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ImageError(f"expected an RGB image of shape (H, W, 3), got {image.shape}")
        if image.dtype != np.uint8:
            raise ImageError(f"expected uint8 pixels, got {image.dtype}")
        return torch.tensor(image).permute(2, 0, 1)[None].float() / 255.0
    if isinstance(image, torch.Tensor):
        x = image[None] if image.ndim == 3 else image
        if x.ndim != 4 or x.shape[:2] != (1, 3):
            raise ImageError(f"expected a (1, 3, H, W) tensor, got {tuple(image.shape)}")
        return x.float().clamp(0, 1)
    raise ImageError(f"expected a numpy array or a torch tensor, got {type(image).__name__}")


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as uint8 RGB: EXIF rotation applied, alpha composited over white."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, rgba)
            if im.mode == "I;16" or im.mode.startswith("I"):
                arr = np.asarray(im, dtype=np.float64)
                scale = 65535.0 if arr.max() > 255 else 255.0
                g = np.clip(np.rint(arr / scale * 255), 0, 255).astype(np.uint8)
                return np.repeat(g[..., None], 3, axis=2)
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except FileNotFoundError:
        raise ImageError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ImageError(f"cannot read {path} as an image ({e})") from None


@dataclass
class Encoded:
    """One candidate encoding: the file bytes, the parsed header and the low-res reconstruction."""

    data: bytes
    bitstream: Bitstream
    lowres: LowresCode


def downsample(model: ASSRModel, x: torch.Tensor, codec: str, scale_code: int) -> torch.Tensor:
    """The low-res image the base codec codes at this scale (resampling + learned refinement)."""
    size = lowres_size(*x.shape[-2:], scale_code)
    with torch.inference_mode():
        return model.downsampler[codec](x, size, codec, 1 + scale_code / 64)


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
) -> Encoded:
    """Encode at exact stored codes (the encoder uses the same quantized s and q the decoder reads).

    Rate control passes the model ``fingerprint`` and the low-res image ``x_lr`` once per scale, and
    asks for the low-res reconstruction only for the candidates it compares.
    """
    H, W = x.shape[-2:]
    if x_lr is None:
        x_lr = downsample(model, x, codec, scale_code)
    with torch.inference_mode():
        code = model.codec(codec).encode(x_lr, quality_code, reconstruct=reconstruct_lowres)
    fp = model.fingerprint if fingerprint is None else fingerprint
    data = pack(Bitstream(codec, fp, H, W, scale_code, quality_code, code.streams, prompt))
    return Encoded(data, parse(data), code)


def reconstruct(model: ASSRModel, bs: Bitstream, lowres: LowresCode, size: tuple[int, int] | None = None):
    """Fidelity-decode a low-res reconstruction to ``size`` (default: the original size)."""
    size = size or (bs.height, bs.width)
    with torch.inference_mode():
        return model.sr[bs.codec](lowres.x_hat, size, bs.codec, bs.scale, bs.quality, lowres.uncertainty).sample


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
) -> bytes:
    """Compress an image to ``.assr`` bytes.

    Give either ``target_bpp`` (rate control picks the scale s and quality q per image) or both
    ``scale`` (s in [1, 8]) and ``quality`` (q in [0, 1]). ``codec`` is "av1" or "learned" (default:
    the model's). ``prompt`` is stored in the file (its bytes count in the bpp).
    """
    model = model if isinstance(model, ASSRModel) else load_model(model)
    codec = codec or model.config["default_codec"]
    model.codec(codec)  # validates the name early
    x = to_tensor(image)
    if target_bpp is not None:
        if scale is not None or quality is not None:
            raise ValueError("give either target_bpp, or scale and quality, not both")
        from .ratecontrol import search

        return search(model, x, target_bpp, codec, prompt, progress=progress).data
    if scale is None or quality is None:
        raise ValueError("give target_bpp, or both scale and quality")
    return encode_at(model, x, codec, quantize_scale(scale), quantize_quality(quality), prompt).data


@dataclass
class Decoded:
    """Result of :func:`decode`: the output image, the decoded low-res image and the parsed header."""

    image: torch.Tensor
    lowres: LowresCode
    bitstream: Bitstream


def decode(
    data: bytes | Bitstream, size: tuple[int, int] | None = None, model: ASSRModel | str | os.PathLike | None = None
) -> Decoded:
    """Parse, check the model fingerprint, decode the low-res image and fidelity-decode it to ``size``."""
    bs = data if isinstance(data, Bitstream) else parse(data)
    model = model if isinstance(model, ASSRModel) else load_model(model)
    if bs.fingerprint != model.fingerprint:
        raise ModelMismatchError(
            f"this file was written with model {bs.fingerprint.hex()}, but the loaded model is "
            f"{model.fingerprint.hex()} ({model.source}); decode it with the model that wrote it"
        )
    if size is not None:
        h, w = size
        if not (1 <= h and 1 <= w and h * w <= MAX_OUTPUT_PIXELS):
            raise ValueError(f"output size {w}x{h} must be at least 1x1 and at most {MAX_OUTPUT_PIXELS} pixels")
    with torch.inference_mode():
        lowres = model.codec(bs.codec).decode(bs.streams, bs.lowres_size, bs.quality_code)
    return Decoded(reconstruct(model, bs, lowres, size), lowres, bs)


def decompress(
    data: bytes, size: tuple[int, int] | None = None, model: ASSRModel | str | os.PathLike | None = None
) -> np.ndarray:
    """Decode ``.assr`` bytes to a uint8 (H, W, 3) image at ``size`` = (H, W) (default: original)."""
    return to_uint8(decode(data, size, model).image)


def read_bitstream(path: str | os.PathLike) -> bytes:
    """Read a file's bytes, refusing anything too large to be an ``.assr`` file before reading it."""
    from .files import FileError, read_limited

    p = Path(path)
    if not p.is_file():
        raise BitstreamError(f"file not found: {p}")
    try:
        return read_limited(p, MAX_FILE_BYTES, "an .assr file")
    except FileError as e:
        raise BitstreamError(str(e)) from None


MAX_FILE_BYTES = 1 << 30  # larger files are refused before reading (no real .assr file comes near this)

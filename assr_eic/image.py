"""Image ingestion: files, arrays and tensors -> the float RGB the encoder codes; and back to 8 bits.

Everything that enters the encoder passes :func:`to_tensor` (arrays and tensors) or :func:`load_image`
(files): one alpha rule (composited over white), one grey rule (R = G = B), one size check against the
format's limits (:mod:`.limits`) before any conversion; :func:`to_uint8` for the way back to 8 bits.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Iterator

import numpy as np
import torch

from .limits import MAX_PIXELS, MAX_SIDE

ImageLike = np.ndarray | torch.Tensor


class ImageError(ValueError):
    """An input image that cannot be compressed (wrong shape or type, unreadable file)."""


def check_image_size(height: int, width: int) -> None:
    """Refuse sizes the format cannot hold (1..32768 per side, at most 2**28 pixels) before any allocation."""
    if height < 1 or width < 1:
        raise ImageError(f"image size {width}x{height} is empty: each side must be at least 1 pixel")
    if height > MAX_SIDE or width > MAX_SIDE or height * width > MAX_PIXELS:
        raise ImageError(
            f"image size {width}x{height} is too large: each side must be at most {MAX_SIDE} pixels and the "
            f"image at most {MAX_PIXELS} pixels (16384x16384)"
        )


def composite_over_white(color: np.ndarray | torch.Tensor, alpha: np.ndarray | torch.Tensor):
    """The alpha rule: ``color * alpha + 1 * (1 - alpha)``, everything in [0, 1] (transparent -> white)."""
    return color * alpha + (1 - alpha)


_MAX_BY_DTYPE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0, np.dtype(bool): 1.0}


def to_tensor(image: ImageLike) -> torch.Tensor:
    """An image array or tensor -> float RGB (1, 3, H, W) in [0, 1].

    Accepted: numpy (H, W) or (H, W, C) and torch (C, H, W) or (1, C, H, W), with C = 1 (grey), 2 (grey +
    alpha), 3 (RGB) or 4 (RGBA); uint8 (/255), uint16 (/65535), bool, or float in [0, 1] (clipped; NaN
    and infinity are refused). Grey becomes R = G = B. Alpha is composited over white:
    ``rgb * a + (1 - a)``, so fully transparent pixels become white and alpha is not stored.
    Sizes beyond the format's limits raise :class:`ImageError` before any conversion.
    """
    if isinstance(image, np.ndarray):
        arr = image[..., None] if image.ndim == 2 else image
        if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
            raise ImageError(f"expected an image of shape (H, W), (H, W, 3) or (H, W, 4), got {image.shape}")
        check_image_size(arr.shape[0], arr.shape[1])
        if arr.dtype not in _MAX_BY_DTYPE and arr.dtype.kind != "f":
            raise ImageError(f"expected uint8, uint16, bool or float pixels, got {image.dtype}")
        src = torch.from_numpy(np.ascontiguousarray(arr.view(np.uint8) if arr.dtype == bool else arr))
        x = torch.empty((1, arr.shape[2], arr.shape[0], arr.shape[1]), dtype=torch.float32)
        x[0].copy_(src.permute(2, 0, 1))  # one float copy, channels first (memory: 12 bytes per RGB pixel)
        if arr.dtype in _MAX_BY_DTYPE:
            x.div_(_MAX_BY_DTYPE[arr.dtype])
    elif isinstance(image, torch.Tensor):
        x = image[None] if image.ndim == 3 else image
        if x.ndim != 4 or x.shape[0] != 1 or x.shape[1] not in (1, 2, 3, 4):
            raise ImageError(f"expected a (1, C, H, W) or (C, H, W) tensor with C in 1..4, got {tuple(image.shape)}")
        check_image_size(x.shape[2], x.shape[3])
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        elif x.dtype == torch.bool or x.dtype.is_floating_point:
            x = x.float().clone()
        else:
            raise ImageError(f"expected uint8, bool or float pixels, got {image.dtype}")
    else:
        raise ImageError(f"expected a numpy array or a torch tensor, got {type(image).__name__}")
    if not torch.isfinite(x).all():
        raise ImageError("the image has NaN or infinite values")
    x.clamp_(0, 1)
    if x.shape[1] in (2, 4):
        x = composite_over_white(x[:, :-1], x[:, -1:])
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.contiguous()


_bomb_lock = threading.Lock()
_bomb_users = 0
_bomb_saved: int | None = None


@contextlib.contextmanager
def _pillow_limit_is_the_formats() -> Iterator[None]:
    """Pillow's decompression-bomb limit set to the format's while a file loads: it refuses above
    ``2 * MAX_IMAGE_PIXELS`` (179 Mpx by default, below the 268 Mpx the format holds and
    :func:`check_image_size` checks from the header first), so it is raised to ``MAX_PIXELS // 2``
    (refusing above :data:`MAX_PIXELS`, the same limit), its warning silenced, and restored after the last
    load in progress. Never lowered: a process that raised or disabled it keeps its own."""
    from PIL import Image

    global _bomb_users, _bomb_saved
    with _bomb_lock:
        if _bomb_users == 0:
            _bomb_saved = Image.MAX_IMAGE_PIXELS
            if _bomb_saved is not None and 2 * _bomb_saved < MAX_PIXELS:
                Image.MAX_IMAGE_PIXELS = MAX_PIXELS // 2
        _bomb_users += 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        with _bomb_lock:
            _bomb_users -= 1
            if _bomb_users == 0:
                Image.MAX_IMAGE_PIXELS = _bomb_saved


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as uint8 RGB (H, W, 3); raises :class:`ImageError` for anything unusable.

    - EXIF orientation is applied (the result is the image as viewers show it);
    - alpha (RGBA, LA, PA, palette or grey with a transparent colour) is composited over white,
      ``rgb * a + 255 * (1 - a)`` rounded: transparent pixels become white, alpha is not stored;
    - grey (L, 1, I;16) becomes R = G = B; 16-bit samples are scaled to 8 bits by ``round(v * 255 / 65535)``
      (16-bit RGB PNGs are reduced to 8 bits by Pillow, which keeps the high byte);
    - CMYK (e.g. CMYK JPEG), palette and other modes are converted by Pillow;
    - sizes beyond the format's limits (1..32768 per side, 2**28 pixels) are refused from the header alone,
      before the pixels are decoded; every size within them loads (Pillow's decompression-bomb limit,
      179 Mpx by default, is the format's while the file loads: :mod:`.limits`).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with _pillow_limit_is_the_formats(), Image.open(path) as im:
            check_image_size(im.size[1], im.size[0])
            im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info:
                rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
                rgb = composite_over_white(rgba[..., :3], rgba[..., 3:])
                return np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)
            if im.mode.startswith("I;16") or im.mode == "I":
                arr = np.asarray(im).astype(np.float64)
                # I;16 is 16-bit by definition; a 32-bit "I" image is taken as 16-bit if any value exceeds 255
                scale = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
                g = np.clip(np.rint(arr / scale * 255), 0, 255).astype(np.uint8)
                return np.repeat(g[..., None], 3, axis=2)
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except FileNotFoundError:
        raise ImageError(f"image not found: {path}") from None
    except Image.DecompressionBombError as e:  # a frame of a multi-frame file beyond the format's limit
        raise ImageError(f"{path}: image too large to load ({e})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, TypeError) as e:
        if isinstance(e, ImageError):
            raise
        raise ImageError(f"cannot read {path} as an image ({e})") from None


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(1, 3, h, w) float in [0, 1] -> (h, w, 3) uint8."""
    return (x[0].detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()

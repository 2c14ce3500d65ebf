"""The output size a decode is asked for, checked from the file header alone (no torch, no model): the
CLI refuses a file that declares too large an image before it imports torch, the library and the nodes
before they load a model or allocate anything."""

from __future__ import annotations

from .bitstream import Bitstream, BitstreamError
from .limits import MAX_OUTPUT_PIXELS, MAX_SIDE


class OutputTooLargeError(BitstreamError):
    """The file declares an image larger than the caller's decoding limit (``max_pixels``)."""


def check_decode_size(bs: Bitstream, size: tuple[int, int] | None, max_pixels: int) -> tuple[int, int]:
    """The output size (H, W) of decoding ``bs`` to ``size`` (default: the declared size), or one sentence
    that says why not: a side outside 1..MAX_SIDE, or more than ``max_pixels`` pixels (checked from the
    header, before the model is loaded or anything is allocated)."""
    if not (isinstance(max_pixels, int) and 1 <= max_pixels <= MAX_OUTPUT_PIXELS):
        raise ValueError(f"max_pixels must be a whole number in 1..{MAX_OUTPUT_PIXELS}, got {max_pixels!r}")
    raise_it = "raise the limit with max_pixels= (CLI: --max-pixels, node: max_pixels) to decode it"
    if size is not None:
        h, w = size
        if not (1 <= h and 1 <= w and h * w <= MAX_OUTPUT_PIXELS):
            raise ValueError(f"output size {w}x{h} must be at least 1x1 and at most {MAX_OUTPUT_PIXELS} pixels")
        if not (h <= MAX_SIDE and w <= MAX_SIDE):
            raise ValueError(f"output size {w}x{h} is too long a side: each side must be at most {MAX_SIDE} pixels")
        if h * w > max_pixels:
            raise ValueError(
                f"output size {w}x{h} ({h * w} pixels) is above the decoding limit: at most {max_pixels} pixels; "
                f"ask for a smaller size or {raise_it}"
            )
        return h, w
    if bs.height * bs.width > max_pixels:
        raise OutputTooLargeError(
            f"this file declares a {bs.width}x{bs.height} image ({bs.height * bs.width} pixels), above the "
            f"decoding limit of {max_pixels} pixels; if you expect an image that large, {raise_it}"
        )
    return bs.height, bs.width

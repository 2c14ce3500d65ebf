"""Base codecs for the low-resolution image: ``av1`` (raw AV1) and ``learned`` (variable-rate hyperprior)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..limits import MAX_LOWRES_PIXELS
from ..wire import BitstreamError

if TYPE_CHECKING:
    from ..bitstream import Bitstream

STREAMS = {"av1": 1, "learned": 2}
_STREAMS_TEXT = {"av1": "an av1 payload has 1 stream", "learned": "a learned payload has 2 streams"}


def check_headers(bs: Bitstream) -> None:
    """What the codecs' own headers say, checked against the file header without torch or a model.

    ``av1``: one stream whose sequence header declares the padded low-res frame; ``learned``: two rANS
    streams of whole 32-bit words (at least the coder's 64-bit final state) and a low-res size within
    :data:`MAX_LOWRES_PIXELS`. The decoders check the same again; this only refuses a file sooner.
    """
    if len(bs.streams) != STREAMS[bs.codec]:
        raise BitstreamError(f"invalid file: {_STREAMS_TEXT[bs.codec]}, this one has {len(bs.streams)}")
    h, w = bs.lowres_size
    if bs.codec == "av1":
        from .obu import check_frame_size, padded_size

        check_frame_size(bs.streams[0], *padded_size(h, w))
        return
    if h * w > MAX_LOWRES_PIXELS:
        raise BitstreamError(
            f"the learned codec codes low-res images up to {MAX_LOWRES_PIXELS} pixels (2048x2048); this one is "
            f"{w}x{h}: use a larger scale or the av1 codec"
        )
    if any(len(s) % 4 or len(s) < 8 for s in bs.streams):
        raise BitstreamError("invalid file: a latent stream is not a whole number of 32-bit words")

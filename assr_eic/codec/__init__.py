"""Base codecs for the low-resolution image: ``av1`` (raw AV1) and ``learned`` (variable-rate hyperprior).

The registry: each codec is a class implementing :class:`~assr_eic.codec.base.BaseCodec`, named by its
format id in ``bitstream.CODECS``. What rate control, the nodes and the trainer need to know about a
codec (quality levels, size limit, whether its speed changes the encode, its rate slope, how a model runs
it) is declared on that class, so nothing outside ``codec/`` asks by name. Implementations are imported
on first use: the learned codec needs compressai, the av1 codec does not. To add a codec: a class in
``codec/<name>.py``, its name in ``bitstream.CODECS`` (a new format id) and a line below.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ..bitstream import CODECS
from ..limits import LEARNED_MAX_LOWRES_PIXELS, av1_frame_fits
from ..wire import BitstreamError

if TYPE_CHECKING:
    from ..bitstream import Bitstream

_IMPLEMENTATIONS = {"av1": ("av1", "AV1Codec"), "learned": ("learned", "LearnedCodec")}


# what an optional codec needs beyond the pack's requirements, and how to get it
_EXTRAS = {"learned": ("compressai", "pip install compressai==1.2.8 (or assr-eic[learned])")}


class CodecUnavailableError(ValueError):
    """A base codec whose optional dependency is not installed here."""


def codec_class(name: str) -> type:
    """The class of base codec ``name``; ValueError naming the choices for any other name, and
    :class:`CodecUnavailableError` saying what to install for an optional codec that cannot load."""
    if name not in _IMPLEMENTATIONS:
        raise ValueError(f"unknown codec {name!r}; choose one of: {', '.join(CODECS)}")
    module, cls = _IMPLEMENTATIONS[name]
    try:
        return getattr(importlib.import_module(f"{__name__}.{module}"), cls)
    except ImportError as e:
        if name not in _EXTRAS or (e.name or "").split(".")[0] != _EXTRAS[name][0]:
            raise
        package, install = _EXTRAS[name]
        raise CodecUnavailableError(
            f"the {name} codec needs {package}, which is not installed: {install}. It is optional because "
            f"{package} 1.2.8 requires numpy < 2; the default av1 codec needs nothing more"
        ) from None


def lowres_fits(codec: str, height: int, width: int) -> bool:
    """Whether ``codec`` codes a low-res image of this size and its decoder decodes it: ``av1``, a padded
    frame FFmpeg's dav1d wrapper accepts (:func:`~assr_eic.limits.av1_frame_fits`); ``learned``, at most
    :data:`~assr_eic.limits.LEARNED_MAX_LOWRES_PIXELS`. The encoder never writes what the decoder refuses."""
    if codec == "av1":
        from .obu import padded_size

        return av1_frame_fits(*padded_size(height, width))
    return height * width <= LEARNED_MAX_LOWRES_PIXELS


def check_lowres_size(codec: str, size: tuple[int, int], exc: type[Exception] = ValueError) -> None:
    """Refuse, before any work, a low-res image ``codec`` cannot code or decode (:func:`lowres_fits`);
    as a :class:`BitstreamError` (an invalid file) when ``exc`` is one."""
    h, w = size
    if lowres_fits(codec, h, w):
        return
    if codec == "av1":
        why = (f"the av1 codec's low-res image would be {w}x{h}, larger than the AV1 decoder (dav1d through "
               "FFmpeg) decodes (at most 16128x16128 for a square image); use a larger scale")  # fmt: skip
    else:
        why = (f"the learned codec codes low-res images up to {LEARNED_MAX_LOWRES_PIXELS} pixels (2048x2048); "
               f"this one is {w}x{h}: use a larger scale or the av1 codec")  # fmt: skip
    raise exc(f"invalid file: {why}" if issubclass(exc, BitstreamError) else why)


STREAMS = {"av1": 1, "learned": 2}
_STREAMS_TEXT = {"av1": "an av1 payload has 1 stream", "learned": "a learned payload has 2 streams"}


def check_headers(bs: Bitstream) -> None:
    """What the codecs' own headers say, checked against the file header without torch or a model.

    ``av1``: one stream whose sequence header declares the padded low-res frame; ``learned``: two rANS
    streams of whole 32-bit words (at least the coder's 64-bit final state) and a low-res size within
    :func:`lowres_fits`. The decoders check the same again; this only refuses a file sooner.
    """
    if len(bs.streams) != STREAMS[bs.codec]:
        raise BitstreamError(f"invalid file: {_STREAMS_TEXT[bs.codec]}, this one has {len(bs.streams)}")
    check_lowres_size(bs.codec, bs.lowres_size, BitstreamError)
    if bs.codec == "av1":
        from .obu import check_frame_size, padded_size

        check_frame_size(bs.streams[0], *padded_size(*bs.lowres_size))
        return
    if any(len(s) % 4 or len(s) < 8 for s in bs.streams):
        raise BitstreamError("invalid file: a latent stream is not a whole number of 32-bit words")

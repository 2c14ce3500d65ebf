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

from ..bitstream import CODECS

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

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


def codec_class(name: str) -> type:
    """The class of base codec ``name``; ValueError naming the choices for any other name."""
    if name not in _IMPLEMENTATIONS:
        raise ValueError(f"unknown codec {name!r}; choose one of: {', '.join(CODECS)}")
    module, cls = _IMPLEMENTATIONS[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)

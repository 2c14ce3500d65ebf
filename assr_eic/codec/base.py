"""The interface every base codec of the low-resolution image implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import torch

Speed = Literal["draft", "quick", "final", "fine"]  # a codec's encoder speed (rate control's effort is another thing)


@dataclass
class LowresCode:
    """What a base codec returns: its payload and, on both sides, the same reconstruction.

    ``x_hat`` is the decoded low-res image (1, 3, h, w) in [0, 1]. ``uncertainty`` is an optional
    (1, 1, h, w) map of how unsure the codec was (higher = more lost), used by the decoders.
    ``symbols`` holds the exact integer data the entropy decoder recovered (AV1: the YUV planes;
    learned: the quantized latents), so tests can check bit-exactness without pixels.
    """

    streams: tuple[bytes, ...]
    x_hat: torch.Tensor | None
    uncertainty: torch.Tensor | None = None
    symbols: tuple[torch.Tensor, ...] = ()


class BaseCodec(Protocol):
    """Codes a low-res RGB image at a quality code (0..255, higher = better)."""

    name: str
    has_draft: bool  # whether ``speed`` changes the encode (draft: faster and worse, fine: slower and better)
    log_bytes_per_level: float  # about how much log(bytes) grows per quality level: rate control's first guess

    @classmethod
    def from_model(cls, model) -> BaseCodec:
        """The codec as ``model`` (an ``ASSRModel``) runs it."""
        ...

    @classmethod
    def quality_levels(cls) -> list[int]:
        """The quality codes that give distinct encodings, coarsest first."""
        ...

    def encode(
        self, x: torch.Tensor, quality_code: int, reconstruct: bool = True, speed: Speed = "final"
    ) -> LowresCode:
        """Code ``x``; with ``reconstruct=False`` only the streams are produced (x_hat is None).
        ``speed`` "draft" asks for a fast encode of about the same size, for rate-control probes;
        "quick" for a faster one with a few more bytes at the same quality than "final"; "fine" for a
        slower one with fewer bytes at the same quality, where the caller can afford it."""
        ...

    def decode(self, streams: tuple[bytes, ...], size: tuple[int, int], quality_code: int) -> LowresCode: ...

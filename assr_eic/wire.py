"""The format's byte-level primitives: its one error type, LEB128 varints and a bounds-checked reader.

Apart from :mod:`.bitstream` so that the payload modules (``codec/obu.py``) use them without importing
the container, which checks their payloads (no import cycle). :mod:`.bitstream` re-exports all three.
"""

from __future__ import annotations


class BitstreamError(ValueError):
    """The one error type for anything wrong with an ``.assr`` file (corrupt, foreign, unsupported)."""


def varint(n: int) -> bytes:
    """Unsigned LEB128 (also the size field of AV1 OBUs)."""
    if n < 0:
        raise ValueError("varints are unsigned")
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


class Reader:
    """Reads fields off ``data[:end]``; anything short or malformed is a :class:`BitstreamError`."""

    def __init__(self, data: bytes, end: int) -> None:
        self.data, self.pos, self.end = data, 0, end

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise BitstreamError(f"truncated file: {what} runs past the end of the data")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def varint(self, what: str, limit: int, minimal: bool = True) -> int:
        """An unsigned LEB128 of at most 5 bytes; ``minimal``: refuse a longer encoding than needed (a
        final 0x00 byte after others), so that each value has one byte string in a file."""
        n, shift = 0, 0
        for i in range(5):
            (b,) = self.take(1, what)
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                if minimal and i and not b:
                    raise BitstreamError(f"invalid file: {what} is a varint longer than it needs to be")
                if n > limit:
                    raise BitstreamError(f"invalid file: {what} is {n}, above the limit {limit}")
                return n
        raise BitstreamError(f"invalid file: {what} is not a valid varint")

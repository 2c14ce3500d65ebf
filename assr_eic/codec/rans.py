"""A bounds-checked rANS decoder, bit-compatible with CompressAI's ``RansDecoder``.

CompressAI's C++ decoder trusts its input: it reads 32-bit words without checking the end of the
string, so a crafted file whose CRC is valid but whose payload is not (anything a stranger shares)
makes it read past the buffer and crash the process (measured: a segmentation fault within 30 random
payloads). This decoder mirrors ``decode_with_indexes`` exactly (Rans64, 16-bit CDF precision, 4-bit
bypass coding of out-of-range values) and raises :class:`~assr_eic.bitstream.BitstreamError` instead:
reads past the end, a stream that is not whole 32-bit words, a bypass value wider than 32 bits, and
words left after the last symbol.
Encoding still uses CompressAI's encoder; tests check that both decoders agree on real streams.

Cost: pure Python, about a microsecond per symbol; a 512x384 image at s = 2 has about 18 000
latent symbols.
"""

from __future__ import annotations

import bisect
import struct

from ..bitstream import BitstreamError

PRECISION = 16
BYPASS_PRECISION = 4
MAX_BYPASS_VAL = (1 << BYPASS_PRECISION) - 1
RANS64_L = 1 << 31
_MASK = (1 << PRECISION) - 1
_MASK64 = (1 << 64) - 1


def decode_with_indexes(
    encoded: bytes, indexes: list[int], cdfs: list[list[int]], cdf_sizes: list[int], offsets: list[int]
) -> list[int]:
    """Decode ``len(indexes)`` symbols, symbol i with CDF ``cdfs[indexes[i]]``."""
    if len(encoded) % 4 or len(encoded) < 8:
        raise BitstreamError("invalid file: a latent stream is not a whole number of 32-bit words")
    words = struct.unpack(f"<{len(encoded) // 4}I", encoded)
    n = len(words)
    x = words[0] | (words[1] << 32)
    ptr = 2
    # per-CDF lookups, truncated to their real sizes
    tables = [cdfs[i][: cdf_sizes[i]] for i in range(len(cdfs))]

    def refill(x: int, ptr: int) -> tuple[int, int]:
        if ptr >= n:
            raise BitstreamError("invalid file: a latent stream ends before its last symbol")
        return ((x << 32) | words[ptr]) & _MASK64, ptr + 1

    def get_bits(x: int, ptr: int) -> tuple[int, int, int]:
        v = x & MAX_BYPASS_VAL
        x >>= BYPASS_PRECISION
        if x < RANS64_L:
            x, ptr = refill(x, ptr)
        return v, x, ptr

    max_groups = 32 // BYPASS_PRECISION
    out = []
    append = out.append
    for cdf_idx in indexes:
        cdf = tables[cdf_idx]
        max_value = cdf_sizes[cdf_idx] - 2
        cum = x & _MASK
        s = bisect.bisect_right(cdf, cum) - 1
        start = cdf[s]
        x = (cdf[s + 1] - start) * (x >> PRECISION) + cum - start
        if x < RANS64_L:
            x, ptr = refill(x, ptr)
        value = s
        if value == max_value:  # bypass: the value did not fit the table; it follows 4 bits at a time
            v, x, ptr = get_bits(x, ptr)
            n_bypass = v
            while v == MAX_BYPASS_VAL and n_bypass <= max_groups:
                v, x, ptr = get_bits(x, ptr)
                n_bypass += v
            if n_bypass > max_groups:
                raise BitstreamError("invalid file: a latent value is wider than 32 bits")
            raw = 0
            for j in range(n_bypass):
                v, x, ptr = get_bits(x, ptr)
                raw |= v << (j * BYPASS_PRECISION)
            if raw & 0x80000000:  # the C++ coder accumulates in an int32
                raw -= 1 << 32
            value = raw >> 1
            value = -value - 1 if raw & 1 else value + max_value
        append(value + offsets[cdf_idx])
    # the encoder started from RANS64_L and wrote exactly the words read here: one byte string per
    # stream, so words after the last symbol (or a state that did not come back) are refused
    if ptr != n or x != RANS64_L:
        raise BitstreamError("invalid file: a latent stream does not end where its last symbol does")
    return out


class CheckedRansDecoder:
    """Drop-in for ``compressai.ans.RansDecoder`` (``decode_with_indexes`` only)."""

    def decode_with_indexes(self, encoded, indexes, cdfs, cdf_sizes, offsets):  # noqa: D102 - same as CompressAI
        return decode_with_indexes(encoded, list(indexes), cdfs, list(cdf_sizes), list(offsets))


class CheckedEntropyCoder:
    """The proxy CompressAI's entropy models call: its encoder, our checked decoder."""

    name = "ans-checked"

    def __init__(self) -> None:
        from compressai import ans

        self._encoder = ans.RansEncoder()
        self._decoder = CheckedRansDecoder()

    def encode_with_indexes(self, *args, **kwargs):
        return self._encoder.encode_with_indexes(*args, **kwargs)

    def decode_with_indexes(self, *args, **kwargs):
        return self._decoder.decode_with_indexes(*args, **kwargs)

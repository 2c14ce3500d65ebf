"""The compact form of an AV1 intra payload: the sequence header rebuilt from the frame size.

An AV1 still image is two OBUs: a sequence header (12 bytes with its OBU header) and a frame. Almost
everything in a reduced still-picture sequence header follows from the frame size and the encoder's
fixed settings, so a payload whose header is exactly :func:`sequence_header` of its size is stored as::

    byte 0    1 | use_128x128_superblock | enable_restoration | seq_level_idx (5 bits)
    rest      the frame OBU's payload (its OBU header byte and size field are implied)

14 bytes fewer: about 6% of a 512x384 file at 0.01 bpp. The first byte tells the forms apart: a full
payload starts with 0x0A (a sequence header OBU with a size field), a compact one has its top bit set.
Any payload whose OBUs are not exactly [sequence header, frame] with the expected fields stays full.
"""

from __future__ import annotations

from ..bitstream import BitstreamError, Reader, varint

_OBU_SEQUENCE_HEADER = 0x0A  # obu_type 1, obu_has_size_field 1
_OBU_FRAME = 0x32  # obu_type 6, obu_has_size_field 1
_COMPACT = 0x80
# color_config of 8-bit 4:2:0 full-range BT.601 as the AVIF writer signals it: BT.709 primaries, sRGB
# transfer, BT.601 matrix (what the decoder does with colour is fixed in ``av1.py`` anyway)
_COLOR_DESCRIPTION = (1, 13, 6)


def _split_obus(data: bytes) -> list[tuple[int, bytes]] | None:
    """(header byte, payload) of each OBU, or None unless every OBU has a size field and no extension."""
    out, r = [], Reader(data, len(data))
    try:
        while r.pos < len(data):
            (head,) = r.take(1, "OBU header")
            if head & 0x87 != 0x02:  # forbidden bit 0, no extension, has_size_field 1, reserved 0
                return None
            out.append((head, r.take(r.varint("OBU size", len(data)), "OBU payload")))
    except BitstreamError:
        return None
    return out


class _Bits:
    """Big-endian bit writer and reader over one bytes object."""

    def __init__(self, data: bytes = b"") -> None:
        self.data, self.pos, self.out = data, 0, []

    def put(self, value: int, n: int) -> None:
        self.out += [(value >> (n - 1 - k)) & 1 for k in range(n)]

    def get(self, n: int) -> int:
        if self.pos + n > 8 * len(self.data):
            raise ValueError("sequence header too short")
        v = 0
        for _ in range(n):
            v = (v << 1) | ((self.data[self.pos >> 3] >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return v

    def bytes(self) -> bytes:
        bits = self.out + [1] + [0] * (-(len(self.out) + 1) % 8)  # trailing_bits
        return bytes(int("".join(map(str, bits[k : k + 8])), 2) for k in range(0, len(bits), 8))


def _size_bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


def sequence_header(height: int, width: int, use_128: int, restoration: int, level: int) -> bytes:
    """The reduced still-picture sequence header (OBU payload) of an 8-bit 4:2:0 frame."""
    b = _Bits()
    b.put(0, 3)  # seq_profile: main
    b.put(1, 1)  # still_picture
    b.put(1, 1)  # reduced_still_picture_header
    b.put(level, 5)
    wb, hb = _size_bits(width), _size_bits(height)
    b.put(wb - 1, 4)
    b.put(hb - 1, 4)
    b.put(width - 1, wb)
    b.put(height - 1, hb)
    for flag in (use_128, 1, 1, 0, 1, restoration):  # 128x128 SB, filter intra, intra edge, superres, CDEF, LR
        b.put(flag, 1)
    b.put(0, 1)  # high_bitdepth
    b.put(0, 1)  # mono_chrome
    b.put(1, 1)  # color_description_present_flag
    for v in _COLOR_DESCRIPTION:
        b.put(v, 8)
    b.put(1, 1)  # color_range: full
    b.put(0, 2)  # chroma_sample_position: unknown
    b.put(0, 1)  # separate_uv_delta_q
    b.put(0, 1)  # film_grain_params_present
    return b.bytes()


def _header_fields(header: bytes) -> tuple[int, int, int]:
    """(use_128, restoration, level) read from a reduced still-picture sequence header."""
    r = _Bits(header)
    r.get(5)  # profile, still_picture, reduced header: checked by the comparison that follows
    level = r.get(5)
    wb, hb = r.get(4) + 1, r.get(4) + 1
    r.get(wb + hb)
    use_128 = r.get(1)
    r.get(4)
    return use_128, r.get(1), level


def compact(payload: bytes, height: int, width: int) -> bytes:
    """The compact form of ``payload`` (a full one, sequence header first), or ``payload`` itself."""
    obus = _split_obus(payload)
    if obus is None or [h for h, _ in obus] != [_OBU_SEQUENCE_HEADER, _OBU_FRAME]:
        return payload
    header, frame = obus[0][1], obus[1][1]
    try:
        use_128, restoration, level = _header_fields(header)
    except ValueError:
        return payload
    if sequence_header(height, width, use_128, restoration, level) != header:
        return payload
    return bytes([_COMPACT | use_128 << 6 | restoration << 5 | level]) + frame


def expand(payload: bytes, height: int, width: int) -> bytes:
    """The full OBUs of a payload in either form (a full one is returned as it is)."""
    if not payload or not payload[0] & _COMPACT:
        return payload
    code, frame = payload[0], payload[1:]
    header = sequence_header(height, width, (code >> 6) & 1, (code >> 5) & 1, code & 0x1F)
    return (
        bytes([_OBU_SEQUENCE_HEADER]) + varint(len(header)) + header
        + bytes([_OBU_FRAME]) + varint(len(frame)) + frame
    )  # fmt: skip

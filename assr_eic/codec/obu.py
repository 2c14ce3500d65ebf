"""The compact form of an AV1 intra payload: the sequence header rebuilt from the frame size.

An AV1 still image is two OBUs: a sequence header (12 bytes with its OBU header) and a frame. Almost
everything in a reduced still-picture sequence header follows from the frame size and the encoder's
fixed settings, so a payload whose header is exactly :func:`sequence_header` of its size is stored as::

    byte 0    1 | use_128x128_superblock | enable_restoration | seq_level_idx (5 bits)
    rest      the frame OBU's payload (its OBU header byte and size field are implied)

14 bytes fewer: about 6% of a 512x384 file at 0.01 bpp. The first byte tells the forms apart: a full
payload starts with 0x0A (a sequence header OBU with a size field), a compact one has its top bit set.
Any payload whose OBUs are not exactly [sequence header, frame] with the expected fields stays full.

One byte string per file: from format version 2 on, a payload that has a compact form must be stored
in it, and version 1 (before compact payloads) cannot hold one (:func:`check_form`, run by the
parser). A full payload's sequence header must declare the frame size the file header implies
(:func:`check_frame_size`, run before decoding); a compact one's is rebuilt from that size.
"""

from __future__ import annotations

from ..wire import BitstreamError, Reader, varint

MIN_SIDE = 64  # part of the format: frames are padded to at least 64 px a side (and even sides), cropped back

_OBU_SEQUENCE_HEADER = 0x0A  # obu_type 1, obu_has_size_field 1
_OBU_FRAME = 0x32  # obu_type 6, obu_has_size_field 1
_COMPACT = 0x80
# color_config of 8-bit 4:2:0 full-range BT.601 as the AVIF writer signals it: BT.709 primaries, sRGB
# transfer, BT.601 matrix (what the decoder does with colour is fixed in ``av1.py`` anyway)
_COLOR_DESCRIPTION = (1, 13, 6)


def padded_size(h: int, w: int) -> tuple[int, int]:
    """The coded frame size of a (h, w) low-res image: even sides of at least :data:`MIN_SIDE`."""

    def one(n: int) -> int:
        return max(MIN_SIDE, n + (n & 1))

    return one(h), one(w)


def _split_obus(data: bytes) -> list[tuple[int, bytes]] | None:
    """(header byte, payload) of each OBU, or None unless every OBU has a size field and no extension."""
    out, r = [], Reader(data, len(data))
    try:
        while r.pos < len(data):
            (head,) = r.take(1, "OBU header")
            if head & 0x87 != 0x02:  # forbidden bit 0, no extension, has_size_field 1, reserved 0
                return None
            out.append((head, r.take(r.varint("OBU size", len(data), minimal=False), "OBU payload")))
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


def _uvlc(r: _Bits) -> int:
    zeros = 0
    while not r.get(1):
        zeros += 1
        if zeros >= 32:
            return (1 << 32) - 1
    return r.get(zeros) + (1 << zeros) - 1


def sequence_frame_size(header: bytes) -> tuple[int, int]:
    """(max_frame_height, max_frame_width) of any sequence header OBU payload (AV1 spec 5.5.1);
    raises ValueError when the header ends first."""
    r = _Bits(header)
    r.get(4)  # seq_profile, still_picture
    if r.get(1):  # reduced_still_picture_header
        r.get(5)
    else:
        decoder_model = 0
        if r.get(1):  # timing_info_present_flag
            r.get(64)  # num_units_in_display_tick, time_scale
            if r.get(1):  # equal_picture_interval
                _uvlc(r)
            decoder_model = r.get(1)
            if decoder_model:
                delay_bits = r.get(5) + 1
                r.get(32 + 5 + 5)
        initial_delay = r.get(1)
        for _ in range(r.get(5) + 1):  # operating points
            r.get(12)
            if r.get(5) > 7:  # seq_level_idx, then seq_tier
                r.get(1)
            if decoder_model and r.get(1):
                r.get(2 * delay_bits + 1)
            if initial_delay and r.get(1):
                r.get(4)
    wb, hb = r.get(4) + 1, r.get(4) + 1
    width = r.get(wb) + 1
    return r.get(hb) + 1, width


def check_form(payload: bytes, version: int, height: int, width: int) -> None:
    """Refuse a payload in the other form than ``version`` prescribes for a (height, width) frame (the
    padded low-res size): compact in version 1, full where a compact form exists from version 2 on."""
    if payload[:1] and payload[0] & _COMPACT:
        if version < 2:
            raise BitstreamError("invalid file: a format version 1 file cannot hold a compact AV1 payload")
    elif version >= 2 and compact(payload, height, width) != payload:
        raise BitstreamError(
            "invalid file: the AV1 payload is in its full form where this format version stores the compact one"
        )


def check_frame_size(payload: bytes, height: int, width: int) -> None:
    """Refuse, before decoding, a full payload that does not start with a sequence header declaring the
    (height, width) frame the file header implies (the padded low-res size). A compact payload passes:
    its sequence header is rebuilt from that size."""
    if payload[:1] and payload[0] & _COMPACT:
        return
    if not payload or payload[0] & 0xFB != _OBU_SEQUENCE_HEADER:  # the extension flag (0x04) may be set
        raise BitstreamError("invalid file: the AV1 payload does not start with a sequence header")
    r = Reader(payload, len(payload))
    r.pos = 1
    try:
        if payload[0] & 0x04:
            r.take(1, "OBU extension header")
        header = r.take(r.varint("OBU size", len(payload), minimal=False), "the AV1 sequence header")
        fh, fw = sequence_frame_size(header)
    except ValueError as e:  # BitstreamError is one
        raise BitstreamError(f"invalid file: the AV1 payload does not decode ({e})") from None
    if (fh, fw) == (height, width):
        return
    if fh * fw > height * width:
        raise BitstreamError(
            f"invalid file: the AV1 payload does not decode: its sequence header declares a {fw}x{fh} frame, "
            f"larger than the {width}x{height} of the file header"
        )
    raise BitstreamError(
        f"invalid file: the AV1 payload decodes to {fw}x{fh}, expected {width}x{height} (its sequence header)"
    )

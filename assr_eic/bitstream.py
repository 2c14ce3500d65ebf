"""The ``.assr`` container, format version 4: pack, parse, validate.

Every byte counts at extreme rates (a 768x512 image at 0.01 bpp is 491 bytes in all), so the header
uses varints and quantized floats. Layout, byte by byte::

    offset  size  field
    0       2     magic b"\\xa5E" (0xA5 0x45)
    2       1     bits 7..5 format version (4; 1-3 are read too); bits 4..3 base codec id (0 av1, 1 learned);
                  bit 2 prompt present; bits 1..0 stream count - 1
    3       3     model fingerprint: first 3 bytes of the SHA-256 of the weights that wrote the file
    6       v     original height H   (unsigned LEB128 varint, 1 <= H <= MAX_SIDE)
    .       v     original width W    (varint, 1 <= W <= MAX_SIDE, H * W <= MAX_PIXELS)
    .       v     4 * c_s + k         (varint) scale code c_s: s = 1 + c_s / 64, 1 <= s <= 8, so c_s <= 448;
                  decoder strength k in 0..3: the output is bicubic + k/3 of the fidelity decoder's
                  correction (0: plain bicubic, 3: the decoder). Version 3: 2 * c_s + b, b = 1 for
                  plain bicubic (k = 0), else k = 3; versions 1 and 2: c_s alone (k = 3)
    .       1     quality code c_q    (q = c_q / 255)
    .       v*    lengths of all streams but the last (varints; the last runs to the prompt or CRC)
    .       v     only if the prompt bit is set: (len << 1) | deflated, then len bytes of UTF-8
                  text, raw-DEFLATE-compressed when ``deflated`` is 1
    .       ...   the streams, concatenated
    end-4   4     CRC-32 (zlib, little-endian) of every byte before it

The low-resolution size is not stored: it is derived from (H, W, c_s) by integer arithmetic
(:func:`lowres_size`), identically on every machine. Without a prompt the header (everything but the
streams) is 17 bytes for a 512x384 AV1 file (16 where s < 1.5) and at most 24 bytes for any allowed size and codec.

Parsing is total: any byte string either parses or raises :class:`BitstreamError` with a sentence that
says what is wrong; no field can make the parser allocate more than the input's own length.
"""

from __future__ import annotations

import base64
import binascii
import os
import zlib
from dataclasses import dataclass, field

from .limits import MAX_FILE_BYTES, MAX_PIXELS, MAX_PROMPT_BYTES, MAX_SIDE
from .wire import BitstreamError, Reader, varint  # noqa: F401  (public here: the format's API)

MAGIC = b"\xa5E"
# 2: an av1 payload may be in the compact form (codec/obu.py); otherwise the same as 1
# 3: the scale field also carries the fidelity flag (scale code * 2 + 1 = "upsample with plain bicubic")
# 4: ... and a decoder strength instead: scale code * 4 + k, k/3 of the decoder's correction
VERSION = 4
READABLE_VERSIONS = (1, 2, 3, 4)
WRITABLE_VERSIONS = (2, 3, 4)  # 2 and 3 for readers of those versions, where the strength allows
STRENGTH_LEVELS = 4
FULL_STRENGTH = STRENGTH_LEVELS - 1
CODECS = ("av1", "learned")
SCALE_STEPS = 64  # s is stored in steps of 1/64
MIN_SCALE, MAX_SCALE = 1.0, 8.0
QUALITY_STEPS = 255
_CRC_BYTES = 4
_FIXED = len(MAGIC) + 1 + 3  # magic, flags byte, fingerprint


class ModelMismatchError(BitstreamError):
    """The file was written with other model weights than the ones loaded."""


def quantize_scale(s: float) -> int:
    """Scale factor -> its stored code; raises ValueError outside [1, 8]."""
    if not MIN_SCALE <= s <= MAX_SCALE:
        raise ValueError(f"scale must be in [{MIN_SCALE:g}, {MAX_SCALE:g}], got {s}")
    return round((s - 1.0) * SCALE_STEPS)


def dequantize_scale(code: int) -> float:
    return 1.0 + code / SCALE_STEPS


def quantize_quality(q: float) -> int:
    """Quality in [0, 1] -> its stored code (one byte)."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quality must be in [0, 1], got {q}")
    return round(q * QUALITY_STEPS)


def dequantize_quality(code: int) -> float:
    return code / QUALITY_STEPS


def lowres_size(height: int, width: int, scale_code: int) -> tuple[int, int]:
    """Low-resolution size round(H / s), round(W / s) (at least 1), in exact integer arithmetic."""
    den = SCALE_STEPS + scale_code  # s = den / 64

    def one(n: int) -> int:
        return max(1, (2 * n * SCALE_STEPS + den) // (2 * den))

    return one(height), one(width)


@dataclass(frozen=True)
class Bitstream:
    """A parsed (or to-be-packed) ``.assr`` file. ``streams`` are the base codec's payload(s)."""

    codec: str
    fingerprint: bytes
    height: int
    width: int
    scale_code: int
    quality_code: int
    streams: tuple[bytes, ...]
    prompt: str | None = None
    # how much of the fidelity decoder's correction to add to bicubic, in 1/FULL_STRENGTH: the encoder
    # measures which is best on the image (0: the decoder loses; files before version 3 always use it all)
    decoder_strength: int = FULL_STRENGTH
    nbytes: int = field(default=0, compare=False)  # file size once packed or parsed

    @property
    def scale(self) -> float:
        return dequantize_scale(self.scale_code)

    @property
    def quality(self) -> float:
        return dequantize_quality(self.quality_code)

    @property
    def decoder_weight(self) -> float:
        """The weight of the fidelity decoder's correction over bicubic, in [0, 1]."""
        return self.decoder_strength / FULL_STRENGTH

    @property
    def lowres_size(self) -> tuple[int, int]:
        return lowres_size(self.height, self.width, self.scale_code)

    @property
    def bpp(self) -> float:
        """Bits per pixel of the whole file (header, prompt and CRC included) over the original size."""
        return self.nbytes * 8 / (self.height * self.width)

    def info(self) -> dict:
        """Plain-data summary (for ``assr-eic info --json`` and the nodes)."""
        lh, lw = self.lowres_size
        return {
            "width": self.width,
            "height": self.height,
            "scale": self.scale,
            "quality": round(self.quality, 4),
            "codec": self.codec,
            "lowres_width": lw,
            "lowres_height": lh,
            "bytes": self.nbytes,
            "bpp": self.bpp,
            "model_fingerprint": self.fingerprint.hex(),
            "upsampling": _upsampling_text(self.decoder_strength),
            "prompt": self.prompt,
        }


def _upsampling_text(strength: int) -> str:
    if strength == FULL_STRENGTH:
        return "fidelity decoder"
    if strength == 0:
        return "bicubic (the decoder lost on this image)"
    return f"bicubic + {strength}/{FULL_STRENGTH} of the fidelity decoder's correction"


def _validate_size(height: int, width: int, exc: type[Exception]) -> None:
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
        raise exc(f"image size {width}x{height} is outside 1..{MAX_SIDE} pixels per side")
    if height * width > MAX_PIXELS:
        raise exc(f"image size {width}x{height} exceeds the limit of {MAX_PIXELS} pixels")


def pack(bs: Bitstream, version: int = VERSION) -> bytes:
    """Serialize a :class:`Bitstream`; raises ValueError for values the format cannot hold.

    ``version`` 2 or 3 writes an earlier layout, for readers of that version: version 3 holds strengths
    0 and full only, version 2 full only."""
    if version not in WRITABLE_VERSIONS:
        raise ValueError(f"can write format versions {', '.join(map(str, WRITABLE_VERSIONS))}, not {version}")
    if not 0 <= bs.decoder_strength <= FULL_STRENGTH:
        raise ValueError(f"decoder strength {bs.decoder_strength} out of range 0..{FULL_STRENGTH}")
    if version == 2 and bs.decoder_strength != FULL_STRENGTH:
        raise ValueError("format version 2 has no decoder strength: this file needs version 4")
    if version == 3 and bs.decoder_strength not in (0, FULL_STRENGTH):
        raise ValueError(
            f"format version 3 holds decoder strength 0 or {FULL_STRENGTH} only: this file needs version 4"
        )
    if bs.codec not in CODECS:
        raise ValueError(f"unknown codec {bs.codec!r}; known: {', '.join(CODECS)}")
    if not 1 <= len(bs.streams) <= 4:
        raise ValueError("a file holds 1 to 4 streams")
    if len(bs.fingerprint) != 3:
        raise ValueError("the model fingerprint is 3 bytes")
    _validate_size(bs.height, bs.width, ValueError)
    if not 0 <= bs.scale_code <= quantize_scale(MAX_SCALE):
        raise ValueError(f"scale code {bs.scale_code} out of range")
    if not 0 <= bs.quality_code <= QUALITY_STEPS:
        raise ValueError(f"quality code {bs.quality_code} out of range")
    has_prompt = bs.prompt is not None and bs.prompt != ""
    flags = (version << 5) | (CODECS.index(bs.codec) << 3) | (int(has_prompt) << 2) | (len(bs.streams) - 1)
    out = bytearray(MAGIC)
    out.append(flags)
    out += bs.fingerprint
    scale_field = {
        2: bs.scale_code,
        3: bs.scale_code << 1 | (bs.decoder_strength == 0),
        4: bs.scale_code * STRENGTH_LEVELS + bs.decoder_strength,
    }[version]
    out += varint(bs.height) + varint(bs.width) + varint(scale_field)
    out.append(bs.quality_code)
    for s in bs.streams[:-1]:
        out += varint(len(s))
    if has_prompt:
        text = bs.prompt.encode("utf-8")
        if len(text) > MAX_PROMPT_BYTES:
            raise ValueError(f"the prompt is {len(text)} bytes of UTF-8; the limit is {MAX_PROMPT_BYTES}")
        comp = zlib.compressobj(9, zlib.DEFLATED, -15)
        deflated = comp.compress(text) + comp.flush()
        body, flag = (deflated, 1) if len(deflated) < len(text) else (text, 0)
        out += varint((len(body) << 1) | flag) + body
    for s in bs.streams:
        out += s
    out += zlib.crc32(out).to_bytes(4, "little")
    return bytes(out)


def read_bitstream(path: str | os.PathLike) -> bytes:
    """Read a file's bytes, refusing anything that is not a regular file or too large to be an ``.assr``
    file before reading it (no torch needed: the CLI refuses bad files before loading anything)."""
    from .files import FileError, read_limited

    try:
        return read_limited(path, MAX_FILE_BYTES, "an .assr file")
    except FileError as e:
        raise BitstreamError(str(e)) from None


def header_size(data: bytes) -> int:
    """Bytes of a packed file that are not stream payload (header, prompt and CRC)."""
    bs = parse(data)
    return len(data) - sum(len(s) for s in bs.streams)


def parse(data: bytes) -> Bitstream:
    """Parse and validate a packed file; raises :class:`BitstreamError` on any defect."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BitstreamError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) == 0:
        raise BitstreamError("empty file: not an .assr bitstream")
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise BitstreamError("not an .assr file (wrong magic bytes)")
    if len(data) < _FIXED + _CRC_BYTES:
        raise BitstreamError(f"truncated file: {len(data)} bytes is shorter than the smallest header")
    flags = data[2]
    version = flags >> 5
    if version not in READABLE_VERSIONS:
        raise BitstreamError(
            f"unsupported .assr format version {version}; this build reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))} (a newer assr-eic wrote this file)"
        )
    body_end = len(data) - _CRC_BYTES
    if zlib.crc32(data[:body_end]) != int.from_bytes(data[body_end:], "little"):
        raise BitstreamError("corrupted file: CRC-32 check failed (truncated or altered bytes)")
    codec_id = (flags >> 3) & 0b11
    if codec_id >= len(CODECS):
        raise BitstreamError(f"invalid file: unknown base codec id {codec_id}")
    has_prompt = bool(flags & 0b100)
    n_streams = (flags & 0b11) + 1
    r = Reader(data, body_end)
    r.pos = len(MAGIC) + 1
    fingerprint = r.take(3, "model fingerprint")
    height = r.varint("image height", MAX_SIDE)
    width = r.varint("image width", MAX_SIDE)
    try:
        _validate_size(height, width, BitstreamError)
    except BitstreamError as e:
        raise BitstreamError(f"invalid file: {e}") from None
    top = quantize_scale(MAX_SCALE)
    if version >= 4:
        scale_code, strength = divmod(r.varint("scale code", top * STRENGTH_LEVELS + FULL_STRENGTH), STRENGTH_LEVELS)
    elif version == 3:
        word = r.varint("scale code", top << 1 | 1)
        scale_code, strength = word >> 1, 0 if word & 1 else FULL_STRENGTH
    else:
        scale_code, strength = r.varint("scale code", top), FULL_STRENGTH
    (quality_code,) = r.take(1, "quality code")
    if quality_code > QUALITY_STEPS:
        raise BitstreamError(f"invalid file: quality code {quality_code} out of range")
    lengths = [r.varint("stream length", body_end) for _ in range(n_streams - 1)]
    prompt = None
    if has_prompt:
        word = r.varint("prompt length", 2 * MAX_PROMPT_BYTES + 1)
        raw = r.take(word >> 1, "prompt")
        if not raw:
            raise BitstreamError("invalid file: the prompt flag is set but the prompt is empty")
        if word & 1:
            d = zlib.decompressobj(-15)
            try:
                text = d.decompress(raw, MAX_PROMPT_BYTES + 1)
            except zlib.error:
                raise BitstreamError("invalid file: the prompt does not decompress") from None
            if len(text) > MAX_PROMPT_BYTES or d.unconsumed_tail or not d.eof:
                raise BitstreamError("invalid file: the prompt is malformed or too long")
            if d.unused_data:
                raise BitstreamError("invalid file: bytes follow the prompt's compressed data inside its field")
            if len(raw) >= len(text):  # the writer deflates only when that is shorter
                raise BitstreamError("invalid file: the prompt is stored deflated although that is not shorter")
        else:
            text = raw
        try:
            prompt = text.decode("utf-8")
        except UnicodeDecodeError:
            raise BitstreamError("invalid file: the prompt is not valid UTF-8") from None
    streams = [r.take(n, "stream") for n in lengths]
    streams.append(r.take(body_end - r.pos, "last stream"))
    if any(len(s) == 0 for s in streams):
        raise BitstreamError("invalid file: an empty payload stream")
    if CODECS[codec_id] == "av1":
        from .codec import obu  # the payload's form depends on the version (obu imports this module)

        obu.check_form(streams[0], version, *obu.padded_size(*lowres_size(height, width, scale_code)))
    return Bitstream(
        codec=CODECS[codec_id],
        fingerprint=fingerprint,
        height=height,
        width=width,
        scale_code=scale_code,
        quality_code=quality_code,
        streams=tuple(streams),
        prompt=prompt,
        decoder_strength=strength,
        nbytes=len(data),
    )


TEXT_PREFIX = "assr:"  # a file as text: the prefix, then its bytes in standard base64
MAX_TEXT_BYTES = 1 << 20  # files carried as text in a workflow (real ones are a few hundred bytes to a few KB)


def to_text(data: bytes) -> str:
    """An ``.assr`` file as one line of text that a workflow, a chat message or a PNG's metadata can carry."""
    return TEXT_PREFIX + base64.b64encode(data).decode("ascii")


def from_text(text: str) -> bytes:
    """The bytes of a file written by :func:`to_text` (whitespace and line breaks ignored); BitstreamError
    with one sentence for anything else. The bytes are not parsed here: :func:`parse` does that."""
    compact = "".join(text.split())
    if not compact.startswith(TEXT_PREFIX):
        raise BitstreamError(f"not an embedded .assr file: the text must start with {TEXT_PREFIX!r}")
    body = compact[len(TEXT_PREFIX) :]
    if len(body) > 4 * (MAX_TEXT_BYTES // 3 + 1):
        raise BitstreamError(f"embedded .assr file larger than {MAX_TEXT_BYTES} bytes; load it as a file instead")
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise BitstreamError("not an embedded .assr file: the text after 'assr:' is not valid base64") from None

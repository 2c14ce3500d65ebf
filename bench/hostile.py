"""Structure-aware hostile ``.assr`` files with a valid CRC-32: what a sender who recomputes the CRC writes.

    python bench/hostile.py --seeds          # (re)write the seed files (real files, the shipped model)
    python bench/hostile.py --corpus         # (re)write tests/data/hostile/ and its manifest
    python bench/hostile.py --manifest       # record the outcomes of the corpus files as they are

Every hostile file starts from a real file of either base codec (``tests/data/hostile/seeds/``, made by
:func:`make_seeds` with the shipped model from the bundled photographs), is split into its fields
(:func:`split`, which reads them with the format's own :class:`~assr_eic.wire.Reader`), has one
structure edited by a generator family and is joined again with the CRC recomputed (:func:`join`).
Families (:data:`FAMILIES`): the flags byte (version, codec, prompt bit, stream count), the model
fingerprint, the declared size and scale (at and beyond every boundary, non-minimal varints), quality,
stream lengths, the prompt field (a DEFLATE bomb, non-UTF-8, junk after the compressed data), AV1 OBU
headers and sizes, the AV1 sequence header (full and compact forms) and frame header, rANS stream
contents and lengths, stream counts, truncations, splices between files and random tails.

:func:`generate` is deterministic from its seed (``random.Random`` per file), so a bench run and a
hypothesis test draw the same files from the same numbers on every machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from assr_eic.bitstream import (  # noqa: E402
    MAX_PIXELS,
    MAX_PROMPT_BYTES,
    MAX_SIDE,
    STRENGTH_LEVELS,
    Bitstream,
    BitstreamError,
    lowres_size,
    pack,
    parse,
    quantize_quality,
    quantize_scale,
)
from assr_eic.codec import obu  # noqa: E402
from assr_eic.wire import Reader, varint  # noqa: E402

CORPUS = ROOT / "tests" / "data" / "hostile"
SEEDS = CORPUS / "seeds"
MANIFEST = CORPUS / "manifest.json"
# the decoding limit hostile runs use: a file declaring more is refused from its header (OutputTooLargeError)
# instead of spending minutes of fidelity decoding on a garbage image (0.5 Mpx: a second or two on a CPU)
DECODE_MAX_PIXELS = 1 << 19
# the fields of a file, in their order in it (``streams`` is every payload byte, ``crc`` is left off)
FIELDS = ("magic", "flags", "fingerprint", "height", "width", "scale", "quality", "lengths", "prompt", "streams")
TOP_SCALE = quantize_scale(8.0)  # 448
SIDES = (0, 1, 2, 63, 64, 65, 127, 128, 2047, 2048, 2049, 16128, 16129, 16384, 16385, MAX_SIDE, MAX_SIDE + 1,
         MAX_PIXELS, 2**35 - 1)  # fmt: skip


@dataclass(frozen=True)
class Hostile:
    """One generated file: ``family`` made it, ``name`` is unique and says how (a file name)."""

    name: str
    family: str
    data: bytes


# --- the fields of a file -------------------------------------------------------------------------------


def split(data: bytes) -> dict[str, bytes]:
    """A valid file's fields (:data:`FIELDS`), each as its bytes; ``join(split(d)) == d``."""
    bs = parse(data)
    r = Reader(data, len(data) - 4)
    parts = {"magic": data[:2], "flags": data[2:3], "fingerprint": data[3:6]}
    r.pos = 6
    for name in ("height", "width", "scale"):
        start = r.pos
        r.varint(name, 2**35)
        parts[name] = data[start : r.pos]
    parts["quality"] = r.take(1, "quality")
    start = r.pos
    for _ in bs.streams[:-1]:
        r.varint("stream length", 2**35)
    parts["lengths"] = data[start : r.pos]
    start = r.pos
    if bs.prompt is not None:
        r.take(r.varint("prompt length", 2**35) >> 1, "prompt")
    parts["prompt"] = data[start : r.pos]
    parts["streams"] = data[r.pos : len(data) - 4]
    return parts


def seal(body: bytes) -> bytes:
    """``body`` with its CRC-32 appended (what a hostile sender does last)."""
    return bytes(body) + zlib.crc32(bytes(body)).to_bytes(4, "little")


def join(parts: dict[str, bytes]) -> bytes:
    return seal(b"".join(parts[k] for k in FIELDS))


def flags_byte(version: int, codec_id: int, prompt: bool, n_streams: int) -> bytes:
    """The third byte of a file from its four fields (any values, in range or not: masked to their bits)."""
    return bytes([(version & 7) << 5 | (codec_id & 3) << 3 | int(prompt) << 2 | ((n_streams - 1) & 3)])


def set_flags(parts: dict[str, bytes], **change) -> None:
    f = parts["flags"][0]
    now = {"version": f >> 5, "codec_id": (f >> 3) & 3, "prompt": bool(f & 4), "n_streams": (f & 3) + 1}
    parts["flags"] = flags_byte(**{**now, **change})


def nonminimal(n: int, extra: int = 1) -> bytes:
    """A LEB128 encoding of ``n`` ``extra`` bytes longer than needed (refused by the parser)."""
    b = bytearray(varint(n))
    b[-1] |= 0x80
    return bytes(b) + b"\x80" * (extra - 1) + b"\x00"


def with_streams(parts: dict[str, bytes], streams: list[bytes]) -> None:
    """Replace the payload streams, rewriting the lengths field and the stream count to match."""
    parts["lengths"] = b"".join(varint(len(s)) for s in streams[:-1])
    parts["streams"] = b"".join(streams)
    set_flags(parts, n_streams=len(streams))


def prompt_field(text: bytes, deflated: bool) -> bytes:
    body = text
    if deflated:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        body = c.compress(text) + c.flush()
    return varint(len(body) << 1 | deflated) + body


# --- the families ------------------------------------------------------------------------------------------

Seeds = dict[str, bytes]
Family = Callable[[random.Random, Seeds], tuple[str, bytes]]


def _pick(rng: random.Random, seeds: Seeds, codec: str | None = None) -> tuple[str, bytes]:
    names = sorted(n for n in seeds if codec is None or parse(seeds[n]).codec == codec)
    name = rng.choice(names)
    return name, seeds[name]


def fam_flags(rng, seeds):
    """The flags byte: each of version, codec id, prompt bit and stream count, or the whole byte."""
    name, data = _pick(rng, seeds)
    parts = split(data)
    field = rng.choice(("version", "codec_id", "prompt", "n_streams", "byte"))
    if field == "byte":
        value = rng.randrange(256)
        parts["flags"] = bytes([value])
    else:
        value = {"version": rng.randrange(8), "codec_id": rng.randrange(4), "prompt": rng.random() < 0.5,
                 "n_streams": rng.randrange(1, 5)}[field]  # fmt: skip
        set_flags(parts, **{field: value})
    return f"{name}-{field}{int(value)}", join(parts)


def fam_fingerprint(rng, seeds):
    """The model fingerprint: right, zero, one bit off, random (ModelMismatchError)."""
    name, data = _pick(rng, seeds)
    parts = split(data)
    kind = rng.choice(("right", "zero", "flip", "random"))
    fp = parts["fingerprint"]
    new = {"right": fp, "zero": b"\0\0\0", "flip": bytes([fp[0] ^ 1 << rng.randrange(8)]) + fp[1:],
           "random": rng.randbytes(3)}[kind]  # fmt: skip
    parts["fingerprint"] = new
    return f"{name}-{kind}", join(parts)


def fam_size(rng, seeds):
    """H and W at and beyond every boundary (side, pixels, AV1 and learned limits), or scaled."""
    name, data = _pick(rng, seeds)
    parts = split(data)
    bs = parse(data)
    kind = rng.choice(("side", "both", "scaled", "nonminimal", "off-by-one"))
    h, w = bs.height, bs.width
    if kind == "side":
        which = rng.choice(("height", "width"))
        v = rng.choice(SIDES)
        parts[which] = varint(v)
        return f"{name}-{which}{v}", join(parts)
    if kind == "both":
        h, w = rng.choice(SIDES), rng.choice(SIDES)
    elif kind == "scaled":
        k = rng.choice((2, 3, 8, 64, 128, 170))
        h, w = h * k, w * k
    elif kind == "off-by-one":
        h, w = h + rng.choice((-2, -1, 1, 2)), w + rng.choice((-2, -1, 0, 1, 2))
    else:
        parts["height"] = nonminimal(h, rng.randrange(1, 3))
        return f"{name}-nonminimal-height", join(parts)
    parts["height"], parts["width"] = varint(max(h, 0)), varint(max(w, 0))
    return f"{name}-{kind}{w}x{h}", join(parts)


def fam_scale(rng, seeds):
    """The scale field: every strength, the top code and beyond, under each version's layout."""
    name, data = _pick(rng, seeds)
    parts = split(data)
    version = parts["flags"][0] >> 5
    kind = rng.choice(("strength", "code", "beyond", "nonminimal", "version"))
    code = parse(data).scale_code
    if kind == "strength":  # legal values: a file that decodes with another share of the decoder's correction
        k = rng.randrange(STRENGTH_LEVELS)
        word = code * STRENGTH_LEVELS + k if version >= 4 else code << 1 | (k == 0) if version == 3 else code
    elif kind == "code":
        word = rng.choice((0, 1, 63, 64, TOP_SCALE - 1, TOP_SCALE))
        word = word * STRENGTH_LEVELS + 3 if version >= 4 else word << 1 if version == 3 else word
    elif kind == "beyond":
        word = rng.choice((TOP_SCALE * 4 + 3, TOP_SCALE * 4 + 4, TOP_SCALE * 2 + 1, TOP_SCALE * 2 + 2, TOP_SCALE + 1,
                           2**21, 2**35 - 1))  # fmt: skip
    elif kind == "version":  # the same scale field read under another version's layout
        v = rng.choice((1, 2, 3, 4))
        set_flags(parts, version=v)
        return f"{name}-as-v{v}", join(parts)
    else:
        parts["scale"] = nonminimal(Reader(parts["scale"], len(parts["scale"])).varint("scale", 2**35))
        return f"{name}-nonminimal-scale", join(parts)
    parts["scale"] = varint(word)
    return f"{name}-{kind}{word}", join(parts)


def fam_quality(rng, seeds):
    """The quality code: its ends and random values (all legal: a file that decodes)."""
    name, data = _pick(rng, seeds)
    parts = split(data)
    q = rng.choice((0, 1, 127, 254, 255, rng.randrange(256)))
    parts["quality"] = bytes([q])
    return f"{name}-q{q}", join(parts)


def fam_lengths(rng, seeds):
    """The first stream's length (learned files): 0, off by one or a word, the whole body, huge."""
    name, data = _pick(rng, seeds, "learned")
    parts = split(data)
    first = len(parse(data).streams[0])
    total = len(parts["streams"])
    kind = rng.choice(("zero", "minus1", "plus1", "minus4", "plus4", "total", "huge", "nonminimal"))
    value = {"zero": 0, "minus1": first - 1, "plus1": first + 1, "minus4": first - 4, "plus4": first + 4,
             "total": total, "huge": 2**35 - 1, "nonminimal": first}[kind]  # fmt: skip
    parts["lengths"] = nonminimal(value) if kind == "nonminimal" else varint(value)
    return f"{name}-{kind}", join(parts)


def fam_prompt(rng, seeds):
    """The prompt field: a DEFLATE bomb, non-UTF-8, junk after the data, the size limit and beyond."""
    name, data = _pick(rng, seeds)
    parts = split(data)
    set_flags(parts, prompt=True)
    kind = rng.choice(("bomb", "bomb-small", "latin1", "latin1-deflated", "junk-after", "not-shorter", "empty",
                       "limit", "limit+1", "truncated-deflate", "runs-past", "word-beyond", "flag-no-field",
                       "nonminimal"))  # fmt: skip
    if kind == "bomb":  # 4 MB of zeros in under 4 KB: the parser must stop at MAX_PROMPT_BYTES
        field = prompt_field(b"\0" * (4 << 20), True)
    elif kind == "bomb-small":
        field = prompt_field(b"a" * (MAX_PROMPT_BYTES + 1 + rng.randrange(1 << 16)), True)
    elif kind == "latin1":
        field = prompt_field("café crème".encode("latin-1"), False)
    elif kind == "latin1-deflated":
        field = prompt_field("crème ".encode("latin-1") * 20, True)
    elif kind == "junk-after":
        field = prompt_field(b"a lighthouse " * 10, True)
        field = _rewrap(field, rng.randbytes(rng.randrange(1, 9)))
    elif kind == "not-shorter":
        field = prompt_field(b"x", True)
    elif kind == "empty":
        field = varint(0)
    elif kind == "limit":  # legal: the longest prompt, raw (random letters do not deflate shorter... mostly)
        field = prompt_field(bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz ") for _ in range(MAX_PROMPT_BYTES)), False)
    elif kind == "limit+1":
        field = prompt_field(b"b" * (MAX_PROMPT_BYTES + 1), False)
    elif kind == "truncated-deflate":
        body = _field_body(prompt_field(b"a lighthouse at dusk, " * 8, True))
        cut = body[: max(1, len(body) // 2)]
        field = varint(len(cut) << 1 | 1) + cut
    elif kind == "runs-past":
        field = varint((len(parts["streams"]) + 50) << 1)
    elif kind == "word-beyond":
        field = varint((MAX_PROMPT_BYTES + 1) << 1 | rng.randrange(2)) + b"z" * 16
    elif kind == "flag-no-field":
        field = b""
    else:
        body = _field_body(prompt_field(b"a face", False))
        field = nonminimal(len(body) << 1) + body
    parts["prompt"] = field
    return f"{name}-{kind}", join(parts)


def _field_body(field: bytes) -> bytes:
    """The bytes after a prompt field's length word."""
    r = Reader(field, len(field))
    r.varint("prompt length", 2**35)
    return field[r.pos :]


def _rewrap(field: bytes, junk: bytes) -> bytes:
    """A deflated prompt field with ``junk`` after its compressed data, its length word counting both."""
    body = _field_body(field) + junk
    return varint(len(body) << 1 | 1) + body


def _av1(rng, seeds):
    name, data = _pick(rng, seeds, "av1")
    bs = parse(data)
    ph, pw = obu.padded_size(*bs.lowres_size)
    return name, data, bs, ph, pw


def _obus(full: bytes) -> list[tuple[int, bytes]]:
    r, out = Reader(full, len(full)), []
    while r.pos < len(full):
        (head,) = r.take(1, "OBU header")
        out.append((head, r.take(r.varint("OBU size", len(full), minimal=False), "OBU payload")))
    return out


def _store_full(parts: dict[str, bytes], payload: bytes, version: int | None = None) -> None:
    parts["streams"] = payload
    if version is not None:
        set_flags(parts, version=version)


def fam_av1_obu(rng, seeds):
    """The AV1 payload's OBUs in their full form: types, sizes, order, extensions, extra OBUs."""
    name, data, bs, ph, pw = _av1(rng, seeds)
    parts = split(data)
    obus = _obus(obu.expand(bs.streams[0], ph, pw))
    kind = rng.choice(("full-v1", "full-v4", "type", "size-plus", "size-minus", "size-huge", "size-nonminimal",
                       "drop-seq", "drop-frame", "dup-frame", "padding-obu", "extension", "temporal-delimiter",
                       "no-size-field", "swap"))  # fmt: skip

    def serial(items, sizes=None):
        return b"".join(bytes([h]) + (sizes[i] if sizes else varint(len(p))) + p for i, (h, p) in enumerate(items))

    version = None
    if kind in ("full-v1", "full-v4"):  # v1: legal (the full form is version 1's); v4: one byte string per file
        payload, version = serial(obus), 1 if kind == "full-v1" else 4
    elif kind == "type":
        i = rng.randrange(len(obus))
        t = rng.choice((0, 2, 3, 4, 5, 7, 8, 15, rng.randrange(16)))
        obus[i] = ((t << 3) | 0x02, obus[i][1])
        payload = serial(obus)
        kind += f"{i}-{t}"
    elif kind.startswith("size-"):
        i = rng.randrange(len(obus))
        n = len(obus[i][1])
        size = {"size-plus": varint(n + rng.randrange(1, 40)), "size-minus": varint(max(0, n - rng.randrange(1, 9))),
                "size-huge": varint(2**32 - 1), "size-nonminimal": nonminimal(n, 2)}[kind]  # fmt: skip
        sizes = [varint(len(p)) for _, p in obus]
        sizes[i] = size
        payload = serial(obus, sizes)
        kind += str(i)
    elif kind == "drop-seq":
        payload = serial(obus[1:])
    elif kind == "drop-frame":
        payload = serial(obus[:1])
    elif kind == "dup-frame":
        payload = serial([*obus, obus[-1]])
    elif kind == "padding-obu":
        payload = serial([obus[0], (15 << 3 | 0x02, rng.randbytes(rng.randrange(1, 30))), obus[1]])
    elif kind == "extension":  # an extension byte after a header (temporal/spatial ids)
        i = rng.randrange(len(obus))
        payload = b"".join(
            bytes([h | 0x04, rng.randrange(256)]) + varint(len(p)) + p if j == i else bytes([h]) + varint(len(p)) + p
            for j, (h, p) in enumerate(obus)
        )
        kind += str(i)
    elif kind == "temporal-delimiter":
        payload = serial([(0x12, b""), *obus])
    elif kind == "no-size-field":
        payload = bytes([obus[0][0]]) + varint(len(obus[0][1])) + obus[0][1] + bytes([obus[1][0] & ~0x02]) + obus[1][1]
    else:
        payload = serial(obus[::-1])
    _store_full(parts, payload, version)
    return f"{name}-{kind}", join(parts)


def fam_av1_sequence(rng, seeds):
    """The AV1 sequence header: other frame sizes, levels and flags, in the full and the compact form."""
    name, data, bs, ph, pw = _av1(rng, seeds)
    parts = split(data)
    obus = _obus(obu.expand(bs.streams[0], ph, pw))
    frame = obus[1][1]
    kind = rng.choice(("size", "level", "flags", "compact-byte", "compact-junk", "bits"))
    if kind == "compact-byte":  # every level and flag combination of the compact form's first byte
        b = 0x80 | rng.randrange(128)
        parts["streams"] = bytes([b]) + frame
        return f"{name}-compact{b:02x}", join(parts)
    if kind == "compact-junk":
        parts["streams"] = bytes([bs.streams[0][0]]) + frame[: rng.randrange(len(frame))] + rng.randbytes(8)
        return f"{name}-compact-junk", join(parts)
    use128, restoration, level = 0, 0, 8
    h, w = ph, pw
    if kind == "size":
        h, w = rng.choice(((ph + 2, pw), (ph, pw - 2), (ph * 2, pw * 2), (1, 1), (64, 64), (16384, 16384),
                           (65536, 65536), (ph // 2 or 1, pw)))  # fmt: skip
    elif kind == "level":
        level = rng.randrange(32)
    elif kind == "flags":
        use128, restoration = rng.randrange(2), rng.randrange(2)
    header = obu.sequence_header(h, w, use128, restoration, level)
    if kind == "bits":  # a random bit of the real header flipped
        header = bytearray(obus[0][1])
        header[rng.randrange(len(header))] ^= 1 << rng.randrange(8)
        header = bytes(header)
    payload = bytes([obus[0][0]]) + varint(len(header)) + header + bytes([obus[1][0]]) + varint(len(frame)) + frame
    # stored as the format requires where it is still a legal file (compact from version 2 on)
    parts["streams"] = obu.compact(payload, ph, pw)
    return f"{name}-{kind}{w}x{h}-l{level}", join(parts)


def fam_av1_frame(rng, seeds):
    """The AV1 frame OBU: its header bits, truncated, extended, replaced."""
    name, data, bs, ph, pw = _av1(rng, seeds)
    parts = split(data)
    lead, frame = bs.streams[0][:1], bytearray(bs.streams[0][1:])  # compact: 1 byte, then the frame's payload
    kind = rng.choice(("header-bit", "any-bit", "truncate", "extend", "zeros", "random", "ones"))
    if kind == "header-bit":
        frame[rng.randrange(min(16, len(frame)))] ^= 1 << rng.randrange(8)
    elif kind == "any-bit":
        for _ in range(rng.randrange(1, 4)):
            frame[rng.randrange(len(frame))] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        del frame[rng.randrange(len(frame)) :]
    elif kind == "extend":
        frame += rng.randbytes(rng.randrange(1, 64))
    elif kind == "zeros":
        frame = bytearray(len(frame))
    elif kind == "ones":
        frame = bytearray(b"\xff" * len(frame))
    else:
        frame = bytearray(rng.randbytes(len(frame)))
    parts["streams"] = lead + bytes(frame)
    return f"{name}-{kind}", join(parts)


def fam_rans(rng, seeds):
    """The learned codec's two rANS streams: contents (state words, bits, random, constant) and sizes."""
    name, data = _pick(rng, seeds, "learned")
    parts = split(data)
    streams = [bytearray(s) for s in parse(data).streams]
    i = rng.randrange(2)
    s = streams[i]
    kind = rng.choice(("bit", "state", "random", "zeros", "ones", "truncate-word", "truncate-byte", "extend-word",
                       "extend-byte", "swap", "min", "short"))  # fmt: skip
    if kind == "bit":
        s[rng.randrange(len(s))] ^= 1 << rng.randrange(8)
    elif kind == "state":  # the coder's 64-bit initial state
        s[:8] = rng.choice((b"\0" * 8, b"\xff" * 8, (1 << 31).to_bytes(8, "little"), rng.randbytes(8)))
    elif kind == "random":
        s[:] = rng.randbytes(len(s))
    elif kind == "zeros":
        s[:] = bytes(len(s))
    elif kind == "ones":
        s[:] = b"\xff" * len(s)
    elif kind == "truncate-word":
        del s[max(8, len(s) - 4 * rng.randrange(1, 8)) :]
    elif kind == "truncate-byte":
        del s[-rng.randrange(1, 4) :]
    elif kind == "extend-word":
        s += rng.randbytes(4 * rng.randrange(1, 16))
    elif kind == "extend-byte":
        s += rng.randbytes(rng.randrange(1, 4))
    elif kind == "swap":
        streams.reverse()
    elif kind == "min":
        s[:] = s[:8]
    else:
        s[:] = s[:4]
    with_streams(parts, [bytes(x) for x in streams])
    return f"{name}-s{i}-{kind}", join(parts)


def fam_streams(rng, seeds):
    """Stream counts: an av1 payload split in two, learned streams merged, dropped or added."""
    name, data = _pick(rng, seeds)
    parts = split(data)
    streams = list(parse(data).streams)
    kind = rng.choice(("split", "merge", "drop", "add", "four"))
    if kind == "split" and len(streams[0]) > 1:
        k = rng.randrange(1, len(streams[0]))
        streams = [streams[0][:k], streams[0][k:], *streams[1:]]
    elif kind == "merge" and len(streams) > 1:
        streams = [b"".join(streams)]
    elif kind == "drop" and len(streams) > 1:
        streams = streams[: rng.randrange(1, len(streams))]
    elif kind == "four":
        streams = (streams * 4)[:4]
    else:
        kind = "add"
        streams = [*streams, rng.randbytes(4 * rng.randrange(2, 6))]
    with_streams(parts, streams[:4])
    return f"{name}-{kind}{len(streams[:4])}", join(parts)


def fam_truncate(rng, seeds):
    """The body cut anywhere (often inside a field) and sealed again."""
    name, data = _pick(rng, seeds)
    body = data[:-4]
    cut = rng.choice((rng.randrange(len(body)), rng.randrange(min(len(body), 24)), len(body) - 1))
    return f"{name}-cut{cut}", seal(body[:cut])


def fam_splice(rng, seeds):
    """Two real files joined: the header of one with the payload of another, or any head with any tail."""
    (na, a), (nb, b) = _pick(rng, seeds), _pick(rng, seeds)
    kind = rng.choice(("payload", "cut"))
    if kind == "payload":
        parts = split(a)
        with_streams(parts, list(parse(b).streams))
        return f"{na}+{nb}-payload", join(parts)
    i, j = rng.randrange(6, len(a) - 4), rng.randrange(6, len(b) - 4)
    return f"{na}+{nb}-cut{i}-{j}", seal(a[:i] + b[j:-4])


def fam_tail(rng, seeds):
    """Bytes after the last stream (they become part of it): zeros, random, another file."""
    name, data = _pick(rng, seeds)
    kind = rng.choice(("zeros", "random", "file"))
    tail = {"zeros": bytes(rng.randrange(1, 64)), "random": rng.randbytes(rng.randrange(1, 256)),
            "file": _pick(rng, seeds)[1]}[kind]  # fmt: skip
    return f"{name}-tail-{kind}{len(tail)}", seal(data[:-4] + tail)


def fam_large(rng, seeds):
    """Legal headers declaring large images from a few bytes: the size the formula and max_pixels bound."""
    name, data = _pick(rng, seeds)
    parts = split(data)
    bs = parse(data)
    version = parts["flags"][0] >> 5
    h, w, s = rng.choice(((16384, 16384, 8.0), (16384, 16384, 2.0), (8192, 8192, 8.0), (MAX_SIDE, 8192, 8.0),
                          (1024, 1024, 8.0), (724, 724, 8.0), (725, 725, 8.0), (4096, 64, 4.0)))  # fmt: skip
    code = quantize_scale(s)
    parts["height"], parts["width"] = varint(h), varint(w)
    word = code * STRENGTH_LEVELS + bs.decoder_strength if version >= 4 else code << 1 if version == 3 else code
    parts["scale"] = varint(word)
    if bs.codec == "av1" and rng.random() < 0.5:  # the full form, with a sequence header that matches the size
        ph, pw = obu.padded_size(*lowres_size(h, w, code))
        if 1 <= ph <= 65536 and 1 <= pw <= 65536:
            frame = _obus(obu.expand(bs.streams[0], *obu.padded_size(*bs.lowres_size)))[1][1]
            header = obu.sequence_header(ph, pw, 0, 0, 31)
            payload = b"\x0a" + varint(len(header)) + header + b"\x32" + varint(len(frame)) + frame
            parts["streams"] = obu.compact(payload, ph, pw)
    return f"{name}-{w}x{h}-s{s:g}", join(parts)


FAMILIES: dict[str, Family] = {
    "flags": fam_flags,
    "fingerprint": fam_fingerprint,
    "size": fam_size,
    "scale": fam_scale,
    "quality": fam_quality,
    "lengths": fam_lengths,
    "prompt": fam_prompt,
    "av1-obu": fam_av1_obu,
    "av1-sequence": fam_av1_sequence,
    "av1-frame": fam_av1_frame,
    "rans": fam_rans,
    "streams": fam_streams,
    "truncate": fam_truncate,
    "splice": fam_splice,
    "tail": fam_tail,
    "large": fam_large,
}


def one(family: str, seed: int, seeds: Seeds) -> Hostile:
    """The file family ``family`` makes from ``seed`` (the same bytes on every machine)."""
    variant, data = FAMILIES[family](random.Random(f"{family}:{seed}"), seeds)
    safe = "".join(c if c.isalnum() or c in "-+." else "_" for c in variant)[:80]
    return Hostile(f"{family}-{safe}-{hashlib.sha1(data).hexdigest()[:8]}", family, data)


def generate(n: int, seed: int = 0, seeds: Seeds | None = None) -> list[Hostile]:
    """``n`` hostile files, the families taken in turn, deterministic from ``seed``."""
    seeds = seeds if seeds is not None else load_seeds()
    names = list(FAMILIES)
    return [one(names[i % len(names)], seed * 1_000_003 + i, seeds) for i in range(n)]


# --- seeds, outcomes and the corpus --------------------------------------------------------------------------

# (name, codec, scale, quality, prompt, photo, format version, decoder strength)
SEED_CASES = (
    ("av1-s2", "av1", 2.0, 0.5, None, "astronaut", 4, 3),
    ("av1-s1-prompt", "av1", 1.0, 0.3, "a lighthouse", "coffee", 4, 3),
    ("av1-s4-v3", "av1", 4.0, 0.2, None, "chelsea", 3, 0),
    ("learned-s1.5-prompt", "learned", 1.5, 0.6, "ü" * 30, "astronaut", 4, 2),
    ("learned-s3", "learned", 3.0, 0.2, None, "coffee", 4, 3),
    ("learned-s2-v2", "learned", 2.0, 0.4, None, "chelsea", 2, 3),
)


def make_seeds(folder: Path = SEEDS) -> Seeds:
    """Real files of both codecs from 96x128 crops of the bundled photographs, the shipped model."""
    import numpy as np
    from skimage import data as skd

    from assr_eic.model import load_model
    from assr_eic.pipeline import encode_at, to_tensor

    model = load_model()
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, codec, s, q, prompt, photo, version, strength in SEED_CASES:
        img = np.ascontiguousarray(getattr(skd, photo)()[100:196, 150:278, :3])
        bs = encode_at(model, to_tensor(img), codec, quantize_scale(s), quantize_quality(q), prompt).bitstream
        data = pack(Bitstream(bs.codec, bs.fingerprint, bs.height, bs.width, bs.scale_code, bs.quality_code,
                              bs.streams, bs.prompt, decoder_strength=strength), version=version)  # fmt: skip
        (folder / f"{name}.assr").write_bytes(data)
        out[name] = data
    return out


def load_seeds(folder: Path = SEEDS) -> Seeds:
    files = sorted(folder.glob("*.assr"))
    if not files:
        raise FileNotFoundError(f"no seed files in {folder}: run python bench/hostile.py --seeds")
    return {f.stem: f.read_bytes() for f in files}


def outcome(data: bytes, model, max_pixels: int = DECODE_MAX_PIXELS) -> str:
    """``"ok"`` (decoded to the declared size, uint8) or the class name of the BitstreamError raised; any
    other exception propagates (a bug)."""
    from assr_eic.pipeline import decompress

    try:
        bs = parse(data)
        img = decompress(bs, model=model, max_pixels=max_pixels)
    except BitstreamError as e:
        return type(e).__name__
    if img.shape != (bs.height, bs.width, 3) or str(img.dtype) != "uint8":
        raise AssertionError(f"decoded {img.shape} {img.dtype}, declared {bs.width}x{bs.height}")
    return "ok"


def _kind(h: Hostile, seeds: Seeds) -> str:
    """The edit a file's name records, without the family, the seed's name and the digest."""
    kind = h.name[len(h.family) + 1 : -9]
    for name in sorted(seeds, key=len, reverse=True):
        if kind.startswith(name):
            return kind[len(name) :].split("+")[-1]
    return kind


def write_corpus(per_family: int = 4, seed: int = 21, extra: dict[str, bytes] | None = None) -> dict[str, str]:
    """Pick ``per_family`` files of each family (every outcome it had, then distinct edits), decode each with the
    shipped model, write them to :data:`CORPUS` and their outcomes to :data:`MANIFEST`."""
    from assr_eic.model import load_model

    model = load_model()
    seeds = load_seeds()
    manifest = {f"seeds/{k}.assr": outcome(v, model) for k, v in seeds.items()}
    for old in CORPUS.glob("*.assr"):
        old.unlink()
    for family in FAMILIES:
        drawn = [one(family, seed * 1000 + i, seeds) for i in range(40)]
        results = {h.name: outcome(h.data, model) for h in drawn}
        chosen, outcomes, kinds = [], set(), set()
        for pass_ in ("outcome", "kind"):  # one file per outcome first, then distinct edits
            for h in drawn:
                kind = _kind(h, seeds)
                new = results[h.name] not in outcomes if pass_ == "outcome" else kind not in kinds
                if new and len(chosen) < per_family and h not in chosen:
                    chosen.append(h)
                    outcomes.add(results[h.name])
                    kinds.add(kind)
        for h in chosen:
            (CORPUS / f"{h.name}.assr").write_bytes(h.data)
            manifest[f"{h.name}.assr"] = results[h.name]
    for name, data in (extra or {}).items():
        (CORPUS / f"{name}.assr").write_bytes(data)
        manifest[f"{name}.assr"] = outcome(data, model)
    MANIFEST.write_text(json.dumps(dict(sorted(manifest.items())), indent=1) + "\n")
    return manifest


def rewrite_manifest() -> dict[str, str]:
    """Decode the corpus files as they are and record their outcomes (after a deliberate decoder change)."""
    from assr_eic.model import load_model

    model = load_model()
    manifest = {p.relative_to(CORPUS).as_posix(): outcome(p.read_bytes(), model) for p in CORPUS.rglob("*.assr")}
    MANIFEST.write_text(json.dumps(dict(sorted(manifest.items())), indent=1) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", action="store_true", help="(re)write the seed files with the shipped model")
    p.add_argument("--corpus", action="store_true", help="(re)write the regression corpus and its manifest")
    p.add_argument("--manifest", action="store_true", help="record the outcomes of the corpus files as they are")
    p.add_argument("--per-family", type=int, default=4)
    a = p.parse_args(argv)
    if a.seeds:
        make_seeds()
    if a.corpus or a.manifest:
        m = write_corpus(a.per_family) if a.corpus else rewrite_manifest()
        counts: dict[str, int] = {}
        for v in m.values():
            counts[v] = counts.get(v, 0) + 1
        print(f"{len(m)} files: {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

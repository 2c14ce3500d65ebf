"""Property-based fuzzing: any byte string either decodes or raises the one documented error.

Valid files of both base codecs are mutated (bit flips, truncation, insertion, duplicated chunks,
header fields set to extremes), with and without the CRC-32 recomputed, so mutations reach the
payload parsers, dav1d, the checked rANS decoder, the learned synthesis and the SR decoder.
"""

from __future__ import annotations

import zlib

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assr_eic.bitstream import (
    MAGIC,
    MAX_PIXELS,
    MAX_SIDE,
    BitstreamError,
    ModelMismatchError,
    parse,
    quantize_quality,
    quantize_scale,
    varint,
)
from assr_eic.pipeline import decode, encode_at, to_tensor

FUZZ = settings(
    max_examples=40,
    deadline=30_000,  # ms; generous for 2 shared CI cores: it catches hangs, not slowness
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
EXTREMES = [0, 1, 2, 63, 64, 127, 128, 448, 449, 16383, MAX_SIDE, MAX_SIDE + 1, MAX_PIXELS, 2**35 - 1]


@pytest.fixture(scope="module")
def files(model, photo) -> dict[str, bytes]:
    """Small real files: av1 and learned, one with a prompt."""
    x = to_tensor(photo[100:196, 200:328])  # 128 x 96
    out = {}
    cases = [("av1", 2.0, 0.5, None), ("av1", 1.0, 0.3, None)]
    cases += [("learned", 1.5, 0.6, "a face"), ("learned", 3.0, 0.2, None)]
    for codec, s, q, prompt in cases:
        out[f"{codec}-{s}"] = encode_at(model, x, codec, quantize_scale(s), quantize_quality(q), prompt).data
    return out


def with_crc(body: bytes) -> bytes:
    return bytes(body) + zlib.crc32(bytes(body)).to_bytes(4, "little")


def check(data: bytes, model) -> str:
    """Parse and decode; only BitstreamError may escape (the test fails on anything else)."""
    try:
        bs = parse(data)
    except BitstreamError:
        return "parse"
    try:
        d = decode(bs, model=model)
    except BitstreamError:
        return "decode"
    assert d.image.shape == (1, 3, bs.height, bs.width)
    assert torch.isfinite(d.image).all() and d.image.min() >= 0 and d.image.max() <= 1
    return "ok"


@st.composite
def mutation(draw, names: list[str]):
    """(seed name, list of edits, recompute CRC?)"""
    ops = st.one_of(
        st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(0, 7)),
        st.tuples(st.just("truncate"), st.integers(0, 10_000)),
        st.tuples(st.just("insert"), st.integers(0, 10_000), st.binary(min_size=1, max_size=16)),
        st.tuples(st.just("duplicate"), st.integers(0, 10_000), st.integers(1, 64), st.integers(0, 10_000)),
        st.tuples(st.just("byte"), st.integers(0, 40), st.integers(0, 255)),
    )
    return draw(st.sampled_from(names)), draw(st.lists(ops, min_size=1, max_size=4)), draw(st.booleans())


def apply(data: bytes, edits, fix_crc: bool) -> bytes:
    b = bytearray(data[:-4] if fix_crc else data)  # with fix_crc, mutate the body and re-append a CRC
    for op in edits:
        n = max(len(b), 1)
        if op[0] == "flip":
            if b:
                b[op[1] % n] ^= 1 << op[2]
        elif op[0] == "truncate":
            del b[op[1] % n :]
        elif op[0] == "insert":
            b[op[1] % n : op[1] % n] = op[2]
        elif op[0] == "duplicate":
            a = op[1] % n
            chunk = b[a : a + op[2]]
            b[op[3] % n : op[3] % n] = chunk
        elif op[0] == "byte" and op[1] < len(b):  # header bytes: flags, fingerprint, varints
            b[op[1]] = op[2]
    return with_crc(bytes(b)) if fix_crc else bytes(b)


class TestAnyBytes:
    @FUZZ
    @given(data=st.binary(max_size=512))
    def test_any_byte_string(self, model, data):
        assert check(data, model) == "parse"  # random bytes never pass the magic + CRC checks

    @FUZZ
    @given(flags=st.integers(0, 255), rest=st.binary(max_size=300))
    def test_any_body_with_valid_crc(self, model, flags, rest):
        """Past the magic and CRC: every field parser and payload decoder sees arbitrary bytes."""
        data = with_crc(MAGIC + bytes([flags]) + model.fingerprint + rest)
        check(data, model)


class TestMutatedFiles:
    @FUZZ
    @given(m=mutation(["av1-2.0", "learned-1.5", "learned-3.0"]))
    def test_mutations(self, model, files, m):
        name, edits, fix_crc = m
        check(apply(files[name], edits, fix_crc), model)

    def test_mutations_reach_the_decoders(self, model, files):
        """With the CRC recomputed, some mutations parse and fail (or succeed) in the payload decoders."""
        outcomes = {"parse": 0, "decode": 0, "ok": 0}
        for data in files.values():
            for i in range(16, len(data) - 4, max(1, (len(data) - 20) // 12)):
                outcomes[check(apply(data, [("flip", i, 3)], True), model)] += 1
        assert outcomes["decode"] + outcomes["ok"] > 0, outcomes

    @FUZZ
    @given(
        name=st.sampled_from(["av1-2.0", "learned-1.5"]),
        h=st.sampled_from(EXTREMES),
        w=st.sampled_from(EXTREMES),
        sc=st.sampled_from([0, 1, 64, 447, 448, 449, 2**21]),
        qc=st.sampled_from([0, 255]),
        codec_flip=st.booleans(),
    )
    def test_header_fields_at_extremes(self, model, files, name, h, w, sc, qc, codec_flip):
        """Rewrite H, W, scale and quality (and the codec id) with the CRC recomputed."""
        bs = parse(files[name])
        flags = files[name][2] ^ (0b1000 if codec_flip else 0)
        lengths = b"".join(varint(len(s)) for s in bs.streams[:-1])
        body = MAGIC + bytes([flags]) + bs.fingerprint + varint(h) + varint(w) + varint(sc) + bytes([qc]) + lengths
        if bs.prompt:
            text = bs.prompt.encode()
            body += varint(len(text) << 1) + text
        check(with_crc(body + b"".join(bs.streams)), model)


class TestLimits:
    @pytest.mark.parametrize("h,w", [(MAX_SIDE + 1, 1), (1, 10**6), (16384, 16385), (10**6, 10**6)])
    def test_declared_size_beyond_limits_is_refused_by_the_parser(self, files, h, w):
        bs = parse(files["av1-2.0"])
        body = MAGIC + files["av1-2.0"][2:3] + bs.fingerprint + varint(h) + varint(w) + varint(64) + b"\x80"
        with pytest.raises(BitstreamError, match="size|limit"):
            parse(with_crc(body + bs.streams[0]))

    def test_learned_lowres_beyond_its_limit_is_refused_before_decoding(self, model, files):
        """A 4096x4096 learned file at s=1 would need 16.8 Mpx of latents: refused, nothing decoded."""
        from assr_eic.codec.learned import MAX_LOWRES_PIXELS

        bs = parse(files["learned-1.5"])
        body = MAGIC + files["learned-1.5"][2:3] + bs.fingerprint + varint(4096) + varint(4096) + varint(0)
        body += bytes([bs.quality_code]) + varint(len(bs.streams[0])) + varint(len(bs.prompt) << 1)
        body += bs.prompt.encode() + b"".join(bs.streams)
        big = parse(with_crc(body))
        assert big.lowres_size[0] * big.lowres_size[1] > MAX_LOWRES_PIXELS
        with pytest.raises(BitstreamError, match="up to 4194304 pixels"):
            decode(big, model=model)
        with pytest.raises(ValueError, match="up to 4194304 pixels"):
            model.codec("learned").encode(torch.zeros(1, 3, 2049, 2049), 100)

    def test_av1_frame_larger_than_declared_is_refused_by_dav1d(self, model, files):
        """The payload's frame is 128x96; a header declaring 64x64 makes dav1d refuse it (max_pixels)."""
        from assr_eic.codec import obu

        bs = parse(files["av1-1.0"])
        full = obu.expand(bs.streams[0], 96, 128)  # the full form carries its own sequence header
        body = MAGIC + files["av1-1.0"][2:3] + bs.fingerprint + varint(64) + varint(64) + varint(0) + b"\x80"
        with pytest.raises(BitstreamError, match="AV1 payload does not decode"):
            decode(with_crc(body + full), model=model)
        # and one declaring a larger image gets the size mismatch
        body = MAGIC + files["av1-1.0"][2:3] + bs.fingerprint + varint(200) + varint(200) + varint(0) + b"\x80"
        with pytest.raises(BitstreamError, match="decodes to 128x96, expected 200x200"):
            decode(with_crc(body + full), model=model)

    def test_foreign_fingerprint_is_the_subclass(self, model, files):
        data = bytearray(files["av1-2.0"][:-4])
        data[3] ^= 0xFF
        with pytest.raises(ModelMismatchError):
            decode(with_crc(bytes(data)), model=model)

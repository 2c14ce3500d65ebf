"""The .assr container: round trips, sizes and total, bounded parsing."""

from __future__ import annotations

import random
import tracemalloc
import zlib
from pathlib import Path

import pytest

from assr_eic.bitstream import (
    FULL_STRENGTH,
    MAX_SIDE,
    Bitstream,
    BitstreamError,
    header_size,
    lowres_size,
    pack,
    parse,
    quantize_quality,
    quantize_scale,
    varint,
)


def make(**kw) -> Bitstream:
    base = dict(
        codec="av1",
        fingerprint=b"\x01\x02\x03",
        height=384,
        width=512,
        scale_code=quantize_scale(3.0),
        quality_code=quantize_quality(0.5),
        streams=(b"\x0a\x0b" * 20,),
        prompt=None,
    )
    base.update(kw)
    return Bitstream(**base)


def with_crc(body: bytes) -> bytes:
    return body + zlib.crc32(body).to_bytes(4, "little")


class TestRoundTrip:
    @pytest.mark.parametrize("codec,streams", [("av1", (b"x" * 100,)), ("learned", (b"z" * 7, b"y" * 300))])
    @pytest.mark.parametrize("h,w", [(1, 1), (384, 512), (667, 1000), (1, 4096), (16384, 16384)])
    def test_pack_parse(self, codec, streams, h, w):
        bs = make(codec=codec, streams=streams, height=h, width=w)
        data = pack(bs)
        out = parse(data)
        assert out == bs
        assert out.nbytes == len(data)
        assert out.bpp == len(data) * 8 / (h * w)
        assert header_size(data) <= 24

    def test_header_is_17_bytes_for_512x384_av1(self):
        assert header_size(pack(make())) == 17

    @pytest.mark.parametrize("prompt", ["a red barn in snow", "ü" * 50, "x" * 4096])
    def test_prompt(self, prompt):
        data = pack(make(prompt=prompt))
        assert parse(data).prompt == prompt
        if len(set(prompt)) == 1:  # repetitive text is stored deflated
            assert len(data) < len(pack(make())) + len(prompt.encode()) // 4

    def test_prompt_too_long(self):
        with pytest.raises(ValueError, match="limit"):
            pack(make(prompt="x" * 4097))

    @pytest.mark.parametrize("s", [1.0, 1.5, 2.0, 3.3, 4.77, 8.0])
    def test_scale_quantization_and_lowres_size(self, s):
        c = quantize_scale(s)
        assert abs((1 + c / 64) - s) <= 1 / 128
        sq = 1 + c / 64
        for h, w in [(384, 512), (1, 1), (667, 1000), (7, 3000)]:
            lh, lw = lowres_size(h, w, c)
            assert abs(lh - h / sq) <= 0.5 + 1e-9 or lh == 1
            assert abs(lw - w / sq) <= 0.5 + 1e-9 or lw == 1

    @pytest.mark.parametrize("bad", [0.5, 8.1, float("nan")])
    def test_scale_out_of_range(self, bad):
        with pytest.raises(ValueError):
            quantize_scale(bad)


class TestMalformed:
    """Every defect raises BitstreamError with a sentence; nothing large is allocated."""

    def test_empty(self):
        with pytest.raises(BitstreamError, match="empty"):
            parse(b"")

    def test_wrong_magic(self):
        data = bytearray(pack(make()))
        data[0] ^= 0xFF
        with pytest.raises(BitstreamError, match="magic"):
            parse(bytes(data))

    def test_unknown_version(self):
        data = bytearray(pack(make()))
        data[2] = (7 << 5) | (data[2] & 0x1F)
        with pytest.raises(BitstreamError, match="version 7"):
            parse(with_crc(bytes(data[:-4])))

    @pytest.mark.parametrize("version", [1, 2])
    def test_older_versions_are_read(self, version):
        """Versions 1 and 2 store the scale code as it is (no strength): they always use the whole decoder."""
        data = bytearray(pack(make(), version=2))
        assert data[2] >> 5 == 2 and pack(make())[2] >> 5 == 4
        data[2] = (version << 5) | (data[2] & 0x1F)
        old = parse(with_crc(bytes(data[:-4])))
        assert old == parse(pack(make())) and old.strength == FULL_STRENGTH

    @pytest.mark.parametrize("scale", [1.0, 1.5, 1.98, 2.99, 3.0, 8.0])
    def test_decoder_strength_round_trips_at_the_same_size(self, scale):
        files = [make(scale_code=quantize_scale(scale), strength=k) for k in range(FULL_STRENGTH + 1)]
        assert [parse(pack(f)) for f in files] == files
        assert [parse(pack(f)).strength for f in files] == [0, 1, 2, 3]
        assert len({len(pack(f)) for f in files}) == 1
        with pytest.raises(ValueError, match="strength 4 out of range"):
            pack(make(strength=4))

    @pytest.mark.parametrize("scale", [1.0, 2.99, 8.0])
    def test_version_3_holds_bicubic_or_the_whole_decoder(self, scale):
        """Version 3 (the previous build's format) stores a one-bit flag: strengths 0 and full are written
        and read back; the strengths between need version 4. Version 2 holds the full strength only."""
        for k in (0, FULL_STRENGTH):
            bs = make(scale_code=quantize_scale(scale), strength=k)
            data = pack(bs, version=3)
            assert data[2] >> 5 == 3 and parse(data) == bs
        for k in (1, 2):
            with pytest.raises(ValueError, match="version 3 holds decoder strength 0 or 3 only"):
                pack(make(strength=k), version=3)
        with pytest.raises(ValueError, match="version 2 has no decoder strength"):
            pack(make(strength=0), version=2)

    @pytest.mark.parametrize("cut", [1, 2, 3, 6, 10, 20, -1])
    def test_truncated(self, cut):
        data = pack(make())
        with pytest.raises(BitstreamError):
            parse(data[:cut])

    def test_every_flipped_byte(self):
        data = pack(make(prompt="hello"))
        for i in range(len(data)):
            for bit in (0x01, 0x80):
                bad = bytearray(data)
                bad[i] ^= bit
                with pytest.raises(BitstreamError):
                    parse(bytes(bad))

    def test_huge_dimensions_with_valid_crc(self):
        body = b"\xa5E" + bytes([1 << 5]) + b"\x01\x02\x03" + varint(10**6) + varint(10**6) + varint(0) + b"\x80"
        tracemalloc.start()
        with pytest.raises(BitstreamError, match="above the limit|outside"):
            parse(with_crc(body + b"payload"))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 1 << 20

    def test_too_many_pixels(self):
        body = b"\xa5E" + bytes([1 << 5]) + b"\x01\x02\x03" + varint(MAX_SIDE) + varint(MAX_SIDE)
        with pytest.raises(BitstreamError, match="exceeds"):
            parse(with_crc(body + varint(0) + b"\x80" + b"p"))

    def test_stream_length_past_end(self):
        bs = make(codec="learned", streams=(b"z" * 5, b"y" * 10))
        data = bytearray(pack(bs))
        # the first stream length is the byte right after the quality code (offset 6 + 2 + 2 + 2 + 1)
        data[13] = 20  # longer than what follows, under the varint limit
        with pytest.raises(BitstreamError, match="truncated|past the end"):
            parse(with_crc(bytes(data[:-4])))

    def test_bad_utf8_prompt(self):
        good = pack(make(prompt="ab"))
        i = good.index(b"ab")
        bad = bytearray(good[:-4])
        bad[i : i + 2] = b"\xff\xfe"
        with pytest.raises(BitstreamError, match="UTF-8"):
            parse(with_crc(bytes(bad)))

    def test_random_bytes(self):
        rng = random.Random(0)
        for n in range(2000):
            blob = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 64)))
            if n % 2:  # half with our magic and a valid CRC, so the field checks are exercised
                blob = with_crc(b"\xa5E" + bytes([1 << 5 | rng.getrandbits(5)]) + blob)
            try:
                parse(blob)
            except BitstreamError as e:
                assert str(e)

    def test_not_bytes(self):
        with pytest.raises(BitstreamError, match="expected bytes"):
            parse("a string")  # type: ignore[arg-type]


class TestText:
    """A file as one line of text (ComfyUI's ASSR Embedded Bitstream, assr-eic info --text)."""

    def test_round_trip_ignores_whitespace(self):
        from assr_eic.bitstream import from_text, to_text

        data = (Path(__file__).resolve().parents[1] / "samples" / "coffee.assr").read_bytes()
        text = to_text(data)
        assert text.startswith("assr:") and "\n" not in text and len(text) == 5 + 4 * ((len(data) + 2) // 3)
        assert from_text(f"  {text[:20]}\n{text[20:70]}\r\n {text[70:]}\n") == data

    def test_anything_else_is_one_bitstream_error(self):
        from assr_eic.bitstream import MAX_TEXT_BYTES, BitstreamError, from_text, to_text

        for text, message in (
            ("", "must start with 'assr:'"),
            ("pUWAZdUR", "must start with 'assr:'"),
            ("assr:pUWA*dUR", "not valid base64"),
            ("assr:pUWAZdU", "not valid base64"),  # not a whole number of base64 quads
            (to_text(bytes(MAX_TEXT_BYTES + 3)), "larger than"),
        ):
            with pytest.raises(BitstreamError, match=message):
                from_text(text)

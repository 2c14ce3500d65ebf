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
        assert old == parse(pack(make())) and old.decoder_strength == FULL_STRENGTH

    @pytest.mark.parametrize("scale", [1.0, 1.5, 1.98, 2.99, 3.0, 8.0])
    def test_decoder_strength_round_trips_at_the_same_size(self, scale):
        files = [make(scale_code=quantize_scale(scale), decoder_strength=k) for k in range(FULL_STRENGTH + 1)]
        assert [parse(pack(f)) for f in files] == files
        assert [parse(pack(f)).decoder_strength for f in files] == [0, 1, 2, 3]
        assert len({len(pack(f)) for f in files}) == 1
        with pytest.raises(ValueError, match="strength 4 out of range"):
            pack(make(decoder_strength=4))

    @pytest.mark.parametrize("scale", [1.0, 2.99, 8.0])
    def test_version_3_holds_bicubic_or_the_whole_decoder(self, scale):
        """Version 3 (the previous build's format) stores a one-bit flag: strengths 0 and full are written
        and read back; the strengths between need version 4. Version 2 holds the full strength only."""
        for k in (0, FULL_STRENGTH):
            bs = make(scale_code=quantize_scale(scale), decoder_strength=k)
            data = pack(bs, version=3)
            assert data[2] >> 5 == 3 and parse(data) == bs
        for k in (1, 2):
            with pytest.raises(ValueError, match="version 3 holds decoder strength 0 or 3 only"):
                pack(make(decoder_strength=k), version=3)
        with pytest.raises(ValueError, match="version 2 has no decoder strength"):
            pack(make(decoder_strength=0), version=2)

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


def _fields_end(data: bytes) -> int:
    """Offset just past the quality code of a packed single-stream file without a prompt."""
    pos = 6
    for _ in range(3):  # H, W, scale field
        while data[pos] & 0x80:
            pos += 1
        pos += 1
    return pos + 1


def _with_prompt_field(field: bytes) -> bytes:
    """make()'s file with the prompt bit set and ``field`` (length word + bytes) as its prompt."""
    body = bytearray(pack(make())[:-4])
    body[2] |= 0b100
    at = _fields_end(body)
    return with_crc(bytes(body[:at]) + field + bytes(body[at:]))


def _full_payload(h: int, w: int, frame: bytes = b"\x10" * 30) -> bytes:
    from assr_eic.codec.obu import sequence_header

    header = sequence_header(h, w, 0, 0, 8)
    return b"\x0a" + varint(len(header)) + header + b"\x32" + varint(len(frame)) + frame


class TestOneByteString:
    """A file has one byte string: every other encoding of the same fields is refused."""

    def test_the_writer_writes_minimal_varints_and_the_reader_reads_them(self):
        from assr_eic.bitstream import Reader

        for n in [0, 1, 127, 128, 16383, 16384, 2**21 - 1, 2**21, 2**28, 2**35 - 1]:
            v = varint(n)
            assert len(v) == max(1, -(-n.bit_length() // 7))
            assert n == 0 or v[-1] != 0
            assert Reader(v, len(v)).varint("n", n) == n

    @pytest.mark.parametrize("n", [0, 1, 5, 127, 128, 300, 16383])
    def test_a_padded_varint_is_refused(self, n):
        from assr_eic.bitstream import Reader

        v = bytearray(varint(n))
        v[-1] |= 0x80
        padded = bytes(v) + b"\x00"  # the same value in one byte more
        with pytest.raises(BitstreamError, match="longer than it needs"):
            Reader(padded, len(padded)).varint("n", 1 << 30)
        assert Reader(padded, len(padded)).varint("n", 1 << 30, minimal=False) == n  # AV1 OBU sizes allow it

    @pytest.mark.parametrize("field", [0, 1, 2])  # height, width, scale field
    def test_a_padded_header_field_is_refused(self, field):
        data = pack(make())
        pos = 6
        for _ in range(field):
            while data[pos] & 0x80:
                pos += 1
            pos += 1
        end = pos
        while data[end] & 0x80:
            end += 1
        padded = bytearray(data[pos : end + 1])
        padded[-1] |= 0x80
        bad = data[:pos] + bytes(padded) + b"\x00" + data[end + 1 : -4]
        with pytest.raises(BitstreamError, match="longer than it needs"):
            parse(with_crc(bad))
        assert parse(data) == make()  # the minimal form of the same file parses

    def test_a_padded_stream_length_is_refused(self):
        data = pack(make(codec="learned", streams=(b"z" * 8, b"y" * 16)))
        at = _fields_end(data)
        assert data[at] == 8
        with pytest.raises(BitstreamError, match="longer than it needs"):
            parse(with_crc(data[:at] + b"\x88\x00" + data[at + 1 : -4]))

    def test_bytes_after_the_compressed_prompt_are_refused(self):
        text = ("a red barn in snow " * 8).encode()
        comp = zlib.compressobj(9, zlib.DEFLATED, -15)
        deflated = comp.compress(text) + comp.flush()
        assert parse(_with_prompt_field(varint(len(deflated) << 1 | 1) + deflated)).prompt == text.decode()
        for junk in (b"\x00", b"junk", deflated):
            field = deflated + junk
            with pytest.raises(BitstreamError, match="follow the prompt's compressed data"):
                parse(_with_prompt_field(varint(len(field) << 1 | 1) + field))

    def test_a_deflate_stream_cut_short_is_refused(self):
        text = ("a red barn in snow " * 8).encode()
        comp = zlib.compressobj(9, zlib.DEFLATED, -15)
        deflated = comp.compress(text) + comp.flush()
        cut = deflated[:-2]
        with pytest.raises(BitstreamError, match="prompt"):
            parse(_with_prompt_field(varint(len(cut) << 1 | 1) + cut))

    def test_a_prompt_deflated_for_nothing_is_refused(self):
        comp = zlib.compressobj(9, zlib.DEFLATED, -15)
        deflated = comp.compress(b"ab") + comp.flush()  # longer than the 2 bytes it holds: the writer stores "ab"
        assert len(deflated) >= 2
        with pytest.raises(BitstreamError, match="not shorter"):
            parse(_with_prompt_field(varint(len(deflated) << 1 | 1) + deflated))
        assert parse(_with_prompt_field(varint(2 << 1) + b"ab")).prompt == "ab"

    def test_an_empty_prompt_under_the_prompt_bit_is_refused(self):
        with pytest.raises(BitstreamError, match="prompt is empty"):
            parse(_with_prompt_field(varint(0)))

    def test_version_1_cannot_hold_a_compact_av1_payload(self):
        compact = make(streams=(b"\x88" + b"\x10" * 30,))  # top bit set: the compact form of codec/obu.py
        assert parse(pack(compact)) == compact  # version 4 holds it
        for version in (2, 3):
            assert parse(pack(compact, version=version)).streams == compact.streams
        v2 = bytearray(pack(compact, version=2)[:-4])
        v2[2] = (1 << 5) | (v2[2] & 0x1F)
        with pytest.raises(BitstreamError, match="version 1 file cannot hold a compact AV1 payload"):
            parse(with_crc(bytes(v2)))
        learned = bytearray(pack(make(codec="learned", streams=(b"\x88" * 8, b"\x99" * 8)), version=2)[:-4])
        learned[2] = (1 << 5) | (learned[2] & 0x1F)
        assert parse(with_crc(bytes(learned))).streams == (b"\x88" * 8, b"\x99" * 8)  # av1's rule only

    def test_a_full_payload_that_has_a_compact_form_is_refused_from_version_2(self):
        from assr_eic.codec.obu import compact, padded_size

        bs = make()
        ph, pw = padded_size(*bs.lowres_size)
        full = _full_payload(ph, pw)
        assert compact(full, ph, pw) != full
        for version in (2, 3, 4):
            with pytest.raises(BitstreamError, match="full form where this format version stores the compact"):
                parse(pack(make(streams=(full,)), version=version))
        assert parse(pack(make(streams=(compact(full, ph, pw),)))).streams[0][0] & 0x80
        v2 = bytearray(pack(make(streams=(b"x",)), version=2)[:-4])
        v1 = bytes(v2[:-1]) + full
        v1 = bytes([*v1[:2], (1 << 5) | (v1[2] & 0x1F), *v1[3:]])
        assert parse(with_crc(v1)).streams == (full,)  # version 1 holds only the full form
        other = _full_payload(ph + 2, pw)  # another size: no compact form under this header, stays full
        assert parse(pack(make(streams=(other,)))).streams == (other,)


class TestCodecHeaders:
    """codec.check_headers: the payload's own headers against the file header, before any decoding."""

    def test_an_av1_sequence_header_of_another_size_is_refused(self):
        from assr_eic.codec import check_headers
        from assr_eic.codec.obu import padded_size

        bs = make()
        ph, pw = padded_size(*bs.lowres_size)
        check_headers(make(streams=(b"\x80" + b"\x10" * 9,)))  # compact: its header is rebuilt from the size
        check_headers(make(streams=(_full_payload(ph, pw),)))
        with pytest.raises(BitstreamError, match=f"decodes to {pw}x{ph - 2}, expected {pw}x{ph}"):
            check_headers(make(streams=(_full_payload(ph - 2, pw),)))
        with pytest.raises(BitstreamError, match=f"does not decode: its sequence header declares a {pw}x{ph + 64}"):
            check_headers(make(streams=(_full_payload(ph + 64, pw),)))
        with pytest.raises(BitstreamError, match="does not decode: its sequence header declares a 16384x16384"):
            check_headers(make(streams=(_full_payload(16384, 16384),)))
        for bad in (b"\x32\x00", b"\x12\x00" + _full_payload(ph, pw), b"\x0a\x05\x00"):
            with pytest.raises(BitstreamError, match="AV1 payload"):
                check_headers(make(streams=(bad,)))

    def test_a_sequence_header_with_timing_and_operating_points_is_read(self):
        from assr_eic.codec.obu import _Bits, sequence_frame_size

        b = _Bits()
        b.put(0, 3)
        b.put(0, 1)  # still_picture
        b.put(0, 1)  # reduced_still_picture_header
        b.put(1, 1)  # timing_info_present
        b.put(1001, 32)
        b.put(60000, 32)
        b.put(1, 1)  # equal_picture_interval
        b.put(0b00101, 5)  # uvlc: 2 leading zeros, value 1 -> 4
        b.put(1, 1)  # decoder_model_info_present
        b.put(9, 5)  # buffer_delay_length_minus_1: 10-bit delays
        b.put(7, 32)
        b.put(3, 5)
        b.put(4, 5)
        b.put(1, 1)  # initial_display_delay_present
        b.put(1, 5)  # two operating points
        for level in (9, 4):
            b.put(0x101, 12)
            b.put(level, 5)
            if level > 7:
                b.put(1, 1)
            b.put(1, 1)  # decoder_model_present_for_this_op
            b.put(100, 10)
            b.put(200, 10)
            b.put(0, 1)
            b.put(1, 1)
            b.put(5, 4)
        b.put(10, 4)  # 11-bit width
        b.put(9, 4)  # 10-bit height
        b.put(1279, 11)
        b.put(719, 10)
        b.put(0, 20)
        assert sequence_frame_size(b.bytes()) == (720, 1280)
        with pytest.raises(ValueError):
            sequence_frame_size(b.bytes()[:20])

    def test_learned_streams_are_checked_before_decoding(self):
        from assr_eic.codec import check_headers

        check_headers(make(codec="learned", streams=(b"z" * 8, b"y" * 12)))
        for streams in [(b"z" * 8, b"y" * 10), (b"z" * 4, b"y" * 12)]:
            with pytest.raises(BitstreamError, match="whole number of 32-bit words"):
                check_headers(make(codec="learned", streams=streams))
        with pytest.raises(BitstreamError, match="2 streams, this one has 1"):
            check_headers(make(codec="learned", streams=(b"z" * 8,)))
        with pytest.raises(BitstreamError, match="1 stream, this one has 2"):
            check_headers(make(codec="av1", streams=(b"\x80" * 8, b"y" * 8)))
        with pytest.raises(BitstreamError, match="up to 4194304 pixels"):
            check_headers(make(codec="learned", height=4096, width=4096, scale_code=0, streams=(b"z" * 8,) * 2))

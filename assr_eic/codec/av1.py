"""``av1``: raw AV1 intra frames (libaom encoder, dav1d decoder), with no container.

At extreme rates an AVIF container alone costs about 275 bytes; here the payload is the bare OBU
sequence (sequence header + frame), minus the 2-byte temporal delimiter, and in the compact form of
:mod:`.obu` (sequence header rebuilt from the frame size) whenever the encoder's header allows it.
AV1 decoding is integer and normative, so the decoded YUV planes are bit-identical on every machine.
The colour conversion on the decoding side is done here in numpy with fixed formulas (full-range
BT.601, bilinear chroma upsampling) rather than by swscale, whose SIMD paths may round differently
between CPUs.

The encoder is libaom through Pillow's AVIF writer (Pillow's wheels bundle libavif with libaom); the
OBUs are taken out of the AVIF file's ``mdat`` box. libaom at speed 4 with ``tune=psnr`` and CDEF needs
16% fewer bytes than SVT-AV1 (preset 10; see docs/decisions.md) for the same PSNR on the
low-res Kodak crops at 100-6000 bytes (``bench/av1_encoders.py``). Any AV1 encoder writes valid
payloads: the decoder and the file format do not depend on which one made the file.

Quality: the stored code c_q in 0..255 maps to the AV1 quantizer
``quantizer = 63 - round(62 * c_q / 255)`` (63 coarsest, 1 finest; base_q_idx is about 4x that),
the scale of SVT-AV1's crf and of libaom's cq-level alike.
"""

from __future__ import annotations

import functools
import io
import os
import struct

import numpy as np
import torch

from ..bitstream import BitstreamError
from ..image import to_uint8
from . import check_lowres_size, obu
from .base import LowresCode, Speed
from .obu import MIN_SIDE  # noqa: F401  (public here too)
from .obu import padded_size as _padded_size

_TEMPORAL_DELIMITER = b"\x12\x00"
BAND_PIXELS = 1 << 20  # low-res pixels per colour-conversion band (about 60 MB of float temporaries)
# libaom cpu-used per speed. draft (rate-control probes): about 45x faster than final, similar bytes at a
# quantizer (+-12%). quick: 0.68x the time of final for 1.8% more bytes at equal PSNR (BD-rate on 768x512
# training photos), for rate control's fast effort. fine: 1.9x the time of final for 2% fewer bytes at
# equal PSNR (-17.6% against SVT-AV1 where speed 4 has -15.8%, ``bench/av1_encoders.py``), for small
# low-res images
SPEED = {"draft": 9, "quick": 5, "final": 4, "fine": 3}
# libavif's default tune for still images aims at perceptual metrics; CDEF (off by default for still
# images) saves 1-2% of the bytes at equal PSNR here, +0.01 to +0.04 dB end to end on the Kodak crops.
# 64x64 superblocks: at speed 4 libaom picks 128x128 for frames of 768x512 and up (s = 1 on the speed
# image, large images), where 64x64 was 3-8% faster and 0.1-0.7% smaller at equal PSNR on three sets of
# 8 training photos at 768x512 (neutral at 1024x683 and 1536x1024). Frames up to 640x427 get 64x64
# anyway: their files are unchanged. Files with 128x128 superblocks (earlier versions) decode as before.
_AV1_OPTIONS = {"tune": "psnr", "enable-cdef": "1", "sb-size": "64"}


class EncoderUnavailableError(RuntimeError):
    """This Pillow build cannot write AVIF with libaom, so the ``av1`` codec cannot encode."""


def quantizer_from_quality(quality_code: int) -> int:
    """Stored quality code 0..255 -> AV1 quantizer 63..1 (coarsest to finest)."""
    return 63 - round(62 * quality_code / 255)


def _avif_quality(quantizer: int) -> int:
    """libavif's quality 0..100 whose quantizer, ((100 - quality) * 63 + 50) // 100, is ``quantizer``."""
    return next(q for q in range(100, -1, -1) if ((100 - q) * 63 + 50) // 100 >= quantizer)


@functools.cache
def _encoder_available() -> bool:
    from PIL import features

    if not features.check("avif"):  # older Pillow: no _avif module at all
        return False
    from PIL import _avif

    return bool(_avif.encoder_codec_available("aom"))


def _check_encoder() -> None:
    if not _encoder_available():
        import PIL

        raise EncoderUnavailableError(
            f"the av1 codec needs Pillow's AVIF writer with libaom (Pillow >= 11.3 wheels have it); "
            f"Pillow {PIL.__version__} here has none. Install it with: pip install 'pillow>=11.3'"
        )


def _boxes(data: bytes) -> dict[bytes, bytes]:
    """Top-level ISOBMFF boxes of an AVIF file: type -> payload (the writer's own output, one of each)."""
    out, i = {}, 0
    while i + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[i : i + 8])
        head = 8
        if size == 1:
            size, head = struct.unpack(">Q", data[i + 8 : i + 16])[0], 16
        elif size == 0:
            size = len(data) - i
        out[kind] = data[i + head : i + size]
        i += size
    return out


def encoder_threads() -> int:
    """libaom's thread count: every usable core, and never fewer than 2.

    From 2 threads libaom codes rows in parallel, which changes the bitstream (about +-1% bytes, no
    better or worse on average), and it writes the same bytes for any count from 2 up; Pillow's default
    (one thread per core) would make a one-core machine write other files than every other machine.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(2, cores)


def _avif_payload(rgb: np.ndarray, quantizer: int, speed: int, options: dict[str, str] | None = None) -> bytes:
    """libaom's OBUs for an (h, w, 3) uint8 image: the AVIF item data without the temporal delimiter.

    ``options``: libaom's advanced options (default :data:`_AV1_OPTIONS`).
    """
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(
        buf, format="AVIF", quality=_avif_quality(quantizer), speed=speed, subsampling="4:2:0",
        range="full", advanced=_AV1_OPTIONS if options is None else options, max_threads=encoder_threads(),
    )  # fmt: skip
    data = _boxes(buf.getvalue()).get(b"mdat", b"")
    if data.startswith(_TEMPORAL_DELIMITER):
        data = data[len(_TEMPORAL_DELIMITER) :]
    if not data.startswith(b"\x0a"):  # an OBU_SEQUENCE_HEADER with obu_has_size_field
        raise RuntimeError("the AVIF writer produced an item that does not start with an AV1 sequence header")
    return data


def _yuv420_to_rgb(
    yuv: np.ndarray, h: int, w: int, crop: tuple[int, int] | None = None, band_pixels: int = BAND_PIXELS
) -> torch.Tensor:
    """The yuv420p layout of an h x w frame -> float RGB tensor (1, 3, ch, cw) in [0, 1] (no rounding to
    8 bits), cropped to ``crop`` = (ch, cw) (default: the whole frame).

    Converted in bands of about ``band_pixels`` low-res pixels straight into the result, so beyond it
    (12 bytes per pixel) the conversion needs one band's float temporaries, not the whole frame's (about
    59 bytes per pixel). Each band upsamples its chroma rows with one row of context either side, so
    every pixel is computed by the same operations as in a whole-frame conversion: bit for bit equal.
    """
    ch, cw = crop or (h, w)
    flat = yuv.reshape(-1)
    y_plane = flat[: h * w].reshape(h, w)
    uv_plane = flat[h * w :].reshape(2, h // 2, w // 2)
    out = torch.empty((1, 3, ch, cw), dtype=torch.float32)
    rows = max(2, band_pixels // w & ~1)  # even: a band starts on a chroma row
    for r0 in range(0, ch, rows):
        r1 = min(r0 + rows, ch)
        c0, c1 = max(0, r0 // 2 - 1), min(h // 2, (r1 + 1) // 2 + 1)  # chroma rows, with one of context
        uv = torch.from_numpy(uv_plane[:, c0:c1].astype(np.float32))[:, None]
        uv = torch.nn.functional.interpolate(uv, size=(2 * (c1 - c0), w), mode="bilinear", align_corners=False)
        uv = uv[:, 0, r0 - 2 * c0 : r1 - 2 * c0, :cw]
        y = torch.from_numpy(y_plane[r0:r1, :cw].astype(np.float32))
        u, v = uv[0] - 128.0, uv[1] - 128.0
        r = y + v / 0.713
        b = y + u / 0.564
        g = (y - 0.299 * r - 0.114 * b) / 0.587
        out[0, :, r0:r1] = (torch.stack([r, g, b]) / 255.0).clamp_(0, 1)
    return out


class AV1Codec:
    """Raw AV1 base codec. Stateless: no weights."""

    name = "av1"
    has_draft = True
    log_bytes_per_level = 0.08

    @classmethod
    def from_model(cls, model) -> AV1Codec:
        return cls()

    @classmethod
    def quality_levels(cls) -> list[int]:
        """One quality code per distinct libaom quantizer (the lowest code that maps to it), coarsest first."""
        seen: dict[int, int] = {}
        for qc in range(256):
            seen.setdefault(quantizer_from_quality(qc), qc)
        return [seen[c] for c in sorted(seen, reverse=True)]

    def encode(
        self, x: torch.Tensor, quality_code: int, reconstruct: bool = True, speed: Speed = "final"
    ) -> LowresCode:
        """Code ``x`` with libaom at ``speed`` (:data:`SPEED`: its cpu-used)."""
        check_lowres_size("av1", tuple(x.shape[-2:]))
        _check_encoder()
        rgb = to_uint8(x)
        h, w = rgb.shape[:2]
        ph, pw = _padded_size(h, w)
        if (ph, pw) != (h, w):
            rgb = np.pad(rgb, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")
        data = _avif_payload(np.ascontiguousarray(rgb), quantizer_from_quality(quality_code), SPEED[speed])
        data = obu.compact(data, ph, pw)
        if not reconstruct:
            return LowresCode(streams=(data,), x_hat=None)
        return self.decode((data,), (h, w), quality_code)

    def decode(self, streams: tuple[bytes, ...], size: tuple[int, int], quality_code: int) -> LowresCode:
        import av

        if len(streams) != 1:
            raise BitstreamError(f"invalid file: an av1 payload has 1 stream, this one has {len(streams)}")
        check_lowres_size("av1", size, BitstreamError)
        h, w = size
        ph, pw = _padded_size(h, w)
        obu.check_frame_size(streams[0], ph, pw)
        ctx = av.CodecContext.create("libdav1d", "r")
        # dav1d refuses (before allocating) a frame larger than the header says: a crafted sequence
        # header cannot make it allocate a 65536 x 65536 frame for a 64 x 64 file
        ctx.options = {"max_pixels": str(ph * pw)}
        # one thread: with dav1d worker threads, a malformed payload can leave a worker releasing the
        # packet (a PyAV buffer whose free callback needs the GIL) while the main thread, holding the
        # GIL, tears the context down and waits for that worker: a deadlock (found by fuzzing)
        ctx.thread_count = 1
        try:
            packet = av.Packet(_TEMPORAL_DELIMITER + obu.expand(streams[0], ph, pw))
            frames = [*ctx.decode(packet), *ctx.decode(None)]
        except (av.error.FFmpegError, ValueError) as e:
            raise BitstreamError(f"invalid file: the AV1 payload does not decode ({e})") from None
        if len(frames) != 1 or (frames[0].height, frames[0].width) != (ph, pw):
            got = f"{frames[0].width}x{frames[0].height}" if frames else "no frame"
            raise BitstreamError(f"invalid file: the AV1 payload decodes to {got}, expected {pw}x{ph}")
        frame = frames[0]
        del frames, ctx
        if frame.format.name != "yuv420p":  # a crafted stream may be 10-bit, 4:4:4 or monochrome
            try:
                frame = frame.reformat(format="yuv420p")
            except (av.error.FFmpegError, ValueError) as e:
                raise BitstreamError(f"invalid file: the AV1 frame has an unusable format ({e})") from None
        yuv = frame.to_ndarray()
        del frame  # dav1d's picture: from here on only the planes (1.5 bytes per pixel) and the result
        # PyAV concatenates the planes into a new array (and returns a view of it): keep that one, copy
        # only planes that might still be the frame's memory
        if not (yuv.flags.owndata or (isinstance(yuv.base, np.ndarray) and yuv.base.flags.owndata)):
            yuv = yuv.copy()
        x_hat = _yuv420_to_rgb(yuv, ph, pw, crop=(h, w))
        return LowresCode(streams=tuple(streams), x_hat=x_hat, symbols=(torch.from_numpy(yuv),))

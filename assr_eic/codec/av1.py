"""``av1``: raw AV1 intra frames (SVT-AV1 encoder, dav1d decoder through PyAV), with no container.

At extreme rates an AVIF container alone costs about 275 bytes; here the payload is the bare OBU
sequence (sequence header + frame), minus the 2-byte temporal delimiter. AV1 decoding is integer and
normative, so the decoded YUV planes are bit-identical on every machine. The colour conversion is done
here in numpy with fixed formulas (full-range BT.601, 2x2 chroma averaging, bilinear chroma
upsampling) rather than by swscale, whose SIMD paths may round differently between CPUs.

Quality: the stored code c_q in 0..255 maps to SVT-AV1's constant rate factor
``crf = 63 - round(62 * c_q / 255)``, 63 (coarsest) to 1 (SVT-AV1 treats crf 0 as unset).
"""

from __future__ import annotations

import fractions
import os

import numpy as np
import torch

from ..bitstream import BitstreamError
from .base import LowresCode

MIN_SIDE = 64  # measured: below 64 px a side SVT-AV1 spends 2-3x the bytes (and refuses < 8 px); pad, crop back
_TEMPORAL_DELIMITER = b"\x12\x00"
DEFAULT_PRESET = 10  # measured on 256x192 photos at 300-2000 bytes: PSNR equal to preset 6 or better, 2x faster


def crf_from_quality(quality_code: int) -> int:
    return 63 - round(62 * quality_code / 255)


def _rgb_to_yuv420(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB (h, w, 3), h and w even -> PyAV's yuv420p array: Y, U, V planes flat, as (h * 3 / 2, w)."""
    f = rgb.astype(np.float32)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    u = (b - y) * 0.564 + 128.0
    v = (r - y) * 0.713 + 128.0
    h, w = y.shape

    def pool(c: np.ndarray) -> np.ndarray:
        return c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))

    planes = [np.clip(np.rint(p), 0, 255).astype(np.uint8) for p in (y, pool(u), pool(v))]
    return np.concatenate([p.ravel() for p in planes]).reshape(h * 3 // 2, w)


def _yuv420_to_rgb(yuv: np.ndarray, h: int, w: int) -> torch.Tensor:
    """The yuv420p layout -> float RGB tensor (1, 3, h, w) in [0, 1] (no rounding to 8 bits)."""
    flat = yuv.reshape(-1).astype(np.float32)
    y = torch.from_numpy(flat[: h * w].reshape(h, w))
    uv = torch.from_numpy(flat[h * w :].reshape(2, 1, h // 2, w // 2))
    uv = torch.nn.functional.interpolate(uv, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    u, v = uv[0] - 128.0, uv[1] - 128.0
    r = y + v / 0.713
    b = y + u / 0.564
    g = (y - 0.299 * r - 0.114 * b) / 0.587
    return (torch.stack([r, g, b])[None] / 255.0).clamp_(0, 1)


def _padded_size(h: int, w: int) -> tuple[int, int]:
    def one(n: int) -> int:
        return max(MIN_SIDE, n + (n & 1))

    return one(h), one(w)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(1, 3, h, w) float in [0, 1] -> (h, w, 3) uint8."""
    return (x[0].detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


class AV1Codec:
    """Raw AV1 base codec. Stateless: no weights."""

    name = "av1"

    def __init__(self, preset: int = DEFAULT_PRESET) -> None:
        self.preset = preset

    def encode(self, x: torch.Tensor, quality_code: int, reconstruct: bool = True) -> LowresCode:
        import av

        rgb = to_uint8(x)
        h, w = rgb.shape[:2]
        ph, pw = _padded_size(h, w)
        if (ph, pw) != (h, w):
            rgb = np.pad(rgb, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")
        yuv = _rgb_to_yuv420(rgb)
        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints a banner on stderr at level >= 2
        ctx = av.CodecContext.create("libsvtav1", "w")
        ctx.width, ctx.height = pw, ph
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = fractions.Fraction(1, 1)
        ctx.options = {"crf": str(crf_from_quality(quality_code)), "preset": str(self.preset)}
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        data = b"".join(bytes(p) for p in [*ctx.encode(frame), *ctx.encode(None)])
        if data.startswith(_TEMPORAL_DELIMITER):
            data = data[len(_TEMPORAL_DELIMITER) :]
        if not reconstruct:
            return LowresCode(streams=(data,), x_hat=None)
        return self.decode((data,), (h, w), quality_code)

    def decode(self, streams: tuple[bytes, ...], size: tuple[int, int], quality_code: int) -> LowresCode:
        import av

        if len(streams) != 1:
            raise BitstreamError(f"invalid file: an av1 payload has 1 stream, this one has {len(streams)}")
        h, w = size
        ph, pw = _padded_size(h, w)
        ctx = av.CodecContext.create("libdav1d", "r")
        # dav1d refuses (before allocating) a frame larger than the header says: a crafted sequence
        # header cannot make it allocate a 65536 x 65536 frame for a 64 x 64 file
        ctx.options = {"max_pixels": str(ph * pw)}
        # one thread: with dav1d worker threads, a malformed payload can leave a worker releasing the
        # packet (a PyAV buffer whose free callback needs the GIL) while the main thread, holding the
        # GIL, tears the context down and waits for that worker: a deadlock (found by fuzzing)
        ctx.thread_count = 1
        try:
            frames = [*ctx.decode(av.Packet(_TEMPORAL_DELIMITER + streams[0])), *ctx.decode(None)]
        except (av.error.FFmpegError, ValueError) as e:
            raise BitstreamError(f"invalid file: the AV1 payload does not decode ({e})") from None
        if len(frames) != 1 or (frames[0].height, frames[0].width) != (ph, pw):
            got = f"{frames[0].width}x{frames[0].height}" if frames else "no frame"
            raise BitstreamError(f"invalid file: the AV1 payload decodes to {got}, expected {pw}x{ph}")
        frame = frames[0]
        if frame.format.name != "yuv420p":  # a crafted stream may be 10-bit, 4:4:4 or monochrome
            try:
                frame = frame.reformat(format="yuv420p")
            except (av.error.FFmpegError, ValueError) as e:
                raise BitstreamError(f"invalid file: the AV1 frame has an unusable format ({e})") from None
        yuv = frame.to_ndarray()
        x_hat = _yuv420_to_rgb(yuv, ph, pw)[..., :h, :w]
        return LowresCode(streams=tuple(streams), x_hat=x_hat, symbols=(torch.from_numpy(yuv.copy()),))

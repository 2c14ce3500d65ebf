"""Classical image codecs at a byte budget: the baselines ASSR-EIC is compared against at matched bpp.

Each codec in ``BASELINES`` encodes an 8-bit RGB (H, W, 3) array to the bytes of a complete file
(container and headers included) and decodes it back. ``best_under_budget`` downscales the image by a
factor (antialiased bicubic), finds the highest quality whose whole file fits the budget, decodes and
upsamples back to full size (bicubic), and scores it; ``best_classical`` keeps the best PSNR over codecs and
scales (the "best classical" envelope). Encoder settings are fixed, so results are reproducible.

Codecs: ``jpeg``, ``webp``, ``avif`` (Pillow), ``jxl`` (pillow-jxl-plugin), ``heic`` (pillow-heif, x265;
the nearest thing to BPG available). ``available()`` says whether a codec can run here.
"""

from __future__ import annotations

import functools
import importlib
import io
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, features

from .metrics import ms_ssim, psnr

DEFAULT_CODECS: tuple[str, ...] = ("jpeg", "webp", "avif")
DEFAULT_SCALES: tuple[float, ...] = (1, 1.5, 2, 3, 4, 6)


@functools.cache
def _register_heif() -> None:
    import pillow_heif

    pillow_heif.register_heif_opener()


@functools.cache
def _register_jxl() -> None:
    importlib.import_module("pillow_jxl")  # importing registers the JXL format with Pillow


@dataclass(frozen=True)
class BaselineCodec:
    """A still-image codec driven through Pillow at an integer quality in ``[q_min, q_max]``.

    File size grows (almost always monotonically) with quality, which ``best_under_budget`` relies on.
    """

    name: str
    pil_format: str
    q_min: int
    q_max: int
    save_kwargs: dict[str, Any] = field(default_factory=dict)
    feature: str | None = None  # Pillow feature that must be compiled in
    plugin: str | None = None  # pip package that provides the format
    register: Callable[[], None] | None = None  # imports/registers the plugin

    def unavailable_reason(self) -> str | None:
        """``None`` when the codec works here, else why not (missing plugin or Pillow feature)."""
        if self.feature is not None and not features.check(self.feature):
            return f"Pillow {Image.__version__} was built without {self.feature!r} support"
        if self.register is not None:
            try:
                self.register()
            except ImportError as e:
                return f"{self.name} needs the {self.plugin!r} package ({e}); pip install assr-eic[bench]"
        return None

    def available(self) -> bool:
        """Whether this codec can encode and decode here (see ``unavailable_reason`` when not)."""
        return self.unavailable_reason() is None

    def require(self) -> None:
        """Raise ``RuntimeError`` with the reason when the codec is unavailable."""
        reason = self.unavailable_reason()
        if reason is not None:
            raise RuntimeError(f"codec {self.name!r} is unavailable: {reason}")

    def encode(self, img: np.ndarray, quality: int) -> bytes:
        """Encode an (H, W, 3) uint8 image to the bytes of a complete file at ``quality``."""
        _check_image(img)
        if not self.q_min <= quality <= self.q_max:
            raise ValueError(f"{self.name} quality must be in [{self.q_min}, {self.q_max}], got {quality}")
        if self.register is not None:
            self.register()
        buf = io.BytesIO()
        Image.fromarray(img, "RGB").save(buf, self.pil_format, quality=int(quality), **self.save_kwargs)
        return buf.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        """Decode file bytes to an (H, W, 3) uint8 image."""
        if self.register is not None:
            self.register()
        with Image.open(io.BytesIO(data)) as im:
            return np.array(im.convert("RGB"))


BASELINES: dict[str, BaselineCodec] = {
    c.name: c
    for c in (
        BaselineCodec("jpeg", "JPEG", 1, 100, {"optimize": True, "subsampling": "4:2:0"}, feature="jpg"),
        BaselineCodec("webp", "WEBP", 0, 100, {"method": 6}, feature="webp"),
        BaselineCodec("avif", "AVIF", 0, 100, {"speed": 6, "subsampling": "4:2:0"}, feature="avif"),
        # libjxl refuses quality 100 without lossless mode, hence q_max 99
        BaselineCodec("jxl", "JXL", 0, 99, {"effort": 7}, plugin="pillow-jxl-plugin", register=_register_jxl),
        BaselineCodec("heic", "HEIF", 0, 100, {"chroma": 420}, plugin="pillow-heif", register=_register_heif),
    )
}


def get_codec(name: str) -> BaselineCodec:
    """Look a baseline codec up by name (``KeyError`` listing the known names otherwise)."""
    try:
        return BASELINES[name]
    except KeyError:
        raise KeyError(f"unknown baseline codec {name!r}; known: {', '.join(BASELINES)}") from None


def available_codecs() -> list[str]:
    """Names of the baseline codecs that work here."""
    return [name for name, c in BASELINES.items() if c.available()]


@dataclass
class BaselineResult:
    """One classical-codec operating point, scored against the original image.

    ``bpp`` is ``nbytes * 8 / (H * W)`` of the original image, whatever ``scale`` was used; ``image``
    is the decoded file upsampled back to the original (H, W, 3) uint8.
    """

    codec: str
    quality: int
    scale: float
    nbytes: int
    bpp: float
    psnr: float
    ms_ssim: float
    image: np.ndarray = field(repr=False)


def _check_image(img: np.ndarray) -> None:
    if not (isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3):
        desc = f"{img.dtype} {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
        raise ValueError(f"expected an (H, W, 3) uint8 array, got {desc}")


def downscaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """(round(H / s), round(W / s)), rounding halves up, at least 1 px each."""
    return max(1, math.floor(height / scale + 0.5)), max(1, math.floor(width / scale + 0.5))


def pil_resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bicubic resize of an (H, W, 3) uint8 image to ``size`` = (H', W'); antialiased when reducing."""
    if img.shape[:2] == tuple(size):
        return img
    out = Image.fromarray(img, "RGB").resize((size[1], size[0]), Image.Resampling.BICUBIC)
    return np.asarray(out)


def budget_bytes(bpp: float, height: int, width: int) -> int:
    """The largest whole number of bytes within ``bpp`` bits per pixel of an H x W image."""
    return math.floor(bpp * height * width / 8)


def highest_fitting(size: Callable[[int], int], q_min: int, q_max: int, max_bytes: int) -> int | None:
    """The highest quality in [q_min, q_max] whose file of ``size(q)`` bytes fits ``max_bytes``, or ``None``.

    Bisection with the invariant "lo fits, hi does not"; hi starts one past q_max so the largest (slowest)
    encode is made only if needed: about log2(range) + 1 calls, always the same probes for the same sizes.
    Assumes sizes grow with quality, as every baseline's do.
    """
    lo, hi = q_min, q_max + 1
    if size(lo) > max_bytes:
        return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if size(mid) <= max_bytes:
            lo = mid
        else:
            hi = mid
    return lo


def _search(img: np.ndarray, codec: str, max_bytes: int, scale: float) -> tuple[int, bytes, np.ndarray] | None:
    """(quality, file, decoded and upsampled image) of the best fit, or ``None``; see ``best_under_budget``."""
    _check_image(img)
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    c = get_codec(codec)
    c.require()
    h, w = img.shape[:2]
    lr = pil_resize(img, downscaled_size(h, w, scale))
    files: dict[int, bytes] = {}

    def size(q: int) -> int:
        if q not in files:
            files[q] = c.encode(lr, q)
        return len(files[q])

    lo = highest_fitting(size, c.q_min, c.q_max, max_bytes)
    return None if lo is None else (lo, files[lo], pil_resize(c.decode(files[lo]), (h, w)))


def _result(img: np.ndarray, codec: str, scale: float, found: tuple[int, bytes, np.ndarray]) -> BaselineResult:
    quality, data, rec = found
    h, w = img.shape[:2]
    return BaselineResult(
        codec=codec,
        quality=quality,
        scale=float(scale),
        nbytes=len(data),
        bpp=len(data) * 8 / (h * w),
        psnr=psnr(img, rec),
        ms_ssim=ms_ssim(img, rec),
        image=rec,
    )


def best_under_budget(img: np.ndarray, codec: str, max_bytes: int, scale: float = 1.0) -> BaselineResult | None:
    """Highest-quality file of ``codec`` that fits ``max_bytes`` after downscaling ``img`` by ``scale``.

    Binary search over quality keeps the invariant "the low end fits, the high end does not", so the
    result fits and the next quality up (when not already ``q_max``) does not: about log2(range) + 1
    encodes. Returns ``None`` when even ``q_min`` does not fit.
    """
    found = _search(img, codec, max_bytes, scale)
    return None if found is None else _result(img, codec, scale, found)


def best_classical(
    img: np.ndarray,
    max_bytes: int,
    codecs: Sequence[str] = DEFAULT_CODECS,
    scales: Sequence[float] = DEFAULT_SCALES,
) -> BaselineResult | None:
    """Best PSNR over ``codecs`` x ``scales`` within ``max_bytes`` (the best-classical envelope).

    Codecs that are unavailable here are skipped with a warning; ``None`` when nothing fits. Ties keep
    the first codec and scale in the given order.
    """
    best: tuple[float, str, float, tuple[int, bytes, np.ndarray]] | None = None
    for name in codecs:
        reason = get_codec(name).unavailable_reason()
        if reason is not None:
            warnings.warn(f"skipping baseline {name!r}: {reason}", stacklevel=2)
            continue
        for s in scales:
            found = _search(img, name, max_bytes, s)
            if found is not None:
                p = psnr(img, found[2])
                if best is None or p > best[0]:
                    best = (p, name, s, found)
    return None if best is None else _result(img, best[1], best[2], best[3])


def matched(
    img: np.ndarray, codec: str, max_bytes: int, scales: Sequence[float] = DEFAULT_SCALES
) -> BaselineResult | None:
    """One codec at a matched budget: its best PSNR over ``scales`` (``best_classical`` for one codec).

    Downscaling is what lets a classical codec reach extreme rates at all (a 512x384 JPEG never gets
    under about 0.1 bpp at full size); pass ``scales=(1,)`` for the plain full-size codec.
    """
    return best_classical(img, max_bytes, codecs=(codec,), scales=scales)

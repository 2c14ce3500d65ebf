"""Rate control: a target bpp -> the scale s and quality q of each image.

Bits fall roughly as 1/s**2 and with q, so many (s, q) pairs meet a target; which one reconstructs
best differs from image to image. For a few scales (spread over the range where the low-res image
gets a sensible number of bits per pixel) the search finds the quality whose whole file lands within
+-``tolerance`` of the target, by interpolation on log(bytes) (about 3 encodes per scale; where the
quality levels jump over the window it nudges s in its fine 1/64 steps instead). It then scores
each candidate over the whole image (:func:`candidate_psnr`: bicubic-upsampled PSNR plus the gain of
the fidelity decoder at its best strength, measured on a tenth of the image) and moves that PSNR along
a typical RD slope to the target size (:func:`score`: a file 10% over the target must buy more than
0.26 dB to beat one on target); the best score wins, and its file stores that decoder strength.

A codec with a draft mode (``av1``: libaom at its fastest speed, about 45x faster than the final
encode) runs that search on drafts, ranked by bicubic PSNR alone, then fits the quality of the final
encoder at the scales of the two best drafts, starting from each draft's level, and keeps the better
final file by the full score. The two final fits run side by side in threads; where the first final
encode misses the window, the next guess is the level whose draft size, times the final/draft size
ratio just measured on this image, is nearest the target (1-3 final encodes each). A second draft
more than :data:`FINAL_GAP_DB` behind gets no final where its low-res image is large. Where the low-res
image is small next to the image (the lowest rates) final encodes cost little, so there the search spends
more: the codec's slower "fine" speed, and a third final at the scale between the two best finals.

Effort (:data:`EFFORTS`): ``best`` as above. ``normal`` (the default) also gives the second-best scale
a final encode only while the two finals together code at most :data:`FINAL_PIXEL_BUDGET` of the image's
pixels: at the higher rates both low-res images are nearly full size, and the second final is what
takes the encode of a 768x512 image past 1 s. ``fast`` gives a final encode to the best draft only, and
where its low-res image is large (:data:`LARGE_FRACTION`) makes it with the codec's quick speed and
asks for plain bicubic, whose decode is nearly free. On the Kodak crops ``normal`` is ``best`` at
0.005-0.05 bpp and a single final from 0.1 up (-0.06 dB at 0.1, -0.02 at 0.2, 0 at 0.3); ``fast`` is
0.05-0.17 dB below ``normal`` from 0.01 bpp up, and under 1 s at 768x512 at every rate. Where the
drafts misrank the scales one final loses more (0.4 dB on an upscaled 2048x2048 photo at 0.05 bpp,
where ``normal`` keeps both; figures in the model card). Codecs without a draft mode search the same
way at every effort.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import torch

from .bitstream import (
    FULL_STRENGTH,
    MAX_SCALE,
    MIN_SCALE,
    STRENGTH_LEVELS,
    dequantize_scale,
    lowres_size,
    pack,
    parse,
    quantize_scale,
)
from .codec import codec_class, lowres_fits
from .codec.base import LowresCode, Speed
from .encoder import Encoded, downsample, encode_at
from .model import ASSRModel
from .rescale import resize

MAX_CANDIDATES = 4
LOWRES_BPP_RANGE = (0.06, 1.6)  # bits per LOW-RES pixel worth trying (where the base codecs are efficient)
MAX_PROBES = 8
# Extra work where the low-res image is small next to the image, so it costs little time (both 0 = off):
# final encodes at the codec's "fine" speed (libaom speed 3: 2% fewer bytes than speed 4 at equal PSNR,
# about 1.9x the time) below this fraction of the pixels (s >= 4) ...
FINE_FRACTION = 1 / 16
# ... and a third final at the scale between the two best finals' below this one (s >= 2.8).
# Together on the Kodak crops: +0.10 dB at 0.01 bpp, +0.08 at 0.02 (rate-normalised, never worse)
REFINE_FRACTION = 1 / 8
FINAL_CANDIDATES = 2  # best drafts re-encoded by the final encoder, then compared
EFFORTS = ("normal", "fast", "best")  # rate control's effort, the default first: see the module docstring
# image pixels the normal effort's first two final encodes may code together (both low-res images' pixels
# over the image's): on the Kodak crops the two best scales' sum is at most 1.12 at 0.005-0.05 bpp and at
# least 1.39 from 0.1 bpp up (s = 1 and 1.3-1.6), where at 768x512 the two finals take 0.7-0.9 s of 2 cores
FINAL_PIXEL_BUDGET = 1.25
# the fast effort, where the low-res image has more than this fraction of the pixels (s < 1.41): the final
# encode at the codec's quick speed (libaom speed 5), and plain bicubic instead of the fidelity decoder,
# whose pass there cost 0.25-0.5 s at 768x512 in float32 (about 0.2 s with the bfloat16 trunk) and gained
# +0.01 to +0.14 dB on the Kodak files
LARGE_FRACTION = 0.5
FINAL_THREADS = 2  # the first final fits run side by side (libaom releases the GIL)
# a draft this far (dB of score) behind the best one gets no final encode unless its low-res image is
# small (REFINE_FRACTION): on 17 training photos at 768x512 and 0.05-0.3 bpp, the second final never won
# from behind 0.4 dB (11 of 68 searches; it won by up to 0.44 dB from 0.35 dB behind)
FINAL_GAP_DB = 0.4
# dB of PSNR per unit of ln(bytes) near these rates (Kodak crops, 0.02-0.2 bpp: 2.4-3.1): candidates land
# anywhere in the +-10% window, a spread worth +-0.26 dB, as much as the differences between scales
RD_SLOPE_DB = 2.7
FULL_EVAL_PIXELS = 1 << 21  # above 2 Mpx candidates are compared on a sample of tiles
GAIN_SAMPLE = 0.1  # fraction of the image on which :func:`candidate_psnr` measures the decoder's gain


class RateError(ValueError):
    """The requested bpp cannot be reached for this image; the message gives the reachable range."""


def quality_levels(codec: str) -> list[int]:
    """Quality codes that give distinct encodings, coarsest first (declared by the codec)."""
    return codec_class(codec).quality_levels()


def candidate_scales(target_bpp: float, n: int = MAX_CANDIDATES) -> list[float]:
    """Up to ``n`` scales, geometrically spaced, where the low-res image gets a useful bit budget."""
    lo = max(MIN_SCALE, math.sqrt(LOWRES_BPP_RANGE[0] / target_bpp))
    hi = min(MAX_SCALE, math.sqrt(LOWRES_BPP_RANGE[1] / target_bpp))
    hi, lo = max(hi, MIN_SCALE), min(lo, MAX_SCALE)
    if hi <= lo * 1.05:
        return [min(max(math.sqrt(lo * hi), MIN_SCALE), MAX_SCALE)]
    return [lo * (hi / lo) ** (i / (n - 1)) for i in range(n)]


@dataclass
class Candidate:
    encoded: Encoded
    score: float  # rate-normalised PSNR (:func:`score`)
    scale_code: int
    level: int


class _Search:
    """Cached encodes of one image at (scale code, quality level index)."""

    def __init__(
        self, model: ASSRModel, x: torch.Tensor, codec: str, prompt: str | None, lo: float, hi: float,
        draft: bool = False, drafts: _Search | None = None, quick: bool = False,
    ):  # fmt: skip
        """``draft``: encode with the codec's draft speed. ``drafts``: the draft search of the same image,
        whose low-res images this one shares and whose sizes predict this one's (:meth:`calibrated_level`).
        ``quick``: large low-res images (:data:`LARGE_FRACTION`) get the codec's quick speed."""
        self.model, self.x, self.codec, self.prompt, self.draft = model, x, codec, prompt, draft
        self.quick = quick
        self.drafts = drafts
        self.pixels = x.shape[-2] * x.shape[-1]
        self.lo, self.hi = lo, hi
        self.target = (lo + hi) / 2
        self.levels = quality_levels(codec)
        self.fingerprint = drafts.fingerprint if drafts else model.fingerprint  # hashes every weight
        self.cache: dict[tuple[int, int], Encoded] = {}
        self.lowres: dict[int, torch.Tensor] = drafts.lowres if drafts else {}
        self.slope = codec_class(codec).log_bytes_per_level

    def enc(self, sc: int, qi: int) -> Encoded:
        key = (sc, qi)
        if key not in self.cache:
            if sc not in self.lowres:
                self.lowres[sc] = downsample(self.model, self.x, self.codec, sc)
            self.cache[key] = encode_at(
                self.model, self.x, self.codec, sc, self.levels[qi], self.prompt,
                fingerprint=self.fingerprint, x_lr=self.lowres[sc], reconstruct_lowres=False,
                speed=self.speed(sc),
            )  # fmt: skip
        return self.cache[key]

    def speed(self, sc: int) -> Speed:
        """Drafts for probes; final encodes of a small low-res image get the codec's slower, finer speed,
        and with ``quick`` those of a large one its quicker speed."""
        if self.draft:
            return "draft"
        if self.quick_and_plain(sc):
            return "quick"
        return "fine" if self.small(sc, FINE_FRACTION) else "final"

    def size(self, sc: int, qi: int) -> int:
        return len(self.enc(sc, qi).data)

    def fits(self, n: int) -> bool:
        return self.lo <= n <= self.hi

    def fit_level(self, sc: int, guess: int) -> tuple[int, int] | None:
        """Interpolation search over quality levels at scale code ``sc``; s nudged across gaps."""
        n = len(self.levels)
        below, above = -1, n  # largest level known too small, smallest level known too big
        g = min(max(guess, 0), n - 1)
        for _ in range(MAX_PROBES):
            size = self.size(sc, g)
            if self.fits(size):
                return sc, g
            if size < self.lo:
                below = max(below, g)
            else:
                above = min(above, g)
            if above - below <= 1:
                break
            if self.drafts is not None:  # this image's final/draft size ratio, from the encode just made
                g = self.drafts.calibrated_level(sc, g, size / self.drafts.size(sc, g), below, above, self.target)
            elif below >= 0 and above < n:  # both sides known: interpolate log(bytes)
                a, b = math.log(self.size(sc, below)), math.log(self.size(sc, above))
                t = (math.log(self.target) - a) / max(b - a, 1e-9)
                g = below + round(t * (above - below))
            else:
                g += round((math.log(self.target) - math.log(size)) / self.slope)
            g = min(max(g, below + 1), above - 1)
        if below < 0 or above >= n:
            return None  # even the coarsest level is too big, or the finest too small, at this scale
        return self.nudge_scale(sc, above)

    def calibrated_level(self, sc: int, g: int, ratio: float, below: int, above: int, target: float) -> int:
        """The level between ``below`` and ``above`` (exclusive) whose size here times ``ratio`` comes
        nearest ``target``, walking from level ``g`` (an encode here costs little: drafts).

        The final/draft size ratio varies from image to image (0.7-1.3 at 768x512) but hardly between
        the scales and levels of one image, so one final encode calibrates the next guess: on training
        photos the fixed slope needed 2-7 final encodes per search at 0.05-0.3 bpp.
        """

        def log_err(h: int) -> float:  # signed: above the target > 0
            return math.log(self.size(sc, h) * ratio / target)

        up = log_err(g) < 0
        step = 1 if up else -1
        h = g
        while below < h + step < above:
            h += step
            if (log_err(h) >= 0) == up:  # crossed the target: the nearer side (never g, which missed)
                prev = h - step
                return prev if prev != g and abs(log_err(prev)) < abs(log_err(h)) else h
        return h

    def fraction(self, sc: int) -> float:
        """The low-res image's pixels at scale code ``sc`` over the image's."""
        return math.prod(lowres_size(*self.x.shape[-2:], sc)) / self.pixels

    def quick_and_plain(self, sc: int) -> bool:
        """With ``quick`` (the fast effort), whether scale code ``sc``'s low-res image has more than
        :data:`LARGE_FRACTION` of the pixels: its final encode is quick and its file asks for bicubic."""
        return self.quick and not self.small(sc, LARGE_FRACTION)

    def small(self, sc: int, fraction: float) -> bool:
        """Whether the low-res image at scale code ``sc`` has at most ``fraction`` of the image's pixels."""
        return self.fraction(sc) <= fraction

    def nudge_scale(self, sc: int, qi: int) -> tuple[int, int] | None:
        """Level ``qi`` overshoots at ``sc``: coarsen s (bytes ~ 1/s**2) until the file fits."""
        top = quantize_scale(MAX_SCALE)
        cur = sc
        for _ in range(4):
            ratio = self.size(cur, qi) / self.target
            nxt = min(top, max(cur + 1, round((64 + cur) * math.sqrt(ratio)) - 64))
            if nxt == cur:
                return None
            cur = nxt
            if self.fits(self.size(cur, qi)):
                return cur, qi
            if self.size(cur, qi) < self.lo:
                return None
        return None


def _sample_boxes(H: int, W: int, grid: int = 3, area: float = 0.25) -> list[tuple[int, int, int, int]]:
    """A fixed grid x grid sample of tiles covering about ``area`` of the image (all of a small one)."""
    if H * W <= 256 * 256:
        return [(0, H, 0, W)]
    th, tw = max(1, int(H * math.sqrt(area) / grid)), max(1, int(W * math.sqrt(area) / grid))
    boxes = []
    for i in range(grid):
        for j in range(grid):
            y0 = (2 * i + 1) * H // (2 * grid) - th // 2
            x0 = (2 * j + 1) * W // (2 * grid) - tw // 2
            boxes.append((y0, y0 + th, x0, x0 + tw))
    return boxes


def _sq_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    """Sum of squared errors of ``y`` rounded to 8 bits (as images are written) against ``ref``."""
    y = torch.round(y.clamp(0, 1) * 255) / 255
    return torch.sum((y - ref) ** 2).item()


def _psnr(se: float, count: int) -> float:
    return 10 * math.log10(1.0 / max(se / count, 1e-12))


def _decoded_tiles(model: ASSRModel, enc: Encoded, lowres: LowresCode, boxes: list[tuple[int, int, int, int]]):
    """The fidelity decoder's output on each box, exactly as a whole decode writes those pixels, and the
    plain bicubic tile its correction is added to (a by-product of the same pass)."""
    bs = enc.bitstream
    sr = model.sr[bs.codec]
    size = (bs.height, bs.width)
    unc = lowres.uncertainty if lowres.uncertainty is not None else torch.zeros_like(lowres.x_hat[:, :1])
    with torch.inference_mode():
        emb = sr.embedding(bs.codec, bs.scale, bs.quality)
        for box in boxes:
            base, correction = sr.render_tile_parts(lowres.x_hat, unc, emb, size, box)
            yield box, base + correction, base


def sampled_psnr(model: ASSRModel, enc: Encoded, lowres: LowresCode, x: torch.Tensor) -> float:
    """PSNR of the fidelity-decoded reconstruction over :func:`_sample_boxes` (exactly as decoded there)."""
    se, count = 0.0, 0
    for (y0, y1, x0, x1), y, _ in _decoded_tiles(model, enc, lowres, _sample_boxes(*x.shape[-2:])):
        ref = x[..., y0:y1, x0:x1]
        se, count = se + _sq_err(y, ref), count + ref.numel()
    return _psnr(se, count)


def _decoder_ratio(
    model: ASSRModel, enc: Encoded, lowres: LowresCode, x: torch.Tensor, up: torch.Tensor | None = None
) -> float:
    """The squared error of the best decoder strength over plain bicubic's on the :data:`GAIN_SAMPLE`
    tiles (below 1: some of the decoder's correction helps), measured once per candidate and kept on it
    with that strength (``enc.decoder_strength``, 0 where every strength loses)."""
    if enc.decoder_ratio is None:
        H, W = x.shape[-2:]
        if up is None and H * W <= FULL_EVAL_PIXELS:
            up = resize(lowres.x_hat, (H, W))
        boxes = _sample_boxes(H, W, area=GAIN_SAMPLE)
        # [0]: bicubic as candidate_psnr computes it (on large images, which it scores by sampled_psnr,
        # the decoder's own bicubic tiles: no whole-image tensor), then each strength
        se = [0.0] * STRENGTH_LEVELS
        for (y0, y1, x0, x1), y, base in _decoded_tiles(model, enc, lowres, boxes):
            ref = x[..., y0:y1, x0:x1]
            se[0] += _sq_err(base if up is None else up[..., y0:y1, x0:x1], ref)
            for k in range(1, STRENGTH_LEVELS):
                se[k] += _sq_err(y if k == FULL_STRENGTH else base + k / FULL_STRENGTH * (y - base), ref)
        best = min(range(STRENGTH_LEVELS), key=se.__getitem__)
        enc.decoder_ratio, enc.decoder_strength = se[best] / max(se[0], 1e-12), best
    return enc.decoder_ratio


def candidate_psnr(model: ASSRModel, enc: Encoded, lowres: LowresCode, x: torch.Tensor, decoder: bool = True) -> float:
    """Whole-image PSNR of a candidate, for ranking: upsampled by plain bicubic, plus (``decoder``) the
    gain over bicubic of the best decoder strength, measured on a fixed sample of tiles
    (:data:`GAIN_SAMPLE`), or nothing where every strength loses (the file then asks for bicubic, see
    :func:`_finish`).

    An estimate: where the sampled tiles hold more detail than the rest it sits above the decoded
    image's PSNR (up to 0.8 dB seen), but alike for every candidate of one image. Checked against
    decoding whole images (Kodak and training photos, 0.01-0.1 bpp): it keeps the same file to within
    0.01 dB on average, at a third of the time. Images over :data:`FULL_EVAL_PIXELS` are scored by
    :func:`sampled_psnr` instead, to bound time and memory.
    """
    H, W = x.shape[-2:]
    if H * W > FULL_EVAL_PIXELS:
        return sampled_psnr(model, enc, lowres, x)
    up = resize(lowres.x_hat, (H, W))
    se = _sq_err(up, x)
    if decoder:
        se *= min(_decoder_ratio(model, enc, lowres, x, up), 1.0)
    return _psnr(se, x.numel())


def score(psnr: float, nbytes: int, target: float) -> float:
    """PSNR moved along a typical RD slope to the target size, so candidates of different sizes compare."""
    return psnr - RD_SLOPE_DB * math.log(nbytes / target)


def finest_scale_code(codec: str, H: int, W: int) -> int:
    """The finest scale code whose low-res image ``codec`` codes and decodes (:func:`codec.lowres_fits`)."""
    code = 0
    while not lowres_fits(codec, *lowres_size(H, W, code)):
        code += 1
        if code > quantize_scale(MAX_SCALE):
            raise ValueError(f"no scale up to {MAX_SCALE} gives {codec} a low-res image of {W}x{H} it can code")
    return code


def search(
    model: ASSRModel,
    x: torch.Tensor,
    target_bpp: float,
    codec: str,
    prompt: str | None = None,
    tolerance: float = 0.1,
    max_candidates: int = MAX_CANDIDATES,
    progress: Callable[[int, int], None] | None = None,
    effort: str = "normal",
) -> Encoded:
    """Best-PSNR encoding whose whole file is within +-tolerance of ``target_bpp``, searched with
    ``effort`` (one of :data:`EFFORTS`)."""
    H, W = x.shape[-2:]
    if effort not in EFFORTS:
        raise ValueError(f"unknown effort {effort!r}; choose one of {', '.join(EFFORTS)}")
    if not (target_bpp > 0 and math.isfinite(target_bpp)):
        raise RateError(f"target bpp must be a positive number, got {target_bpp}")
    target = target_bpp * H * W / 8
    lo, hi = (1 - tolerance) * target, (1 + tolerance) * target
    has_draft = codec_class(codec).has_draft
    fast = effort == "fast"
    st = _Search(model, x, codec, prompt, lo, hi, draft=has_draft)
    fin = _Search(model, x, codec, prompt, lo, hi, drafts=st, quick=fast) if has_draft else st
    n = len(st.levels)
    top = quantize_scale(MAX_SCALE)
    smallest = st.size(top, 0)
    if smallest > st.hi / 2:  # near the floor: the final encoder's own smallest file decides
        smallest = fin.size(top, 0)
    if smallest > st.hi:
        raise RateError(
            f"{target_bpp:g} bpp is below what this {W}x{H} image can reach: the smallest file is "
            f"{smallest} bytes ({smallest * 8 / (H * W):.4f} bpp, scale {MAX_SCALE:g}, lowest quality)"
        )
    finest = finest_scale_code(codec, H, W)
    scales = candidate_scales(target_bpp, max_candidates)
    total = 2 * len(scales) + has_draft
    found: list[tuple[int, int]] = []
    guess = n // 2
    for i, s in enumerate(sorted(scales, reverse=True)):  # coarsest first: cheapest encodes
        if progress:
            progress(i, total)
        hit = st.fit_level(max(quantize_scale(s), finest), guess)
        if hit is not None and hit not in found:
            found.append(hit)
            guess = hit[1] - 3  # finer scales need coarser quality for the same bytes
    if not found:  # fall back: the coarsest scale, where the file is smallest, with the final encoder
        hit = fin.fit_level(top, guess)
        if hit is not None:
            return _finish(model, fin.enc(*hit), x, progress, total, decoder=not fin.quick_and_plain(hit[0]))
    if not found:
        largest = fin.size(finest, n - 1)
        if largest < st.lo:
            raise RateError(
                f"{target_bpp:g} bpp is above what this {W}x{H} image can reach with codec {codec}: the "
                f"largest file is {largest} bytes ({largest * 8 / (H * W):.4f} bpp)"
            )
        raise RateError(f"no scale and quality land within {tolerance:.0%} of {target_bpp:g} bpp for this image")
    ranked: list[Candidate] = []
    for j, (sc, qi) in enumerate(found):
        if progress:
            progress(len(scales) + j, total)
        e = st.enc(sc, qi)
        # drafts: plain bicubic over the whole image ranks scales (the decoder's gain differs by scale,
        # which the final comparison below sees); without drafts these are the files, compared decoded
        lr = _lowres_of(model, e)
        psnr = candidate_psnr(model, e, lr, x, decoder=not has_draft)
        ranked.append(Candidate(e, score(psnr, len(e.data), target), sc, qi))
    ranked.sort(key=lambda c: c.score, reverse=True)
    chosen = ranked[0].encoded
    if has_draft:
        if progress:
            progress(total - 1, total)
        n_finals = 1 if fast else FINAL_CANDIDATES
        budget = FINAL_PIXEL_BUDGET if effort == "normal" else math.inf
        chosen = _best_final(model, x, fin, ranked, target, n_finals, budget) or chosen
    return _finish(model, chosen, x, progress, total, decoder=not fin.quick_and_plain(chosen.bitstream.scale_code))


def _best_final(
    model: ASSRModel, x: torch.Tensor, fin: _Search, ranked: list[Candidate], target: float, n_finals: int,
    pixel_budget: float = math.inf,
):  # fmt: skip
    """The final encoder fitted at the ``n_finals`` best drafts' scales (from each draft's level) and, where
    the low-res image is small, at the scale between the two best finals; the best file by :func:`score`.
    None when no final encode lands in the window. Only the best draft gets a final where the first fits
    together would code more than ``pixel_budget`` times the image's pixels.

    The first ``n_finals`` fits run side by side in threads: on 2 cores two libaom encodes
    at once take about 85% of the time of one after the other. A draft :data:`FINAL_GAP_DB` behind the
    best is not tried where its low-res image is large (its final encode costs the most there).
    """

    def final_score(hit: tuple[int, int]) -> float:
        e = fin.enc(*hit)
        return score(candidate_psnr(model, e, _lowres_of(model, e), x), len(e.data), target)

    near = ranked[0].score - FINAL_GAP_DB
    tries = [c for c in ranked if c.score > near or fin.small(c.scale_code, REFINE_FRACTION)][:n_finals]
    if sum(fin.fraction(c.scale_code) for c in tries) > pixel_budget:
        tries = tries[:1]
    # only the encodes run in threads: scoring in them too (torch beside libaom on 2 cores) made whole
    # searches slower than none at all
    with ThreadPoolExecutor(FINAL_THREADS) as pool:
        first = list(pool.map(lambda c: fin.fit_level(c.scale_code, c.level), tries))
    hits: list[tuple[int, int]] = []
    for hit in first:
        if hit is not None and hit not in hits:
            hits.append(hit)
    for c in (c for c in ranked if all(c is not t for t in tries)):  # a fit missed or two coincided
        if len(hits) >= len(tries):
            break
        hit = fin.fit_level(c.scale_code, c.level)
        if hit is not None and hit not in hits:
            hits.append(hit)
    if len(hits) < 2:  # nothing to compare
        return fin.enc(*hits[0]) if hits else None
    scored = {hit: final_score(hit) for hit in hits}
    finals = sorted(((sc, h) for h, sc in scored.items()), reverse=True)
    (_, (a, qa)), (_, (b, qb)) = finals[:2]
    mid = quantize_scale(math.sqrt(dequantize_scale(a) * dequantize_scale(b)))
    if mid not in (a, b) and fin.small(mid, REFINE_FRACTION):
        hit = fin.fit_level(mid, (qa + qb) // 2)
        if hit is not None and hit not in scored:
            finals.append((final_score(hit), hit))
    return fin.enc(*max(finals)[1])


def _lowres_of(model: ASSRModel, e: Encoded) -> LowresCode:
    """The decoded low-res image of a candidate, decoded once and kept on it (probes skip the decode)."""
    if e.lowres.x_hat is None:
        bs = e.bitstream
        with torch.inference_mode():
            e.lowres = model.codec(bs.codec).decode(bs.streams, bs.lowres_size, bs.quality_code)
    return e.lowres


def with_stored_strength(model: ASSRModel, enc: Encoded, x: torch.Tensor) -> Encoded:
    """``enc`` as rate control finishes the file of image ``x``: with the decoder strength that does best on
    its sample of tiles (``Bitstream.decoder_strength``; 0 where every strength loses), repacked (same size).
    What the training pairs of the diffusion adaptor use, so that they carry the strength real files store."""
    return _finish(model, enc, x, None, 0)


def _finish(
    model: ASSRModel, e: Encoded, x: torch.Tensor, progress: Callable[[int, int], None] | None, total: int,
    decoder: bool = True,
) -> Encoded:
    """The chosen file, decoded once, with the decoder strength that does best on the sample (without
    ``decoder``: strength 0, plain bicubic, unmeasured)."""
    lowres = _lowres_of(model, e)
    if decoder:
        _decoder_ratio(model, e, lowres, x)
    else:
        e.decoder_ratio, e.decoder_strength = None, 0
    if e.decoder_strength != e.bitstream.decoder_strength:  # same size: the strength is the scale field's low bits
        data = pack(replace(e.bitstream, decoder_strength=e.decoder_strength))
        e = Encoded(data, parse(data), lowres, e.decoder_ratio, e.decoder_strength)
    if progress:
        progress(total, total)
    return e

"""Our side of the benchmark: a file at a target bpp through rate control, and the same file upsampled
with plain bicubic instead of the fidelity decoder (the ablation)."""

from __future__ import annotations

import time

import numpy as np

from bench.common import ABLATION, TOLERANCE, result_row


def ours_spec(spec: str) -> tuple[str, str]:
    """ "av1" -> ("av1", "normal"), "av1-fast" -> ("av1", "fast"): our base codec and rate control's effort."""
    codec, _, effort = spec.partition("-")
    return codec, effort or "normal"


def run_ours(model, img: np.ndarray, name: str, target: float, spec: str) -> tuple[dict, object | None]:
    """One of our files: compress at ``target`` (rate control), decode. Returns (row, Decoded or None).
    ``spec``: the base codec, with "-fast" or "-best" for rate control's other efforts (:func:`ours_spec`)."""
    from assr_eic.image import to_uint8
    from assr_eic.metrics import ms_ssim, psnr
    from assr_eic.pipeline import compress, decode
    from assr_eic.ratecontrol import RateError

    hw = img.shape[:2]
    method = f"ours-{spec}"
    codec, effort = ours_spec(spec)
    t0 = time.perf_counter()
    try:
        data = compress(img, target_bpp=target, codec=codec, model=model, effort=effort)
    except RateError as e:
        return result_row(method, name, target, hw, status="unreachable", message=str(e), codec=codec), None
    t1 = time.perf_counter()
    dec = decode(data, model=model)
    rec = to_uint8(dec.image)
    t2 = time.perf_counter()
    bs = dec.bitstream
    row = result_row(
        method,
        name,
        target,
        hw,
        codec=codec,
        effort=effort,
        bytes=len(data),
        psnr=psnr(img, rec),
        ms_ssim=ms_ssim(img, rec),
        scale=bs.scale,
        quality=bs.quality,
        fidelity_decoder=bs.decoder_strength > 0,
        decoder_strength=bs.decoder_strength,
        encode_ms=(t1 - t0) * 1000,
        decode_ms=(t2 - t1) * 1000,
    )
    row["within_tolerance"] = abs(row["bpp"] / target - 1) <= TOLERANCE
    dec.rgb = rec
    return row, dec


def run_ablation(model, img: np.ndarray, name: str, target: float, ours_row: dict, dec) -> dict:
    """The same av1 file, its decoded low-res image ``Decoded.lowres.x_hat`` upsampled with plain bicubic."""
    from assr_eic.image import to_uint8
    from assr_eic.metrics import ms_ssim, psnr
    from assr_eic.rescale import resize

    hw = img.shape[:2]
    if dec is None:
        return result_row(
            ABLATION, name, target, hw, status="unreachable", message=ours_row.get("message"), codec="av1"
        )
    bs = dec.bitstream
    t0 = time.perf_counter()  # decode time: the base codec's decode plus the bicubic upsampling
    model.codec(bs.codec).decode(bs.streams, bs.lowres_size, bs.quality_code)
    rec = to_uint8(resize(dec.lowres.x_hat, hw))
    t1 = time.perf_counter()
    dec.bicubic_rgb = rec
    return result_row(
        ABLATION,
        name,
        target,
        hw,
        codec="av1",
        bytes=ours_row["bytes"],
        psnr=psnr(img, rec),
        ms_ssim=ms_ssim(img, rec),
        scale=ours_row["scale"],
        quality=ours_row["quality"],
        encode_ms=ours_row["encode_ms"],
        decode_ms=(t1 - t0) * 1000,
    )

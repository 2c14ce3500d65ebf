"""The classical codecs at a byte budget: every encode cached by image content, codec, scale and quality.

A budget search brackets the quality with the cached sizes, so re-running after the model changed (our file
sizes move a little) costs only a few new encodes; the cache is discarded when the Pillow / plugin versions
or the codec settings change.
"""

from __future__ import annotations

import hashlib
import json
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from bench.common import CACHE_FORMAT, ENVELOPE, ENVELOPE_MSSSIM, log, result_row, write_json


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def codec_environment() -> dict:
    """What classical results depend on: library versions and the fixed encoder settings."""
    from PIL import Image

    from assr_eic.baselines import BASELINES

    return {
        "format": CACHE_FORMAT,
        "pillow": Image.__version__,
        "pillow_heif": _version("pillow-heif"),
        "pillow_jxl": _version("pillow-jxl-plugin"),
        "codecs": {n: [c.pil_format, c.q_min, c.q_max, c.save_kwargs] for n, c in BASELINES.items()},
        "resampling": "PIL bicubic down (antialiased) and up",
    }


def image_key(img: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(img).tobytes() + str(img.shape).encode()).hexdigest()[:16]


class ClassicalCache:
    """Per (image, codec, scale, quality): file bytes, and PSNR / MS-SSIM / times once decoded."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.env = codec_environment()
        self.entries: dict[str, dict] = {}
        self.hits = self.misses = 0
        if path is not None and path.is_file():
            try:
                saved = json.loads(path.read_text())
            except (OSError, ValueError):
                saved = {}
            if saved.get("env") == json.loads(json.dumps(self.env)):
                self.entries = saved.get("entries", {})
            else:
                log(f"classical cache {path}: codec versions or settings changed, starting afresh")

    @staticmethod
    def key(img_key: str, codec: str, scale: float, quality: int) -> str:
        return f"{img_key}|{codec}|{scale:g}|{quality}"

    def get(self, img_key: str, codec: str, scale: float, quality: int) -> dict | None:
        return self.entries.get(self.key(img_key, codec, scale, quality))

    def put(self, img_key: str, codec: str, scale: float, quality: int, entry: dict) -> None:
        self.entries[self.key(img_key, codec, scale, quality)] = entry

    def subset(self, img_key: str, codec: str) -> dict[str, dict]:
        """The entries of one image and codec (what a worker needs)."""
        prefix = f"{img_key}|{codec}|"
        return {k: v for k, v in self.entries.items() if k.startswith(prefix)}

    def save(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json(self.path, {"env": self.env, "entries": self.entries})


def classical_point(
    img: np.ndarray,
    img_key: str,
    codec: str,
    scale: float,
    max_bytes: int,
    cache: ClassicalCache,
    keep_image: bool = False,
) -> dict | None:
    """The highest-quality ``codec`` file of ``img`` downscaled by ``scale`` whose whole file fits.

    The same answer as ``baselines.best_under_budget`` (the same bisection, ``highest_fitting``), with every encode's
    size taken from ``cache`` when it is there: targets share most probes, and reruns need new encodes only
    where a budget moved.
    Returns a dict (quality, bytes, psnr, ms_ssim, encode_ms, decode_ms[, image]) or ``None``.
    """
    from assr_eic.baselines import downscaled_size, get_codec, highest_fitting, pil_resize
    from assr_eic.metrics import ms_ssim, psnr

    c = get_codec(codec)
    h, w = img.shape[:2]
    size_lr = downscaled_size(h, w, scale)
    files: dict[int, bytes] = {}

    def encode(q: int) -> tuple[bytes, float]:
        t = time.perf_counter()
        data = c.encode(pil_resize(img, size_lr), q)
        return data, (time.perf_counter() - t) * 1000

    def nbytes(q: int) -> int:
        e = cache.get(img_key, codec, scale, q)
        if e is None:
            cache.misses += 1
            files[q], ms = encode(q)
            e = {"bytes": len(files[q]), "encode_ms": ms}
            cache.put(img_key, codec, scale, q, e)
        else:
            cache.hits += 1
        return e["bytes"]

    # the probes of best_under_budget: the answer depends on the budget alone, never on what the cache holds
    lo = highest_fitting(nbytes, c.q_min, c.q_max, max_bytes)
    if lo is None:
        return None
    entry = cache.get(img_key, codec, scale, lo)
    if "psnr" not in entry or keep_image:
        data = files.get(lo)
        if data is None:
            data, entry["encode_ms"] = encode(lo)
        t = time.perf_counter()
        rec = pil_resize(c.decode(data), (h, w))
        entry["decode_ms"] = (time.perf_counter() - t) * 1000
        entry["psnr"], entry["ms_ssim"] = psnr(img, rec), ms_ssim(img, rec)
        entry["bytes"] = len(data)
    out = {"quality": lo, **entry}
    if keep_image:
        out["image"] = rec
    return out


def classical_job(
    img: np.ndarray,
    name: str,
    codec: str,
    scales,
    budgets: dict[float, tuple[int, str]],
    entries: dict[str, dict],
    keep_targets=(),
    threads: int | None = None,
) -> dict:
    """One image and one codec at every scale and target (``budgets``: target -> (bytes, where from)).

    Runs in a worker process (or inline): ``entries`` is the cache for this image and codec, returned
    updated. Images are kept for the targets in ``keep_targets`` (the visual grid).
    """
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    hw = img.shape[:2]
    key = image_key(img)
    cache = ClassicalCache(None)
    cache.entries = dict(entries)
    rows, images = [], {}
    for target, (budget, budget_from) in budgets.items():
        for s in scales:
            keep = target in keep_targets
            p = classical_point(img, key, codec, s, budget, cache, keep_image=keep)
            common = {"codec": codec, "scale": float(s), "budget_bytes": budget, "budget_from": budget_from}
            method = f"{codec}@{s:g}"
            if p is None:
                rows.append(result_row(method, name, target, hw, status="no_fit", **common))
                continue
            metrics = {k: p[k] for k in ("bytes", "psnr", "ms_ssim", "quality", "encode_ms", "decode_ms")}
            rows.append(result_row(method, name, target, hw, **metrics, **common))
            if keep:
                images[(target, method)] = p["image"]
    return {
        "rows": rows,
        "images": images,
        "entries": cache.entries,
        "hits": cache.hits,
        "misses": cache.misses,
        "seconds": time.perf_counter() - t0,
        "codec": codec,
        "image": name,
    }


def derive_classical(rows: list[dict], codecs, name: str, target: float, hw: tuple[int, int]) -> list[dict]:
    """``{codec}@best`` per codec, and the envelopes over every classical row of one image and target."""
    budget, budget_from = rows[0]["budget_bytes"], rows[0]["budget_from"]
    ok = [r for r in rows if r["status"] == "ok"]
    derived = []
    for codec in codecs:
        mine = [r for r in ok if r["codec"] == codec]
        derived.append(_best(mine, f"{codec}@best", "psnr", name, target, hw, budget, budget_from, codec=codec))
    derived.append(_best(ok, ENVELOPE, "psnr", name, target, hw, budget, budget_from))
    derived.append(_best(ok, ENVELOPE_MSSSIM, "ms_ssim", name, target, hw, budget, budget_from))
    return derived


def _best(rows, method, metric, name, target, hw, budget, budget_from, codec=None) -> dict:
    if not rows:
        return result_row(
            method, name, target, hw, status="no_fit", codec=codec, budget_bytes=budget, budget_from=budget_from
        )
    b = max(rows, key=lambda r: r[metric])
    keep = {k: b[k] for k in ("codec", "bytes", "psnr", "ms_ssim", "scale", "quality", "encode_ms", "decode_ms")}
    return result_row(
        method, name, target, hw, source=b["method"], budget_bytes=budget, budget_from=budget_from, **keep
    )

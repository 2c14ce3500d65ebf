"""The Kodak benchmark: ASSR-EIC against JPEG, WebP, AVIF, JPEG XL and HEIC at matched rate.

``python bench/kodak.py --out bench/results`` (or ``assr-eic bench ...``). On the five Kodak crops
(``assr_eic.train.data.load_eval_set``), for each target bpp it measures

* ``ours-av1`` and ``ours-learned``: ``compress(target_bpp=...)`` (rate control picks s and q), decoded
  with the fidelity decoder; ``ours-av1-fast`` and ``ours-av1-best`` the same with rate control's
  ``effort="fast"`` and ``"best"``;
* ``ours-av1+bicubic`` (ablation): the SAME av1 file, its decoded low-res image upsampled with plain
  bicubic instead of the fidelity decoder (what the learning adds);
* every classical codec at every scale in ``SCALES`` (``{codec}@{scale}``): the image downscaled by the
  scale (antialiased bicubic), coded at the highest quality whose whole file fits the budget, decoded and
  upsampled back with bicubic. The budget is the byte size of OUR av1 file for that image and target
  (matched rate; the target's bytes where our file is unreachable);
* derived rows: ``{codec}@best`` (the codec's best PSNR over scales) and ``best-classical`` (per image and
  target the max PSNR over all classical codecs and scales: the upper envelope); ``best-classical-msssim``
  is the same envelope taken on MS-SSIM.

Classical results do not depend on our model, so every classical encode is cached in a JSON file keyed by
image content, codec, scale and quality (file size, and PSNR / MS-SSIM / times for the qualities that were
chosen). A budget search first brackets the quality with the cached sizes, so re-running after the model
changed (our file sizes move a little) costs only a few new encodes. The cache is discarded when the
Pillow / plugin versions or the codec settings change.

BD-rates are computed on the MEAN curves (mean bpp, mean PSNR over the images, per target) over the targets
in ``BD_RANGE`` at which both methods have a result on every image. Speed and peak memory are measured in a
fresh subprocess per method on one 768x512 image (a Kodak crop upscaled by 1.5, its middle 768x512), in
the same run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from importlib import metadata
from pathlib import Path

import numpy as np

from .bitstream import FULL_STRENGTH

TARGETS: tuple[float, ...] = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3)
QUICK_TARGETS: tuple[float, ...] = (0.01, 0.02, 0.1)
QUICK_IMAGES = 2
SCALES: tuple[float, ...] = (1, 1.5, 2, 3, 4, 6)
BD_RANGE = (0.01, 0.1)
GRID_BPP = 0.02
GRID_IMAGES = 2
CROP = 128  # side of the grid crops (shown at 2x, nearest neighbour)
SPEED_BPP = 0.05
SPEED_EXTRA_BPP = (0.02, 0.1, 0.2)  # ours-av1 only, after the main speed runs
SPEED_UPSCALE = 1.5  # 512x384 -> 768x576, then the middle 768x512
SPEED_SIZE = (768, 512)  # width, height
TOLERANCE = 0.1  # rate control must land within +-10% of the target
OURS = ("ours-av1", "ours-av1-fast", "ours-av1-best", "ours-learned")
EFFORT_VARIANTS = ("ours-av1-fast", "ours-av1-best")  # ours-av1 at rate control's other efforts
ABLATION = "ours-av1+bicubic"
ENVELOPE = "best-classical"
ENVELOPE_MSSSIM = "best-classical-msssim"
CACHE_FORMAT = 1


def log(msg: str) -> None:
    print(msg, flush=True)


def _nan_to_none(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _nan_to_none(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_nan_to_none(x) for x in v]
    return v


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(_nan_to_none(obj), indent=1, allow_nan=False))
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------- classical cache


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def codec_environment() -> dict:
    """What classical results depend on: library versions and the fixed encoder settings."""
    from PIL import Image

    from .baselines import BASELINES

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
            _write_json(self.path, {"env": self.env, "entries": self.entries})


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

    The same answer as ``baselines.best_under_budget`` (the same bisection over quality), with every encode's
    size taken from ``cache`` when it is there: targets share most probes, and reruns need new encodes only
    where a budget moved.
    Returns a dict (quality, bytes, psnr, ms_ssim, encode_ms, decode_ms[, image]) or ``None``.
    """
    from .baselines import get_codec, lowres_size, resize
    from .metrics import ms_ssim, psnr

    c = get_codec(codec)
    h, w = img.shape[:2]
    size_lr = lowres_size(h, w, scale)
    files: dict[int, bytes] = {}

    def encode(q: int) -> tuple[bytes, float]:
        t = time.perf_counter()
        data = c.encode(resize(img, size_lr), q)
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

    # exactly the probe sequence of baselines._search (lo fits, hi does not): the answer depends on the
    # budget alone, never on what the cache holds, and equals best_under_budget's
    lo, hi = c.q_min, c.q_max + 1
    if nbytes(lo) > max_bytes:
        return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if nbytes(mid) <= max_bytes:
            lo = mid
        else:
            hi = mid
    entry = cache.get(img_key, codec, scale, lo)
    if "psnr" not in entry or keep_image:
        data = files.get(lo)
        if data is None:
            data, entry["encode_ms"] = encode(lo)
        t = time.perf_counter()
        rec = resize(c.decode(data), (h, w))
        entry["decode_ms"] = (time.perf_counter() - t) * 1000
        entry["psnr"], entry["ms_ssim"] = psnr(img, rec), ms_ssim(img, rec)
        entry["bytes"] = len(data)
    out = {"quality": lo, **entry}
    if keep_image:
        out["image"] = rec
    return out


# ------------------------------------------------------------------------------------------ rows


def _row(method: str, image: str, target: float, hw: tuple[int, int], **kw) -> dict:
    row = {
        "method": method,
        "image": image,
        "target_bpp": target,
        "status": "ok",
        "bytes": None,
        "bpp": None,
        "psnr": None,
        "ms_ssim": None,
        "scale": None,
        "quality": None,
        "encode_ms": None,
        "decode_ms": None,
    }
    row.update(kw)
    if row["bytes"] is not None:
        row["bpp"] = row["bytes"] * 8 / (hw[0] * hw[1])
    return row


def ours_spec(spec: str) -> tuple[str, str]:
    """"av1" -> ("av1", "normal"), "av1-fast" -> ("av1", "fast"): our base codec and rate control's effort."""
    codec, _, effort = spec.partition("-")
    return codec, effort or "normal"


def run_ours(model, img: np.ndarray, name: str, target: float, spec: str) -> tuple[dict, object | None]:
    """One of our files: compress at ``target`` (rate control), decode. Returns (row, Decoded or None).
    ``spec``: the base codec, with "-fast" or "-best" for rate control's other efforts (:func:`ours_spec`)."""
    from .image import to_uint8
    from .metrics import ms_ssim, psnr
    from .pipeline import compress, decode
    from .ratecontrol import RateError

    hw = img.shape[:2]
    method = f"ours-{spec}"
    codec, effort = ours_spec(spec)
    t0 = time.perf_counter()
    try:
        data = compress(img, target_bpp=target, codec=codec, model=model, effort=effort)
    except RateError as e:
        return _row(method, name, target, hw, status="unreachable", message=str(e), codec=codec), None
    t1 = time.perf_counter()
    dec = decode(data, model=model)
    rec = to_uint8(dec.image)
    t2 = time.perf_counter()
    bs = dec.bitstream
    row = _row(
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
        fidelity_decoder=bs.strength > 0,
        decoder_strength=bs.strength,
        encode_ms=(t1 - t0) * 1000,
        decode_ms=(t2 - t1) * 1000,
    )
    row["within_tolerance"] = abs(row["bpp"] / target - 1) <= TOLERANCE
    dec.rgb = rec
    return row, dec


def run_ablation(model, img: np.ndarray, name: str, target: float, ours_row: dict, dec) -> dict:
    """The same av1 file, its decoded low-res image ``Decoded.lowres.x_hat`` upsampled with plain bicubic."""
    from .image import to_uint8
    from .metrics import ms_ssim, psnr
    from .rescale import resize

    hw = img.shape[:2]
    if dec is None:
        return _row(ABLATION, name, target, hw, status="unreachable", message=ours_row.get("message"), codec="av1")
    bs = dec.bitstream
    t0 = time.perf_counter()  # decode time: the base codec's decode plus the bicubic upsampling
    model.codec(bs.codec).decode(bs.streams, bs.lowres_size, bs.quality_code)
    rec = to_uint8(resize(dec.lowres.x_hat, hw))
    t1 = time.perf_counter()
    dec.bicubic_rgb = rec
    return _row(
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
                rows.append(_row(method, name, target, hw, status="no_fit", **common))
                continue
            metrics = {k: p[k] for k in ("bytes", "psnr", "ms_ssim", "quality", "encode_ms", "decode_ms")}
            rows.append(_row(method, name, target, hw, **metrics, **common))
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
        return _row(
            method, name, target, hw, status="no_fit", codec=codec, budget_bytes=budget, budget_from=budget_from
        )
    b = max(rows, key=lambda r: r[metric])
    keep = {k: b[k] for k in ("codec", "bytes", "psnr", "ms_ssim", "scale", "quality", "encode_ms", "decode_ms")}
    return _row(method, name, target, hw, source=b["method"], budget_bytes=budget, budget_from=budget_from, **keep)


# --------------------------------------------------------------------------------------- summary


def method_order(rows: list[dict], codecs) -> list[str]:
    wanted = [*OURS, ABLATION, *(f"{c}@1" for c in codecs), *(f"{c}@best" for c in codecs), ENVELOPE, ENVELOPE_MSSSIM]
    present = {r["method"] for r in rows}
    return [m for m in wanted if m in present] + sorted(present - set(wanted))


def mean_curves(rows: list[dict], images: list[str], targets: list[float]) -> dict:
    """Per method and target: mean bpp / PSNR / MS-SSIM over the images that have a result (n of them)."""
    out: dict[str, dict[str, dict]] = {}
    for r in rows:
        out.setdefault(r["method"], {})
    for method in out:
        for t in targets:
            ok = [r for r in rows if r["method"] == method and r["target_bpp"] == t and r["status"] == "ok"]
            entry = {"n": len(ok), "complete": len(ok) == len(images)}
            for k in ("bpp", "psnr", "ms_ssim", "encode_ms", "decode_ms"):
                vals = [r[k] for r in ok if r[k] is not None]
                entry[k] = float(np.mean(vals)) if vals else None
            out[method][f"{t:g}"] = entry
    return out


def bd_rates(
    curves: dict, targets: list[float], ours: list[str], anchors: list[str], rng: tuple[float, float] = BD_RANGE
) -> dict:
    """BD-rate (%) and BD-PSNR (dB) of each of ``ours`` against each anchor, on the mean curves.

    Uses the targets in ``rng`` at which both curves have a result on every image.
    """
    from .metrics import bd_psnr, bd_rate

    lo, hi = rng
    sel = [f"{t:g}" for t in targets if lo - 1e-12 <= t <= hi + 1e-12]
    out = {}
    for m in ours:
        for a in anchors:
            if m not in curves or a not in curves:
                continue
            pts = [t for t in sel if curves[m][t]["complete"] and curves[a][t]["complete"]]
            res = {"targets": [float(t) for t in pts], "bd_rate": None, "bd_psnr": None}
            if len(pts) >= 2:
                ra, pa = [curves[a][t]["bpp"] for t in pts], [curves[a][t]["psnr"] for t in pts]
                rb, pb = [curves[m][t]["bpp"] for t in pts], [curves[m][t]["psnr"] for t in pts]
                res["bd_rate"], res["bd_psnr"] = bd_rate(ra, pa, rb, pb), bd_psnr(ra, pa, rb, pb)
                if res["bd_rate"] is not None and not math.isfinite(res["bd_rate"]):
                    res["bd_rate"], res["note"] = None, "PSNR ranges do not overlap"
            else:
                res["note"] = "fewer than 2 targets with every image for both"
            out[f"{m} vs {a}"] = res
    return out


def landing(rows: list[dict]) -> dict:
    out = {}
    for m in OURS:
        mine = [r for r in rows if r["method"] == m]
        if not mine:
            continue
        ok = [r for r in mine if r["status"] == "ok"]
        out[m] = {
            "files": len(ok),
            "within_10pct": sum(r["within_tolerance"] for r in ok),
            "unreachable": [
                {"image": r["image"], "target_bpp": r["target_bpp"], "message": r["message"]}
                for r in mine
                if r["status"] != "ok"
            ],
            "misses": [
                {"image": r["image"], "target_bpp": r["target_bpp"], "bpp": r["bpp"]}
                for r in ok
                if not r["within_tolerance"]
            ],
        }
    return out


GOAL_DB = 1.0  # issue 3: at every rate in BD_RANGE, PSNR >= best classical + 1 dB, and higher MS-SSIM
GOAL_CODECS = ("avif", "webp", "jpeg")  # the classical codecs issue 3's quality goal names


def _envelope_of(rows: list[dict], codecs: tuple[str, ...]) -> dict[tuple[str, float], tuple[dict, dict]]:
    """(image, target) -> (best-PSNR row, best-MS-SSIM row) over ``codecs`` at every scale, chosen as
    :func:`derive_classical` chooses the envelope rows."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for r in rows:
        codec, _, scale = r["method"].partition("@")
        if codec in codecs and scale not in ("", "best") and r.get("psnr") is not None:
            groups.setdefault((r["image"], r["target_bpp"]), []).append(r)
    return {k: (max(v, key=lambda r: r["psnr"]), max(v, key=lambda r: r["ms_ssim"])) for k, v in groups.items()}


def goal_check(
    rows: list[dict], targets: list[float], method: str = "ours-av1", codecs: tuple[str, ...] | None = None
) -> dict:
    """Per target in :data:`BD_RANGE`: ours minus the best classical variant, image by image (only the
    images where both have a file), PSNR and MS-SSIM, against the project's quality goal. The classical
    variants are every codec of the run (the envelope rows), or only ``codecs`` at every scale."""
    by = {(r["method"], r["image"], r["target_bpp"]): r for r in rows if r.get("psnr") is not None}
    env = _envelope_of(rows, codecs) if codecs else None
    out = {}
    for t in targets:
        if not BD_RANGE[0] <= t <= BD_RANGE[1]:
            continue
        pairs = [
            (r, *env.get((r["image"], t), (None, None)))
            if env is not None
            else (r, by.get((ENVELOPE, r["image"], t)), by.get((ENVELOPE_MSSSIM, r["image"], t)))
            for (m, _, tt), r in by.items()
            if m == method and tt == t
        ]
        pairs = [(o, e, em or e) for o, e, em in pairs if e is not None]
        if not pairs:
            continue
        d_psnr = [o["psnr"] - e["psnr"] for o, e, _ in pairs]
        d_ms = [o["ms_ssim"] - em["ms_ssim"] for o, _, em in pairs]
        out[f"{t:g}"] = {
            "images": len(pairs),
            "psnr_gain_db": float(np.mean(d_psnr)),
            "psnr_gain_min_db": float(np.min(d_psnr)),
            "ms_ssim_gain": float(np.mean(d_ms)),
            "met": bool(np.mean(d_psnr) >= GOAL_DB and np.mean(d_ms) > 0),
        }
    return out


# ------------------------------------------------------------------------------------ speed / memory


def _mem() -> tuple[float, float]:
    """(VmHWM, VmRSS) of this process in MB."""
    vals = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmHWM:", "VmRSS:")):
                k, v = line.split(":")
                vals[k] = int(v.split()[0]) / 1024
    return vals.get("VmHWM", math.nan), vals.get("VmRSS", math.nan)


def _reset_hwm() -> bool:
    """Reset the RSS high-water mark to the current RSS (Linux >= 4.0); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def speed_worker(method: str, image_path: str, bpp: float, model_path: str | None) -> dict:
    """Run in a fresh subprocess: encode + decode one image with ``method``, timed, with peak memory."""
    from PIL import Image

    with Image.open(image_path) as im:
        img = np.array(im.convert("RGB"))
    H, W = img.shape[:2]
    res: dict = {"method": method, "width": W, "height": H, "target_bpp": bpp}
    base, _, threads = method.partition("/")
    if base.startswith("ours-"):
        import torch

        from .bitstream import pack, parse
        from .model import load_model
        from .pipeline import compress, decompress

        if threads:  # "ours-av1/1t": torch limited to that many threads
            torch.set_num_threads(int(threads.rstrip("t")))
        t = time.perf_counter()
        model = load_model(model_path)
        res["load_ms"] = (time.perf_counter() - t) * 1000
        res["torch_threads"] = torch.get_num_threads()
        codec, res["effort"] = ours_spec(base[5:])
        res["start_rss_mb"] = _mem()[1]
        res["hwm_reset"] = _reset_hwm()
        for run in ("cold", "warm"):  # cold: first use in the process (lazy imports, allocator warm-up)
            t0 = time.perf_counter()
            data = compress(img, target_bpp=bpp, codec=codec, model=model, effort=res["effort"])
            t1 = time.perf_counter()
            decompress(data, model=model)
            t2 = time.perf_counter()
            res[f"{run}_encode_ms"], res[f"{run}_decode_ms"] = (t1 - t0) * 1000, (t2 - t1) * 1000
        res["bytes"], res["bpp"] = len(data), len(data) * 8 / (H * W)
        bs = parse(data)
        res["fidelity_decoder"], res["decoder_strength"] = bs.strength > 0, bs.strength
        if bs.strength == 0:  # rate control chose bicubic for this file: also time the decoder it skipped
            forced = pack(replace(bs, strength=FULL_STRENGTH))
            t = time.perf_counter()
            decompress(forced, model=model)
            res["decode_with_decoder_ms"] = (time.perf_counter() - t) * 1000
    else:
        from .baselines import get_codec, lowres_size, resize

        c = get_codec(base)
        c.require()
        budget = math.floor(bpp * H * W / 8)
        res["start_rss_mb"] = _mem()[1]
        res["hwm_reset"] = _reset_hwm()
        t0 = time.perf_counter()
        found = None
        for s in SCALES:  # the first scale where the codec fits the budget at all
            lr = resize(img, lowres_size(H, W, s))
            if len(c.encode(lr, c.q_min)) > budget:
                continue
            lo, hi = c.q_min, c.q_max + 1
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if len(c.encode(lr, mid)) <= budget else (lo, mid)
            found = (s, lo)
            break
        res["search_ms"] = (time.perf_counter() - t0) * 1000
        if found is not None:
            s, q = found
            res["scale"], res["quality"] = float(s), q
            for run in ("cold", "warm"):
                t0 = time.perf_counter()
                data = c.encode(resize(img, lowres_size(H, W, s)), q)
                t1 = time.perf_counter()
                resize(c.decode(data), (H, W))
                t2 = time.perf_counter()
                res[f"{run}_encode_ms"], res[f"{run}_decode_ms"] = (t1 - t0) * 1000, (t2 - t1) * 1000
            res["bytes"], res["bpp"] = len(data), len(data) * 8 / (H * W)
    hwm, rss = _mem()
    res["peak_rss_mb"] = hwm
    res["peak_above_start_mb"] = hwm - res["start_rss_mb"] if res["hwm_reset"] else None
    return res


def speed_image(img: np.ndarray):
    """The speed runs' image: ``img`` upscaled by :data:`SPEED_UPSCALE`, the middle ``SPEED_SIZE`` (a PIL image)."""
    from PIL import Image

    H, W = img.shape[:2]
    big = Image.fromarray(img).resize((round(W * SPEED_UPSCALE), round(H * SPEED_UPSCALE)), Image.Resampling.BICUBIC)
    w, h = SPEED_SIZE  # 768x576 -> the middle 768x512
    left, top = (big.width - w) // 2, (big.height - h) // 2
    return big.crop((left, top, left + w, top + h))


def run_speed(img: np.ndarray, methods: list[str], bpp: float, model_path: str | None) -> list[dict]:
    """One fresh subprocess per method on ``img`` upscaled by 1.5 and cropped to ``SPEED_SIZE`` (768x512)."""
    big = speed_image(img)
    out = []
    with tempfile.TemporaryDirectory(prefix="assr-bench-") as tmp:
        path = Path(tmp) / "speed.png"
        big.save(path)
        for label in methods:
            m, _, at = label.partition("=")  # "ours-av1=0.1": that method at another target bpp
            cmd = [
                sys.executable,
                "-m",
                "assr_eic.bench",
                "--speed-worker",
                m,
                "--image",
                str(path),
                "--speed-bpp",
                at or str(bpp),
            ] + (["--model", model_path] if model_path else [])
            t = time.perf_counter()
            env = dict(os.environ)
            if "/" in m:  # a thread limit for everything in that process, OpenMP included
                env["OMP_NUM_THREADS"] = m.partition("/")[2].rstrip("t")
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
            wall = time.perf_counter() - t
            lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
            if p.returncode != 0 or not lines:
                res = {"method": label, "error": (p.stderr.strip().splitlines() or ["no output"])[-1]}
            else:
                res = json.loads(lines[-1])
                res["method"] = label
            res["process_wall_s"] = wall
            res["loadavg_1m_after"] = os.getloadavg()[0]  # how busy the cores were (other jobs share them)
            out.append(res)
            log(f"  speed {label:14s} " + _speed_text(res))
    return out


def _fmt(v, spec: str, dash: str = "-") -> str:
    return dash if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def _speed_text(r: dict) -> str:
    if "error" in r:
        return f"error: {r['error']}"
    return (
        f"enc {_fmt(r.get('warm_encode_ms'), '.0f')} ms (cold {_fmt(r.get('cold_encode_ms'), '.0f')}), "
        f"dec {_fmt(r.get('warm_decode_ms'), '.0f')} ms, peak RSS {_fmt(r.get('peak_rss_mb'), '.0f')} MB "
        f"(+{_fmt(r.get('peak_above_start_mb'), '.0f')} MB over start)"
    )


# ---------------------------------------------------------------------------------------- outputs


PLOT_STYLE = {
    "ours-av1": dict(color="tab:red", marker="o", lw=2.2),
    "ours-learned": dict(color="tab:purple", marker="s", lw=2.2),
    "ours-av1-fast": dict(color="tab:red", marker="o", lw=1.2, ls="--", ms=4),
    "ours-av1-best": dict(color="darkred", marker="o", lw=1.0, ls="-", ms=3),
    ABLATION: dict(color="tab:red", marker="o", lw=1.2, ls=":", mfc="none"),
    ENVELOPE: dict(color="black", marker="", lw=1.8, ls="--"),
    ENVELOPE_MSSSIM: dict(color="black", marker="", lw=1.8, ls="--"),
}
CODEC_COLOURS = {"jpeg": "tab:brown", "webp": "tab:green", "avif": "tab:blue", "jxl": "tab:orange", "heic": "tab:cyan"}


def plot_rd(curves: dict, targets: list[float], codecs, metric: str, path: Path, n_images: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envelope = ENVELOPE if metric == "psnr" else ENVELOPE_MSSSIM
    methods = [*OURS, ABLATION, *(f"{c}@best" for c in codecs), "avif@1", envelope]
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    lines = {}
    for m in methods:
        if m not in curves:
            continue
        pts = [p for p in (curves[m][f"{t:g}"] for t in targets) if p["complete"] and p[metric] is not None]
        if pts:
            lines[m] = ([p["bpp"] for p in pts], [p[metric] for p in pts])
    # the y range follows the classical envelope and our av1 curve, so that one far-off curve (an untrained
    # decoder, say) does not flatten the rest; curves that leave the range say so in the legend
    ref = [y for m in (envelope, "ours-av1", ABLATION) if m in lines for y in lines[m][1]]
    ylim = None
    if ref:
        pad = 3.0 if metric == "psnr" else 0.08
        ylim = (min(ref) - pad, max(ref) + pad / 3)
        if metric == "ms_ssim":
            ylim = (ylim[0], min(1.0, ylim[1]))
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    for m, (xs, ys) in lines.items():
        if m in PLOT_STYLE:
            style = dict(PLOT_STYLE[m])
        else:
            codec, variant = m.split("@")
            style = dict(
                color=CODEC_COLOURS.get(codec, "grey"),
                marker="^" if variant == "best" else "v",
                lw=1.2,
                ls="-" if variant == "best" else "-.",
                ms=4,
            )
        label = {
            ENVELOPE: "best classical (envelope)",
            ENVELOPE_MSSSIM: "best classical (envelope)",
            "avif@1": "avif (full size)",
        }.get(m, m.replace("@best", " (best scale)"))
        if ylim is not None and min(ys) < ylim[0]:
            label += f" (down to {min(ys):.3g}, off the axis)"
        ax.plot(xs, ys, label=label, **style)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(targets))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel(f"bpp (mean over {n_images} Kodak crops; classical files at our av1 file's size or less)")
    ax.set_ylabel("PSNR (dB)" if metric == "psnr" else "MS-SSIM")
    ax.set_title(f"Rate-{'PSNR' if metric == 'psnr' else 'MS-SSIM'} on the Kodak crops (targets with every image)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_grid(
    path: Path, originals: dict[str, np.ndarray], grid: dict[str, list[tuple[str, dict, np.ndarray]]]
) -> None:
    """Per image a row: the original crop then each method's crop (same region), 2x nearest."""
    from PIL import Image

    from .viz import labelled_grid

    tiles, cols = [], 0
    for name, entries in grid.items():
        img = originals[name]
        H, W = img.shape[:2]
        y0, x0 = (H - CROP) // 2, (W - CROP) // 2

        def crop(a: np.ndarray, y0=y0, x0=x0) -> np.ndarray:
            return np.repeat(np.repeat(a[y0 : y0 + CROP, x0 : x0 + CROP], 2, axis=0), 2, axis=1)

        tiles.append((crop(img), f"{name} original"))
        for method, row, rec in entries:
            tiles.append((crop(rec), f"{method} {row['bpp']:.4f}bpp {row['psnr']:.2f}dB"))
        cols = max(cols, 1 + len(entries))
    Image.fromarray(labelled_grid(tiles, cols=cols, label_height=16)).save(path)


def write_summary(path: Path, result: dict, figure_dir: str) -> None:
    s = result["summary"]
    curves, targets = s["mean"], result["config"]["targets"]
    n = len(result["config"]["images"])
    cols = [
        ("ours-av1", "ours (av1)"),
        ("ours-av1-fast", "ours (av1, fast)"),
        ("ours-av1-best", "ours (av1, best)"),
        ("ours-learned", "ours (learned)"),
        (ABLATION, "av1 + bicubic (ablation)"),
        ("avif@1", "AVIF"),
        ("avif@best", "AVIF, best scale"),
        (ENVELOPE, "best classical"),
    ]
    cols = [(m, h) for m, h in cols if m in curves]

    def cell(m: str, t: str) -> str:
        p = curves[m][t]
        if m == ENVELOPE and ENVELOPE_MSSSIM in curves:
            ms = curves[ENVELOPE_MSSSIM][t]["ms_ssim"]
        else:
            ms = p["ms_ssim"]
        if p["psnr"] is None:
            return "-"
        star = "" if p["complete"] else f" ({p['n']}/{n})"
        return f"{p['psnr']:.2f} / {_fmt(ms, '.4f')}{star}"

    L = [f"### Kodak crops ({n} images, 512x384): mean PSNR (dB) / MS-SSIM at matched rate", ""]
    L.append("| target bpp | ours bpp (av1 / learned) | " + " | ".join(h for _, h in cols) + " |")
    L.append("|---|---|" + "---|" * len(cols))
    for t in targets:
        k = f"{t:g}"
        bpp_a = curves.get("ours-av1", {}).get(k, {}).get("bpp")
        bpp_l = curves.get("ours-learned", {}).get(k, {}).get("bpp")
        L.append(
            f"| {k} | {_fmt(bpp_a, '.4f')} / {_fmt(bpp_l, '.4f')} | " + " | ".join(cell(m, k) for m, _ in cols) + " |"
        )
    L += [
        "",
        "Classical codecs (JPEG, WebP, AVIF, JPEG XL, HEIC/x265) get the byte size of our av1 file for that image "
        "and target as their budget (the highest quality whose whole file fits), on the full image and on the "
        f"image downscaled by {', '.join(f'{x:g}' for x in result['config']['scales'][1:])} and upsampled back "
        "with bicubic. *Best classical* is, per image and target, the max over all of them (PSNR and MS-SSIM "
        "taken separately). (k/n) marks a mean over only the k images that have a result (an unreachable rate "
        "or no file fitting the budget); '-' means none.",
        "",
        "BD-rate (BD-PSNR) of each of our curves against an anchor, on the MEAN curves (mean bpp and mean PSNR "
        "over the images, per target), using only the targets at which both curves have every image; negative "
        "BD-rate = fewer bits for the same PSNR. *AVIF* is full-size AVIF, which cannot make a file this small "
        "below about 0.1 bpp at 512x384, hence the second table over every target.",
        "",
    ]
    lo_all, hi_all = min(targets), max(targets)
    for key, title in (
        ("bd", f"{BD_RANGE[0]:g}-{BD_RANGE[1]:g} bpp"),
        ("bd_all_targets", f"every target ({lo_all:g}-{hi_all:g} bpp)"),
    ):
        L += [f"| over {title} | vs AVIF | vs AVIF, best scale | vs best classical |", "|---|---|---|---|"]
        for m in (*OURS, ABLATION):
            cells = []
            for a in ("avif@1", "avif@best", ENVELOPE):
                b = s[key].get(f"{m} vs {a}")
                if b is None:
                    cells.append("-")
                elif b["bd_rate"] is None:
                    dp = b.get("bd_psnr")
                    gap = f", BD-PSNR {dp:+.2f} dB" if dp is not None and math.isfinite(dp) else ""
                    cells.append(f"n/a ({b.get('note', '')}{gap})")
                else:
                    pts = ", ".join(f"{t:g}" for t in b["targets"])
                    cells.append(f"{b['bd_rate']:+.1f}% ({b['bd_psnr']:+.2f} dB) at {pts}")
            if any(c != "-" for c in cells):
                L.append(f"| {m} | " + " | ".join(cells) + " |")
        L.append("")
    goal, named = s.get("goal") or {}, s.get("goal_named_codecs") or {}
    if goal:
        L += [
            f"Quality goal: at every rate from {BD_RANGE[0]:g} to {BD_RANGE[1]:g} bpp, PSNR at least "
            f"{GOAL_DB:g} dB above the best classical variant and a higher MS-SSIM. ours-av1 minus best classical, "
            "image by image over the images where both have a file. The goal names AVIF, WebP and JPEG "
            "(full size or downscaled); the first columns hold ours to all five codecs of the run, HEIC and "
            "JPEG XL included, a stricter test:",
            "",
            "| target bpp | images | PSNR gain (mean, dB) | smallest gain (dB) | MS-SSIM gain (mean) | met | "
            f"vs {', '.join(c.upper() for c in GOAL_CODECS)} only: PSNR gain (mean, smallest) | MS-SSIM gain | met |",
            "|---|---|---|---|---|---|---|---|---|",
        ]

        def met(g: dict) -> str:
            return "yes" if g["met"] else "no"

        for k, g in goal.items():
            h = named.get(k)
            rest = (
                f"{h['psnr_gain_db']:+.2f}, {h['psnr_gain_min_db']:+.2f} ({h['images']}/{n}) | "
                f"{h['ms_ssim_gain']:+.4f} | {met(h)}"
                if h
                else "- | - | -"
            )
            L.append(
                f"| {k} | {g['images']}/{n} | {g['psnr_gain_db']:+.2f} | {g['psnr_gain_min_db']:+.2f} | "
                f"{g['ms_ssim_gain']:+.4f} | {met(g)} | {rest} |"
            )
        L.append("")
        pairs = {(r["image"], r["target_bpp"]): r["bytes"] for r in result["rows"] if r["method"] == "ours-av1"}
        for m, gains in (s.get("goal_efforts_named_codecs") or {}).items():
            if not gains:
                continue
            ratio = [
                r["bytes"] / pairs[(r["image"], r["target_bpp"])]
                for r in result["rows"]
                if r["method"] == m and r["bytes"] and pairs.get((r["image"], r["target_bpp"]))
            ]
            sizes = (
                f" (its files are {min(ratio):.2f}-{max(ratio):.2f} times that size, {np.mean(ratio):.3f} on average)"
                if ratio
                else ""
            )
            L += [
                f"{m} (rate control's {m.rpartition('-')[2]} effort) against "
                f"{', '.join(c.upper() for c in GOAL_CODECS)}, whose files have the size of the ours-av1 file{sizes}, "
                "PSNR gain (mean, smallest) / MS-SSIM gain: "
                + "; ".join(
                    f"{k} bpp {g['psnr_gain_db']:+.2f}, {g['psnr_gain_min_db']:+.2f} dB / {g['ms_ssim_gain']:+.4f} "
                    f"({'met' if g['met'] else 'not met'})"
                    for k, g in gains.items()
                ),
                "",
            ]
    L += ["Rate control (every file within +-10% of its target where reachable):", ""]
    for m, v in s["landing"].items():
        unr = ", ".join(f"{u['image']}@{u['target_bpp']:g}" for u in v["unreachable"]) or "none"
        L.append(f"- {m}: {v['within_10pct']}/{v['files']} files within +-10%; unreachable: {unr}")
    sp = result.get("speed") or []
    if sp:
        r0 = next((r for r in sp if "width" in r), {})
        L += [
            "",
            f"Speed and memory, {r0.get('width', '?')}x{r0.get('height', '?')} image (a Kodak crop upscaled "
            f"by {SPEED_UPSCALE:g}, middle rows), {result['config']['speed_bpp']:g} bpp budget, "
            "one fresh process per method, "
            f"{result['config']['cpus']} CPU cores (load average at start "
            f"{result['config']['loadavg_start'][0]:.1f}):",
            "",
            "| method | encode ms | decode ms | encode + decode ms | first call in process (enc + dec ms) | "
            "peak RSS MB | peak above start MB | notes |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in sp:
            if "error" in r:
                L.append(f"| {r['method']} | error: {r['error']} | | | | | | |")
                continue
            enc, dec = r.get("warm_encode_ms"), r.get("warm_decode_ms")
            tot = None if enc is None or dec is None else enc + dec
            cold = None if r.get("cold_encode_ms") is None else r["cold_encode_ms"] + r["cold_decode_ms"]
            if r["method"].startswith("ours-"):
                note = (
                    f"target {r['target_bpp']:g} bpp, rate control included"
                    + (f" ({r['effort']} effort)" if r.get("effort", "normal") != "normal" else "")
                    + f"; {r.get('torch_threads')} torch thread(s); "
                    f"{_fmt(r.get('bpp'), '.4f')} bpp; model load {_fmt(r.get('load_ms'), '.0f')} ms"
                )
                if r.get("fidelity_decoder") is False:
                    note += (
                        "; the file asks for bicubic (the decoder lost on this image), decoding it with the "
                        f"decoder takes {_fmt(r.get('decode_with_decoder_ms'), '.0f')} ms"
                    )
                elif r.get("decoder_strength") not in (None, FULL_STRENGTH):
                    note += f"; decoder strength {r['decoder_strength']}/{FULL_STRENGTH}"
            elif "scale" in r:
                note = (
                    f"single encode at q={r['quality']} after downscaling by {r['scale']:g}; finding that quality "
                    f"took {r['search_ms']:.0f} ms"
                )
            else:
                note = "nothing fits the budget at any scale"
            L.append(
                f"| {r['method']} | {_fmt(enc, '.0f')} | {_fmt(dec, '.0f')} | {_fmt(tot, '.0f')} | "
                f"{_fmt(cold, '.0f')} | {_fmt(r.get('peak_rss_mb'), '.0f')} | "
                f"{_fmt(r.get('peak_above_start_mb'), '.0f')} | {note} |"
            )
        L += [
            "",
            "Peak RSS is VmHWM of the worker process (it includes the Python interpreter and torch, which "
            "every worker imports); *peak above start* resets the high-water mark after the imports and model "
            "load and reports the growth during encode + decode. Times are the second call in the process. "
            "*/1t* rows limit torch (and OpenMP) to one thread: on shared or busy cores torch's default "
            "thread pool can be many times slower.",
        ]
    L += ["", f"![Rate-PSNR]({figure_dir}/rd_psnr.png)", f"![Rate-MS-SSIM]({figure_dir}/rd_msssim.png)", ""]
    g = result["config"].get("grid_bpp")
    if g is not None:
        L += [
            f"![Crops at {g:g} bpp]({figure_dir}/grid_{g:g}.png)",
            "",
            f"Same {CROP}x{CROP} region of each image, shown at 2x (nearest neighbour); labels give the method, "
            "its bpp and its PSNR over the whole image.",
            "",
        ]
    path.write_text("\n".join(L))


# ------------------------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> dict:
    from .baselines import available_codecs
    from .model import load_model
    from .train.data import fetch_eval_set, load_eval_set

    t_start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fetch_eval_set(Path(args.data))
    all_images = load_eval_set(Path(args.data))
    if args.images:
        names = args.images.split(",")
        unknown = [n for n in names if n not in all_images]
        if unknown:
            raise SystemExit(f"unknown images {unknown}; the evaluation set has {sorted(all_images)}")
    else:
        names = sorted(all_images)[: QUICK_IMAGES if args.quick else None]
    images = {n: all_images[n] for n in names}
    targets = (
        [float(t) for t in args.targets.split(",")] if args.targets else list(QUICK_TARGETS if args.quick else TARGETS)
    )
    scales = [float(s) for s in args.scales.split(",")] if args.scales else list(SCALES)
    avail = available_codecs()
    codecs = args.codecs.split(",") if args.codecs else avail
    missing = [c for c in codecs if c not in avail]
    if missing:
        log(f"skipping unavailable codecs: {', '.join(missing)}")
        codecs = [c for c in codecs if c in avail]
    our_codecs = args.ours.split(",")
    grid_bpp = min(targets, key=lambda t: abs(math.log(t / GRID_BPP)))
    grid_images = names[:GRID_IMAGES]
    import torch

    # torch's intra-op threads spin badly when the cores are shared (our classical workers, other jobs): the
    # quality runs use --threads (default 1); the speed section measures the default thread count too
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    cache = ClassicalCache(None if args.cache == "none" else Path(args.cache))
    config = {
        "images": names,
        "targets": targets,
        "scales": scales,
        "codecs": codecs,
        "ours": our_codecs,
        "model": model.source,
        "model_fingerprint": model.fingerprint.hex(),
        "tolerance": TOLERANCE,
        "bd_range": list(BD_RANGE),
        "grid_bpp": grid_bpp,
        "speed_bpp": args.speed_bpp,
        "cpus": os.cpu_count(),
        "jobs": args.jobs,
        "threads": args.threads,
        "loadavg_start": list(os.getloadavg()),
        "python": sys.version.split()[0],
        "codec_versions": {k: v for k, v in cache.env.items() if k in ("pillow", "pillow_heif", "pillow_jxl")},
    }
    log(
        f"benchmark: {len(names)} images x {len(targets)} targets; ours: {', '.join(our_codecs)}; classical: "
        f"{', '.join(codecs)} at scales {', '.join(f'{s:g}' for s in scales)}; model {model.source} "
        f"({model.fingerprint.hex()})"
    )
    rows: list[dict] = []
    grid: dict[str, list] = {n: [] for n in grid_images}
    pool = None
    if args.jobs > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: a forked child of a process that already ran torch's thread pool can hang
        pool = ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"))
    pending, done_jobs = [], []

    def collect(block: bool) -> None:
        for f in [f for f in pending if block or f.done()]:
            pending.remove(f)
            job = f.result()
            done_jobs.append(job)
            cache.entries.update(job["entries"])
            cache.hits += job["hits"]
            cache.misses += job["misses"]
            log(
                f"  {job['image']} {job['codec']}: {len(targets)} targets x {len(scales)} scales in "
                f"{job['seconds']:.1f} s ({job['misses']} new encodes, {job['hits']} cached)"
            )
        cache.save()

    try:
        for name, img in images.items():
            H, W = img.shape[:2]
            budgets = {}
            for t in targets:
                t0 = time.perf_counter()
                decs = {}
                for spec in our_codecs:
                    row, dec = run_ours(model, img, name, t, spec)
                    rows.append(row)
                    decs[spec] = dec
                    if t == grid_bpp and name in grid and dec is not None and row["method"] not in EFFORT_VARIANTS:
                        grid[name].append((row["method"], row, dec.rgb))
                budget, budget_from = math.floor(t * H * W / 8), "target"
                if "av1" in our_codecs:
                    av1 = rows[-len(our_codecs) + our_codecs.index("av1")]
                    abl = run_ablation(model, img, name, t, av1, decs["av1"])
                    rows.append(abl)
                    if t == grid_bpp and name in grid and decs["av1"] is not None:
                        grid[name].append((ABLATION, abl, decs["av1"].bicubic_rgb))
                    if av1["status"] == "ok":
                        budget, budget_from = av1["bytes"], "ours-av1"
                budgets[t] = (budget, budget_from)
                log(_progress_line(name, t, rows, (), budget, time.perf_counter() - t0))
            key = image_key(img)
            keep = (grid_bpp,) if name in grid else ()
            for codec in codecs:  # classical work for this image goes to the pool while ours goes on
                entries = cache.subset(key, codec)
                job = (img, name, codec, scales, budgets, entries, keep)
                if pool is None:
                    done_jobs.append(classical_job(*job))
                    cache.entries.update(done_jobs[-1]["entries"])
                    cache.hits += done_jobs[-1]["hits"]
                    cache.misses += done_jobs[-1]["misses"]
                else:
                    pending.append(pool.submit(classical_job, *job, threads=1))
            collect(block=False)
        if pending:
            log(f"waiting for {len(pending)} classical jobs")
        collect(block=True)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    log(f"classical cache: {cache.hits} cached encodes used, {cache.misses} new encodes ({cache.path})")
    crops = {}
    for job in done_jobs:
        rows += job["rows"]
        crops.update({(job["image"], *k): v for k, v in job["images"].items()})
    for name, img in images.items():
        for t in targets:
            mine = [r for r in rows if r["image"] == name and r["target_bpp"] == t and r.get("budget_bytes")]
            if not mine:
                continue
            derived = derive_classical(mine, codecs, name, t, img.shape[:2])
            rows += derived
            log(_progress_line(name, t, rows, codecs, mine[0]["budget_bytes"], None))
            if t == grid_bpp and name in grid:
                for m in ("avif@1", *(f"{c}@best" for c in codecs), ENVELOPE):
                    r = next((r for r in mine + derived if r["method"] == m and r["status"] == "ok"), None)
                    if r is not None:
                        grid[name].append((m, r, crops[(name, t, r.get("source", m))]))
    order = {m: i for i, m in enumerate(method_order(rows, codecs))}
    rows.sort(key=lambda r: (names.index(r["image"]), targets.index(r["target_bpp"]), order[r["method"]]))

    curves = mean_curves(rows, names, targets)
    anchors_m = [a for a in ("avif@1", "avif@best", ENVELOPE) if a in curves]
    ours_m = [m for m in (*OURS, ABLATION) if m in curves]
    summary = {
        "mean": curves,
        "bd": bd_rates(curves, targets, ours_m, anchors_m),
        # the same over every target (0.005-0.3): full-size AVIF only reaches the upper end of the range
        "bd_all_targets": bd_rates(curves, targets, ours_m, anchors_m, (min(targets), max(targets))),
        "landing": landing(rows),
        "goal": goal_check(rows, targets),
        "goal_named_codecs": goal_check(rows, targets, codecs=GOAL_CODECS),
        "goal_efforts_named_codecs": {
            m: goal_check(rows, targets, method=m, codecs=GOAL_CODECS) for m in EFFORT_VARIANTS if m in curves
        },
        "methods": method_order(rows, codecs),
    }
    speed = []
    if not args.no_speed:
        methods = (
            args.speed_methods.split(",")
            if args.speed_methods
            else [m for c in our_codecs for m in ((f"ours-{c}", f"ours-{c}/1t") if "-" not in c else (f"ours-{c}",))]
            + codecs
            # rate control's choices, hence the time, depend on the rate: ours-av1 across the range too
            + [f"ours-{c}={b:g}" for c in ("av1", "av1-fast", "av1-best") if c in our_codecs for b in SPEED_EXTRA_BPP]
        )
        log(f"speed and memory: {len(methods)} fresh processes, {SPEED_UPSCALE:g}x {names[0]}, {args.speed_bpp:g} bpp")
        speed = run_speed(images[names[0]], methods, args.speed_bpp, args.model)
    config["loadavg_end"] = list(os.getloadavg())
    config["wall_s"] = time.perf_counter() - t_start
    result = {"config": config, "rows": rows, "summary": summary, "speed": speed}
    _write_json(out / "results.json", result)
    plot_rd(curves, targets, codecs, "psnr", out / "rd_psnr.png", len(names))
    plot_rd(curves, targets, codecs, "ms_ssim", out / "rd_msssim.png", len(names))
    if any(grid.values()):
        write_grid(out / f"grid_{grid_bpp:g}.png", images, grid)
    write_summary(out / "summary.md", result, ".")  # figures sit next to the summary
    log(
        f"wrote {out}/results.json ({len(rows)} rows), rd_psnr.png, rd_msssim.png, grid_{grid_bpp:g}.png, summary.md "
        f"in {config['wall_s']:.0f} s"
    )
    return result


def _progress_line(name: str, t: float, rows: list[dict], codecs, budget: int, dt: float) -> str:
    def get(m):
        return next((r for r in rows if r["method"] == m and r["image"] == name and r["target_bpp"] == t), None)

    parts = []
    methods = (*OURS, ABLATION) if not codecs else (*(f"{c}@best" for c in codecs), ENVELOPE)
    for m in methods:
        r = get(m)
        if r is None:
            continue
        if r["status"] != "ok":
            parts.append(f"{m} {r['status']}")
        elif m in OURS:
            parts.append(f"{m} {r['bytes']}B {r['bpp']:.4f}bpp s={r['scale']:.2f} {r['psnr']:.2f}dB")
        elif m == ENVELOPE:
            parts.append(f"envelope {r['source']} {r['psnr']:.2f}dB")
        else:
            parts.append(f"{m.split('@')[0]} {r['psnr']:.2f}")
    when = "" if dt is None else f" ({dt:.1f} s)"
    return f"{name} {t:<6g} budget {budget}B{when}: " + " | ".join(parts)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="assr-eic bench", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench/results", help="output folder (default: bench/results)")
    p.add_argument("--model", help="model file (default: the shipped model)")
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke test: {QUICK_IMAGES} images, targets {', '.join(f'{t:g}' for t in QUICK_TARGETS)}",
    )
    p.add_argument("--data", default=".cache/data", help="where the Kodak crops are cached (fetched if missing)")
    p.add_argument("--images", help="comma-separated image names (default: all five, or two with --quick)")
    p.add_argument("--targets", help="comma-separated target bpp values (default: 0.005 ... 0.3)")
    p.add_argument("--codecs", help="comma-separated classical codecs (default: every available one)")
    p.add_argument("--scales", help="comma-separated classical downscale factors (default: 1,1.5,2,3,4,6)")
    p.add_argument(
        "--ours",
        default="av1,av1-fast,av1-best,learned",
        help="our base codecs to run, with -fast or -best for rate control's other efforts "
        "(default: av1,av1-fast,av1-best,learned)",
    )
    p.add_argument("--cache", default=".cache/bench/classical.json", help="classical-codec cache ('none': off)")
    p.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="worker processes for the classical codecs (1: inline)"
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads for the quality runs (default: 1)")
    p.add_argument("--speed-bpp", type=float, default=SPEED_BPP, help="target bpp of the speed/memory runs")
    p.add_argument(
        "--speed-methods",
        help="comma-separated methods for the speed runs; ours-X/1t limits torch to 1 thread, METHOD=BPP runs it "
        "at another target (default: ours-av1, ours-av1/1t, ours-av1-fast, ours-av1-best, ours-learned, "
        "ours-learned/1t, every classical codec, then the three ours-av1 efforts at 0.02, 0.1 and 0.2 bpp)",
    )
    p.add_argument("--no-speed", action="store_true", help="skip the speed and memory subprocesses")
    p.add_argument("--speed-worker", help=argparse.SUPPRESS)
    p.add_argument("--image", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.speed_worker:
        print(json.dumps(_nan_to_none(speed_worker(args.speed_worker, args.image, args.speed_bpp, args.model))))
        return 0
    import torch

    threads = torch.get_num_threads()
    try:
        run(args)
    finally:  # run() limits torch's threads; give the caller (a test session, say) its setting back
        torch.set_num_threads(threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The benchmark's reading: mean curves, BD-rates, the quality goal, rate control's landing, plots, summary."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from assr_eic.bitstream import FULL_STRENGTH
from bench.common import ABLATION, BD_RANGE, CROP, ENVELOPE, ENVELOPE_MSSSIM, OURS, SPEED_UPSCALE, fmt


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
    from assr_eic.metrics import bd_psnr, bd_rate

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

    from assr_eic.viz import labelled_grid

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
        return f"{p['psnr']:.2f} / {fmt(ms, '.4f')}{star}"

    L = [f"### Kodak crops ({n} images, 512x384): mean PSNR (dB) / MS-SSIM at matched rate", ""]
    L.append("| target bpp | ours bpp (av1 / learned) | " + " | ".join(h for _, h in cols) + " |")
    L.append("|---|---|" + "---|" * len(cols))
    for t in targets:
        k = f"{t:g}"
        bpp_a = curves.get("ours-av1", {}).get(k, {}).get("bpp")
        bpp_l = curves.get("ours-learned", {}).get(k, {}).get("bpp")
        L.append(
            f"| {k} | {fmt(bpp_a, '.4f')} / {fmt(bpp_l, '.4f')} | " + " | ".join(cell(m, k) for m, _ in cols) + " |"
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
                    f"{fmt(r.get('bpp'), '.4f')} bpp; model load {fmt(r.get('load_ms'), '.0f')} ms"
                )
                if r.get("fidelity_decoder") is False:
                    note += (
                        "; the file asks for bicubic (the decoder lost on this image), decoding it with the "
                        f"decoder takes {fmt(r.get('decode_with_decoder_ms'), '.0f')} ms"
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
                f"| {r['method']} | {fmt(enc, '.0f')} | {fmt(dec, '.0f')} | {fmt(tot, '.0f')} | "
                f"{fmt(cold, '.0f')} | {fmt(r.get('peak_rss_mb'), '.0f')} | "
                f"{fmt(r.get('peak_above_start_mb'), '.0f')} | {note} |"
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

"""The benchmark's evaluation sets side by side: what ASSR-EIC gains over the best classical codec on the
Kodak crops and on the 1-megapixel held-out set, from the two ``results.json`` files ``bench/kodak.py``
wrote.

    python bench/sets.py bench/results/results.json bench/results/mpx/results.json --out bench/results/sets

Writes ``sets.md`` (a table per target bpp: PSNR and MS-SSIM gain over the upper envelope of JPEG, WebP,
AVIF, JPEG XL and HEIC at every scale, mean and worst image, and what the fidelity decoder adds over plain
bicubic on the same file) and ``sets.png`` (the same as curves).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ABLATION, BD_RANGE, ENVELOPE, log, write_json

GOAL_MPX_DB = 1.5  # issue 20: on the 1-megapixel set, at every rate from 0.01 to 0.1 bpp


def set_figures(result: dict) -> dict[str, dict]:
    """Per target in the goal range: images, mean and worst PSNR gain of ours-av1 over the envelope, mean
    MS-SSIM gain, mean gain of the fidelity decoder over bicubic on the same file."""
    by = {(r["method"], r["image"], r["target_bpp"]): r for r in result["rows"] if r.get("psnr") is not None}
    out = {}
    for t in result["config"]["targets"]:
        if not BD_RANGE[0] <= t <= BD_RANGE[1]:
            continue
        images = [i for (m, i, tt) in by if m == "ours-av1" and tt == t and (ENVELOPE, i, t) in by]
        if not images:
            continue
        ours = [by["ours-av1", i, t] for i in images]
        env = [by[ENVELOPE, i, t] for i in images]
        env_ms = [by.get(("best-classical-msssim", i, t), by[ENVELOPE, i, t]) for i in images]
        d = [o["psnr"] - e["psnr"] for o, e in zip(ours, env, strict=True)]
        abl = [by["ours-av1", i, t]["psnr"] - by[ABLATION, i, t]["psnr"] for i in images if (ABLATION, i, t) in by]
        out[f"{t:g}"] = {
            "images": len(images),
            "of": len(result["config"]["images"]),
            "bpp": float(np.mean([o["bpp"] for o in ours])),
            "psnr": float(np.mean([o["psnr"] for o in ours])),
            "envelope_psnr": float(np.mean([e["psnr"] for e in env])),
            "psnr_gain_db": float(np.mean(d)),
            "psnr_gain_min_db": float(np.min(d)),
            "worst_image": images[int(np.argmin(d))],
            "ms_ssim_gain": float(np.mean([o["ms_ssim"] - e["ms_ssim"] for o, e in zip(ours, env_ms, strict=True)])),
            "decoder_over_bicubic_db": float(np.mean(abl)) if abl else None,
        }
    return out


def table(name: str, result: dict, figs: dict[str, dict]) -> list[str]:
    c = result["config"]
    lines = [
        f"### {name}: {len(c['images'])} images ({', '.join(c['images'])})",
        "",
        "| target bpp | images with a file | ours bpp | ours PSNR | envelope PSNR | gain (mean) | gain (worst image) "
        "| MS-SSIM gain | decoder over bicubic |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t, f in figs.items():
        abl = "-" if f["decoder_over_bicubic_db"] is None else f"{f['decoder_over_bicubic_db']:+.2f} dB"
        lines.append(
            f"| {t} | {f['images']}/{f['of']} | {f['bpp']:.4f} | {f['psnr']:.2f} | {f['envelope_psnr']:.2f} "
            f"| **{f['psnr_gain_db']:+.2f} dB** | {f['psnr_gain_min_db']:+.2f} dB ({f['worst_image']}) "
            f"| {f['ms_ssim_gain']:+.4f} | {abl} |"
        )
    return [*lines, "", *per_image(result), ""]


def per_image(result: dict) -> list[str]:
    """ours-av1 minus the envelope per image and target, with the classical variant that won."""
    by = {(r["method"], r["image"], r["target_bpp"]): r for r in result["rows"] if r.get("psnr") is not None}
    targets = [t for t in result["config"]["targets"] if BD_RANGE[0] <= t <= BD_RANGE[1]]
    lines = ["| image | " + " | ".join(f"{t:g} bpp" for t in targets) + " |", "|---|" + "---|" * len(targets)]
    for image in result["config"]["images"]:
        cells = []
        for t in targets:
            o, e = by.get(("ours-av1", image, t)), by.get((ENVELOPE, image, t))
            cells.append("-" if o is None or e is None else f"{o['psnr'] - e['psnr']:+.2f} ({e.get('source', '?')})")
        lines.append(f"| {image} | " + " | ".join(cells) + " |")
    return lines


def plot(sets: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for (name, figs), colour in zip(sets.items(), ("tab:red", "tab:blue"), strict=True):
        t = [float(k) for k in figs]
        axes[0].plot(t, [f["psnr_gain_db"] for f in figs.values()], "o-", color=colour, label=f"{name} (mean)")
        axes[0].plot(t, [f["psnr_gain_min_db"] for f in figs.values()], "v:", color=colour, label=f"{name} (worst)")
        axes[1].plot(t, [f["ms_ssim_gain"] for f in figs.values()], "o-", color=colour, label=name)
    axes[0].axhline(GOAL_MPX_DB, color="black", ls="--", lw=1, label=f"1-Mpx target +{GOAL_MPX_DB:g} dB")
    for ax, what in zip(axes, ("PSNR gain over the best classical codec (dB)", "MS-SSIM gain over it"), strict=True):
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("target bpp")
        ax.set_title(what, fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kodak", type=Path, help="results.json of the Kodak run")
    p.add_argument("mpx", type=Path, help="results.json of the --set mpx run")
    p.add_argument("--out", type=Path, default=Path("bench/results/sets"))
    a = p.parse_args(argv)
    results = {"Kodak crops (512x384)": json.loads(a.kodak.read_text()),
               "1-megapixel held-out (1024x1024)": json.loads(a.mpx.read_text())}  # fmt: skip
    sets = {name: set_figures(r) for name, r in results.items()}
    fp = {r["config"]["model_fingerprint"] for r in results.values()}
    a.out.mkdir(parents=True, exist_ok=True)
    md = [
        "# ASSR-EIC against the best classical codec, on both evaluation sets",
        "",
        f"ours-av1 (rate control's default effort) minus the per-image upper envelope of JPEG, WebP, AVIF, JPEG XL "
        f"and HEIC at every scale, at matched bytes. Model {', '.join(sorted(fp))}. Made by "
        f"`python bench/sets.py {a.kodak} {a.mpx} --out {a.out}`.",
        "",
        *[ln for name, r in results.items() for ln in table(name, r, sets[name])],
        "![gains on both sets](sets.png)",
        "",
    ]
    (a.out / "sets.md").write_text("\n".join(md))
    write_json(a.out / "sets.json", sets)
    plot(sets, a.out / "sets.png")
    log(f"wrote {a.out}/sets.md, sets.json, sets.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

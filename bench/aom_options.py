"""Which libaom options for the final encode: bytes at equal PSNR and encode time, against the shipped set.

    python bench/aom_options.py --out bench/results/aom_options

The speed target's hard case is a final encode at s = 1, so the frames are training photos (never the
Kodak crops), centre-cropped to 3:2 and resized to 768x512. Each variant changes one thing in the
options ``assr_eic.codec.av1`` uses (or the speed). Every quantizer of every photo is encoded by all
variants one after another, in an order that rotates. Interleaving them is what makes the time ratios
comparable on these drifting shared cores; the noise of a ratio is a few percent. Bytes are the compact
payload as a file stores it, and PSNR is of the frame decoded by the product's own dav1d path. BD-rate
is computed on the mean curves against the shipped options. Writes ``aom_options.json`` and
``aom_options.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUANTIZERS = [24, 28, 32, 36, 40, 44]  # about 0.1-0.4 bpp at 768x512 on these photos
SIZE = (768, 512)
# name -> (options changed from the shipped set, speed or None for the final's)
VARIANTS: dict[str, tuple[dict[str, str], int | None]] = {
    "shipped": ({}, None),
    "128x128 SB (libaom's choice)": ({"sb-size": "dynamic"}, None),
    "no rect partitions": ({"enable-rect-partitions": "0"}, None),
    "no AB partitions": ({"enable-ab-partitions": "0"}, None),
    "no 1:4 partitions": ({"enable-1to4-partitions": "0"}, None),
    "no TX64": ({"enable-tx64": "0"}, None),
    "no loop restoration": ({"enable-restoration": "0"}, None),
    "reduced TX set": ({"reduced-tx-type-set": "1"}, None),
    "no angle delta": ({"enable-angle-delta": "0"}, None),
    "no smooth intra": ({"enable-smooth-intra": "0"}, None),
    "no paeth intra": ({"enable-paeth-intra": "0"}, None),
    "no CfL": ({"enable-cfl-intra": "0"}, None),
    "speed 5": ({}, 5),
}


def photos(n: int) -> list[np.ndarray]:
    """``n`` training photos spread over the sorted list, as 768x512 uint8 arrays."""
    from PIL import Image

    from assr_eic.train.fetch import fetch_train_photos

    paths = sorted(fetch_train_photos(ROOT / ".cache" / "data"))
    if not paths:
        raise SystemExit("no training photos (python -m assr_eic.train.fetch fetches them)")
    out = []
    for p in paths[:: max(1, len(paths) // n)][:n]:
        with Image.open(p) as im:
            im = im.convert("RGB")
            if im.height > im.width:
                im = im.rotate(90, expand=True)
            w, h = im.size
            tw = min(w, h * 3 // 2)
            th = tw * 2 // 3
            left, top = (w - tw) // 2, (h - th) // 2
            im = im.crop((left, top, left + tw, top + th)).resize(SIZE, Image.Resampling.LANCZOS)
            out.append(np.asarray(im))
    return out


def plot(result: dict, path: Path) -> None:
    """BD-rate against time ratio per variant: all of them, and the crowd near the shipped set enlarged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = result["summary"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for ax, zoom in zip(axes, (False, True), strict=True):
        for n, v in summary.items():
            x, y = v["time_ratio"], v["bd_rate_vs_shipped"]
            if zoom and not (0.85 <= x <= 1.15 and -1 <= y <= 1.5):
                continue
            ax.scatter(x, y, color="black" if n == "shipped" else "tab:blue")
            ax.annotate(n, (x, y), fontsize=8, xytext=(4, 3), textcoords="offset points")
        ax.axhline(0, color="grey", lw=0.6)
        ax.axvline(1, color="grey", lw=0.6)
        ax.set(xlabel="encode time / shipped options (same run, interleaved)",
               ylabel="BD-rate vs shipped options (%; + = more bytes at equal PSNR)")  # fmt: skip
        ax.grid(alpha=0.3)
    axes[0].set_title(f"libaom options, {result['images']} training photos at 768x512")
    axes[1].set_title("near the shipped options")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench/results/aom_options")
    p.add_argument("--images", type=int, default=8, help="training photos")
    a = p.parse_args(argv)
    from assr_eic.codec import obu
    from assr_eic.codec.av1 import _AV1_OPTIONS, SPEED, AV1Codec, _avif_payload
    from assr_eic.metrics import bd_rate

    imgs = photos(a.images)
    codec = AV1Codec()
    names = list(VARIANTS)
    size = {n: np.zeros(len(QUANTIZERS)) for n in names}
    psnr = {n: np.zeros(len(QUANTIZERS)) for n in names}
    secs = dict.fromkeys(names, 0.0)
    turn = 0
    for k, rgb in enumerate(imgs):
        h, w = rgb.shape[:2]
        for i, qz in enumerate(QUANTIZERS):
            for n in names[turn % len(names) :] + names[: turn % len(names)]:
                opts, speed = VARIANTS[n]
                t = time.perf_counter()
                data = _avif_payload(rgb, qz, speed or SPEED["final"], {**_AV1_OPTIONS, **opts})
                secs[n] += time.perf_counter() - t
                y = codec.decode((data,), (h, w), 0).x_hat[0].permute(1, 2, 0).numpy() * 255
                mse = float(np.mean((np.round(y) - rgb.astype(np.float64)) ** 2))
                size[n][i] += len(obu.compact(data, h, w)) / len(imgs)
                psnr[n][i] += 10 * math.log10(255**2 / max(mse, 1e-9)) / len(imgs)
            turn += 1
        print(f"photo {k + 1}/{len(imgs)} done", flush=True)
    summary = {}
    for n in names:
        summary[n] = {
            "options": VARIANTS[n][0], "speed": VARIANTS[n][1] or SPEED["final"],
            "bd_rate_vs_shipped": bd_rate(size["shipped"], psnr["shipped"], size[n], psnr[n]),
            "time_ratio": secs[n] / secs["shipped"], "encode_ms_mean": secs[n] / len(imgs) / len(QUANTIZERS) * 1000,
            "mean_bytes": size[n].tolist(), "mean_psnr": psnr[n].tolist(),
        }  # fmt: skip
        print(f"{n:30s} BD-rate {summary[n]['bd_rate_vs_shipped']:+6.2f}%  time x{summary[n]['time_ratio']:.3f}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"command": "python bench/aom_options.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "shipped_options": _AV1_OPTIONS, "size": SIZE, "quantizers": QUANTIZERS,
              "images": len(imgs), "summary": summary}  # fmt: skip
    (out / "aom_options.json").write_text(json.dumps(result, indent=1))
    plot(result, out / "aom_options.png")
    print(f"wrote {out / 'aom_options.json'}, {out / 'aom_options.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

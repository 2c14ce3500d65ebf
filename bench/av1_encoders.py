"""Which AV1 encoder for the low-res image: SVT-AV1 (PyAV) against libaom (Pillow's AVIF writer).

    python bench/av1_encoders.py --out bench/results/av1_encoders

On the five Kodak crops downscaled by s (antialiased bicubic), every quantizer from 63 down to 19 in
steps of 4: payload bytes (raw OBUs, full form, as ``assr_eic.codec.av1`` stores them before
compaction) and PSNR of the decoded low-res image against its input, decoded by the same dav1d path.
BD-rate of each encoder against SVT-AV1 preset 10 (the encoder before libaom) per image and scale,
and the mean encode time, all measured in one run. Writes ``av1_encoders.json`` and ``av1_encoders.png``.
"""

from __future__ import annotations

import argparse
import fractions
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUANTIZERS = list(range(63, 18, -4))


def svt_payload(rgb: np.ndarray, quantizer: int, preset: int) -> bytes:
    """SVT-AV1 through PyAV at crf = quantizer, temporal delimiter removed (the earlier encoder)."""
    import av

    h, w = rgb.shape[:2]
    f = rgb.astype(np.float32)
    y = 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]
    u, v = (f[..., 2] - y) * 0.564 + 128, (f[..., 0] - y) * 0.713 + 128

    def pool(c: np.ndarray) -> np.ndarray:
        return c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))

    planes = [np.clip(np.rint(p), 0, 255).astype(np.uint8) for p in (y, pool(u), pool(v))]
    yuv = np.concatenate([p.ravel() for p in planes]).reshape(h * 3 // 2, w)
    os.environ.setdefault("SVT_LOG", "1")
    ctx = av.CodecContext.create("libsvtav1", "w")
    ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = w, h, "yuv420p", fractions.Fraction(1, 1)
    ctx.options = {"crf": str(quantizer), "preset": str(preset)}
    frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
    data = b"".join(bytes(p) for p in [*ctx.encode(frame), *ctx.encode(None)])
    return data[2:] if data.startswith(b"\x12\x00") else data


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench/results/av1_encoders")
    p.add_argument("--scales", default="2,3,4")
    p.add_argument("--aom-speeds", default="3,4,6,9")
    a = p.parse_args(argv)
    import torch
    from PIL import Image

    from assr_eic.codec.av1 import AV1Codec, _avif_payload, _padded_size
    from assr_eic.metrics import bd_rate
    from assr_eic.rescale import resize

    kodak = sorted((ROOT / ".cache" / "data" / "kodak").glob("*.png"))
    if not kodak:
        raise SystemExit("no Kodak crops in .cache/data/kodak (run scripts/setup.sh)")
    torch.set_num_threads(1)
    codec = AV1Codec()
    encoders = {"svt-p10": lambda rgb, qz: svt_payload(rgb, qz, 10)}
    for sp in (int(v) for v in a.aom_speeds.split(",")):
        encoders[f"aom-s{sp}"] = lambda rgb, qz, sp=sp: _avif_payload(rgb, qz, sp)
    curves: dict[str, dict[str, list]] = {}
    for f in kodak:
        x = torch.from_numpy(np.asarray(Image.open(f).convert("RGB")).copy()).permute(2, 0, 1)[None].float() / 255
        for s in (float(v) for v in a.scales.split(",")):
            h, w = round(x.shape[-2] / s), round(x.shape[-1] / s)
            lr = (resize(x, (h, w)).clamp(0, 1) * 255).round().byte()[0].permute(1, 2, 0).numpy()
            ph, pw = _padded_size(h, w)
            rgb = np.ascontiguousarray(np.pad(lr, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge"))
            key = f"{f.stem}@{s:g}"
            for name, enc in encoders.items():
                pts = []
                for qz in QUANTIZERS:
                    t = time.perf_counter()
                    data = enc(rgb, qz)
                    ms = (time.perf_counter() - t) * 1000
                    y = codec.decode((data,), (h, w), 0).x_hat[0].permute(1, 2, 0).numpy() * 255
                    mse = float(np.mean((np.round(y) - lr.astype(np.float64)) ** 2))
                    pts.append([len(data), 10 * math.log10(255**2 / max(mse, 1e-9)), ms])
                curves.setdefault(name, {})[key] = pts
            print(key, {n: curves[n][key][0][0] for n in encoders}, flush=True)
    summary = {}
    for name in encoders:
        bds = [
            bd_rate([r for r, _, _ in curves["svt-p10"][k]], [q for _, q, _ in curves["svt-p10"][k]],
                    [r for r, _, _ in curves[name][k]], [q for _, q, _ in curves[name][k]])
            for k in curves[name]
        ]  # fmt: skip
        ms = [t for k in curves[name] for _, _, t in curves[name][k]]
        summary[name] = {"bd_rate_vs_svt_p10_mean": float(np.nanmean(bds)), "bd_rate_per_curve": bds,
                         "encode_ms_mean": float(np.mean(ms))}  # fmt: skip
        print(f"{name:8s} BD-rate vs svt-p10 {summary[name]['bd_rate_vs_svt_p10_mean']:+.1f}%  "
              f"encode {summary[name]['encode_ms_mean']:.1f} ms", flush=True)  # fmt: skip
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"quantizers": QUANTIZERS, "scales": a.scales, "images": [f.stem for f in kodak],
              "curves": curves, "summary": summary, "threads": "torch 1; encoders their default"}  # fmt: skip
    (out / "av1_encoders.json").write_text(json.dumps(result, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(curves["svt-p10"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in encoders:
        r = np.mean([[pt[0] for pt in curves[name][k]] for k in keys], axis=0)
        q = np.mean([[pt[1] for pt in curves[name][k]] for k in keys], axis=0)
        label = f"{name} ({summary[name]['bd_rate_vs_svt_p10_mean']:+.1f}%, {summary[name]['encode_ms_mean']:.0f} ms)"
        axes[0].plot(r, q, marker="o", ms=3, label=label)
    axes[0].set_xscale("log")
    axes[0].set(xlabel="payload bytes (mean over images and scales)", ylabel="low-res PSNR (dB)",
                title="AV1 encoders on Kodak crops / s, s in {" + a.scales + "}")  # fmt: skip
    axes[0].legend(fontsize=8)
    axes[0].grid(alpha=0.3)
    names = list(encoders)
    axes[1].bar(names, [summary[n]["encode_ms_mean"] for n in names])
    axes[1].set(ylabel="mean encode ms (one low-res image)", title="encode time, same run")
    fig.tight_layout()
    fig.savefig(out / "av1_encoders.png", dpi=110)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

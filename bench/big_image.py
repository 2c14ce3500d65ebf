"""Peak memory and wall time of compress / decompress from 512^2 to 4096^2 pixels, each in a fresh process.

    python bench/big_image.py --out bench/results/big_image [--effort fast]

Each size runs twice in a fresh subprocess (torch on 1 thread): ``encode`` (rate control to a target
bpp: downsampling at several scales, base-codec encodes, sampled reconstructions) and ``decode`` (base
codec + tiled fidelity decoder to the full size, at full strength whatever the file asks for: the
costliest path). Peak RSS is the process's high-water mark
(``getrusage``); the baseline is the high-water mark once the model is loaded, the libraries warmed
up on a tiny image and the input (image or file) is in memory, so ``growth`` is the work itself.
Writes ``big_image.json`` and ``big_image.png``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

SIZES = (512, 1024, 2048, 4096)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_image(n: int):
    """A real photograph (a Kodak crop, else scikit-image's astronaut) resized to n x n."""
    import numpy as np
    from PIL import Image

    kodak = Path(__file__).resolve().parents[1] / ".cache" / "data" / "kodak" / "kodim03.png"
    if kodak.is_file():
        im = Image.open(kodak).convert("RGB")
    else:
        from skimage import data

        im = Image.fromarray(data.astronaut())
    return np.asarray(im.resize((n, n), Image.BICUBIC))


def worker(phase: str, n: int, codec: str, bpp: float, path: str, effort: str = "normal") -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from assr_eic.model import load_model
    from assr_eic.pipeline import compress, decompress

    model = load_model()
    warm = compress(np.zeros((64, 64, 3), np.uint8), scale=2.0, quality=0.5, codec=codec, model=model)
    decompress(warm, model=model)
    if phase == "encode":
        image = test_image(n)
        base = _rss_mb()
        t = time.perf_counter()
        data = compress(image, target_bpp=bpp, codec=codec, model=model, effort=effort)
        dt = time.perf_counter() - t
        Path(path).write_bytes(data)
        from assr_eic.bitstream import parse

        bs = parse(data)
        extra = {"bytes": len(data), "bpp": bs.bpp, "scale": bs.scale, "quality": bs.quality,
                 "strength": bs.decoder_strength}
    else:
        from dataclasses import replace

        from assr_eic.bitstream import FULL_STRENGTH, pack, parse

        # the costliest path, whatever strength the file asks for (0 would skip the decoder)
        data = pack(replace(parse(Path(path).read_bytes()), decoder_strength=FULL_STRENGTH))
        base = _rss_mb()
        t = time.perf_counter()
        out = decompress(data, model=model)
        dt = time.perf_counter() - t
        assert out.shape == (n, n, 3)
        extra = {}
    peak = _rss_mb()
    return {"phase": phase, "size": n, "pixels": n * n, "seconds": dt, "baseline_mb": base, "peak_mb": peak,
            "growth_mb": peak - base, **extra}  # fmt: skip


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for phase, marker in (("encode", "o"), ("decode", "s")):
        rows = [r for r in results if r["phase"] == phase]
        mpx = [r["pixels"] / 1e6 for r in rows]
        axes[0].plot(mpx, [r["growth_mb"] for r in rows], marker=marker, label=f"{phase}: peak - baseline")
        axes[0].plot(mpx, [r["peak_mb"] for r in rows], marker=marker, ls="--", label=f"{phase}: peak RSS")
        axes[1].plot(mpx, [r["seconds"] for r in rows], marker=marker, label=phase)
    rows = [r for r in results if r["phase"] == "decode"]
    mpx = [r["pixels"] / 1e6 for r in rows]
    axes[0].plot(mpx, [3 * r["pixels"] / 2**20 for r in rows], ls=":", c="grey", label="uint8 output (3 B/px)")
    axes[0].plot(mpx, [12 * r["pixels"] / 2**20 for r in rows], ls=":", c="k", label="one float RGB copy (12 B/px)")
    axes[0].set(xlabel="image size (Mpx)", ylabel="MB", title="memory")
    axes[1].set(xlabel="image size (Mpx)", ylabel="seconds (1 thread)", title="wall time")
    for ax in axes:
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench/results/big_image")
    p.add_argument("--sizes", default=",".join(map(str, SIZES)))
    p.add_argument("--codec", default="av1", choices=["av1", "learned"])
    p.add_argument("--bpp", type=float, default=0.05, help="rate-control target")
    p.add_argument("--effort", default="normal", choices=["normal", "fast", "best"], help="rate control's effort")
    p.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        phase, n, codec, bpp, path, effort = a.worker
        print(json.dumps(worker(phase, int(n), codec, float(bpp), path, effort)))
        return 0
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for n in (int(v) for v in a.sizes.split(",")):
        for phase in ("encode", "decode"):
            f = out / f"tmp_{n}.assr"
            cmd = [sys.executable, __file__, "--worker", phase, str(n), a.codec, str(a.bpp), str(f), a.effort]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            results.append(r)
            print(json.dumps(r), flush=True)
        f.unlink()
    summary = {
        "command": " ".join(["python", "bench/big_image.py", *(argv if argv is not None else sys.argv[1:])]),
        "codec": a.codec,
        "target_bpp": a.bpp,
        "effort": a.effort,
        "results": results,
    }
    for phase in ("encode", "decode"):
        rows = [r for r in results if r["phase"] == phase]
        if len(rows) >= 2:  # bytes of working memory per pixel between the smallest and largest size
            lo, hi = rows[0], rows[-1]
            summary[f"{phase}_growth_bytes_per_pixel"] = (
                (hi["growth_mb"] - lo["growth_mb"]) * 2**20 / (hi["pixels"] - lo["pixels"])
            )
    (out / "big_image.json").write_text(json.dumps(summary, indent=1))
    plot(results, out / "big_image.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

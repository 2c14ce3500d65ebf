"""The main job: compress and decompress sample photos with the shipped model, at a few rates.

Writes, under ``--out``: each ``.assr`` file, each decoded PNG, ``side_by_side.png`` (original next
to the decodes, captioned with bytes, bpp and PSNR) and ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from .bitstream import parse
from .metrics import psnr
from .model import load_model
from .pipeline import compress, decompress


def run(images: dict[str, np.ndarray], out: Path, rates: list[float], model_path: str | None = None) -> list[dict]:
    from PIL import Image

    from .viz import labelled_grid

    out.mkdir(parents=True, exist_ok=True)
    model = load_model(model_path)
    rows, tiles = [], []
    for name, img in images.items():
        H, W = img.shape[:2]
        tiles.append((img, f"{name} original {W}x{H}"))
        for bpp in rates:
            t0 = time.perf_counter()
            data = compress(img, target_bpp=bpp, model=model)
            t1 = time.perf_counter()
            rec = decompress(data, model=model)
            t2 = time.perf_counter()
            bs = parse(data)
            stem = f"{name}_{bpp:g}bpp"
            (out / f"{stem}.assr").write_bytes(data)
            Image.fromarray(rec).save(out / f"{stem}.png")
            row = {"image": name, "target_bpp": bpp, "bytes": len(data), "bpp": bs.bpp, "scale": bs.scale,
                   "quality": bs.quality, "psnr": psnr(img, rec), "encode_s": t1 - t0, "decode_s": t2 - t1}  # fmt: skip
            rows.append(row)
            tiles.append((rec, f"{len(data)} B  {bs.bpp:.4f} bpp  {row['psnr']:.2f} dB  s={bs.scale:.2f}"))
            print(
                f"{name:10s} target {bpp:<6g} -> {len(data):6d} bytes {bs.bpp:.4f} bpp  s={bs.scale:.2f} "
                f"q={bs.quality:.2f}  PSNR {row['psnr']:.2f} dB  enc {row['encode_s'] * 1000:.0f} ms "
                f"dec {row['decode_s'] * 1000:.0f} ms",
                flush=True,
            )
    Image.fromarray(labelled_grid(tiles, cols=len(rates) + 1)).save(out / "side_by_side.png")
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    print(f"wrote {len(rows)} files, {out / 'side_by_side.png'} and {out / 'results.json'}")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="assr-eic demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="out/demo", help="output folder")
    p.add_argument("--data", default=".cache/data", help="photo cache (scripts/demo.sh fills it)")
    p.add_argument("--rates", default="0.01,0.03,0.1", help="comma-separated target bpp values")
    p.add_argument("--model", help="model file (default: the shipped model)")
    a = p.parse_args(argv)
    from .train.data import load_eval_set

    try:  # the product never downloads: scripts/demo.sh fetches the photos first
        images = load_eval_set(Path(a.data))
    except FileNotFoundError as e:
        print(f"assr-eic demo: error: {e}", file=sys.stderr)
        return 2
    run(images, Path(a.out), [float(r) for r in a.rates.split(",")], a.model)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

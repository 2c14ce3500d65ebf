"""Rate cost of the learned codec's entropy-parameter grid on the Kodak crops (same s and q, bytes before/after).

    python bench/param_grid_rate.py --out bench/results/param_grid_rate.json

``PARAM_FRAC_BITS = 8`` reproduces the previous behaviour (the fixed-point hyper-decoder's own 2**-8
resolution, nothing coarser); 6 is the shipped grid (1/64). Files are encoded with the shipped model
and decoded back (latents compared to the encoder's) at each grid.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench/results/param_grid_rate.json")
    p.add_argument("--grids", default="8,7,6")
    p.add_argument("--scales", default="1.5,3")
    p.add_argument("--qualities", default="0.2,0.5,0.8")
    a = p.parse_args(argv)
    import numpy as np
    import torch
    from PIL import Image

    import assr_eic.codec.learned as learned
    from assr_eic.bitstream import quantize_quality, quantize_scale
    from assr_eic.model import load_model
    from assr_eic.pipeline import decode, encode_at, to_tensor

    torch.set_num_threads(1)
    model = load_model()
    kodak = sorted((Path(__file__).resolve().parents[1] / ".cache" / "data" / "kodak").glob("*.png"))
    if not kodak:
        raise SystemExit("no Kodak crops in .cache/data/kodak (run scripts/setup.sh)")
    images = {f.stem: to_tensor(np.asarray(Image.open(f).convert("RGB"))) for f in kodak}
    grids = [int(v) for v in a.grids.split(",")]
    rows = []
    for name, x in images.items():
        for s in (float(v) for v in a.scales.split(",")):
            for q in (float(v) for v in a.qualities.split(",")):
                row = {"image": name, "scale": s, "quality": q}
                for k in grids:
                    learned.PARAM_FRAC_BITS = k
                    enc = encode_at(model, x, "learned", quantize_scale(s), quantize_quality(q))
                    dec = decode(enc.data, model=model)
                    assert torch.equal(dec.lowres.symbols[0], enc.lowres.symbols[0])
                    row[f"bytes_k{k}"] = len(enc.data)
                rows.append(row)
                print(json.dumps(row), flush=True)
    base = grids[0]
    summary = {"command": " ".join(["python", "bench/param_grid_rate.py", *(argv or sys.argv[1:])]), "rows": rows}
    for k in grids[1:]:
        ratios = [r[f"bytes_k{k}"] / r[f"bytes_k{base}"] for r in rows]
        summary[f"k{k}_vs_k{base}"] = {
            "mean_bytes_change_pct": 100 * (float(np.mean(ratios)) - 1),
            "total_bytes_change_pct": 100
            * (sum(r[f"bytes_k{k}"] for r in rows) / sum(r[f"bytes_k{base}"] for r in rows) - 1),
            "max_bytes_change_pct": 100 * (max(ratios) - 1),
            "min_bytes_change_pct": 100 * (min(ratios) - 1),
        }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

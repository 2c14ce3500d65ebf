"""Diffusion decoder quality and consistency on a folder of images (writes JSON under bench/results/diffusion/).

For each image, scale s and realism: the file is coded (AV1, quality q), fidelity-decoded, and a "prior"
image stands in for what a diffusion model painted; three outputs are scored:
- ``fidelity``: the fidelity decode itself (the baseline);
- ``main``: the prior with main's post-sampling colour fix only (wavelet against the fidelity decode);
- ``consistent``: :func:`assr_eic.diffusion.consistency.keep_low_band` (the file's band kept, the prior's
  share above the low-res Nyquist by realism and uncertainty).
Figures: PSNR and MS-SSIM against the original; the consistency figure (the output downsampled by the
encoder's own downsampler against the file's decoded low-res image, PSNR, and its margin to the
fidelity decode's); the energy above the low-res Nyquist; LPIPS, DISTS and FID/KID on 256 px patches
only where their packages and weights exist locally (otherwise the JSON says why not; nothing is
downloaded).

The prior here is ``--prior noise`` (uniform noise: the worst case, what a random-weight checkpoint gives)
or ``--prior blur`` (the fidelity decode with band-limited noise added above the Nyquist: a stand-in for
invented texture). Real checkpoints go through ComfyUI (the nodes' consistency method is the same
function); their perceptual figures need real weights and a GPU, see bench/README.md.

    PYTHONPATH=$PWD .venv/bin/python bench/diffusion_quality.py --scales 2 4 8 --realism 0 0.5 1
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import torch

from assr_eic import pipeline
from assr_eic.bitstream import parse
from assr_eic.diffusion import uncertainty_map, wavelet_color_fix
from assr_eic.diffusion.consistency import band_energy, keep_low_band, lowpass, nyquist
from assr_eic.metrics import ms_ssim, psnr

OUT = Path(__file__).parent / "results" / "diffusion"


def images(folder: str | None, size: int) -> dict[str, np.ndarray]:
    """The images of ``folder`` (PNG/JPEG), or three scikit-image photographs, centre-cropped to ``size``."""
    if folder:
        paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        arrays = {p.stem: pipeline.load_image(p) for p in paths}
    else:
        from skimage import data

        arrays = {n: getattr(data, n)()[..., :3] for n in ("astronaut", "coffee", "chelsea")}
    out = {}
    for name, a in arrays.items():
        h, w = a.shape[:2]
        s = min(size, h, w)
        out[name] = np.ascontiguousarray(a[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s])
    return out


def prior(kind: str, fid: torch.Tensor, cutoff: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(fid.shape, generator=g)
    if kind == "noise":
        return noise
    hp = (noise - 0.5) - lowpass(noise - 0.5, cutoff)
    return (fid + 0.5 * hp).clamp(0, 1)


def perceptual_status() -> dict[str, str]:
    """Which perceptual metrics can run here (packages and weights already on disk); why not otherwise."""
    status = {}
    for metric, module in (("lpips", "lpips"), ("dists", "DISTS_pytorch"), ("fid_kid", "torchmetrics")):
        if importlib.util.find_spec(module) is None:
            status[metric] = f"not measured: the '{module}' package is not installed (its weights are not here)"
        else:
            status[metric] = f"not measured: '{module}' is installed but this script loads no weights it would fetch"
    return status


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default=None, help="folder of images (default: three scikit-image photographs)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--scales", type=float, nargs="+", default=[2.0, 4.0, 8.0])
    ap.add_argument("--realism", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    ap.add_argument("--quality", type=float, default=0.3)
    ap.add_argument("--prior", choices=("noise", "blur"), default="noise")
    ap.add_argument("--out", default=str(OUT / "diffusion_quality.json"))
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = pipeline.load_model(None)
    rows = []
    t0 = time.perf_counter()
    for name, img in images(args.images, args.size).items():
        x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
        for s in args.scales:
            data = pipeline.compress(img, scale=s, quality=args.quality, codec="av1", model=model)
            bs = parse(data)
            dec = pipeline.decode(bs, model=model)
            fid, y = dec.image.clamp(0, 1).float(), dec.lowres.x_hat.clamp(0, 1).float()
            u = torch.nn.functional.interpolate(uncertainty_map(y, dec.lowres), size=fid.shape[-2:], mode="bilinear")

            def down(z, bs=bs):
                return pipeline.downsample(model, z, bs.codec, bs.scale_code)

            cut = nyquist(fid.shape[-1] / y.shape[-1])
            p_fid = psnr(down(fid), y)
            for r in args.realism:
                gen = prior(args.prior, fid, cut, seed=len(rows))
                outs = {
                    "fidelity": fid,
                    "main": wavelet_color_fix(gen, fid),
                    "consistent": keep_low_band(gen, fid, y, down, r, u),
                }
                for method, out in outs.items():
                    c = psnr(down(out), y)
                    rows.append({
                        "image": name, "s": s, "bpp": bs.bpp, "realism": r, "method": method,
                        "psnr": psnr(out, x), "ms_ssim": ms_ssim(out, x),
                        "consistency_psnr": c, "consistency_margin_db": c - p_fid,
                        "energy_above_nyquist": band_energy(out - fid, cut),
                    })  # fmt: skip
                    print(json.dumps(rows[-1]), flush=True)
    holds = all(r["consistency_margin_db"] >= -1.0 for r in rows if r["method"] == "consistent")
    misses = [r["consistency_margin_db"] for r in rows if r["method"] == "main"]
    result = {
        "prior": args.prior,
        "quality": args.quality,
        "note": "the prior is a stand-in (no real checkpoint): these figures measure the consistency step, not "
        "a diffusion model's quality",
        "consistency_within_1db_of_fidelity": holds,
        "main_margin_db_range": [min(misses), max(misses)],
        "perceptual": perceptual_status(),
        "seconds": time.perf_counter() - t0,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"consistency holds: {holds}; main's margin {min(misses):.1f} to {max(misses):.1f} dB; wrote {args.out}")


if __name__ == "__main__":
    main()

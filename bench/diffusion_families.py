"""The diffusion decoder's prior-independent figures on every checkpoint family, in a real ComfyUI.

    .venv/bin/python bench/diffusion_families.py --scales 2 4 8 --out bench/results/diffusion

ComfyUI (the tree ``scripts/fetch_comfyui.sh`` puts in ``.cache/comfyui``) is imported into this process on
the CPU with the pack loaded, and each family's random-weight fixture (``tests/comfy/diffusion_families.py``:
SD 1.x, SD 2.x-v, SDXL, SD 3.x, Flux, detected by ComfyUI's own Load Diffusion Model) decodes a real 64x64
photograph crop coded at each scale s, at realism 0, 0.5 and 1, through the stock KSampler (Prepare +
KSampler + VAE Decode + Color Fix) and through the all-in-one node. Per row: the consistency figure (the
output downsampled by s against the file's low-res image, PSNR) beside the fidelity decode's, the margin
(must be >= -1 dB), main's wavelet colour fix for comparison, and the energy above the low-res Nyquist
(must grow with realism). Random weights make noise: these figures measure the sampler, not the prior.
Writes ``families.json`` and ``families.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "comfy"))

import diffusion_families  # noqa: E402
import harness  # noqa: E402

FAMILIES = ("sd1", "sd2", "sdxl", "sd3", "flux")


def summarise(results: list[dict]) -> dict:
    """Whether every row keeps the consistency figure within 1 dB and energy grows with realism, per path."""
    margins = [r["psnr"] - r["fidelity_psnr"] for f in results for r in f["rows"]]
    rising = []
    for f in results:
        for path in ("ksampler", "all-in-one"):
            e = [r["energy_above_nyquist"] for r in f["rows"] if r["path"] == path]
            rising.append(all(a < b for a, b in zip(e, e[1:], strict=False)))
    return {
        "consistency_within_1db_of_fidelity": all(m >= -1.0 for m in margins),
        "margin_db_range": [min(margins), max(margins)],
        "energy_rises_with_realism": all(rising),
    }


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colours = {f: f"C{i}" for i, f in enumerate(FAMILIES)}
    styles = {2.0: ":", 4.0: "-", 8.0: "--"}
    for f in results:
        for path_name, marker in (("ksampler", "o"), ("all-in-one", "s")):
            rows = [r for r in f["rows"] if r["path"] == path_name]
            style = dict(color=colours[f["family"]], ls=styles.get(round(f["scale"]), "-."), marker=marker, alpha=0.7)
            realism = [r["realism"] for r in rows]
            axes[0].plot(realism, [r["psnr"] - r["fidelity_psnr"] for r in rows], **style)
            axes[1].plot(realism, [r["energy_above_nyquist"] for r in rows], **style)
    handles = [plt.Line2D([], [], color=c, label=f) for f, c in colours.items()]
    handles += [plt.Line2D([], [], color="k", ls=ls, label=f"s = {s:g}") for s, ls in styles.items()]
    handles += [plt.Line2D([], [], color="k", marker=m, ls="", label=n) for n, m in (("KSampler", "o"),
                                                                                      ("all-in-one", "s"))]
    axes[0].axhline(-1.0, color="k", ls="--", lw=1)
    axes[0].set(xlabel="realism", ylabel="consistency PSNR - fidelity decode's (dB)", title="kept: >= -1 dB")
    axes[1].set(xlabel="realism", ylabel="energy above the low-res Nyquist", yscale="log", title="freedom")
    axes[0].legend(handles=handles, fontsize=7, ncol=2)
    fig.suptitle("Diffusion decoder on random-weight fixtures of each family (measures the sampler, not the prior)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scales", type=float, nargs="+", default=[2.0, 4.0, 8.0])
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "diffusion")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    base = harness.make_base(Path(tempfile.mkdtemp(prefix="assr-families-")))
    nodes = harness.import_comfy(harness.fetch_comfyui(), base)
    assr_model = diffusion_families.run_node(nodes, "ASSR_LoadModel", model_name="default (built-in)")[0]
    results = []
    for s in a.scales:
        item = diffusion_families.coded_item(nodes, assr_model, s)
        for family in a.families:
            f = diffusion_families.family_figures(nodes, base / "models", assr_model, item, family)
            for r in f["rows"]:
                print(f"{family:5s} s={s:g} {r['path']:10s} realism {r['realism']}: {r['psnr']:.2f} dB "
                      f"(fidelity {r['fidelity_psnr']:.2f}) energy {r['energy_above_nyquist']:.5f}", flush=True)
            results.append(f)
    out = {
        "prior": "random weights (noise): the figures measure the sampler, not a diffusion model's quality",
        **summarise(results),
        "seconds": time.perf_counter() - t0,
        "families": results,
    }
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "families.json").write_text(json.dumps(out, indent=1))
    plot(results, a.out / "families.png")
    print(json.dumps({k: v for k, v in out.items() if k != "families"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

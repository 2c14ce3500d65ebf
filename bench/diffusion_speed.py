"""Diffusion decoder speed on these CPUs with the real SD 1.5 layout (random weights; no SD weights exist here).

Times per UNet step with and without the ASSR adaptor, peak memory (process RSS, sampled every 10 ms) and the
total decode time of a real ``.assr`` file: fidelity decode -> VAE encode -> img2img steps (adaptor + UNet,
latent tiles of 64 with overlap 16 above 512 px, consistency step each step) -> VAE decode (tiled above
512 px) -> wavelet colour fix. Writes JSON and a PNG plot under bench/results/diffusion/.

    PYTHONPATH=$PWD .venv/bin/python bench/diffusion_speed.py --threads 1 --steps 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import threading
import time
from pathlib import Path

import numpy as np
import torch

from assr_eic import pipeline
from assr_eic.diffusion import ASSRAdaptor, Degradation, consistency_step, uncertainty_map, wavelet_color_fix
from assr_eic.diffusion.sampler import img2img_timesteps, sd_alphas_cumprod, tile_boxes, tiled

OUT = Path(__file__).parent / "results" / "diffusion"
SD15_UNET = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
}
SD15_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Peak:
    """Peak resident memory while the block runs (a thread samples /proc/self/statm every 10 ms)."""

    def __enter__(self):
        self.peak, self.stop = rss(), False
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()
        self.t0 = time.perf_counter()
        return self

    def _run(self):
        while not self.stop:
            self.peak = max(self.peak, rss())
            time.sleep(0.01)

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        self.stop = True
        self.t.join()
        self.peak = max(self.peak, rss())


def make_eps(unet, adaptor, ctx, fid, unc, dvec, tile: int):
    """eps(x, t, with_adaptor): the UNet (plus the adaptor's residuals) over latent tiles of ``tile``."""

    def eps(x, t, with_adaptor: bool):
        def one(xt, box):
            y0, y1, x0, x1 = box
            if not with_adaptor:
                return unet(xt, t, ctx).sample
            win = (..., slice(8 * y0, 8 * y1), slice(8 * x0, 8 * x1))
            res = adaptor(xt, t, fid[win], dvec, unc[win])
            out = unet(xt, t, ctx, down_block_additional_residuals=res.down, mid_block_additional_residual=res.mid)
            return out.sample

        return tiled(one, x, tile, 16)

    return eps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=2, help="img2img steps actually run (strength 1.0 of a N-step plan)")
    p.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    p.add_argument("--tile", type=int, default=64, help="latent tile side (64 = 512 px)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from skimage import data

    torch.manual_seed(0)
    t0 = time.perf_counter()
    unet = UNet2DConditionModel(**SD15_UNET).eval()
    vae = AutoencoderKL(**SD15_VAE).eval()
    adaptor = ASSRAdaptor().eval()
    with torch.no_grad():  # a non-zero adaptor costs the same as a trained one; make it non-trivial anyway
        for n, q in adaptor.named_parameters():
            if "zero_convs" in n or "mid_out" in n or "modulator.heads" in n:
                q.normal_(0, 1e-3)
    build_s = time.perf_counter() - t0
    ctx = torch.randn(1, 77, 768)  # a prompt's CLIP embedding (CLIP encode is ~0.1 s; not timed here)
    photo = np.ascontiguousarray(data.astronaut()[:512, :512])
    blob = pipeline.compress(photo, scale=4.0, quality=0.3)
    deg = Degradation.from_bitstream(pipeline.parse(blob))
    ac = sd_alphas_cumprod()
    results = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, {a.threads} thread(s)",
        "unet_params_M": sum(q.numel() for q in unet.parameters()) / 1e6,
        "vae_params_M": sum(q.numel() for q in vae.parameters()) / 1e6,
        "adaptor_params_M": sum(q.numel() for q in adaptor.parameters()) / 1e6,
        "build_s": build_s,
        "file_bpp": deg.bpp,
        "sizes": {},
    }
    print(json.dumps({k: v for k, v in results.items() if k != "sizes"}), flush=True)
    for size in a.sizes:
        r: dict = {}
        tiles_on = size > 512
        vae.disable_tiling()
        if tiles_on:
            vae.enable_tiling()
        with torch.no_grad(), Peak() as total:
            with Peak() as ph:
                dec = pipeline.decode(blob, size=(size, size))
                fid, unc = dec.image.clamp(0, 1), uncertainty_map(dec.lowres.x_hat, dec.lowres)
                unc = torch.nn.functional.interpolate(unc, size=(size, size), mode="bilinear")
            r["fidelity_decode_s"] = ph.seconds
            with Peak() as ph:
                z_ref = vae.encode(fid * 2 - 1).latent_dist.mean * vae.config.scaling_factor
            r["vae_encode_s"], r["vae_encode_peak_gb"] = ph.seconds, ph.peak / 2**30
            dvec = deg.vector()[None]

            eps = make_eps(unet, adaptor, ctx, fid, unc, dvec, a.tile)

            ts = img2img_timesteps(a.steps, 1.0)
            g = torch.Generator().manual_seed(0)
            x = torch.randn(z_ref.shape, generator=g)
            with Peak() as ph:
                eps(x, torch.tensor([ts[0]]), False)
            r["unet_step_s"], r["unet_step_peak_gb"] = ph.seconds, ph.peak / 2**30
            step_times = []
            with Peak() as steps_peak:
                for i, t in enumerate(ts):
                    ts0 = time.perf_counter()
                    at = ac[t].float()
                    ap = ac[ts[i + 1]].float() if i + 1 < len(ts) else torch.tensor(1.0)
                    e = eps(x, torch.tensor([t]), True)
                    x0 = consistency_step((x - (1 - at).sqrt() * e) / at.sqrt(), z_ref, 1 - unc, 0.5, 2.0)
                    e = (x - at.sqrt() * x0) / (1 - at).sqrt()
                    x = ap.sqrt() * x0 + (1 - ap).sqrt() * e
                    step_times.append(time.perf_counter() - ts0)
            r["adaptor_step_s"] = float(np.mean(step_times))
            r["adaptor_step_times_s"] = step_times
            r["adaptor_steps_peak_gb"] = steps_peak.peak / 2**30
            with Peak() as ph:
                img = (vae.decode(x0 / vae.config.scaling_factor).sample * 0.5 + 0.5).clamp(0, 1)
                img = wavelet_color_fix(img, fid)
            r["vae_decode_s"], r["vae_decode_peak_gb"] = ph.seconds, ph.peak / 2**30
        r["tiles_per_step"] = len(tile_boxes(size // 8, size // 8, a.tile, 16))
        r["steps"] = len(ts)
        r["total_decode_s"], r["total_peak_gb"] = total.seconds, total.peak / 2**30
        r["adaptor_overhead"] = r["adaptor_step_s"] / r["unet_step_s"] - 1
        results["sizes"][str(size)] = r
        print(json.dumps({size: r}), flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "diffusion_speed.json").write_text(json.dumps(results, indent=1))
    plot(results, OUT / "diffusion_speed.png")
    print(f"wrote {OUT / 'diffusion_speed.json'}")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = list(results["sizes"])
    rs = [results["sizes"][s] for s in sizes]
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    xs = np.arange(len(sizes))
    ax[0].bar(xs - 0.2, [r["unet_step_s"] for r in rs], 0.4, label="UNet step")
    ax[0].bar(xs + 0.2, [r["adaptor_step_s"] for r in rs], 0.4, label="UNet + adaptor + consistency")
    ax[0].set_xticks(xs, [f"{s}x{s}" for s in sizes])
    ax[0].set_ylabel("seconds per step")
    ax[0].legend()
    parts = ["fidelity_decode_s", "vae_encode_s", "adaptor_step_s", "vae_decode_s"]
    bottom = np.zeros(len(sizes))
    for k in parts:
        v = np.array([r[k] * (r["steps"] if k == "adaptor_step_s" else 1) for r in rs])
        ax[1].bar(xs, v, 0.5, bottom=bottom, label=k.replace("_s", "").replace("adaptor_step", "sampling"))
        bottom += v
    for i, r in enumerate(rs):
        ax[1].text(i, bottom[i], f"peak {r['total_peak_gb']:.1f} GB", ha="center", va="bottom")
    ax[1].set_xticks(xs, [f"{s}x{s}" for s in sizes])
    ax[1].set_ylabel(f"total decode seconds ({rs[0]['steps']} steps)")
    ax[1].legend(fontsize=8)
    fig.suptitle(f"SD 1.5 layout, random weights, CPU: {results['machine']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()

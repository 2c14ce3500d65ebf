"""Speed and peak memory, one fresh subprocess per method on the benchmark's 768x512 image."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from assr_eic.bitstream import FULL_STRENGTH
from bench.common import SCALES, SPEED_SIZE, SPEED_UPSCALE, fmt, log
from bench.ours import ours_spec

ROOT = Path(__file__).resolve().parents[1]


def _mem() -> tuple[float, float]:
    """(VmHWM, VmRSS) of this process in MB."""
    vals = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmHWM:", "VmRSS:")):
                k, v = line.split(":")
                vals[k] = int(v.split()[0]) / 1024
    return vals.get("VmHWM", math.nan), vals.get("VmRSS", math.nan)


def _reset_hwm() -> bool:
    """Reset the RSS high-water mark to the current RSS (Linux >= 4.0); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def speed_worker(method: str, image_path: str, bpp: float, model_path: str | None) -> dict:
    """Run in a fresh subprocess: encode + decode one image with ``method``, timed, with peak memory."""
    from PIL import Image

    with Image.open(image_path) as im:
        img = np.array(im.convert("RGB"))
    H, W = img.shape[:2]
    res: dict = {"method": method, "width": W, "height": H, "target_bpp": bpp}
    base, _, threads = method.partition("/")
    if base.startswith("ours-"):
        import torch

        from assr_eic.bitstream import pack, parse
        from assr_eic.model import load_model
        from assr_eic.pipeline import compress, decompress

        if threads:  # "ours-av1/1t": torch limited to that many threads
            torch.set_num_threads(int(threads.rstrip("t")))
        t = time.perf_counter()
        model = load_model(model_path)
        res["load_ms"] = (time.perf_counter() - t) * 1000
        res["torch_threads"] = torch.get_num_threads()
        codec, res["effort"] = ours_spec(base[5:])
        res["start_rss_mb"] = _mem()[1]
        res["hwm_reset"] = _reset_hwm()
        for run in ("cold", "warm"):  # cold: first use in the process (lazy imports, allocator warm-up)
            t0 = time.perf_counter()
            data = compress(img, target_bpp=bpp, codec=codec, model=model, effort=res["effort"])
            t1 = time.perf_counter()
            decompress(data, model=model)
            t2 = time.perf_counter()
            res[f"{run}_encode_ms"], res[f"{run}_decode_ms"] = (t1 - t0) * 1000, (t2 - t1) * 1000
        res["bytes"], res["bpp"] = len(data), len(data) * 8 / (H * W)
        bs = parse(data)
        res["fidelity_decoder"], res["decoder_strength"] = bs.decoder_strength > 0, bs.decoder_strength
        if bs.decoder_strength == 0:  # rate control chose bicubic for this file: also time the decoder it skipped
            forced = pack(replace(bs, decoder_strength=FULL_STRENGTH))
            t = time.perf_counter()
            decompress(forced, model=model)
            res["decode_with_decoder_ms"] = (time.perf_counter() - t) * 1000
    else:
        from assr_eic.baselines import downscaled_size, get_codec, highest_fitting, pil_resize

        c = get_codec(base)
        c.require()
        budget = math.floor(bpp * H * W / 8)
        res["start_rss_mb"] = _mem()[1]
        res["hwm_reset"] = _reset_hwm()
        t0 = time.perf_counter()
        found = None
        for s in SCALES:  # the first scale where the codec fits the budget at all
            lr = pil_resize(img, downscaled_size(H, W, s))
            q = highest_fitting(lambda q, lr=lr: len(c.encode(lr, q)), c.q_min, c.q_max, budget)
            if q is not None:
                found = (s, q)
                break
        res["search_ms"] = (time.perf_counter() - t0) * 1000
        if found is not None:
            s, q = found
            res["scale"], res["quality"] = float(s), q
            for run in ("cold", "warm"):
                t0 = time.perf_counter()
                data = c.encode(pil_resize(img, downscaled_size(H, W, s)), q)
                t1 = time.perf_counter()
                pil_resize(c.decode(data), (H, W))
                t2 = time.perf_counter()
                res[f"{run}_encode_ms"], res[f"{run}_decode_ms"] = (t1 - t0) * 1000, (t2 - t1) * 1000
            res["bytes"], res["bpp"] = len(data), len(data) * 8 / (H * W)
    hwm, rss = _mem()
    res["peak_rss_mb"] = hwm
    res["peak_above_start_mb"] = hwm - res["start_rss_mb"] if res["hwm_reset"] else None
    return res


def speed_image(img: np.ndarray):
    """The speed runs' image: ``img`` upscaled by :data:`SPEED_UPSCALE`, the middle ``SPEED_SIZE`` (a PIL image)."""
    from PIL import Image

    H, W = img.shape[:2]
    big = Image.fromarray(img).resize((round(W * SPEED_UPSCALE), round(H * SPEED_UPSCALE)), Image.Resampling.BICUBIC)
    w, h = SPEED_SIZE  # 768x576 -> the middle 768x512
    left, top = (big.width - w) // 2, (big.height - h) // 2
    return big.crop((left, top, left + w, top + h))


def run_speed(img: np.ndarray, methods: list[str], bpp: float, model_path: str | None) -> list[dict]:
    """One fresh subprocess per method on ``img`` upscaled by 1.5 and cropped to ``SPEED_SIZE`` (768x512)."""
    big = speed_image(img)
    out = []
    with tempfile.TemporaryDirectory(prefix="assr-bench-") as tmp:
        path = Path(tmp) / "speed.png"
        big.save(path)
        for label in methods:
            m, _, at = label.partition("=")  # "ours-av1=0.1": that method at another target bpp
            cmd = [
                sys.executable,
                "-m",
                "bench.kodak",
                "--speed-worker",
                m,
                "--image",
                str(path),
                "--speed-bpp",
                at or str(bpp),
            ] + (["--model", model_path] if model_path else [])
            t = time.perf_counter()
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), env.get("PYTHONPATH"))))
            if "/" in m:  # a thread limit for everything in that process, OpenMP included
                env["OMP_NUM_THREADS"] = m.partition("/")[2].rstrip("t")
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
            wall = time.perf_counter() - t
            lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
            if p.returncode != 0 or not lines:
                res = {"method": label, "error": (p.stderr.strip().splitlines() or ["no output"])[-1]}
            else:
                res = json.loads(lines[-1])
                res["method"] = label
            res["process_wall_s"] = wall
            res["loadavg_1m_after"] = os.getloadavg()[0]  # how busy the cores were (other jobs share them)
            out.append(res)
            log(f"  speed {label:14s} " + speed_text(res))
    return out


def speed_text(r: dict) -> str:
    if "error" in r:
        return f"error: {r['error']}"
    return (
        f"enc {fmt(r.get('warm_encode_ms'), '.0f')} ms (cold {fmt(r.get('cold_encode_ms'), '.0f')}), "
        f"dec {fmt(r.get('warm_decode_ms'), '.0f')} ms, peak RSS {fmt(r.get('peak_rss_mb'), '.0f')} MB "
        f"(+{fmt(r.get('peak_above_start_mb'), '.0f')} MB over start)"
    )

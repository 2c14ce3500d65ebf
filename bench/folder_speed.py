"""Folder mode against one CLI call per image: images per second on N images of 768x512.

The images are made from the offline photos bundled with scikit-image (astronaut, chelsea, coffee,
rocket, hubble_deep_field, immunohistochemistry) and scikit-learn (china, flower): each photo resized
(bicubic) to cover 768x512 at a zoom of 1.0 to 1.9, cropped at an offset that moves with the image
index, mirrored every other time, saved as PNG. Then, in one run, with the shipped model at --bpp:

- ``separate``: ``assr-eic compress IMG -o OUT.assr --bpp X``, one fresh process per image, one after the other
  (what a shell loop does; every call pays python + torch start-up and the model load);
- ``folder``: ``assr-eic compress DIR -o OUT --bpp X --workers W``, one process;

and checks that both wrote the same bytes. Writes ``folder_speed.json`` and ``folder_speed.png``.

    .venv/bin/python bench/folder_speed.py --n 100 --out bench/results/folder_speed

The machine's cores are shared: the load average before and after each part is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "assr_eic.cli"]
SIZE = (768, 512)  # width, height


def source_photos() -> dict[str, np.ndarray]:
    from skimage import data
    from sklearn.datasets import load_sample_images

    photos = {n: getattr(data, n)() for n in ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
                                              "immunohistochemistry")}  # fmt: skip
    sk = load_sample_images()
    for name, img in zip(sk.filenames, sk.images, strict=True):
        photos[Path(name).stem] = img
    return {k: np.ascontiguousarray(v[..., :3]) for k, v in photos.items()}


def make_images(folder: Path, n: int) -> list[Path]:
    """``n`` distinct 768x512 PNGs (see the module docstring)."""
    photos = list(source_photos().items())
    W, H = SIZE
    paths = []
    for i in range(n):
        name, img = photos[i % len(photos)]
        zoom = 1.0 + 0.1 * ((i // len(photos)) % 10)
        h, w = img.shape[:2]
        f = max(W / w, H / h) * zoom
        big = Image.fromarray(img).resize((max(W, round(w * f)), max(H, round(h * f))), Image.BICUBIC)
        dx, dy = big.width - W, big.height - H
        x0, y0 = (i * 37) % (dx + 1), (i * 23) % (dy + 1)
        crop = big.crop((x0, y0, x0 + W, y0 + H))
        if (i // len(photos)) % 2:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        p = folder / f"{i:03d}_{name}.png"
        crop.save(p)
        paths.append(p)
    return paths


def load() -> float:
    return round(os.getloadavg()[0], 2)


def run_separate(images: list[Path], out: Path, bpp: float) -> dict:
    out.mkdir()
    before = load()
    times = []
    t0 = time.perf_counter()
    for p in images:
        t = time.perf_counter()
        subprocess.run([*CLI, "compress", str(p), "-o", str(out / f"{p.stem}.assr"), "--bpp", str(bpp)],
                       check=True, capture_output=True, timeout=600)  # fmt: skip
        times.append(time.perf_counter() - t)
    wall = time.perf_counter() - t0
    return {"wall_s": round(wall, 2), "images_per_s": round(len(images) / wall, 4),
            "per_call_s": [round(x, 3) for x in times], "load_before": before, "load_after": load()}  # fmt: skip


def run_folder(src: Path, out: Path, bpp: float, workers: int) -> dict:
    before = load()
    t0 = time.perf_counter()
    subprocess.run([*CLI, "compress", str(src), "-o", str(out), "--bpp", str(bpp), "--workers", str(workers)],
                   check=True, capture_output=True, timeout=3600)  # fmt: skip
    wall = time.perf_counter() - t0
    rows = json.loads((out / "summary.json").read_text())["files"]
    n = len(rows)
    return {"wall_s": round(wall, 2), "images_per_s": round(n / wall, 4), "workers": workers,
            "per_file_s": [round(r["seconds"], 3) for r in sorted(rows, key=lambda r: r["input"])],
            "statuses": sorted({r["status"] for r in rows}), "load_before": before, "load_after": load()}  # fmt: skip


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    names = ["separate CLI calls", f"folder mode, {res['folder']['workers']} workers"]
    ips = [res["separate"]["images_per_s"], res["folder"]["images_per_s"]]
    a.bar(names, ips, color=["#999", "#36c"])
    a.set_ylabel("images per second")
    a.set_title(f"{res['n']} images 768x512 at {res['bpp']} bpp: {res['ratio']:.2f}x")
    b.hist([res["separate"]["per_call_s"], res["folder"]["per_file_s"]], bins=30, label=["one CLI call (wall)",
           "one file in a worker"])  # fmt: skip
    b.set_xlabel("seconds")
    b.set_ylabel("images")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--bpp", type=float, default=0.02)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "folder_speed"))
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        images = make_images(tmp / "in", a.n)
        sep = run_separate(images, tmp / "separate", a.bpp)
        fol = run_folder(tmp / "in", tmp / "folder", a.bpp, a.workers)
        same = all(
            (tmp / "separate" / f"{p.stem}.assr").read_bytes() == (tmp / "folder" / f"{p.stem}.assr").read_bytes()
            for p in images
        )
    res = {
        "n": a.n, "size": "768x512", "bpp": a.bpp, "separate": sep, "folder": fol,
        "ratio": round(fol["images_per_s"] / sep["images_per_s"], 3), "target_ratio": 1.7,
        "outputs_byte_identical": same, "cpu_count": os.cpu_count(), "python": platform.python_version(),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                 cwd=REPO).stdout.strip(),
    }  # fmt: skip
    (out / "folder_speed.json").write_text(json.dumps(res, indent=1))
    plot(res, out / "folder_speed.png")
    print(
        f"separate {sep['images_per_s']:.3f} img/s ({sep['wall_s']} s), folder {fol['images_per_s']:.3f} img/s "
        f"({fol['wall_s']} s), ratio {res['ratio']:.2f}x (target 1.7x), identical outputs: {same}"
    )
    return 0 if same and fol["statuses"] == ["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

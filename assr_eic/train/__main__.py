"""``python -m assr_eic.train {av1,learned} ...``: train a part of the model and write a model file.

Examples::

    python -m assr_eic.train av1 --minutes 40 --out model.safetensors
    python -m assr_eic.train learned --init model.safetensors --minutes 25 --out model.safetensors
    torchrun --nproc-per-node 8 -m assr_eic.train learned --minutes 600 ...   # same code, many GPUs

Training data: the photos fetched by ``python -m assr_eic.train.fetch`` into ``--data`` (never the
Kodak evaluation crops). Interrupted runs resume from ``--workdir`` when started again.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from ..model import ASSRModel


def photo_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not files:
        raise SystemExit(f"no training photos in {folder}; run: python -m assr_eic.train.fetch --cache {folder.parent}")
    return files


def split(files: list[Path], n_val: int) -> tuple[list[Path], list[Path]]:
    """Every k-th photo (by name) is held out for validation; the rest trains."""
    files = sorted(files, key=lambda p: p.stem)
    k = max(2, len(files) // max(1, n_val))
    val = [p for i, p in enumerate(files) if i % k == k - 1]
    return [p for p in files if p not in val], val[:n_val]


def read_photos(files: list[Path]) -> list[np.ndarray]:
    from PIL import Image

    return [np.asarray(Image.open(p).convert("RGB")) for p in files]


def _range(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition("-")
    try:
        return int(lo), int(hi or lo)
    except ValueError:
        raise SystemExit(f"--quantizers wants FINEST-COARSEST such as 30-63, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m assr_eic.train", description=__doc__.splitlines()[0])
    p.add_argument(
        "part", choices=["av1", "learned"], help="av1: the AV1 decoder; learned: the learned codec end to end"
    )
    p.add_argument("--data", default=".cache/data", help="data cache (photos under DATA/train)")
    p.add_argument("--init", help="start from this model file (default: a fresh model)")
    p.add_argument("--out", required=True, help="model file to write")
    p.add_argument("--workdir", default=".cache/train", help="checkpoints and logs (resumable)")
    p.add_argument("--minutes", type=float, default=30.0, help="training time budget (all resumed runs together)")
    p.add_argument("--steps", type=int, help="stop after this many steps instead")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=160)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--keep", choices=["last", "best"], default="last", help="av1: export the last or best-val weights")
    p.add_argument("--workers", type=int, default=0, help="av1: CPU processes making AV1 pairs (for a GPU trainer)")
    p.add_argument(
        "--quantizers", default="1-63", help="av1: AV1 quantizers of the training pairs, FINEST-COARSEST (1-63 all)"
    )
    p.add_argument("--val-groups", type=int, default=12, help="av1: validation groups of 4 pairs (256 px crops)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    model = ASSRModel.load(a.init) if a.init else ASSRModel()
    train_files, val_files = split(photo_files(Path(a.data) / "train"), n_val=4)
    train_imgs, val_imgs = read_photos(train_files), read_photos(val_files)
    workdir = Path(a.workdir) / a.part
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if a.part == "av1":
        from .sr_av1 import train

        result = train(model, train_imgs, val_imgs, workdir, a.minutes, a.steps, a.batch, a.crop, lr=a.lr,
                       seed=a.seed, workers=a.workers, train_files=train_files, keep=a.keep,
                       quantizers=_range(a.quantizers), val_groups=a.val_groups)  # fmt: skip
    else:
        from .learned import train

        result = train(model, train_imgs, val_imgs, workdir, a.minutes, a.steps, a.batch, a.crop, lr=a.lr, seed=a.seed)
    card = {
        f"train_{a.part}": {
            **result,
            "command": "python -m assr_eic.train " + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
            "photos": len(train_imgs),
            "val_photos": len(val_imgs),
            "hardware": f"{platform.machine()} {platform.processor() or ''} {torch.get_num_threads()} threads".strip(),
            "wall_minutes_this_run": round((time.time() - t0) / 60, 1),
        }
    }
    if "cdf_tables" in result:
        print(f"not writing {a.out}: CDF tables {result['cdf_tables']}")
        return 0
    meta = {k: v for k, v in getattr(model, "metadata", {}).items() if k.startswith("train_")}
    meta.update({k: json.dumps(v) for k, v in card.items()})
    model.save(a.out, meta)
    print(f"wrote {a.out} (fingerprint {model.fingerprint.hex()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

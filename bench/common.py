"""What every part of the Kodak benchmark shares: its settings, method names, rows and JSON output."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

TARGETS: tuple[float, ...] = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3)
QUICK_TARGETS: tuple[float, ...] = (0.01, 0.02, 0.1)
QUICK_IMAGES = 2
SCALES: tuple[float, ...] = (1, 1.5, 2, 3, 4, 6)
BD_RANGE = (0.01, 0.1)
GRID_BPP = 0.02
GRID_IMAGES = 2
CROP = 128  # side of the grid crops (shown at 2x, nearest neighbour)
SPEED_BPP = 0.05
SPEED_EXTRA_BPP = (0.02, 0.1, 0.2)  # ours-av1 only, after the main speed runs
SPEED_UPSCALE = 1.5  # 512x384 -> 768x576, then the middle 768x512
SPEED_SIZE = (768, 512)  # width, height
TOLERANCE = 0.1  # rate control must land within +-10% of the target
OURS = ("ours-av1", "ours-av1-fast", "ours-av1-best", "ours-learned")
EFFORT_VARIANTS = ("ours-av1-fast", "ours-av1-best")  # ours-av1 at rate control's other efforts
ABLATION = "ours-av1+bicubic"
ENVELOPE = "best-classical"
ENVELOPE_MSSSIM = "best-classical-msssim"
CACHE_FORMAT = 1


def log(msg: str) -> None:
    print(msg, flush=True)


def nan_to_none(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: nan_to_none(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [nan_to_none(x) for x in v]
    return v


def write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(nan_to_none(obj), indent=1, allow_nan=False))
    os.replace(tmp, path)


def result_row(method: str, image: str, target: float, hw: tuple[int, int], **kw) -> dict:
    row = {
        "method": method,
        "image": image,
        "target_bpp": target,
        "status": "ok",
        "bytes": None,
        "bpp": None,
        "psnr": None,
        "ms_ssim": None,
        "scale": None,
        "quality": None,
        "encode_ms": None,
        "decode_ms": None,
    }
    row.update(kw)
    if row["bytes"] is not None:
        row["bpp"] = row["bytes"] * 8 / (hw[0] * hw[1])
    return row


def fmt(v, spec: str, dash: str = "-") -> str:
    return dash if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)

"""Make the registry icon and banner (docs/icon.png, docs/banner.png) from the pack's own samples.

    .venv/bin/python scripts/make_brand.py

The icon is the shipped sample ``samples/astronaut.assr`` (1,350 bytes) decoded by the default model; the
banner puts each sample's original photograph (scikit-image's bundled ones) next to its decode, captioned
with the file's size. Nothing is drawn by hand: re-run after the samples or the model change.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

ICON_SIDE = 400  # the registry shows the icon square
BANNER_HEIGHT = 300


def main() -> int:
    from make_samples import SAMPLES

    from assr_eic.model import load_model
    from assr_eic.pipeline import decompress
    from assr_eic.viz import labelled_grid

    model = load_model()
    decoded = {s.photo: decompress((ROOT / "samples" / s.filename).read_bytes(), model=model) for s in SAMPLES}
    icon = Image.fromarray(decoded["astronaut"]).resize((ICON_SIDE, ICON_SIDE), Image.Resampling.LANCZOS)
    icon.save(ROOT / "docs" / "icon.png", optimize=True)
    tiles = []
    for s in SAMPLES:
        nbytes = (ROOT / "samples" / s.filename).stat().st_size
        tiles.append((_fit(s.image()), f"{s.photo}: original"))
        tiles.append((_fit(decoded[s.photo]), f"{s.photo}: {nbytes} bytes"))
    Image.fromarray(labelled_grid(tiles, cols=len(tiles), label_height=22)).save(
        ROOT / "docs" / "banner.png", optimize=True
    )
    print(f"wrote {ROOT / 'docs' / 'icon.png'} and {ROOT / 'docs' / 'banner.png'}")
    return 0


def _fit(img: np.ndarray) -> np.ndarray:
    """The centre square of ``img`` at the banner's height, so every cell has the same size."""
    h, w = img.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = Image.fromarray(img[top : top + side, left : left + side])
    return np.asarray(square.resize((BANNER_HEIGHT, BANNER_HEIGHT), Image.Resampling.LANCZOS))


if __name__ == "__main__":
    raise SystemExit(main())

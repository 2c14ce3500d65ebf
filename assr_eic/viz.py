"""Labelled image grids (the demo's side-by-side picture, the benchmark's visual grid, the Compare node)."""

from __future__ import annotations

import numpy as np


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def labelled_grid(tiles: list[tuple[np.ndarray, str]], cols: int, pad: int = 4, label_height: int = 0) -> np.ndarray:
    """Tiles (uint8 HxWx3, any sizes) with a caption strip under each, row-major, ``cols`` per row.

    Cells are as large as the largest tile; the caption is drawn in a band of ``label_height`` pixels
    (default: about 1/12 of the cell height, at least 14 px).
    """
    from PIL import Image, ImageDraw

    if not tiles:
        raise ValueError("labelled_grid needs at least one tile")
    th = max(t.shape[0] for t, _ in tiles)
    tw = max(t.shape[1] for t, _ in tiles)
    lh = label_height or max(14, th // 12)
    rows = -(-len(tiles) // cols)
    canvas = Image.new("RGB", (cols * (tw + pad) + pad, rows * (th + lh + pad) + pad), (24, 24, 24))
    draw = ImageDraw.Draw(canvas)
    font = _font(max(10, int(lh * 0.75)))
    for i, (img, label) in enumerate(tiles):
        r, c = divmod(i, cols)
        x0, y0 = pad + c * (tw + pad), pad + r * (th + lh + pad)
        canvas.paste(Image.fromarray(np.ascontiguousarray(img)), (x0, y0))
        draw.text((x0 + 3, y0 + th + 1), label, fill=(240, 240, 240), font=font)
    return np.asarray(canvas)

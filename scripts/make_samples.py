"""Make the sample .assr files shipped in samples/ (listed by ComfyUI's Load ASSR Bitstream node).

    .venv/bin/python scripts/make_samples.py [--check]

Each sample is a crop of one of scikit-image's bundled photographs (public domain or CC0, on every
machine that has the library installed), compressed with the shipped default model at a fixed scale
and quality, so the same code on the same weights writes the same bytes. ``--check`` writes nothing
and exits 1 if a committed file differs from what this script makes now.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "samples"


@dataclass(frozen=True)
class Sample:
    """One shipped file: which photograph, which crop (top, left, height, width), which s and q."""

    photo: str
    crop: tuple[int, int, int, int]
    scale: float
    quality: float

    @property
    def filename(self) -> str:
        return f"{self.photo}.assr"

    def image(self) -> np.ndarray:
        from skimage import data

        top, left, h, w = self.crop
        img = np.asarray(getattr(data, self.photo)())[..., :3]
        return np.ascontiguousarray(img[top : top + h, left : left + w])


SAMPLES = (
    Sample("astronaut", (0, 64, 384, 384), 3.0, 0.3),
    Sample("coffee", (16, 64, 368, 480), 3.0, 0.3),
    Sample("chelsea", (0, 0, 300, 448), 3.0, 0.3),
)


def make(sample: Sample, model=None) -> bytes:
    """The .assr bytes of ``sample`` (av1, the shipped model unless ``model`` is given)."""
    from assr_eic.pipeline import compress

    return compress(sample.image(), scale=sample.scale, quality=sample.quality, codec="av1", model=model)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed files, write nothing")
    args = ap.parse_args(argv)
    from assr_eic.model import DEFAULT_MODEL_PATH, ASSRModel

    model = ASSRModel.load(DEFAULT_MODEL_PATH)
    SAMPLES_DIR.mkdir(exist_ok=True)
    stale = []
    for s in SAMPLES:
        data = make(s, model)
        path = SAMPLES_DIR / s.filename
        if args.check:
            if not path.is_file() or path.read_bytes() != data:
                stale.append(s.filename)
            continue
        path.write_bytes(data)
        print(f"{path.relative_to(SAMPLES_DIR.parent)}: {len(data)} bytes")
    if stale:
        print(f"stale samples (run scripts/make_samples.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

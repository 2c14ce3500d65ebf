"""Training/evaluation data helpers that need no network: crops, the photo check, wallpaper selection."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from assr_eic.train.data import KODAK_MEMBERS, MPX_MEMBERS, MPX_SIDE, CropDataset, load_eval_set, train_photos
from assr_eic.train.fetch import (
    fetch_eval_set,
    fetch_mpx_set,
    noise_sigma,
    photo_check,
    picture_family,
    select_pictures,
)


def jpeg(img: np.ndarray, quality: int = 92) -> Image.Image:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue()))


def camera_jpeg_bytes(img: np.ndarray) -> bytes:
    """A JPEG whose EXIF names a camera model, as a camera (or a photo editor keeping EXIF) writes it."""
    exif = Image.Exif()
    exif[272] = "Test Camera"
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=92, exif=exif)
    return buf.getvalue()


def camera_jpeg(img: np.ndarray) -> Image.Image:
    return Image.open(io.BytesIO(camera_jpeg_bytes(img)))


@pytest.fixture(scope="module")
def cat() -> np.ndarray:
    """scikit-image's chelsea at 2x (bicubic): a photo as smooth at pixel level as a downsized wallpaper."""
    from skimage import data

    im = Image.fromarray(data.chelsea())
    return np.asarray(im.resize((im.width * 2, im.height * 2), Image.Resampling.BICUBIC))


def gradient(h: int = 300, w: int = 400) -> np.ndarray:
    ramp = np.linspace(0, 255, w)[None, :, None]
    return np.broadcast_to(ramp, (h, w, 3)).astype(np.uint8)


class TestCropDataset:
    @pytest.fixture
    def ds(self, photo, photo2) -> CropDataset:
        return CropDataset([photo, photo2], size=64, samples_per_image=3, seed=7)

    def test_items(self, ds):
        assert len(ds) == 6
        x = ds[0]
        assert x.shape == (3, 64, 64) and x.dtype == torch.float32
        assert 0 <= float(x.min()) and float(x.max()) <= 1

    def test_deterministic_given_seed_index_epoch(self, ds, photo, photo2):
        again = CropDataset([photo, photo2], size=64, samples_per_image=3, seed=7)
        assert torch.equal(ds[4], again[4])
        assert not torch.equal(ds[4], ds[2])
        first = ds[4]
        ds.set_epoch(1)
        assert not torch.equal(first, ds[4])

    def test_small_image_is_upscaled(self):
        ds = CropDataset([np.full((20, 30, 3), 128, np.uint8)], size=48, jitter=0.0)
        x = ds[0]
        assert x.shape == (3, 48, 48)
        assert torch.allclose(x, torch.full_like(x, 128 / 255), atol=1e-6)

    def test_no_jitter_keeps_pixel_values(self, photo):
        ds = CropDataset([photo], size=32, scale_range=(1.0, 1.0), jitter=0.0)
        vals = (ds[0] * 255).round().to(torch.uint8)
        assert torch.allclose(ds[0] * 255, vals.float(), atol=1e-3)  # a pure crop + flip/rotation

    @pytest.mark.parametrize(
        "kwargs", [{"size": 0}, {"scale_range": (0.0, 1.0)}, {"scale_range": (1.0, 0.5)}, {"jitter": 1.5}]
    )
    def test_bad_arguments(self, photo, kwargs):
        with pytest.raises(ValueError):
            CropDataset([photo], **kwargs)

    def test_rejects_non_uint8(self, photo):
        with pytest.raises(ValueError, match="uint8"):
            CropDataset([photo.astype(np.float32)])


class TestPhotoCheck:
    def test_real_photo_passes(self, photo, cat):
        assert photo_check(jpeg(cat), is_jpeg=True) is None
        # small detailed photos measure above the grain limit; camera EXIF skips that check
        assert photo_check(camera_jpeg(photo), is_jpeg=True) is None

    def test_png_rejected(self, photo):
        assert "not JPEG" in photo_check(Image.fromarray(photo), is_jpeg=False)

    def test_flat_gradient_rejected(self):
        assert "flat" in photo_check(jpeg(gradient()), is_jpeg=True)

    def test_grain_rejected(self, cat):
        grainy = np.clip(cat + np.random.default_rng(0).normal(0, 12, cat.shape), 0, 255).astype(np.uint8)
        assert "grain" in photo_check(jpeg(grainy, 98), is_jpeg=True)

    def test_noise_sigma_of_white_noise(self):
        n = np.random.default_rng(0).normal(128, 5, (256, 256))
        assert noise_sigma(n) == pytest.approx(5, rel=0.05)
        assert noise_sigma(np.full((32, 32), 7.0)) == 0


class TestSelectPictures:
    def test_wallpaper_package_layout(self, tmp_path, cat):
        kde = tmp_path / "usr/share/wallpapers/Astro/contents"
        (kde / "images").mkdir(parents=True)
        astro = np.ascontiguousarray(cat[::-1])
        (kde / "images/902x600.jpg").write_bytes(camera_jpeg_bytes(astro))
        Image.fromarray(astro[::2, ::2]).save(kde / "images/451x300.jpg", quality=92)
        os.symlink(kde / "images/902x600.jpg", kde / "images/1920x1200.jpg")
        Image.fromarray(astro[::4, ::4]).save(kde / "screenshot.jpg")
        flat = tmp_path / "usr/share/backgrounds"
        flat.mkdir(parents=True)
        Image.fromarray(cat).save(flat / "cat_big.jpg", quality=95)
        Image.fromarray(cat).resize((800, 532), Image.Resampling.BICUBIC).save(flat / "cat_small.jpg", quality=95)
        Image.fromarray(gradient(600, 800)).save(flat / "ramp.jpg", quality=95)
        Image.fromarray(np.ascontiguousarray(cat[:, ::-1])).save(flat / "render.png")
        Image.fromarray(np.ascontiguousarray(cat[:, ::-1])).resize((451, 300)).save(flat / "render_451x300.png")
        Image.fromarray(gradient(256, 256)).save(flat / "tile.png")
        rgba = np.dstack([np.ascontiguousarray(cat[::-1, ::-1]), np.full(cat.shape[:2], 255, np.uint8)])
        rgba[:, : cat.shape[1] // 2, 3] = 0
        Image.fromarray(rgba, "RGBA").save(flat / "overlay.png")
        for variant, img in (("Hold-l", cat[:, :600]), ("Hold-d", 255 - cat[:, :600])):
            Image.fromarray(np.ascontiguousarray(img)).save(flat / f"{variant}.png")

        kept, rejected, skipped = select_pictures("some-wallpapers", tmp_path, held_out=frozenset({"Hold"}))
        kinds = {w.ident: w.kind for w in kept}
        assert kinds == {"Astro": "photo", "cat_big": "photo", "ramp": "illustration", "render": "illustration"}
        assert next(w for w in kept if w.ident == "Astro").path.name == "902x600.jpg"
        assert next(w for w in kept if w.ident == "render").path.name == "render.png"
        assert rejected["cat_small"].startswith("near-duplicate")
        assert rejected["tile"] == "smaller than 512 px" and rejected["overlay"] == "see-through overlay"
        assert rejected["Hold-l"] == rejected["Hold-d"] == "held out: 1-megapixel evaluation set"
        assert set(skipped) == {
            "usr/share/wallpapers/Astro/contents/images/451x300.jpg",
            "usr/share/wallpapers/Astro/contents/screenshot.jpg",
            "usr/share/backgrounds/render_451x300.png",
        }

    def test_picture_family(self):
        assert [picture_family(i) for i in ("truchet-d", "truchet-l", "Kay-dark", "Kay", "string")] == [
            "truchet", "truchet", "Kay", "Kay", "string"
        ]  # fmt: skip


class TestEvalSet:
    def test_missing_eval_set_says_how_to_fetch(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="python -m assr_eic.train.fetch"):
            load_eval_set(tmp_path)

    def test_fetch_is_a_no_op_when_present(self, tmp_path, photo):
        (tmp_path / "kodak").mkdir()
        for name in KODAK_MEMBERS.values():
            Image.fromarray(photo).save(tmp_path / "kodak" / f"{name}.png")
        paths = fetch_eval_set(tmp_path)  # must not touch the network
        assert [p.stem for p in paths] == ["kodim03", "kodim04", "kodim06", "kodim08", "kodim19"]
        images = load_eval_set(tmp_path)
        assert list(images) == [p.stem for p in paths]
        assert all(np.array_equal(v, photo) for v in images.values())


class TestMpxSet:
    def test_missing_set_says_how_to_fetch(self, tmp_path):
        with pytest.raises(FileNotFoundError, match=r"python -m assr_eic.train.fetch --cache \S+ --mpx"):
            load_eval_set(tmp_path, "mpx")
        with pytest.raises(ValueError, match="unknown evaluation set"):
            load_eval_set(tmp_path, "imagenet")

    def test_fetch_is_a_no_op_when_present(self, tmp_path, photo):
        (tmp_path / "mpx").mkdir()
        img = np.asarray(Image.fromarray(photo).resize((MPX_SIDE, MPX_SIDE)))
        for name in MPX_MEMBERS.values():
            Image.fromarray(img).save(tmp_path / "mpx" / f"{name}.png")
        paths = fetch_mpx_set(tmp_path)  # must not run apt-get
        assert len(paths) == 8 and not (tmp_path / "debs").exists()
        images = load_eval_set(tmp_path, "mpx")
        assert sorted(images) == sorted(MPX_MEMBERS.values())
        assert sum(n.startswith("photo-") for n in images) == 3
        assert all(v.shape == (1024, 1024, 3) for v in images.values())


class TestTrainPhotos:
    def test_missing_training_photos_say_how_to_fetch(self, tmp_path):
        with pytest.raises(FileNotFoundError, match=r"none recorded; fetch them with: python -m assr_eic.train.fetch"):
            train_photos(tmp_path)

    def test_paths_from_the_manifest_and_a_missing_file_is_an_error(self, tmp_path, photo):
        out = tmp_path / "train"
        out.mkdir()
        for name in ("skimage-a.png", "debian-mate-b.png"):
            Image.fromarray(photo).save(out / name)
        manifest = {"skimage": {"files": ["skimage-a.png"]}, "debian:mate": {"files": ["debian-mate-b.png"]}}
        (out / "manifest.json").write_text(json.dumps(manifest))
        assert [p.name for p in train_photos(tmp_path)] == ["skimage-a.png", "debian-mate-b.png"]
        assert [p.name for p in train_photos(tmp_path, debian=False)] == ["skimage-a.png"]
        assert len(CropDataset.from_cache(tmp_path, samples_per_image=2, size=16)) == 4
        (out / "debian-mate-b.png").unlink()
        with pytest.raises(FileNotFoundError, match="1 of them missing"):
            train_photos(tmp_path)

    def test_photographs_only(self, tmp_path, photo):
        out = tmp_path / "train"
        out.mkdir()
        names = ("skimage-a.png", "debian-mate-b.png", "debian-mate-c.png")
        for name in names:
            Image.fromarray(photo).save(out / name)
        entry = {"files": list(names[1:]), "kinds": {"debian-mate-b.png": "illustration", "debian-mate-c.png": "photo"}}
        (out / "manifest.json").write_text(json.dumps({"skimage": {"files": [names[0]]}, "debian:mate": entry}))
        assert [p.name for p in train_photos(tmp_path)] == list(names)
        assert [p.name for p in train_photos(tmp_path, illustrations=False)] == ["skimage-a.png", "debian-mate-c.png"]

"""Images of every kind, written as real files with Pillow, through load_image / to_tensor / compress / decompress.

The alpha rule (README, ``load_image`` docstring): alpha is composited over white, ``rgb * a + 255 * (1 - a)``.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from assr_eic.cli import main as cli_main
from assr_eic.pipeline import ImageError, compress, decode, decompress, load_image, to_tensor, to_uint8


def gradient(h: int, w: int) -> np.ndarray:
    """A smooth colour image (codes well at any scale)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 255 * xx / max(w - 1, 1)
    g = 255 * yy / max(h - 1, 1)
    b = 127 + 100 * np.sin(xx / 17.0) * np.cos(yy / 23.0)
    return np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8)


def png_16bit_rgb(path, rgb16: np.ndarray) -> None:
    """Write a 16-bit RGB PNG (Pillow cannot write one): signature, IHDR, one IDAT, IEND."""
    h, w, _ = rgb16.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + rgb16[y].astype(">u2").tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


def round_trip(model, image: np.ndarray, s: float = 2.0, q: float = 0.8) -> np.ndarray:
    return decompress(compress(image, scale=s, quality=q, model=model), model=model)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255**2 / max(mse, 1e-12))


class TestModes:
    def test_grayscale_decodes_grey(self, tmp_path, model):
        grey = gradient(96, 128)[..., 0]
        Image.fromarray(grey, "L").save(tmp_path / "g.png")
        img = load_image(tmp_path / "g.png")
        assert img.shape == (96, 128, 3) and np.array_equal(img[..., 0], grey) and np.array_equal(img[..., 2], grey)
        d = decode(compress(img, scale=2.0, quality=0.8, model=model), model=model)
        lr = d.lowres.x_hat[0]
        assert (lr.max(0).values - lr.min(0).values).max() * 255 < 0.5  # the AV1 frame decodes exactly grey
        out = to_uint8(d.image)
        spread = out.astype(int).max(-1) - out.astype(int).min(-1)
        assert spread.max() <= 16  # the (test model's random) SR head adds a small colour residual
        assert psnr(out.mean(-1), img[..., 0]) > 25

    def test_rgba_is_composited_over_white(self, tmp_path, model):
        rgba = np.zeros((64, 96, 4), np.uint8)
        rgba[..., 0] = 200  # red everywhere ...
        rgba[:, :32, 3] = 0  # ... transparent on the left
        rgba[:, 32:64, 3] = 128  # half on the middle
        rgba[:, 64:, 3] = 255  # opaque on the right
        Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
        img = load_image(tmp_path / "a.png")
        assert (img[:, :32] == 255).all()  # transparent -> white
        a = 128 / 255
        assert np.array_equal(img[0, 40], np.rint([200 * a + 255 * (1 - a), 255 * (1 - a), 255 * (1 - a)]))
        assert np.array_equal(img[0, 80], [200, 0, 0])
        # the same rule on arrays and tensors
        assert np.array_equal((to_tensor(rgba)[0].permute(1, 2, 0).numpy() * 255).round(), img.astype(np.float32))
        out = round_trip(model, img, s=1.0, q=0.9)
        assert out[:, 4:28].min() >= 235 and abs(int(out[32, 85, 0]) - 200) <= 12

    def test_la_grey_with_alpha(self, tmp_path):
        la = np.zeros((10, 20, 2), np.uint8)
        la[..., 0], la[:, 10:, 1] = 50, 255
        Image.fromarray(la, "LA").save(tmp_path / "la.png")
        img = load_image(tmp_path / "la.png")
        assert (img[:, :10] == 255).all() and (img[:, 10:] == 50).all()

    def test_16bit_grey_png(self, tmp_path, model):
        g16 = (np.linspace(0, 65535, 64 * 80).reshape(64, 80)).astype(np.uint16)
        Image.fromarray(g16).save(tmp_path / "g16.png")
        with Image.open(tmp_path / "g16.png") as im:
            assert im.mode.startswith("I")
        img = load_image(tmp_path / "g16.png")
        assert np.array_equal(img[..., 1], np.rint(g16 / 65535 * 255).astype(np.uint8))
        dark = np.full((8, 8), 200, np.uint16)  # a dark 16-bit image stays dark (never read as 8-bit)
        Image.fromarray(dark).save(tmp_path / "dark.png")
        assert (load_image(tmp_path / "dark.png") == 1).all()
        assert np.array_equal(to_tensor(g16)[0, 0].numpy(), (g16 / 65535).astype(np.float32))
        assert round_trip(model, img).shape == (64, 80, 3)

    def test_16bit_rgb_png(self, tmp_path):
        rgb16 = gradient(32, 48).astype(np.uint16) * 257 + 128  # high byte = the 8-bit value
        png_16bit_rgb(tmp_path / "rgb16.png", rgb16)
        img = load_image(tmp_path / "rgb16.png")
        assert np.abs(img.astype(int) - np.rint(rgb16 / 65535 * 255)).max() <= 1

    @pytest.mark.parametrize("transparent", [False, True])
    def test_palette(self, tmp_path, model, transparent):
        p = Image.fromarray(gradient(48, 64)).quantize(16)
        kwargs = {"transparency": 0} if transparent else {}
        p.save(tmp_path / "p.png", **kwargs)
        idx = np.asarray(p)
        pal = np.array(p.getpalette()[:48]).reshape(16, 3)
        img = load_image(tmp_path / "p.png")
        expected = pal[idx].astype(np.uint8)
        if transparent:
            expected[idx == 0] = 255
        assert np.array_equal(img, expected)
        assert round_trip(model, img).shape == (48, 64, 3)

    def test_cmyk_jpeg(self, tmp_path):
        rgb = gradient(40, 56)
        Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
        with Image.open(tmp_path / "c.jpg") as im:
            assert im.mode == "CMYK"
        img = load_image(tmp_path / "c.jpg")
        assert img.shape == (40, 56, 3) and psnr(img, rgb) > 30

    def test_exif_rotated_jpeg(self, tmp_path, model):
        rgb = np.zeros((40, 60, 3), np.uint8)  # stored 60 wide x 40 high: left red, right blue
        rgb[:, :30, 0], rgb[:, 30:, 2] = 255, 255
        exif = Image.Exif()
        exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
        Image.fromarray(rgb).save(tmp_path / "r.jpg", exif=exif, quality=95)
        img = load_image(tmp_path / "r.jpg")
        assert img.shape == (60, 40, 3)  # as viewed: 40 wide x 60 high
        assert img[5, 20, 0] > 200 and img[5, 20, 2] < 50  # the stored left (red) is now the top
        assert img[55, 20, 2] > 200 and img[55, 20, 0] < 50
        assert round_trip(model, img).shape == (60, 40, 3)

    def test_float_and_tensor_inputs(self):
        f = gradient(8, 8).astype(np.float32) / 255
        assert torch.allclose(to_tensor(f), to_tensor(gradient(8, 8)))
        t = torch.from_numpy(gradient(8, 8)).permute(2, 0, 1)
        assert torch.equal(to_tensor(t), to_tensor(gradient(8, 8)))  # uint8 tensors are /255, not clamped
        with pytest.raises(ImageError, match="NaN"):
            to_tensor(np.full((4, 4, 3), np.nan, np.float32))
        with pytest.raises(ImageError, match="int64"):
            to_tensor(np.zeros((4, 4, 3), np.int64))


class TestShapes:
    @pytest.mark.parametrize("h,w,s", [(1, 1, 1.0), (7, 3000, 2.0), (3000, 7, 2.0)])
    def test_extreme_shapes(self, tmp_path, model, h, w, s):
        img = gradient(h, w)
        Image.fromarray(img).save(tmp_path / "x.png")
        loaded = load_image(tmp_path / "x.png")
        assert np.array_equal(loaded, img)
        out = round_trip(model, loaded, s=s, q=0.9)
        assert out.shape == (h, w, 3)
        assert psnr(out, img) > (30 if h * w == 1 else 24)

    def test_extreme_shapes_through_the_cli(self, tmp_path, model_path):
        Image.fromarray(gradient(7, 3000)).save(tmp_path / "s.png")
        assert cli_main(["compress", str(tmp_path / "s.png"), "-o", str(tmp_path / "s.assr"), "--scale", "2",
                         "--quality", "0.7", "--model", model_path]) == 0  # fmt: skip
        assert (
            cli_main(["decompress", str(tmp_path / "s.assr"), "-o", str(tmp_path / "o.png"), "--model", model_path])
            == 0
        )
        with Image.open(tmp_path / "o.png") as im:
            assert im.size == (3000, 7)

    @pytest.mark.parametrize("codec", ["av1", "learned"])
    def test_tiled_uint8_decompress_equals_the_float_decode(self, model, codec):
        data = compress(gradient(300, 420), scale=2.5, quality=0.6, codec=codec, model=model)
        for size in [None, (700, 1100), (5, 3)]:
            expected = to_uint8(decode(data, size, model=model).image)
            assert np.array_equal(decompress(data, size, model=model), expected)
            # other tile sizes: the same maths, float rounding may move a pixel by one level
            small = decompress(data, size, model=model, tile=128).astype(int)
            assert np.abs(small - expected).max() <= 1 and np.mean(small != expected) < 0.01

    def test_tiled_downsampler_equals_the_whole_frame(self, model):
        from assr_eic.bitstream import quantize_scale
        from assr_eic.pipeline import downsample

        x = to_tensor(gradient(1100, 1300))
        ds = model.downsampler["av1"]
        saved = ds.tail.weight.detach().clone()
        with torch.no_grad():  # a non-trivial refinement, so tile seams would show
            ds.tail.weight.normal_(0, 0.05)
        try:
            for s in (1.0, 1.5):
                whole = ds(x, tuple(downsample(model, x, "av1", quantize_scale(s)).shape[-2:]), "av1", s)
                tiled = downsample(model, x, "av1", quantize_scale(s))
                assert tiled.shape[-2] > 512 and (tiled - whole).abs().max() < 1e-5
        finally:
            with torch.no_grad():
                ds.tail.weight.copy_(saved)

    def test_4096_square(self, model):
        img = gradient(4096, 4096)
        out = round_trip(model, img, s=8.0, q=0.6)
        assert out.shape == (4096, 4096, 3)
        assert psnr(out, img) > 28  # smooth content survives s = 8


class TestHugeDeclaredSizes:
    def png_header_only(self, path, w: int, h: int) -> None:
        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

        ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
        idat = zlib.compress(b"\x00" * 64)
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))

    @pytest.mark.parametrize("w,h", [(10**6, 10**6), (40000, 1), (20000, 20000)])
    def test_one_clear_error_up_front(self, tmp_path, w, h):
        self.png_header_only(tmp_path / "huge.png", w, h)
        with pytest.raises(ImageError, match="too large"):
            load_image(tmp_path / "huge.png")

    def test_cli_says_it_in_one_line(self, tmp_path, capsys, model_path):
        self.png_header_only(tmp_path / "huge.png", 10**6, 10**6)
        rc = cli_main(["compress", str(tmp_path / "huge.png"), "-o", str(tmp_path / "h.assr"), "--bpp", "0.05",
                       "--model", model_path])  # fmt: skip
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and "too large" in err
        assert not (tmp_path / "h.assr").exists()

    def test_arrays_beyond_the_limits(self, model):
        with pytest.raises(ImageError, match="too large"):
            compress(np.zeros((1, 40000, 3), np.uint8), scale=2.0, quality=0.5, model=model)
        with pytest.raises(ValueError, match="output size"):
            decompress(compress(gradient(8, 8), scale=1.0, quality=0.5, model=model), size=(10**6, 10**6), model=model)

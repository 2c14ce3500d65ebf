"""The node functions, called in-process inside a real (imported) ComfyUI: values, files, errors."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

from assr_eic.metrics import psnr
from assr_eic.model import ASSRModel, load_model
from assr_eic.pipeline import compress, decode, decompress

pytestmark = pytest.mark.comfy


def run(nodes, node_id: str, **kwargs):
    """Execute a node class as ComfyUI's executor does (inference mode), return its NodeOutput."""
    cls = nodes.NODE_CLASS_MAPPINGS[node_id]
    with torch.inference_mode():
        return cls.execute(**kwargs)


def comfy_image(*images: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) arrays -> a ComfyUI IMAGE batch (B, H, W, 3) float in [0, 1]."""
    return torch.stack([torch.from_numpy(np.ascontiguousarray(i)).float() / 255 for i in images])


def as_uint8(image: torch.Tensor, i: int = 0) -> np.ndarray:
    return (image[i].clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def ui_text(out) -> str:
    ui = out.ui if isinstance(out.ui, dict) else out.ui.as_dict()
    return "\n".join(ui["text"])


@pytest.fixture(scope="module")
def nodes(comfy_inproc):
    return comfy_inproc


@pytest.fixture(scope="module")
def default_model(nodes):
    return run(nodes, "ASSR_LoadModel", model_name="default (built-in)")[0]


@pytest.fixture(scope="module")
def crops():
    """Two real photographs cropped to one size, so they form one IMAGE batch."""
    from skimage import data

    return [np.ascontiguousarray(data.astronaut()[100:292, 120:376]), np.ascontiguousarray(data.coffee()[:192, :256])]


class TestLoadModel:
    def test_default_is_the_shipped_model_in_a_model_patcher(self, nodes, default_model):
        from comfy.model_patcher import ModelPatcher

        assert default_model.model.fingerprint == load_model(None).fingerprint
        assert isinstance(default_model.patcher, ModelPatcher)
        assert default_model.patcher.model is default_model.model

    def test_lists_only_safetensors_from_models_folder(self, nodes, folders, model_path):
        folder = folders["models"] / "assr_eic"
        shutil.copy(model_path, folder / "mine.safetensors")
        (folder / "notes.txt").write_text("not a model")
        (folder / "old.pt").write_bytes(b"\0" * 16)
        options = nodes.NODE_CLASS_MAPPINGS["ASSR_LoadModel"].INPUT_TYPES()["required"]["model_name"][1]["options"]
        assert options == ["default (built-in)", "mine.safetensors"]
        handle = run(nodes, "ASSR_LoadModel", model_name="mine.safetensors")[0]
        assert handle.model.fingerprint == ASSRModel.load(model_path).fingerprint != load_model(None).fingerprint

    def test_bad_model_file_is_a_clear_error(self, nodes, folders):
        (folders["models"] / "assr_eic" / "broken.safetensors").write_bytes(b"this is not safetensors")
        with pytest.raises(ValueError, match="cannot load the ASSR model 'broken.safetensors'"):
            run(nodes, "ASSR_LoadModel", model_name="broken.safetensors")


class TestEncode:
    def test_scale_quality_batch_matches_library_bytes(self, nodes, default_model, crops):
        out = run(
            nodes, "ASSR_Encode", image=comfy_image(*crops), model=default_model, mode="scale + quality",
            bpp=0.05, scale=3.0, quality=0.4, codec="model default", prompt="",
        )  # fmt: skip
        items = out[0]
        assert len(items) == 2
        for item, img in zip(items, crops, strict=True):
            assert item.data == compress(img, scale=3.0, quality=0.4)  # a ComfyUI IMAGE encodes like the uint8 file
            assert (item.bitstream.height, item.bitstream.width) == img.shape[:2]
            assert item.bitstream.scale == 3.0 and abs(item.bitstream.quality - 0.4) < 1 / 255
        text = ui_text(out)
        for item in items:
            assert f"{item.bitstream.nbytes} bytes" in text and f"{item.bitstream.bpp:.4f} bpp" in text
        assert "scale 3.000" in text and "quality 0.400" in text

    def test_rgba_image_follows_the_library_alpha_rule(self, nodes, default_model, crops):
        rgb = crops[0]
        alpha = np.zeros(rgb.shape[:2], np.uint8)
        alpha[:, : rgb.shape[1] // 2] = 255  # left half opaque, right half transparent
        rgba = np.dstack([rgb, alpha])
        image = torch.from_numpy(rgba).float()[None] / 255
        out = run(
            nodes, "ASSR_Encode", image=image, model=default_model, mode="scale + quality",
            bpp=0.05, scale=3.0, quality=0.4, codec="model default", prompt="",
        )  # fmt: skip
        assert out[0][0].data == compress(rgba, scale=3.0, quality=0.4)  # transparent -> white, as the CLI does
        white = rgb.copy()
        white[:, rgb.shape[1] // 2 :] = 255
        assert out[0][0].data == compress(white, scale=3.0, quality=0.4)

    @pytest.mark.parametrize("target", [0.05, 0.15])
    def test_target_bpp_lands_within_ten_percent(self, nodes, default_model, crops, target):
        out = run(
            nodes, "ASSR_Encode", image=comfy_image(crops[0]), model=default_model, mode="target bpp",
            bpp=target, scale=4.0, quality=0.5, codec="av1", prompt="",
        )  # fmt: skip
        bs = out[0][0].bitstream
        assert abs(bs.bpp - target) <= 0.1 * target, bs.bpp

    def test_fast_effort_is_rate_controls(self, nodes, default_model, crops):
        """The effort input reaches rate control: the node's file is compress(effort="fast")'s; without the
        input (workflows saved before it existed) the normal effort's."""
        from assr_eic.pipeline import compress

        kw = dict(image=comfy_image(crops[0]), model=default_model, mode="target bpp", bpp=0.1, scale=4.0)
        kw.update(quality=0.5, codec="av1", prompt="")
        fast = run(nodes, "ASSR_Encode", effort="fast", **kw)[0][0]
        normal = run(nodes, "ASSR_Encode", **kw)[0][0]
        assert abs(fast.bitstream.bpp - 0.1) <= 0.01
        assert fast.data == compress(crops[0], target_bpp=0.1, codec="av1", effort="fast")
        assert normal.data == compress(crops[0], target_bpp=0.1, codec="av1")

    def test_prompt_is_stored_and_counted(self, nodes, default_model, crops):
        kw = dict(image=comfy_image(crops[1]), model=default_model, mode="scale + quality", bpp=0.05, scale=4.0)
        kw.update(quality=0.3, codec="av1")
        plain = run(nodes, "ASSR_Encode", prompt="", **kw)[0][0]
        with_prompt = run(nodes, "ASSR_Encode", prompt="  a cup of coffee on a saucer  ", **kw)[0][0]
        assert plain.bitstream.prompt is None
        assert with_prompt.bitstream.prompt == "a cup of coffee on a saucer"
        assert with_prompt.bitstream.nbytes > plain.bitstream.nbytes

    def test_learned_codec_round_trip(self, nodes, default_model, crops):
        small = np.ascontiguousarray(crops[1][:64, :96])
        out = run(
            nodes, "ASSR_Encode", image=comfy_image(small), model=default_model, mode="scale + quality",
            bpp=0.05, scale=2.0, quality=0.5, codec="learned", prompt="",
        )  # fmt: skip
        item = out[0][0]
        assert item.bitstream.codec == "learned"
        assert item.data == compress(small, scale=2.0, quality=0.5, codec="learned")
        dec = run(nodes, "ASSR_Decode", bitstream=[item], model=default_model, size="original", factor=1.0,
                  width=8, height=8)  # fmt: skip
        assert np.array_equal(as_uint8(dec[0]), decompress(item.data))

    def test_unreachable_rate_says_the_range(self, nodes, default_model, crops):
        with pytest.raises(ValueError, match=r"below what this 256x192 image can reach.*bpp"):
            run(
                nodes, "ASSR_Encode", image=comfy_image(crops[0]), model=default_model, mode="target bpp",
                bpp=0.001, scale=4.0, quality=0.5, codec="av1", prompt="",
            )  # fmt: skip

    def test_progress_is_reported_and_cancel_is_honoured(self, nodes, default_model, crops):
        import comfy.model_management as mm
        import comfy.utils

        seen = []
        old = comfy.utils.PROGRESS_BAR_HOOK
        comfy.utils.set_progress_bar_global_hook(
            lambda value, total, preview, node_id=None: seen.append((value, total))
        )
        try:
            kw = dict(image=comfy_image(*crops), model=default_model, mode="target bpp", bpp=0.1, scale=4.0)
            run(nodes, "ASSR_Encode", quality=0.5, codec="av1", prompt="", **kw)
            assert seen and seen[-1][0] == seen[-1][1] == 200  # 2 images x 100 steps, ends full
            values = [v for v, _ in seen]
            assert values == sorted(values) and len(set(values)) > 4
            mm.interrupt_current_processing(True)
            with pytest.raises(mm.InterruptProcessingException):
                run(nodes, "ASSR_Encode", quality=0.5, codec="av1", prompt="", **kw)
        finally:
            mm.interrupt_current_processing(False)
            comfy.utils.set_progress_bar_global_hook(old)


@pytest.fixture(scope="module")
def encoded(nodes, default_model, crops):
    out = run(
        nodes, "ASSR_Encode", image=comfy_image(*crops), model=default_model, mode="scale + quality",
        bpp=0.05, scale=2.5, quality=0.6, codec="av1", prompt="",
    )  # fmt: skip
    return out[0]


class TestDecode:
    def test_original_size_equals_library_and_is_close_to_photo(self, nodes, default_model, encoded, crops):
        out = run(
            nodes, "ASSR_Decode", bitstream=encoded, model=default_model, size="original", factor=1.0,
            width=64, height=64,
        )  # fmt: skip
        image, lowres = out[0], out[1]
        assert image.shape == (2, 192, 256, 3) and image.dtype == torch.float32
        lh, lw = encoded[0].bitstream.lowres_size
        assert lowres.shape == (2, lh, lw, 3)
        for i, (item, img) in enumerate(zip(encoded, crops, strict=True)):
            assert np.array_equal(as_uint8(image, i), decompress(item.data))
            ref = decode(item.data).lowres.x_hat[0].permute(1, 2, 0)
            assert torch.allclose(lowres[i], ref)
            assert psnr(img, as_uint8(image, i)) > 22.0

    def test_factor_and_exact_sizes(self, nodes, default_model, encoded):
        common = dict(bitstream=encoded, model=default_model, width=100, height=60)
        half = run(nodes, "ASSR_Decode", size="factor", factor=0.5, **common)[0]
        assert half.shape == (2, 96, 128, 3)
        exact = run(nodes, "ASSR_Decode", size="width x height", factor=1.0, **common)[0]
        assert exact.shape == (2, 60, 100, 3)
        lib = decompress(encoded[1].data, size=(60, 100))
        assert np.array_equal(as_uint8(exact, 1), lib)

    def test_mixed_sizes_need_an_exact_size(self, nodes, default_model, encoded, crops):
        other = run(
            nodes, "ASSR_Encode", image=comfy_image(crops[0][:100, :120]), model=default_model,
            mode="scale + quality", bpp=0.05, scale=2.0, quality=0.5, codec="av1", prompt="",
        )[0]  # fmt: skip
        mixed = [*encoded, *other]
        kw = dict(bitstream=mixed, model=default_model, factor=1.0, width=80, height=50)
        with pytest.raises(ValueError, match=r"different sizes \(256x192, 256x192, 120x100\).*width x height"):
            run(nodes, "ASSR_Decode", size="original", **kw)
        out = run(nodes, "ASSR_Decode", size="width x height", **kw)
        assert out[0].shape == (3, 50, 80, 3)
        assert out[1].shape[0] == 3  # low-res images of different sizes, shown at one size

    def test_max_pixels_refuses_from_the_header_and_can_be_raised(self, nodes, default_model, encoded):
        kw = dict(bitstream=encoded, model=default_model, size="original", factor=1.0, width=8, height=8)
        with pytest.raises(ValueError, match=r"declares a 256x192 image \(49152 pixels\), above the decoding "
                                             r"limit of 49151 pixels.*max_pixels"):  # fmt: skip
            run(nodes, "ASSR_Decode", max_pixels=256 * 192 - 1, **kw)
        big = dict(kw, size="width x height", width=16384, height=16384)  # 268 Mpx: over the default
        with pytest.raises(ValueError, match="16384x16384 .* above the decoding limit: at most 67108864 pixels"):
            run(nodes, "ASSR_Decode", **big)
        out = run(nodes, "ASSR_Decode", max_pixels=256 * 192, **kw)
        assert out[0].shape == (2, 192, 256, 3)
        assert np.array_equal(as_uint8(out[0], 1), decompress(encoded[1].data))

    def test_other_weights_refuse_to_decode(self, nodes, encoded, folders, model_path):
        shutil.copy(model_path, folders["models"] / "assr_eic" / "mine.safetensors")
        other = run(nodes, "ASSR_LoadModel", model_name="mine.safetensors")[0]
        with pytest.raises(ValueError, match="written with model .* decode it with the model that wrote it"):
            run(nodes, "ASSR_Decode", bitstream=encoded, model=other, size="original", factor=1, width=8, height=8)


class TestInfo:
    def test_outputs_match_the_header(self, nodes, default_model, crops):
        item = run(
            nodes, "ASSR_Encode", image=comfy_image(crops[1]), model=default_model, mode="scale + quality",
            bpp=0.05, scale=5.0, quality=0.25, codec="av1", prompt="espresso",
        )[0]  # fmt: skip
        out = run(nodes, "ASSR_BitstreamInfo", bitstream=item, index=0)
        nbytes, bpp, width, height, scale, quality, prompt = out.args
        assert nbytes == len(item[0].data) and bpp == pytest.approx(nbytes * 8 / (192 * 256))
        assert (width, height, scale, prompt) == (256, 192, 5.0, "espresso")
        assert quality == pytest.approx(round(0.25 * 255) / 255)
        with pytest.raises(ValueError, match="index 1 is out of range: this batch holds 1 bitstream"):
            run(nodes, "ASSR_BitstreamInfo", bitstream=item, index=1)


class TestSave:
    def test_counter_never_overwrites_and_bytes_are_exact(self, nodes, encoded, folders):
        out_dir = folders["output"] / "saves"
        out_dir.mkdir()
        (out_dir / "photo_00001_.assr").write_bytes(b"somebody else's file")
        out = run(nodes, "ASSR_SaveBitstream", bitstream=encoded, filename_prefix="saves/photo")
        files = out.ui["assr"]
        assert [f["filename"] for f in files] == ["photo_00002_.assr", "photo_00003_.assr"]
        assert all(f["subfolder"] == "saves" and f["type"] == "output" for f in files)
        assert (out_dir / "photo_00001_.assr").read_bytes() == b"somebody else's file"
        for f, item in zip(files, encoded, strict=True):
            assert (out_dir / f["filename"]).read_bytes() == item.data
        again = run(nodes, "ASSR_SaveBitstream", bitstream=encoded[:1], filename_prefix="saves/photo")
        assert again.ui["assr"][0]["filename"] == "photo_00004_.assr"
        assert not [p for p in os.listdir(out_dir) if p.endswith(".tmp")]
        assert "photo_00004_.assr" in "\n".join(again.ui["text"])

    @pytest.mark.parametrize("prefix", ["../escape", "/tmp/escape", "a/../../escape", "  "])
    def test_prefix_outside_output_is_refused(self, nodes, encoded, folders, prefix):
        before = set(folders["output"].parent.rglob("*.assr"))
        with pytest.raises(ValueError, match="outside ComfyUI's output folder|prefix is empty"):
            run(nodes, "ASSR_SaveBitstream", bitstream=encoded, filename_prefix=prefix)
        assert set(folders["output"].parent.rglob("*.assr")) == before

    def test_symlinked_subfolder_leading_out_is_refused(self, nodes, encoded, folders, tmp_path):
        (folders["output"] / "sneaky").symlink_to(tmp_path, target_is_directory=True)
        with pytest.raises(ValueError, match="outside ComfyUI's output folder"):
            run(nodes, "ASSR_SaveBitstream", bitstream=encoded, filename_prefix="sneaky/x")
        assert list(tmp_path.iterdir()) == []


class TestLoad:
    def test_list_refreshes_and_round_trips(self, nodes, encoded, folders):
        cls = nodes.NODE_CLASS_MAPPINGS["ASSR_LoadBitstream"]
        (folders["input"] / "sub").mkdir(exist_ok=True)
        (folders["input"] / "sub" / "b.assr").write_bytes(encoded[1].data)
        (folders["input"] / "a.assr").write_bytes(encoded[0].data)
        (folders["input"] / "ignore.png").write_bytes(b"x")
        options = cls.INPUT_TYPES()["required"]["bitstream"][1]["options"]
        assert "a.assr" in options and "sub/b.assr" in options and "ignore.png" not in options
        item = run(nodes, "ASSR_LoadBitstream", bitstream="sub/b.assr")[0][0]
        assert item.data == encoded[1].data and item.bitstream == encoded[1].bitstream
        h1 = cls.fingerprint_inputs(bitstream="a.assr")
        (folders["input"] / "a.assr").write_bytes(encoded[1].data)
        assert cls.fingerprint_inputs(bitstream="a.assr") != h1  # ComfyUI re-runs the loader

    def test_symlink_escape_is_refused(self, nodes, encoded, folders, tmp_path):
        outside = tmp_path / "outside.assr"
        outside.write_bytes(encoded[0].data)
        (folders["input"] / "escape.assr").symlink_to(outside)
        with pytest.raises(ValueError, match="outside ComfyUI's input folder"):
            run(nodes, "ASSR_LoadBitstream", bitstream="escape.assr")
        with pytest.raises(ValueError, match="outside ComfyUI's input folder"):
            run(nodes, "ASSR_LoadBitstream", bitstream="../" + outside.name)

    @pytest.mark.parametrize(
        "content,message",
        [
            (b"", "empty file"),
            (b"GIF89a not an assr file at all", "wrong magic bytes"),
            ("flip", "CRC-32 check failed"),
            ("truncate", "CRC-32 check failed|truncated"),
        ],
    )
    def test_corrupt_files_are_clear_errors(self, nodes, encoded, folders, content, message):
        data = encoded[0].data
        if content == "flip":
            content = data[:20] + bytes([data[20] ^ 0x40]) + data[21:]
        elif content == "truncate":
            content = data[: len(data) // 2]
        (folders["input"] / "bad.assr").write_bytes(content)
        with pytest.raises(ValueError, match=rf"file 'bad.assr' is not a usable .assr file: .*({message})"):
            run(nodes, "ASSR_LoadBitstream", bitstream="bad.assr")


class TestCompare:
    def test_grid_has_every_tile_and_scores(self, nodes, default_model, encoded, crops):
        import sys

        cls = nodes.NODE_CLASS_MAPPINGS["ASSR_Compare"]
        layout = sys.modules[cls.__module__]
        out = run(
            nodes, "ASSR_Compare", image=comfy_image(*crops), bitstream=encoded, model=default_model,
            baseline_scales="ASSR's downscale",
        )  # fmt: skip
        grid = out[0]
        H, W = crops[0].shape[:2]
        assert grid.shape == (1, *layout.grid_size(H, W, rows=2), 3)
        pad, lh = layout.PAD, layout.label_height(H)
        g = as_uint8(grid)
        for r, (img, item) in enumerate(zip(crops, encoded, strict=True)):
            y = pad + r * (H + lh + pad)
            assert np.array_equal(g[y : y + H, pad : pad + W], img)  # original, then ours
            assert np.array_equal(g[y : y + H, 2 * pad + W : 2 * pad + 2 * W], decompress(item.data))
        text = ui_text(out)
        lines = text.splitlines()
        assert len(lines) == 2 * 4  # ours + 3 baselines per row
        ours = psnr(crops[0], decompress(encoded[0].data))
        assert f"ASSR: {encoded[0].bitstream.nbytes} bytes, {encoded[0].bitstream.bpp:.4f} bpp, {ours:.2f} dB" in text
        for name in ("JPEG", "WebP", "AVIF"):
            line = next(x for x in lines if x.startswith(name))
            if "bytes," in line:  # a file that fits: never larger than ours
                assert int(line.split(": ")[1].split(" bytes")[0]) <= encoded[0].bitstream.nbytes

    def test_image_and_bitstream_must_match(self, nodes, default_model, encoded, crops):
        with pytest.raises(ValueError, match="got 1 image\\(s\\) but 2 bitstream"):
            run(
                nodes, "ASSR_Compare", image=comfy_image(crops[0]), bitstream=encoded, model=default_model,
                baseline_scales="full size only",
            )  # fmt: skip
        with pytest.raises(ValueError, match="holds a 256x192 image but the image input is 128x96"):
            run(
                nodes, "ASSR_Compare", image=comfy_image(*(c[:96, :128] for c in crops)), bitstream=encoded,
                model=default_model, baseline_scales="full size only",
            )  # fmt: skip

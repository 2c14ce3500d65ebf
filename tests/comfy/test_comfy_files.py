"""The nodes' file rules in-process, inside a real (imported) ComfyUI: model loads confined to
models/assr_eic (symlinks included), input loads confined to the input folder, saved names sanitised
and numbered, nothing half-written. Full and read-only disks are exercised through the real server in
test_comfy_queue.py (the server runs in its own mount namespace there)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

from assr_eic.model import ASSRModel
from assr_eic.pipeline import compress

pytestmark = pytest.mark.comfy


def run(nodes, node_id: str, **kwargs):
    with torch.inference_mode():
        return nodes.NODE_CLASS_MAPPINGS[node_id].execute(**kwargs)


@pytest.fixture(scope="module")
def nodes(comfy_inproc):
    return comfy_inproc


@pytest.fixture(scope="module")
def data() -> bytes:
    from skimage import data as skd

    return compress(np.ascontiguousarray(skd.astronaut()[:64, :96]), scale=2.0, quality=0.5)


@pytest.fixture(scope="module")
def items(nodes, folders, data):
    (folders["input"] / "files-test.assr").write_bytes(data)
    return run(nodes, "ASSR_LoadBitstream", bitstream="files-test.assr")[0]


@pytest.fixture
def models_dir(folders):
    """The shared models/assr_eic folder, left as this test found it (other test files list it)."""
    folder = folders["models"] / "assr_eic"
    before = set(folder.rglob("*"))
    yield folder
    for p in sorted(set(folder.rglob("*")) - before, key=lambda p: len(p.parts), reverse=True):
        p.rmdir() if p.is_dir() and not p.is_symlink() else p.unlink()


class TestModelLoads:
    def test_subfolder_model_loads(self, nodes, models_dir, model_path):
        (models_dir / "sub").mkdir(exist_ok=True)
        shutil.copy(model_path, models_dir / "sub" / "nested.safetensors")
        handle = run(nodes, "ASSR_LoadModel", model_name="sub/nested.safetensors")[0]
        assert handle.model.fingerprint == ASSRModel.load(model_path).fingerprint

    def test_symlink_leading_out_is_refused(self, nodes, models_dir, model_path, tmp_path):
        outside = tmp_path / "elsewhere.safetensors"
        shutil.copy(model_path, outside)
        (models_dir / "link.safetensors").symlink_to(outside)
        options = nodes.NODE_CLASS_MAPPINGS["ASSR_LoadModel"].INPUT_TYPES()["required"]["model_name"][1]["options"]
        assert "link.safetensors" in options  # ComfyUI lists it; the node refuses to follow it out
        with pytest.raises(
            ValueError, match=r"cannot load the ASSR model 'link.safetensors': .*outside models/assr_eic/"
        ):
            run(nodes, "ASSR_LoadModel", model_name="link.safetensors")

    @pytest.mark.parametrize(
        "name,message",
        [
            ("../escape.safetensors", "outside models/assr_eic/"),
            ("/etc/passwd.safetensors", "absolute path"),
            ("missing.safetensors", "is not a file in models/assr_eic/"),
            ("model.pt", "not a .safetensors file"),
        ],
    )
    def test_names_outside_or_missing(self, nodes, folders, model_path, name, message):
        shutil.copy(model_path, folders["models"] / "escape.safetensors")  # beside the folder, not in it
        with pytest.raises(ValueError, match=message):
            run(nodes, "ASSR_LoadModel", model_name=name)


class TestInputLoads:
    def test_folder_named_like_a_file(self, nodes, folders):
        (folders["input"] / "dir.assr").mkdir(exist_ok=True)
        with pytest.raises(ValueError, match="'dir.assr' is not a file in ComfyUI's input folder"):
            run(nodes, "ASSR_LoadBitstream", bitstream="dir.assr")

    def test_symlinked_folder_leading_out(self, nodes, folders, data, tmp_path):
        (tmp_path / "x.assr").write_bytes(data)
        (folders["input"] / "linked-dir").symlink_to(tmp_path, target_is_directory=True)
        assert (
            "linked-dir/x.assr"
            not in nodes.NODE_CLASS_MAPPINGS["ASSR_LoadBitstream"].INPUT_TYPES()["required"]["bitstream"][1]["options"]
        )
        with pytest.raises(ValueError, match="outside ComfyUI's input folder"):
            run(nodes, "ASSR_LoadBitstream", bitstream="linked-dir/x.assr")


class TestSamples:
    """The pack's shipped samples: listed after the input folder's files, loaded read-only from samples/."""

    def test_listed_after_input_files_and_loaded_from_the_pack(self, nodes, folders, items):
        from make_samples import SAMPLES, SAMPLES_DIR

        options = nodes.NODE_CLASS_MAPPINGS["ASSR_LoadBitstream"].INPUT_TYPES()["required"]["bitstream"][1]["options"]
        names = sorted(f"{s.filename} [sample]" for s in SAMPLES)
        assert "files-test.assr" in options and options[-len(names) :] == names
        for s in SAMPLES:
            assert not (folders["input"] / s.filename).exists()  # nothing copied into the input folder
            (item,) = run(nodes, "ASSR_LoadBitstream", bitstream=f"{s.filename} [sample]")[0]
            assert item.data == (SAMPLES_DIR / s.filename).read_bytes()

    @pytest.mark.parametrize("name", ["../pyproject.toml [sample]", "/etc/passwd [sample]", "none.assr [sample]"])
    def test_sample_names_stay_in_the_samples_folder(self, nodes, name):
        with pytest.raises(ValueError, match="the pack's samples folder"):
            run(nodes, "ASSR_LoadBitstream", bitstream=name)


class TestSavedNames:
    @pytest.mark.parametrize(
        "prefix,message",
        [
            ("bell\x07", "not allowed in file names"),
            ("a/line\nbreak", "not allowed in file names"),
            ("sub/CON", "reserved device name"),
            ("x" * 300, "at most 200"),
            ("what?", "not allowed in file names"),
        ],
    )
    def test_bad_prefixes_write_nothing(self, nodes, folders, items, prefix, message):
        before = sorted(folders["output"].rglob("*"))
        with pytest.raises(ValueError, match=message):
            run(nodes, "ASSR_SaveBitstream", bitstream=items, filename_prefix=prefix)
        assert sorted(folders["output"].rglob("*")) == before

    def test_unicode_prefix_is_kept_and_numbered(self, nodes, folders, items, data):
        out = run(nodes, "ASSR_SaveBitstream", bitstream=items, filename_prefix=" fotos/café ")
        (res,) = out.ui["assr"]
        assert (res["subfolder"], res["filename"]) == ("fotos", "café_00001_.assr")
        assert (folders["output"] / "fotos" / "café_00001_.assr").read_bytes() == data
        assert not [p for p in os.listdir(folders["output"] / "fotos") if p.endswith(".tmp") or p.startswith(".")]

    def test_existing_dangling_symlink_is_not_followed(self, nodes, folders, items, tmp_path):
        sub = folders["output"] / "trap"
        sub.mkdir()
        (sub / "x_00001_.assr").symlink_to(tmp_path / "victim.assr")  # a name taken by a dangling link
        (res,) = run(nodes, "ASSR_SaveBitstream", bitstream=items, filename_prefix="trap/x").ui["assr"]
        assert res["filename"] == "x_00002_.assr" and not (tmp_path / "victim.assr").exists()


class TestHostileInputs:
    """Special and oversized files in the input folder; errors that reach API clients name no server path."""

    def test_a_fifo_is_named_and_never_opened(self, nodes, folders):
        fifo = folders["input"] / "pipe.assr"
        os.mkfifo(fifo)
        try:
            with pytest.raises(ValueError, match="'pipe.assr' is not a file in ComfyUI's input folder: it is a FIFO"):
                run(nodes, "ASSR_LoadBitstream", bitstream="pipe.assr")
            cls = nodes.NODE_CLASS_MAPPINGS["ASSR_LoadBitstream"]
            assert cls.fingerprint_inputs(bitstream="pipe.assr").startswith("unreadable:pipe.assr")  # no wait
        finally:
            fifo.unlink()

    def test_the_digest_checks_the_size_before_reading(self, nodes, folders):
        import resource

        from assr_eic.limits import MAX_FILE_BYTES

        big = folders["input"] / "sparse.assr"
        with open(big, "wb") as f:
            f.truncate(3 << 30)  # 3 GiB, sparse: costs no disk
        try:
            cls = nodes.NODE_CLASS_MAPPINGS["ASSR_LoadBitstream"]
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            digest = cls.fingerprint_inputs(bitstream="sparse.assr")
            assert digest.startswith("unreadable:sparse.assr") and str(3 << 30) in digest
            assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 << 10  # KiB: nothing read
            with pytest.raises(ValueError, match=f"too large to be an .assr file \\(at most {MAX_FILE_BYTES}\\)") as e:
                run(nodes, "ASSR_LoadBitstream", bitstream="sparse.assr")
            assert str(folders["input"]) not in str(e.value) and "'sparse.assr': sparse.assr is" in str(e.value)
            small = folders["input"] / "small.assr"
            small.write_bytes(b"abc")
            import hashlib

            assert cls.fingerprint_inputs(bitstream="small.assr") == hashlib.sha256(b"abc").hexdigest()
            small.unlink()
        finally:
            big.unlink()

    def test_save_errors_name_no_server_path(self, nodes, folders, items):
        import sys

        relative_message = sys.modules[nodes.NODE_CLASS_MAPPINGS["ASSR_LoadBitstream"].__module__].relative_message
        root = folders["output"]
        e = ValueError(f"cannot write {root / 'sub' / 'x_00001_.assr'}: permission denied; nothing was written")
        text = relative_message(e, {"ComfyUI's output folder": root})
        assert text == "cannot write sub/x_00001_.assr: permission denied; nothing was written"
        e = ValueError(f"output folder does not exist: {root}")
        assert relative_message(e, {"ComfyUI's output folder": root}).endswith("exist: ComfyUI's output folder")

    def test_a_broken_model_file_names_no_server_path(self, nodes, models_dir):
        (models_dir / "broken.safetensors").write_bytes(b"\x00" * 64)
        with pytest.raises(ValueError, match="cannot load the ASSR model 'broken.safetensors'") as e:
            run(nodes, "ASSR_LoadModel", model_name="broken.safetensors")
        assert str(models_dir) not in str(e.value) and str(models_dir.resolve()) not in str(e.value)

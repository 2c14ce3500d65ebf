"""The pack inside the real ComfyUI server: node definitions, every example workflow through POST /prompt
with its outputs checked by value, and bad inputs through the API.

The server caches node results between prompts (as it does for users), and a cached node reports no UI
output, so the tests (browser test included) give each workflow run its own photograph or settings.
"""

from __future__ import annotations

import io
import json
import shutil
from urllib.parse import quote

import harness
import numpy as np
import pytest
import requests
from PIL import Image

from assr_eic.bitstream import parse
from assr_eic.metrics import psnr

pytestmark = pytest.mark.comfy


@pytest.fixture(scope="module")
def server(comfy_server):
    """This module's tests run on every ComfyUI version (conftest's ``comfy``)."""
    return comfy_server


@pytest.fixture(scope="module")
def object_info(server) -> dict:
    return server.get("/object_info")


NODES = {
    # node id: (input name -> type, output types, output node)
    "ASSR_LoadModel": ({"model_name": "COMBO"}, ["ASSR_MODEL"], False),
    "ASSR_Encode": (
        {"image": "IMAGE", "model": "ASSR_MODEL", "mode": "COMBO", "bpp": "FLOAT", "scale": "FLOAT",
         "quality": "FLOAT", "codec": "COMBO", "prompt": "STRING", "effort": "COMBO"},
        ["ASSR_BITSTREAM"], False,
    ),
    "ASSR_SaveBitstream": ({"bitstream": "ASSR_BITSTREAM", "filename_prefix": "STRING"}, [], True),
    "ASSR_LoadBitstream": ({"bitstream": "COMBO"}, ["ASSR_BITSTREAM"], False),
    "ASSR_Decode": (
        {"bitstream": "ASSR_BITSTREAM", "model": "ASSR_MODEL", "size": "COMBO", "factor": "FLOAT", "width": "INT",
         "height": "INT", "max_pixels": "INT"},
        ["IMAGE", "IMAGE"], False,
    ),
    "ASSR_BitstreamInfo": (
        {"bitstream": "ASSR_BITSTREAM", "index": "INT"},
        ["INT", "FLOAT", "INT", "INT", "FLOAT", "FLOAT", "STRING"], True,
    ),
    "ASSR_Compare": (
        {"image": "IMAGE", "bitstream": "ASSR_BITSTREAM", "model": "ASSR_MODEL", "baseline_scales": "COMBO"},
        ["IMAGE"], False,
    ),
}  # fmt: skip


def read_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def cli_decode(path, tmp_path, size: str | None = None) -> np.ndarray:
    out = tmp_path / f"{path.stem}-cli.png"
    args = ["decompress", str(path), "-o", str(out)] + (["--size", size] if size else [])
    r = harness.cli(*args)
    assert r.returncode == 0, r.stderr
    return np.asarray(Image.open(out).convert("RGB"))


def prompt_for(name: str, object_info: dict, photo: str | None = None) -> dict:
    """A workflow of example_workflows/ as an API prompt; ``photo`` replaces the picture Load Image reads."""
    prompt = harness.ui_to_api(harness.load_workflow(name), object_info)
    if photo:
        loads = [n for n in prompt.values() if n["class_type"] == "LoadImage"]
        assert loads, f"{name} has no Load Image node"
        for n in loads:
            n["inputs"]["image"] = photo
    return prompt


def node_of(prompt: dict, class_type: str, title: str | None = None) -> str:
    ids = [
        k
        for k, n in prompt.items()
        if n["class_type"] == class_type and (title is None or n["_meta"]["title"] == title)
    ]
    assert len(ids) == 1, (class_type, title, ids)
    return ids[0]


def assert_node_error(server, prompt: dict, node_type: str, message: str) -> dict:
    """The prompt is accepted, fails in ``node_type`` with a ValueError sentence containing ``message``."""
    r = server.queue(prompt)
    assert r.status_code == 200, r.text
    entry = server.wait(r.json()["prompt_id"])
    assert entry["status"]["status_str"] == "error"
    err = harness.history_error(entry)
    assert err["node_type"] == node_type
    assert err["exception_type"] == "ValueError"
    assert message in err["exception_message"], err["exception_message"]
    assert "Traceback" not in err["exception_message"]
    return err


class TestDefinitions:
    @pytest.mark.parametrize("node_id", sorted(NODES))
    def test_object_info_declares_types_and_help(self, object_info, node_id):
        inputs, outputs, output_node = NODES[node_id]
        info = object_info[node_id]
        declared = {**info["input"]["required"], **info["input"].get("optional", {})}
        assert {k: v[0] for k, v in declared.items()} == inputs
        assert info["output"] == outputs
        assert info["output_node"] is output_node
        assert info["category"] == "image/compression/assr"
        assert len(info["description"]) > 40
        assert all(len(v[1].get("tooltip", "")) > 10 for v in declared.values()), "every input has a tooltip"
        assert len(info["output_tooltips"]) == len(outputs) and all(info["output_tooltips"])

    def test_bounds_are_in_the_schema(self, object_info):
        enc = object_info["ASSR_Encode"]["input"]["required"]
        assert (enc["scale"][1]["min"], enc["scale"][1]["max"]) == (1.0, 8.0)
        assert (enc["quality"][1]["min"], enc["quality"][1]["max"]) == (0.0, 1.0)
        assert enc["mode"][1]["options"] == ["target bpp", "scale + quality"]
        assert object_info["ASSR_Encode"]["input"]["optional"]["prompt"][1]["multiline"] is True
        effort = object_info["ASSR_Encode"]["input"]["optional"]["effort"]
        assert effort[1]["options"] == ["normal", "fast", "best"] and effort[1]["default"] == "normal"
        dec = object_info["ASSR_Decode"]["input"]["required"]
        assert dec["size"][1]["options"] == ["original", "factor", "width x height"]
        max_pixels = object_info["ASSR_Decode"]["input"]["optional"]["max_pixels"][1]
        assert (max_pixels["default"], max_pixels["max"]) == (1 << 26, 1 << 28)  # optional: older workflows run
        assert object_info["ASSR_LoadModel"]["input"]["required"]["model_name"][1]["options"][0] == "default (built-in)"

    def test_web_extension_and_templates_are_served(self, server):
        assert any(p.endswith("/assr_eic.js") for p in server.get("/extensions"))
        templates = server.get("/workflow_templates")[harness.PACK_NAME]
        assert sorted(templates) == sorted(harness.template_files()) and len(templates) >= 3
        for name in templates:  # the URLs the template list asks for (the names are titles, with spaces)
            thumb = server.fetch(f"/api/workflow_templates/{harness.PACK_NAME}/{quote(name)}.jpg")
            assert Image.open(io.BytesIO(thumb)).format == "JPEG"
            workflow = json.loads(server.fetch(f"/api/workflow_templates/{harness.PACK_NAME}/{quote(name)}.json"))
            assert workflow == json.loads((harness.WORKFLOWS / f"{name}.json").read_text())


class TestWorkflows:
    def test_compress_and_save(self, server, object_info, tmp_path):
        prompt = prompt_for("assr_compress_and_save", object_info, photo="astronaut.png")
        entry = server.run(prompt)
        assert entry["status"]["status_str"] == "success", harness.history_error(entry)
        out = entry["outputs"]
        saved = out[node_of(prompt, "ASSR_SaveBitstream")]["assr"]
        assert len(saved) == 1 and saved[0]["filename"].endswith("_.assr")
        path = server.output_dir / saved[0]["subfolder"] / saved[0]["filename"]
        assert saved[0]["type"] == "output"
        assert server.view(saved[0]) == path.read_bytes(), "ComfyUI's /view serves the saved file's exact bytes"
        bs = parse(path.read_bytes())
        target = prompt[node_of(prompt, "ASSR_Encode")]["inputs"]["bpp"]
        assert (bs.width, bs.height) == (512, 512)
        assert abs(bs.bpp - target) <= 0.1 * target
        assert f"{bs.nbytes} bytes" in out[node_of(prompt, "ASSR_Encode")]["text"][0]
        node_png = read_png(server.view(out[node_of(prompt, "SaveImage")]["images"][0]))
        assert np.array_equal(cli_decode(path, tmp_path), node_png), (
            "the CLI decodes the saved file to the node's pixels"
        )
        assert psnr(harness.photo("astronaut"), node_png) > 22.0

    def test_load_and_decode(self, server, object_info, tmp_path):
        assr = server.input_dir / "example.assr"
        assr.write_bytes(harness.example_bitstream(server.input_dir / "coffee.png", bpp=0.1))
        prompt = prompt_for("assr_load_and_decode", object_info)
        prompt[node_of(prompt, "ASSR_LoadBitstream")]["inputs"]["bitstream"] = "example.assr"
        entry = server.run(prompt)
        assert entry["status"]["status_str"] == "success", harness.history_error(entry)
        out = entry["outputs"]
        factor = prompt[node_of(prompt, "ASSR_Decode")]["inputs"]["factor"]
        h, w = round(400 * factor), round(600 * factor)
        node_png = read_png(server.view(out[node_of(prompt, "SaveImage")]["images"][0]))
        assert node_png.shape == (h, w, 3)
        assert np.array_equal(cli_decode(assr, tmp_path, f"{w}x{h}"), node_png)
        back = np.asarray(Image.fromarray(node_png).resize((600, 400), Image.Resampling.BICUBIC))
        assert psnr(harness.photo("coffee"), back) > 24.0
        bs = parse(assr.read_bytes())
        lowres = read_png(server.view(out[node_of(prompt, "PreviewImage")]["images"][0]))
        assert lowres.shape == (*bs.lowres_size, 3)
        info = out[node_of(prompt, "ASSR_BitstreamInfo")]["text"][0]
        assert f"bytes: {bs.nbytes}" in info and "width: 600" in info and "height: 400" in info

    def test_load_and_decode_a_shipped_sample(self, server, object_info, tmp_path):
        """A fresh server lists the pack's samples, and the decode workflow runs on one with no copy step."""
        name = "coffee.assr [sample]"
        assert name in object_info["ASSR_LoadBitstream"]["input"]["required"]["bitstream"][1]["options"]
        assert not list(server.input_dir.rglob("coffee.assr"))
        prompt = prompt_for("assr_load_and_decode", object_info)
        prompt[node_of(prompt, "ASSR_LoadBitstream")]["inputs"]["bitstream"] = name
        entry = server.run(prompt)
        assert entry["status"]["status_str"] == "success", harness.history_error(entry)
        out = entry["outputs"]
        factor = prompt[node_of(prompt, "ASSR_Decode")]["inputs"]["factor"]
        h, w = round(368 * factor), round(480 * factor)  # the sample is a 480x368 crop
        node_png = read_png(server.view(out[node_of(prompt, "SaveImage")]["images"][0]))
        assert node_png.shape == (h, w, 3)
        assert np.array_equal(cli_decode(harness.REPO / "samples" / "coffee.assr", tmp_path, f"{w}x{h}"), node_png)
        assert f"{name}:" in out[node_of(prompt, "ASSR_LoadBitstream")]["text"][0]

    def test_embedded_bitstream_decodes_on_a_second_server_with_no_file(self, server, object_info, comfy, tmp_path):
        """Save ASSR Bitstream reports each file as text; a decode workflow holding that text in ASSR Embedded
        Bitstream, run on another ComfyUI whose input folder is empty, gives the CLI's pixels of the file."""
        first = prompt_for("assr_compress_and_save", object_info, photo="astronaut.png")
        first[node_of(first, "ASSR_SaveBitstream")]["inputs"]["filename_prefix"] = "embedded/first"  # a fresh save
        entry = server.run(first)
        assert entry["status"]["status_str"] == "success", harness.history_error(entry)
        saved = next(o for o in entry["outputs"].values() if "assr" in o)
        path = server.output_dir / saved["assr"][0]["subfolder"] / saved["assr"][0]["filename"]
        (text,) = saved["assr_text"]
        assert text == harness.cli("info", "--text", str(path)).stdout.strip() and text.startswith("assr:")
        prompt = prompt_for("assr_load_and_decode", object_info)
        load = node_of(prompt, "ASSR_LoadBitstream")
        prompt[load] = {"class_type": "ASSR_EmbeddedBitstream", "inputs": {"text": text[:40] + "\n" + text[40:]}}
        other = comfy.server(harness.make_base(tmp_path / "second")).start()
        try:
            assert not [p for p in other.input_dir.rglob("*") if p.is_file()]  # (0.33.0 makes an empty 3d/ there)
            done = other.run(prompt)
            assert done["status"]["status_str"] == "success", harness.history_error(done)
            out = done["outputs"]
            png = read_png(other.view(out[node_of(prompt, "SaveImage")]["images"][0]))
            h, w = png.shape[:2]
            assert np.array_equal(cli_decode(path, tmp_path, f"{w}x{h}"), png)
            prompt[load]["inputs"]["text"] = text[:-8]  # truncated: one clear node error
            bad = other.run(prompt)
            assert bad["status"]["status_str"] == "error"
            assert "ASSR Embedded Bitstream" in harness.history_error(bad)["exception_message"]
        finally:
            other.stop()

    def test_rate_sweep_compare(self, server, object_info):
        prompt = prompt_for("assr_rate_sweep_compare", object_info, photo="chelsea.png")
        entry = server.run(prompt, timeout=300)
        assert entry["status"]["status_str"] == "success", harness.history_error(entry)
        out = entry["outputs"]
        grid = read_png(server.view(out[node_of(prompt, "SaveImage")]["images"][0]))
        H, W = 300, 451
        label = max(16, H // 14)  # ASSR Compare's layout: 4 px gaps, a caption strip under each tile
        row_h, grid_w = H + label + 4, 5 * (W + 4) + 4
        assert grid.shape == (3 * (row_h + 4), grid_w, 3)
        assert np.array_equal(grid[4 : 4 + H, 4 : 4 + W], harness.photo("chelsea"))  # first tile: the original
        ours = []
        encoders = sorted(k for k, n in prompt.items() if n["class_type"] == "ASSR_Encode")
        for enc in encoders:
            target = prompt[enc]["inputs"]["bpp"]
            bpp = float(out[enc]["text"][0].split(" bpp")[0].split(", ")[-1])
            assert abs(bpp - target) <= 0.1 * target
        for cmp in sorted((k for k, n in prompt.items() if n["class_type"] == "ASSR_Compare"), key=int):  # rate order
            lines = out[cmp]["text"][0].splitlines()
            assert [x.split(":")[0].split(" ")[0] for x in lines] == ["ASSR", "JPEG", "WebP", "AVIF"]
            ours.append(float(lines[0].split(" dB")[0].split(", ")[-1]))
        assert ours == sorted(ours) and ours[0] > 20.0, f"PSNR must grow with the rate: {ours}"


@pytest.fixture(scope="module")
def decode_prompt(object_info, server) -> dict:
    (server.input_dir / "good.assr").write_bytes(harness.example_bitstream(server.input_dir / "chelsea.png"))
    prompt = prompt_for("assr_load_and_decode", object_info)
    prompt[node_of(prompt, "ASSR_LoadBitstream")]["inputs"]["bitstream"] = "good.assr"
    return prompt


class TestBadInputs:
    def test_out_of_range_values_are_http_400(self, server, object_info):
        prompt = prompt_for("assr_compress_and_save", object_info, photo="astronaut.png")
        enc = node_of(prompt, "ASSR_Encode")
        prompt[enc]["inputs"]["bpp"] = 100.0
        prompt[node_of(prompt, "ASSR_Decode")]["inputs"]["width"] = 0
        r = server.queue(prompt)
        assert r.status_code == 400
        errors = r.json()["node_errors"]
        assert errors[enc]["errors"][0]["message"] == "Value 100.0 bigger than max of 8.0"
        assert errors[enc]["errors"][0]["extra_info"]["input_name"] == "bpp"
        dec = errors[node_of(prompt, "ASSR_Decode")]["errors"][0]
        assert (dec["message"], dec["extra_info"]["input_name"]) == ("Value 0 smaller than min of 1", "width")

    @pytest.mark.parametrize("case", ["corrupt", "truncated", "foreign", "symlink-escape", "dotdot-escape"])
    def test_bad_files_are_node_errors_and_the_server_goes_on(
        self, server, comfy, decode_prompt, model_path, tmp_path, case
    ):
        good = (server.input_dir / "good.assr").read_bytes()
        name = f"bad-{case}.assr"
        if case == "corrupt":
            (server.input_dir / name).write_bytes(good[:30] + bytes([good[30] ^ 1]) + good[31:])
            message = "CRC-32 check failed"
        elif case == "truncated":
            (server.input_dir / name).write_bytes(good[:-9])
            message = "not a usable .assr file"
        elif case == "foreign":  # written by other weights
            r = harness.cli(
                "compress", str(server.input_dir / "chelsea.png"), "-o", str(server.input_dir / name),
                "--scale", "4", "--quality", "0.3", "--model", model_path,
            )  # fmt: skip
            assert r.returncode == 0, r.stderr
            message = "decode it with the model that wrote it"
        elif case == "symlink-escape":  # a symlink in the input folder that leads outside it
            outside = tmp_path / "outside.assr"
            outside.write_bytes(good)
            (server.input_dir / name).symlink_to(outside)
            message = "outside ComfyUI's input folder"
        else:  # a hand-written API prompt naming a file beside the input folder (not in the node's list)
            (server.base / name).write_bytes(good)
            name = f"../{name}"
            message = "outside ComfyUI's input folder"
        prompt = {k: {**v, "inputs": dict(v["inputs"])} for k, v in decode_prompt.items()}
        prompt[node_of(prompt, "ASSR_LoadBitstream")]["inputs"]["bitstream"] = name
        node = "ASSR_Decode" if case == "foreign" else "ASSR_LoadBitstream"
        if case == "dotdot-escape" and comfy.version != "0.3.75":  # 0.33.0 checks a combo's value against its list
            r = server.queue(prompt)
            assert r.status_code == 400
            (err,) = r.json()["node_errors"][node_of(prompt, "ASSR_LoadBitstream")]["errors"]
            assert (err["type"], err["extra_info"]["input_name"]) == ("value_not_in_list", "bitstream")
        else:
            assert_node_error(server, prompt, node, message)
        entry = server.run(decode_prompt)  # the next prompt runs fine
        assert entry["status"]["status_str"] == "success"

    def test_save_prefix_outside_output_is_a_node_error(self, server, object_info):
        prompt = prompt_for("assr_compress_and_save", object_info, photo="astronaut.png")
        prompt.pop(node_of(prompt, "SaveImage"))  # only Load Image -> Encode -> Save ASSR Bitstream
        prompt[node_of(prompt, "ASSR_Encode")]["inputs"]["mode"] = "scale + quality"
        prompt[node_of(prompt, "ASSR_SaveBitstream")]["inputs"]["filename_prefix"] = "../../escaped"
        before = sorted(p.name for p in server.base.rglob("*.assr"))
        assert_node_error(server, prompt, "ASSR_SaveBitstream", "outside ComfyUI's output folder")
        assert sorted(p.name for p in server.base.rglob("*.assr")) == before
        assert not list(server.base.parent.glob("escaped*"))


def test_output_files_are_never_overwritten(server, object_info):
    prompt = prompt_for("assr_compress_and_save", object_info, photo="coffee.png")
    prompt[node_of(prompt, "ASSR_Encode")]["inputs"]["mode"] = "scale + quality"
    save = node_of(prompt, "ASSR_SaveBitstream")
    prompt[save]["inputs"]["filename_prefix"] = "runs/coffee"
    names = []
    for seed in (0.3, 0.31):  # a changed input makes ComfyUI run the graph again
        prompt[node_of(prompt, "ASSR_Encode")]["inputs"]["quality"] = seed
        entry = server.run(prompt)
        names += [f["filename"] for f in entry["outputs"][save]["assr"]]
    assert names == ["coffee_00001_.assr", "coffee_00002_.assr"]
    files = sorted((server.output_dir / "runs").glob("*.assr"))
    assert [f.name for f in files] == names and files[0].read_bytes() != files[1].read_bytes()
    for f in files:  # the download link's route, from a subfolder: the exact bytes, offered as the file's name
        r = requests.get(server.url + "/view", params={"filename": f.name, "subfolder": "runs", "type": "output"})
        assert r.status_code == 200 and r.content == f.read_bytes()
        assert f'filename="{f.name}"' in r.headers["Content-Disposition"]
    shutil.rmtree(server.output_dir / "runs")

"""The two diffusion-decoder workflows of example_workflows/ in the real ComfyUI server, through POST /prompt, on the
random-weight SD 1.5 checkpoint (stock Load Checkpoint, stock KSampler) at 64x64 px and a few steps."""

from __future__ import annotations

import io

import diffusion_checkpoint
import harness
import numpy as np
import pytest
import torch
from PIL import Image

from assr_eic.bitstream import parse
from assr_eic.diffusion import Degradation, denoise_strength, wavelet_color_fix
from assr_eic.pipeline import compress, decompress

pytestmark = pytest.mark.comfy

SPLIT, ALL_IN_ONE = "assr_diffusion_split", "assr_diffusion_all_in_one"


def read_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def node_of(prompt: dict, class_type: str) -> str:
    ids = [k for k, n in prompt.items() if n["class_type"] == class_type]
    assert len(ids) == 1, (class_type, ids)
    return ids[0]


@pytest.fixture(scope="module")
def setup(server):
    """The random SD 1.5 checkpoint in the server's models/checkpoints, and a 64x64 .assr file (a real
    photograph crop, with a prompt) in its input folder."""
    from skimage import data

    ckpt = diffusion_checkpoint.install(server.base / "models")
    crop = np.ascontiguousarray(data.coffee()[100:164, 200:264])
    assr = compress(crop, scale=2.0, quality=0.3, prompt="a cup of coffee")
    (server.input_dir / "diffusion64.assr").write_bytes(assr)
    return {"ckpt": ckpt, "assr": assr, "name": "diffusion64.assr"}


def prompt_for(name: str, object_info: dict, setup: dict, steps: int, seed: int) -> dict:
    prompt = harness.ui_to_api(harness.load_workflow(name), object_info)
    prompt[node_of(prompt, "CheckpointLoaderSimple")]["inputs"]["ckpt_name"] = setup["ckpt"]
    prompt[node_of(prompt, "ASSR_LoadBitstream")]["inputs"]["bitstream"] = setup["name"]
    sampler = "KSampler" if name == SPLIT else "ASSR_DiffusionDecode"
    prompt[node_of(prompt, sampler)]["inputs"].update(steps=steps, seed=seed, cfg=2.0)
    return prompt


def check_result(server, entry: dict, prompt: dict, setup: dict) -> tuple[np.ndarray, np.ndarray]:
    """64x64 result; the fidelity preview is the library's decode; colours close to it."""
    assert entry["status"]["status_str"] == "success", harness.history_error(entry)
    out = entry["outputs"]
    result = read_png(server.view(out[node_of(prompt, "SaveImage")]["images"][0]))
    fid_node = next(k for k, n in prompt.items() if n["_meta"]["title"] == "fidelity decode")
    fidelity = read_png(server.view(out[fid_node]["images"][0]))
    assert result.shape == fidelity.shape == (64, 64, 3)
    want = decompress(setup["assr"], size=(64, 64))
    assert np.abs(fidelity.astype(int) - want.astype(int)).max() <= 1, "the fidelity output is the library's decode"
    mean_err = np.abs(result.reshape(-1, 3).mean(0) - fidelity.reshape(-1, 3).mean(0)).max() / 255
    assert mean_err < 0.06, f"the colour fix keeps the fidelity decode's colours ({mean_err:.3f})"
    assert np.abs(result.astype(int) - fidelity.astype(int)).mean() > 1.0, "the diffusion model changed the image"
    return result, fidelity


def test_split_workflow_runs_through_the_stock_ksampler(server, object_info, setup):
    prompt = prompt_for(SPLIT, object_info, setup, steps=3, seed=1)
    ks = prompt[node_of(prompt, "KSampler")]["inputs"]
    prep = node_of(prompt, "ASSR_DiffusionPrepare")
    assert ks["denoise"] == [prep, 4] and ks["model"] == [prep, 0], "KSampler takes the prepared model and denoise"
    # also show the VAE decode before the colour fix, to check the fix against the library
    vaedec = node_of(prompt, "VAEDecode")
    prompt["raw"] = {"class_type": "PreviewImage", "inputs": {"images": [vaedec, 0]}, "_meta": {"title": "raw"}}
    entry = server.run(prompt, timeout=600)
    result, fidelity = check_result(server, entry, prompt, setup)
    raw = read_png(server.view(entry["outputs"]["raw"]["images"][0]))
    method = prompt[node_of(prompt, "ASSR_ColorFix")]["inputs"]["method"]
    assert method == "wavelet"
    as_t = lambda a: torch.from_numpy(a.astype(np.float32) / 255).permute(2, 0, 1)[None]  # noqa: E731
    want = (wavelet_color_fix(as_t(raw), as_t(fidelity)).clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255).round()
    diff = np.abs(result.astype(np.float32) - want)
    assert diff.max() <= 4 and diff.mean() < 1.5, (
        "ASSR Color Fix is the library's wavelet fix (8-bit PNGs: a few levels)"
    )
    text = entry["outputs"][prep]["text"][0]
    want = denoise_strength(Degradation.from_bitstream(parse(setup["assr"])), prompt[prep]["inputs"]["realism"])
    assert f"denoise {want:.3f}" in text and "prompt: a cup of coffee" in text and "training-free" in text


def test_all_in_one_workflow(server, object_info, setup):
    prompt = prompt_for(ALL_IN_ONE, object_info, setup, steps=2, seed=2)
    entry = server.run(prompt, timeout=600)
    check_result(server, entry, prompt, setup)


def test_missing_checkpoint_is_refused_before_running(server, object_info, setup):
    prompt = prompt_for(SPLIT, object_info, setup, steps=2, seed=3)
    prompt[node_of(prompt, "CheckpointLoaderSimple")]["inputs"]["ckpt_name"] = "not-there.safetensors"
    r = server.queue(prompt)
    assert r.status_code == 400
    assert "ckpt_name" in r.text


def test_nodes_declare_types_and_help(object_info):
    for node_id in ("ASSR_DiffusionPrepare", "ASSR_ColorFix", "ASSR_DiffusionDecode"):
        info = object_info[node_id]
        declared = {**info["input"]["required"], **info["input"].get("optional", {})}
        assert info["category"] == "image/compression/assr" and len(info["description"]) > 40
        assert all(len(v[1].get("tooltip", "")) > 10 for v in declared.values()), node_id
        assert len(info["output_tooltips"]) == len(info["output"]) and all(info["output_tooltips"])
    prep = object_info["ASSR_DiffusionPrepare"]
    assert prep["output"] == [
        "MODEL",
        "CONDITIONING",
        "CONDITIONING",
        "LATENT",
        "FLOAT",
        "IMAGE",
        "ASSR_DIFFUSION_HINTS",
        "FLOAT",
    ]
    adaptors = prep["input"]["required"]["adaptor"][1]["options"]
    assert adaptors[0] == "none (training-free)"
    realism = prep["input"]["required"]["realism"][1]
    assert (realism["min"], realism["max"]) == (0.0, 1.0)

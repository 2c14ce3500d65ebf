"""The diffusion example workflows of ``harness.WORKFLOWS``, one per checkpoint family (SD 1.5 through Load
Checkpoint, SDXL through Load Checkpoint, SD 3.5 through Load Diffusion Model + DualCLIPLoader + Load VAE),
queued as saved in the real ComfyUI server: converted with the harness, the model file names pointed at the
random-weight fixtures (tests/comfy/diffusion_checkpoint.py, diffusion_families.py: real text encoders'
sizes, reduced UNet/MMDiT layouts that ComfyUI's loaders detect as the family), on the .assr file of a real
photograph crop. Asserted on the output's pixels: its size is the file's declared size times the
workflow's factor, and the consistency figure (the output brought back to the declared size and
downsampled by s with the encoder's own downsampler, against the file's decoded low-res image) within
1 dB of the fidelity decode's own. Random weights make noise: this checks the workflows and the sampler,
not the prior."""

from __future__ import annotations

import io

import diffusion_checkpoint
import diffusion_families
import harness
import numpy as np
import pytest
import requests
import torch
from PIL import Image

from assr_eic.bitstream import parse
from assr_eic.metrics import psnr
from assr_eic.model import load_model
from assr_eic.pipeline import compress, decompress, downsample
from assr_eic.rescale import resize

pytestmark = pytest.mark.comfy

# each family's example workflow (SD 1.5: the all-in-one one the split workflow sits beside)
WORKFLOWS = {"sd1": "assr_diffusion_all_in_one", "sdxl": "assr_diffusion_sdxl", "sd3": "assr_diffusion_sd35"}
SCALE = 4.0  # a 64x48 crop coded at s = 4: a 16x12 low-res image
NAME = "family_workflows.assr"


def link(folder, src) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / src.name
    if not dest.exists():
        dest.symlink_to(src)
    return src.name


@pytest.fixture(scope="module")
def setup(server):
    """The fixtures in the server's model folders under their cached names, and the .assr file in its input."""
    from skimage import data

    models = server.base / "models"
    fx = diffusion_families.workflow_files()
    names = {
        "sd1": diffusion_checkpoint.install(models), "sdxl": link(models / "checkpoints", fx["sdxl_checkpoint"]),
        "sd3": link(models / "diffusion_models", fx["sd3"]), "clip_l": link(models / "text_encoders", fx["clip_l"]),
        "clip_g": link(models / "text_encoders", fx["clip_g"]), "vae16": link(models / "vae", fx["kl16"]),
    }  # fmt: skip
    crop = np.ascontiguousarray(data.coffee()[100:148, 200:264])  # 64 wide, 48 high: sides not swapped
    assr = compress(crop, scale=SCALE, quality=0.3, prompt="a cup of coffee")
    (server.input_dir / NAME).write_bytes(assr)
    return {"names": names, "assr": assr}


def node_of(prompt: dict, class_type: str) -> str:
    ids = [k for k, n in prompt.items() if n["class_type"] == class_type]
    assert len(ids) == 1, (class_type, ids)
    return ids[0]


def pointed_at_fixtures(family: str, object_info: dict, names: dict) -> dict:
    """The family's workflow file as an API prompt with its model files and bitstream pointed at ours."""
    prompt = harness.ui_to_api(harness.load_workflow(WORKFLOWS[family]), object_info)
    for n in prompt.values():
        t, inputs = n["class_type"], n["inputs"]
        if t == "CheckpointLoaderSimple":
            inputs["ckpt_name"] = names[family]
        elif t == "UNETLoader":
            inputs["unet_name"] = names[family]
        elif t == "DualCLIPLoader":
            inputs.update(clip_name1=names["clip_l"], clip_name2=names["clip_g"])
        elif t == "VAELoader":
            inputs["vae_name"] = names["vae16"]
        elif t == "ASSR_LoadBitstream":
            inputs["bitstream"] = NAME
    return prompt


def read_png(data: bytes) -> torch.Tensor:
    a = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    return torch.from_numpy(a.copy()).permute(2, 0, 1)[None].float() / 255


@pytest.mark.parametrize("family", list(WORKFLOWS))
def test_family_workflow_keeps_what_the_file_says(server, object_info, setup, family):
    prompt = pointed_at_fixtures(family, object_info, setup["names"])
    dec = prompt[node_of(prompt, "ASSR_DiffusionDecode")]["inputs"]
    assert dec["steps"] <= 8, "CPU-friendly defaults in the file"
    dec.update(seed=5, steps=2)  # fewer still, for the test's time
    requests.post(server.url + "/free", json={"unload_models": True, "free_memory": True}, timeout=30)
    entry = server.run(prompt, timeout=900)
    assert entry["status"]["status_str"] == "success", harness.history_error(entry)
    out = entry["outputs"]
    image = read_png(server.view(out[node_of(prompt, "SaveImage")]["images"][0]))
    fid_node = next(k for k, n in prompt.items() if n["_meta"]["title"] == "fidelity decode")
    fidelity = read_png(server.view(out[fid_node]["images"][0]))

    bs = parse(setup["assr"])
    f = dec["factor"]
    want = (round(bs.height * f / 8) * 8, round(bs.width * f / 8) * 8)
    assert tuple(image.shape[-2:]) == tuple(fidelity.shape[-2:]) == want, (family, image.shape, want)
    lib = decompress(setup["assr"], size=want)
    assert np.abs(fidelity[0].permute(1, 2, 0).numpy() * 255 - lib).max() <= 1.0, "the library's fidelity decode"

    net = load_model(None)
    lowres = net.codec(bs.codec).decode(bs.streams, bs.lowres_size, bs.quality_code).x_hat.clamp(0, 1)

    def down(z: torch.Tensor) -> torch.Tensor:
        return downsample(net, resize(z, (bs.height, bs.width)), bs.codec, bs.scale_code)

    p, p_fid = psnr(down(image), lowres), psnr(down(fidelity), lowres)
    changed = float((image - fidelity).abs().mean() * 255)
    print(f"{WORKFLOWS[family]} ({family}): {want[1]}x{want[0]}, consistency {p:.2f} dB "
          f"(fidelity decode {p_fid:.2f}), mean change from the fidelity decode {changed:.2f} levels")  # fmt: skip
    assert p >= p_fid - 1.0, (family, p, p_fid)
    assert changed > 1.0, "the diffusion model changed the image"

"""A random-weight Stable Diffusion 1.5 checkpoint for the diffusion-decoder tests (no real SD weights
can be downloaded here).

    .venv/bin/python tests/comfy/diffusion_checkpoint.py [OUT.safetensors] [--seed N]

The file has the real SD 1.5 single-file layout: original LDM key names (``model.diffusion_model.*``,
``first_stage_model.*``, ``cond_stage_model.transformer.*``) and the real tensor sizes (UNet 860 M
parameters, CLIP ViT-L/14 text encoder, KL-f8 VAE), stored in fp16 (about 2.1 GB). It is built with
ComfyUI's own model classes (``comfy.supported_models.SD15``, ``comfy.sd1_clip.SD1ClipModel``, the LDM
``AutoencoderKL``) and named by ComfyUI's own ``process_*_state_dict_for_saving``, so ComfyUI's
checkpoint loader detects it as SD1.x exactly as it would a downloaded checkpoint. ComfyUI's layers skip
weight initialisation, so every tensor is filled from a seeded generator (fan-in scaled normals, unit
norms): the same seed gives the same bytes, and the file is cached under ``.cache/`` by seed.

ComfyUI is imported only inside :func:`build` (run it in a subprocess: it needs ComfyUI first on
``sys.path`` and about 2.5 GB of memory while it runs).
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COMFY_ROOT = REPO / ".cache" / "comfyui"
CACHE = REPO / ".cache"
SEED = 0
NAME = "sd15_random.safetensors"

# ComfyUI's own description of the SD 1.5 UNet (what comfy.model_detection finds in a real checkpoint)
SD15_UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
    "adm_in_channels": None, "in_channels": 4, "model_channels": 320, "num_res_blocks": [2, 2, 2, 2],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1,
    "use_linear_in_transformer": False, "context_dim": 768, "num_heads": 8,
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "use_temporal_attention": False, "use_temporal_resblock": False,
}  # fmt: skip
SD15_VAE = {
    "double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
    "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0,
}  # fmt: skip


def cached_path(seed: int = SEED) -> Path:
    """Where the checkpoint for ``seed`` is cached."""
    return CACHE / (NAME if seed == SEED else f"sd15_random_seed{seed}.safetensors")


def fill_(state: dict, seed: int) -> None:
    """Fill every tensor in place, in sorted key order, from one seeded generator (deterministic)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    for key in sorted(state):
        t = state[key]
        if not t.is_floating_point():
            continue
        if key.endswith("weight") and t.ndim >= 2:  # linear / conv / embedding: fan-in scaled normal
            fan_in = math.prod(t.shape[1:])
            value = torch.randn(t.shape, generator=g) / math.sqrt(fan_in)
        elif key.endswith("weight"):  # GroupNorm / LayerNorm scales
            value = 1.0 + 0.05 * torch.randn(t.shape, generator=g)
        else:  # biases and the rest: small
            value = 0.02 * torch.randn(t.shape, generator=g)
        with torch.no_grad():
            t.copy_(value.to(t.dtype))


def build(out: Path, seed: int = SEED) -> Path:
    """Build the checkpoint with ComfyUI's classes and save it (fp16 safetensors) to ``out``."""
    import torch

    sys.path.insert(0, str(COMFY_ROOT))
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    import comfy.ops
    import comfy.sd1_clip
    import comfy.supported_models
    import comfy.utils
    import utils.install_util  # noqa: F401  (before comfy.utils shadows the utils package)
    from comfy.ldm.models.autoencoder import AutoencoderKL

    dtype = torch.float16
    model_config = comfy.supported_models.SD15(SD15_UNET)
    model_config.set_inference_dtype(dtype, None)
    with torch.device("cpu"):
        model = model_config.get_model({}, device="cpu")
    clip = comfy.sd1_clip.SD1ClipModel(device="cpu", dtype=dtype)
    vae = AutoencoderKL(ddconfig=dict(SD15_VAE), embed_dim=4).to(dtype)

    unet_sd = model.diffusion_model.state_dict()
    clip_sd = clip.state_dict()
    vae_sd = vae.state_dict()
    fill_(unet_sd, seed)
    fill_(clip_sd, seed + 1)
    fill_(vae_sd, seed + 2)
    sd = model.state_dict_for_saving(clip_sd, vae_sd)
    sd = {k: v.to(dtype).contiguous() for k, v in sd.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    comfy.utils.save_torch_file(sd, str(tmp), metadata={"assr_eic_fixture": f"random SD1.5, seed {seed}"})
    os.replace(tmp, out)  # readers never see half a file
    return out


def ensure(seed: int = SEED) -> Path:
    """The cached checkpoint for ``seed``, built in a subprocess the first time (about 15-30 s)."""
    path = cached_path(seed)
    if not path.is_file():
        subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), str(path), "--seed", str(seed)],
            check=True,
            cwd=REPO,
        )
        if not path.is_file():
            raise RuntimeError(f"building the random SD 1.5 checkpoint left no file at {path}")
    return path


def install(models_dir: Path, seed: int = SEED) -> str:
    """Link (or copy) the cached checkpoint into ``models_dir/checkpoints``; returns the name to choose."""
    src = ensure(seed)
    folder = Path(models_dir) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / src.name
    if not dest.exists():
        try:
            dest.symlink_to(src)
        except OSError:
            import shutil

            shutil.copy(src, dest)
    return src.name


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", nargs="?", default=None, help="output file (default: the cache)")
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args()
    out = Path(args.out) if args.out else cached_path(args.seed)
    build(out, args.seed)
    print(f"wrote {out} ({out.stat().st_size / 1e9:.2f} GB)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

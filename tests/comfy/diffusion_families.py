"""Small random-weight diffusion models that ComfyUI's own loader detects as each checkpoint family. Each is a
diffusion-model file (what ComfyUI's Load Diffusion Model node reads: the UNet or DiT alone, ComfyUI's key
names) in a reduced layout that ComfyUI's detection still matches to the family's config class
(``comfy.supported_models``): SD 1.x with 320 channels at two levels, SD 2.x-v with four levels of 320
channels (the output block ComfyUI's v-prediction test reads is given the spread of a real v model), SDXL with
its required transformer depths [0, 0, 2, 2, 10, 10] at 320 channels, SD 3.x as a 2-block MMDiT (hidden 128,
16-channel latents), Flux (dev, with distilled guidance) at its fixed width (ComfyUI reads 24 heads of 128
whatever the file says) with one double and one single block: 545 M parameters, the one large fixture (1.1 GB
cached, about 4 GB of memory in use). The VAEs are the KL-f8 layout with 4 or 16 latent channels, read by
ComfyUI's VAE class from a state dict. Text conditioning is made in-process (random tensors of the family's
shapes): a full text encoder of SDXL or SD 3.x would not fit these machines.

Built with ComfyUI's own classes inside a process that imported ComfyUI (the in-process tests), filled
from a seeded generator (``diffusion_checkpoint.fill_``) and cached under ``.cache/families/`` by seed.
"""

from __future__ import annotations

import os
from pathlib import Path

import diffusion_checkpoint

CACHE = diffusion_checkpoint.CACHE / "families"
SEED = 0

_UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
    "legacy": False, "in_channels": 4, "model_channels": 320, "use_temporal_attention": False,
    "use_temporal_resblock": False,
}  # fmt: skip
CONFIGS = {
    "sd1": dict(
        _UNET, adm_in_channels=None, num_res_blocks=[1, 1], channel_mult=[1, 1], transformer_depth=[0, 1],
        transformer_depth_output=[0, 0, 1, 1], transformer_depth_middle=1, use_linear_in_transformer=False,
        context_dim=768,
    ),
    "sd2": dict(
        _UNET, adm_in_channels=None, num_res_blocks=[2, 2, 2, 2], channel_mult=[1, 1, 1, 1],
        transformer_depth=[1] * 8, transformer_depth_output=[1] * 12, transformer_depth_middle=1,
        use_linear_in_transformer=True, context_dim=1024,
    ),
    "sdxl": dict(
        _UNET, adm_in_channels=2816, num_classes="sequential", num_res_blocks=[2, 2, 2], channel_mult=[1, 1, 1],
        transformer_depth=[0, 0, 2, 2, 10, 10], transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10],
        transformer_depth_middle=1, use_linear_in_transformer=True, context_dim=2048,
    ),
    "sd3": {
        "in_channels": 16, "patch_size": 2, "out_channels": 16, "depth": 2, "input_size": None,
        "adm_in_channels": 2048, "num_patches": 96 * 96, "pos_embed_max_size": 96,
        "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 128}},
        "pos_embed_scaling_factor": None, "x_block_self_attn_layers": [],
    },
    "flux": {
        "image_model": "flux", "in_channels": 16, "patch_size": 2, "out_channels": 16, "vec_in_dim": 768,
        "context_in_dim": 4096, "hidden_size": 3072, "mlp_ratio": 4.0, "num_heads": 24, "depth": 1,
        "depth_single_blocks": 1, "axes_dim": [16, 56, 56], "theta": 10000, "qkv_bias": True,
        "guidance_embed": True,
    },
}  # fmt: skip
# what ComfyUI names each config class, and the conditioning shapes (context tokens x width, pooled width)
CLASS_NAMES = {"sd1": "SD15", "sd2": "SD20", "sdxl": "SDXL", "sd3": "SD3", "flux": "Flux"}
# Flux: 16 text tokens (T5 gives 256 or 512), as its token count sets the cost of every call of a 3072-wide DiT
CONDITIONING = {
    "sd1": (77, 768, None), "sd2": (77, 1024, None), "sdxl": (77, 2048, 1280), "sd3": (154, 4096, 2048),
    "flux": (16, 4096, 768),
}  # fmt: skip
V_PRED_KEY = "output_blocks.11.1.transformer_blocks.0.norm1.bias"


def cached_path(family: str, seed: int = SEED, kind: str = "unet") -> Path:
    return CACHE / f"{family}_{kind}_seed{seed}.safetensors"


def _save(sd: dict, out: Path, note: str) -> Path:
    import comfy.utils

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    comfy.utils.save_torch_file(sd, str(tmp), metadata={"assr_eic_fixture": note})
    os.replace(tmp, out)
    return out


def ensure_unet(family: str, seed: int = SEED) -> Path:
    """The cached diffusion-model file of ``family`` (built the first time, in this ComfyUI process)."""
    path = cached_path(family, seed)
    if path.is_file():
        return path
    import comfy.model_detection
    import torch

    config = comfy.model_detection.model_config_from_unet_config(dict(CONFIGS[family]))
    if config is None or type(config).__name__ != CLASS_NAMES[family]:
        raise RuntimeError(f"ComfyUI does not match the reduced {family} layout to {CLASS_NAMES[family]}")
    config.set_inference_dtype(torch.float16, None)
    with torch.device("cpu"):
        model = config.get_model({}, device="cpu")
    sd = model.diffusion_model.state_dict()
    diffusion_checkpoint.fill_(sd, seed)
    if family == "sd2":  # ComfyUI calls an SD 2 model v-prediction when this bias is spread like a real v model's
        g = torch.Generator().manual_seed(seed + 7)
        sd[V_PRED_KEY].copy_(0.2 * torch.randn(sd[V_PRED_KEY].shape, generator=g))
    sd = {k: v.to(torch.float16).contiguous() for k, v in sd.items()}
    return _save(sd, path, f"random reduced {family}, seed {seed}")


def ensure_vae(channels: int, seed: int = SEED) -> Path:
    """The cached KL-f8 VAE state dict with ``channels`` latent channels."""
    path = cached_path(f"kl{channels}", seed, "vae")
    if path.is_file():
        return path
    import torch
    from comfy.ldm.models.autoencoder import AutoencoderKL

    vae = AutoencoderKL(ddconfig=dict(diffusion_checkpoint.SD15_VAE, z_channels=channels), embed_dim=channels)
    sd = vae.state_dict()
    diffusion_checkpoint.fill_(sd, seed + 2)
    sd = {k: v.to(torch.float16).contiguous() for k, v in sd.items()}
    return _save(sd, path, f"random KL-f8 VAE, {channels} channels, seed {seed}")


def install(models_dir: Path, family: str, seed: int = SEED) -> str:
    """Link the cached diffusion model into ``models_dir/diffusion_models``; returns the name to choose."""
    src = ensure_unet(family, seed)
    folder = Path(models_dir) / "diffusion_models"
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / src.name
    if not dest.exists():
        dest.symlink_to(src)
    return src.name


def load_vae(channels: int, seed: int = SEED):
    """ComfyUI's VAE of the cached state dict (its class detects the latent channels)."""
    import comfy.sd
    import comfy.utils

    return comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(ensure_vae(channels, seed))))


def conditioning(family: str, seed: int = 0) -> list:
    """Random CONDITIONING with the family's shapes (what its text encoders would give)."""
    import torch

    tokens, width, pooled = CONDITIONING[family]
    g = torch.Generator().manual_seed(seed)
    extra = {} if pooled is None else {"pooled_output": torch.randn(1, pooled, generator=g)}
    return [[torch.randn(1, tokens, width, generator=g), extra]]

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


# --- the per-family figures (the family test asserts on them; bench/diffusion_families.py writes them) ---

FIGURE_SEED = 3  # the sampling seed of the figures


def run_node(nodes, node_id: str, **kwargs):
    """One node of ComfyUI's ``nodes`` registry, executed in inference mode."""
    import torch

    cls = nodes.NODE_CLASS_MAPPINGS[node_id]
    with torch.inference_mode():
        return cls.execute(**kwargs)


def node_module(nodes):
    """The pack's diffusion node module as ComfyUI imported it."""
    import sys

    return sys.modules[nodes.NODE_CLASS_MAPPINGS["ASSR_DiffusionDecode"].__module__]


def load_family(nodes, models_dir: Path, family: str):
    """The family's fixture through ComfyUI's own Load Diffusion Model node."""
    import torch

    name = install(models_dir, family)
    with torch.inference_mode():
        return nodes.UNETLoader().load_unet(name, "default")[0]


def coded_item(nodes, assr_model, scale: float):
    """A real 64x64 photograph crop coded at scale ``scale`` (AV1, quality 0.3): a bitstream item."""
    import numpy as np
    import torch
    from skimage import data

    crop = np.ascontiguousarray(data.astronaut()[80:144, 180:244])
    image = torch.from_numpy(crop).float()[None] / 255
    (it,) = run_node(
        nodes, "ASSR_Encode", image=image, model=assr_model, mode="scale + quality", bpp=0.05, scale=scale,
        quality=0.3, codec="av1", prompt="",
    )[0]  # fmt: skip
    return it


def _psnr(a, b) -> float:
    import torch

    return float(10 * torch.log10(1 / (a.float() - b.float()).pow(2).mean()))


def consistency_figures(image, it) -> tuple[float, float, float]:
    """(PSNR of the output downsampled by s vs the file's low-res image, the fidelity decode's, energy above
    the low-res Nyquist of the output's change from the fidelity decode)."""
    from assr_eic.diffusion.consistency import band_energy, nyquist
    from assr_eic.model import load_model
    from assr_eic.pipeline import decode, downsample

    bs = it.bitstream
    dec = decode(bs)
    y, fid = dec.lowres.x_hat.clamp(0, 1), dec.image.clamp(0, 1)
    net = load_model(None)
    x = image.movedim(-1, 1).float().cpu()
    p = _psnr(downsample(net, x, bs.codec, bs.scale_code), y)
    p_fid = _psnr(downsample(net, fid, bs.codec, bs.scale_code), y)
    return p, p_fid, band_energy(x - fid, nyquist(fid.shape[-1] / y.shape[-1]))


def family_figures(nodes, models_dir: Path, assr_model, item, family: str, realisms=(0.0, 0.5, 1.0)) -> dict:
    """The family's fixture as ComfyUI detects it, and per realism the consistency figures through the stock
    KSampler (Prepare + KSampler + VAE Decode + Color Fix, 2 euler steps) and through the all-in-one node."""
    import torch

    model = load_family(nodes, models_dir, family)
    fam = node_module(nodes).model_family(model)
    vae = load_vae(fam.latent_channels)
    pos, neg = conditioning(family, 1), conditioning(family, 2)
    out = {
        "family": family, "config": type(model.model.model_config).__name__, "family_key": fam.key,
        "model_type": model.model.model_type.name,
        "parameters_m": sum(p.numel() for p in model.model.diffusion_model.parameters()) / 1e6,
        "scale": item.bitstream.scale, "rows": [],
    }  # fmt: skip
    for r in realisms:
        args = dict(
            model=model, vae=vae, bitstream=[item], assr_model=assr_model, adaptor="none (training-free)",
            realism=r, factor=1.0, adaptor_strength=1.0, conditioning=pos, negative_conditioning=neg,
        )  # fmt: skip
        patched, p_pos, p_neg, latent, denoise, fidelity, hints, cfg = run_node(
            nodes, "ASSR_DiffusionPrepare", **args
        ).result
        with torch.inference_mode():
            samples = nodes.common_ksampler(patched, FIGURE_SEED, 2, cfg, "euler", "normal", p_pos, p_neg, latent,
                                            denoise=denoise)[0]["samples"]  # fmt: skip
            raw = vae.decode(samples)
        fix = dict(image=raw, reference=fidelity)
        fixed = run_node(nodes, "ASSR_ColorFix", **fix, method="consistency", hints=hints)[0]
        p, p_fid, e = consistency_figures(fixed, item)
        wavelet, _, _ = consistency_figures(run_node(nodes, "ASSR_ColorFix", **fix, method="wavelet")[0], item)
        out["rows"].append({
            "path": "ksampler", "realism": r, "cfg": cfg, "latent_channels": latent["samples"].shape[1],
            "psnr": p, "fidelity_psnr": p_fid, "wavelet_fix_psnr": wavelet, "energy_above_nyquist": e,
        })  # fmt: skip
        image, _ = run_node(
            nodes, "ASSR_DiffusionDecode", **args, seed=FIGURE_SEED, steps=2, cfg=0.0, sampler_name="euler",
            scheduler="karras", color_fix="consistency", tile_size=0,
        ).result  # fmt: skip
        p, p_fid, e = consistency_figures(image, item)
        out["rows"].append({"path": "all-in-one", "realism": r, "psnr": p, "fidelity_psnr": p_fid,
                            "energy_above_nyquist": e})  # fmt: skip
    return out


# --- the files the example workflows load (stock loaders: Load Checkpoint, Load CLIP, Load VAE) ---------
# The text encoders at their real sizes (ComfyUI builds them from fixed configs, so they cannot be reduced):
# CLIP-L 123 M and CLIP-G 695 M parameters, random weights, in the layout of the standalone clip_l /
# clip_g files; the SDXL checkpoint is the reduced SDXL UNet with both of them and the 4-channel VAE in
# ComfyUI's single-file layout (what Load Checkpoint detects as SDXL).
WORKFLOW_FILES = ("sdxl_checkpoint", "clip_l", "clip_g", "sd3", "kl16")


def ensure_clip(kind: str, seed: int = SEED) -> Path:
    """The cached standalone text encoder ``kind`` ("l": CLIP-L, "g": CLIP-G), built in this ComfyUI process."""
    path = cached_path(f"clip_{kind}", seed, "te")
    if path.is_file():
        return path
    import comfy.sd1_clip
    import comfy.sdxl_clip
    import torch

    with torch.device("cpu"):
        if kind == "l":
            te = comfy.sd1_clip.SDClipModel(device="cpu", dtype=torch.float16)
        elif kind == "g":
            te = comfy.sdxl_clip.SDXLClipG(device="cpu", dtype=torch.float16)
        else:
            raise ValueError(f"no text encoder fixture {kind!r} (l or g)")
    sd = te.transformer.state_dict()
    diffusion_checkpoint.fill_(sd, seed + {"l": 11, "g": 12}[kind])
    sd = {k: v.to(torch.float16).contiguous() for k, v in sd.items() if v.is_floating_point()}
    return _save(sd, path, f"random CLIP-{kind.upper()} text encoder, seed {seed}")


def ensure_sdxl_checkpoint(seed: int = SEED) -> Path:
    """The cached SDXL single-file checkpoint (reduced UNet, CLIP-L + CLIP-G, 4-channel VAE)."""
    path = cached_path("sdxl", seed, "checkpoint")
    if path.is_file():
        return path
    import comfy.model_detection
    import comfy.utils
    import torch

    config = comfy.model_detection.model_config_from_unet_config(dict(CONFIGS["sdxl"]))
    config.set_inference_dtype(torch.float16, None)
    with torch.device("cpu"):
        model = config.get_model({}, device="cpu")
    model.diffusion_model.load_state_dict(comfy.utils.load_torch_file(str(ensure_unet("sdxl", seed))))
    clip_sd = {}
    for kind in ("l", "g"):
        for k, v in comfy.utils.load_torch_file(str(ensure_clip(kind, seed))).items():
            clip_sd[f"clip_{kind}.transformer.{k}"] = v
    vae_sd = comfy.utils.load_torch_file(str(ensure_vae(4, seed)))
    sd = model.state_dict_for_saving(clip_sd, vae_sd)
    sd = {k: v.to(torch.float16).contiguous() for k, v in sd.items()}
    return _save(sd, path, f"random reduced SDXL checkpoint, seed {seed}")


def build_workflow_files(seed: int = SEED) -> dict[str, Path]:
    """Every file of :data:`WORKFLOW_FILES`, built in this ComfyUI process where not cached."""
    return {
        "sdxl_checkpoint": ensure_sdxl_checkpoint(seed), "clip_l": ensure_clip("l", seed),
        "clip_g": ensure_clip("g", seed), "sd3": ensure_unet("sd3", seed), "kl16": ensure_vae(16, seed),
    }  # fmt: skip


def workflow_files(seed: int = SEED) -> dict[str, Path]:
    """The cached files the example workflows load, built in a child process with ComfyUI imported the first
    time (about 1-2 minutes and 5 GB of memory); callable without ComfyUI in this process."""
    paths = {
        "sdxl_checkpoint": cached_path("sdxl", seed, "checkpoint"), "clip_l": cached_path("clip_l", seed, "te"),
        "clip_g": cached_path("clip_g", seed, "te"), "sd3": cached_path("sd3", seed),
        "kl16": cached_path("kl16", seed, "vae"),
    }  # fmt: skip
    if not all(p.is_file() for p in paths.values()):
        import subprocess
        import sys

        subprocess.run([sys.executable, str(Path(__file__).resolve()), "--seed", str(seed)], check=True,
                       cwd=diffusion_checkpoint.REPO)  # fmt: skip
        missing = [k for k, p in paths.items() if not p.is_file()]
        if missing:
            raise RuntimeError(f"building the workflow fixtures left no file for {missing}")
    return paths


def _main() -> int:
    import argparse
    import sys

    ap = argparse.ArgumentParser(description="Build the files the example diffusion workflows load (cached).")
    ap.add_argument("--seed", type=int, default=SEED)
    seed = ap.parse_args().seed
    sys.path.insert(0, str(diffusion_checkpoint.COMFY_ROOT))
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    import utils.install_util  # noqa: F401  (before comfy.utils shadows the utils package)

    for key, path in build_workflow_files(seed).items():
        print(f"{key}: {path} ({path.stat().st_size / 1e9:.2f} GB)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())

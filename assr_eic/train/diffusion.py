"""``python -m assr_eic.train.diffusion --sd SD_FOLDER ...``: train the diffusion decoder's adaptor.

The SD backbone (UNet, VAE, text encoder) and the codec stay frozen; only :class:`ASSRAdaptor` learns, with
the standard diffusion loss (epsilon or v, as the SD folder's scheduler says) through the diffusers UNet's
``down_block_additional_residuals`` / ``mid_block_additional_residual``. Training pairs come from our own
pipeline: each crop is compressed at a random (s, q) with the codec model (default: the shipped one), and
the adaptor reads the fidelity decoder's output, its uncertainty map and the degradation vector.

Examples::

    python -m assr_eic.train.diffusion --sd ~/models/stable-diffusion-v1-5 --data .cache/data/train \\
        --out adaptor.safetensors --steps 20000 --batch 8 --size 512 --mixed-precision fp16 --grad-checkpointing
    accelerate launch --multi_gpu --num_processes 8 -m assr_eic.train.diffusion --sd ... --out ...

``--sd`` is a local diffusers folder (``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, optional
``scheduler/``). Interrupted runs resume from the latest checkpoint in ``--workdir`` when started again.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ..bitstream import CODECS
from ..diffusion import ASSRAdaptor, Degradation, save_adaptor, uncertainty_map

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def photo_files(folder: Path) -> list[Path]:
    """Training photos in ``folder`` (never the Kodak evaluation crops)."""
    files = sorted(p for p in Path(folder).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SystemExit(f"no training photos in {folder}; run: python -m assr_eic.train.fetch --cache .cache/data")
    return files


def read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def random_crop(img: np.ndarray, size: int, rng: random.Random) -> torch.Tensor:
    """A random ``size`` x ``size`` crop (the photo is upscaled first if smaller), random flip: (1, 3, S, S)."""
    x = torch.from_numpy(np.array(img, copy=True)).permute(2, 0, 1)[None].float() / 255
    h, w = x.shape[-2:]
    if min(h, w) < size:
        f = size / min(h, w)
        x = F.interpolate(x, size=(max(size, round(h * f)), max(size, round(w * f))), mode="bicubic").clamp(0, 1)
        h, w = x.shape[-2:]
    y0, x0 = rng.randrange(h - size + 1), rng.randrange(w - size + 1)
    x = x[..., y0 : y0 + size, x0 : x0 + size]
    return x.flip(-1) if rng.random() < 0.5 else x


def make_pair(model, x: torch.Tensor, codec: str, s: float, q: float) -> dict[str, torch.Tensor]:
    """Compress ``x`` at (s, q) with our pipeline and decode it: the adaptor's inputs and the target image."""
    from ..bitstream import quantize_quality, quantize_scale
    from ..pipeline import encode_at, reconstruct

    enc = encode_at(model, x, codec, quantize_scale(s), quantize_quality(q))
    fidelity = reconstruct(model, enc.bitstream, enc.lowres).clamp(0, 1)
    unc = uncertainty_map(enc.lowres.x_hat, enc.lowres)
    unc = F.interpolate(unc, size=x.shape[-2:], mode="bilinear", align_corners=False)
    deg = Degradation.from_bitstream(enc.bitstream).vector()[None]
    return {"target": x, "decoded": fidelity, "uncertainty": unc, "degradation": deg}


class PairMaker:
    """Endless (target, decoded, uncertainty, degradation) samples from random crops at random (s, q)."""

    def __init__(self, images: list[np.ndarray], model, codec: str, size: int, s_range, q_range, seed: int) -> None:
        self.images, self.model, self.codec, self.size = images, model, codec, size
        self.s_range, self.q_range = s_range, q_range
        self.rng = random.Random(seed)

    def sample(self) -> dict[str, torch.Tensor]:
        img = self.images[self.rng.randrange(len(self.images))]
        x = random_crop(img, self.size, self.rng)
        # log-uniform scale (bits fall as 1/s^2), uniform quality
        s = math.exp(self.rng.uniform(math.log(self.s_range[0]), math.log(self.s_range[1])))
        q = self.rng.uniform(*self.q_range)
        return make_pair(self.model, x, self.codec, s, q)

    def batch(self, n: int) -> dict[str, torch.Tensor]:
        items = [self.sample() for _ in range(n)]
        return {k: torch.cat([it[k] for it in items]) for k in items[0]}


def load_sd(folder: Path, dtype: torch.dtype):
    """UNet, VAE, text encoder, tokenizer and noise scheduler from a local diffusers SD folder, all frozen."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    for sub in ("unet", "vae", "text_encoder", "tokenizer"):
        if not (folder / sub).is_dir():
            raise SystemExit(f"{folder} is not a diffusers Stable Diffusion folder: {sub}/ is missing")
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=dtype)
    vae = AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=dtype)
    text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", torch_dtype=dtype)
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    if (folder / "scheduler").is_dir():
        scheduler = DDPMScheduler.from_pretrained(folder / "scheduler")
    else:  # the SD 1.x training schedule
        scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    for m in (unet, vae, text_encoder):
        m.requires_grad_(False)
        m.eval()
    return unet, vae, text_encoder, tokenizer, scheduler


@torch.no_grad()
def encode_prompt(tokenizer, text_encoder, prompt: str, device) -> torch.Tensor:
    """(1, tokens, dim) text conditioning for one prompt (SD 1.x: the last hidden state)."""
    n = min(tokenizer.model_max_length, text_encoder.config.max_position_embeddings)
    ids = tokenizer(prompt, padding="max_length", max_length=n, truncation=True, return_tensors="pt").input_ids
    return text_encoder(ids.to(device))[0]


def diffusion_loss(unet, adaptor, scheduler, latents, batch, ehs, noise, timesteps) -> torch.Tensor:
    """The standard diffusion loss with the adaptor's residuals added to the UNet's skips."""
    noisy = scheduler.add_noise(latents, noise, timesteps)
    res = adaptor(noisy, timesteps, batch["decoded"], batch["degradation"], batch["uncertainty"])
    dtype = unet.dtype
    pred = unet(
        noisy.to(dtype),
        timesteps,
        ehs.to(dtype),
        down_block_additional_residuals=[r.to(dtype) for r in res.down],
        mid_block_additional_residual=res.mid.to(dtype),
    ).sample
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        target = noise
    elif kind == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    else:
        raise SystemExit(f"prediction type {kind!r} is not supported (epsilon or v_prediction)")
    return F.mse_loss(pred.float(), target.float())


def checkpoints(workdir: Path) -> list[Path]:
    """Complete checkpoints (those with their progress.json), oldest first."""
    cks = [p for p in workdir.glob("checkpoint-*") if (p / "progress.json").is_file()]
    return sorted(cks, key=lambda p: int(p.name.split("-")[1]))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m assr_eic.train.diffusion", description=__doc__.splitlines()[0])
    p.add_argument("--sd", required=True, help="local diffusers Stable Diffusion folder")
    p.add_argument("--data", default=".cache/data/train", help="folder of training photos")
    p.add_argument("--model", help="assr-eic codec model file (default: the shipped model)")
    p.add_argument("--codec", default="av1", choices=CODECS)
    p.add_argument("--out", required=True, help="adaptor safetensors file to write")
    p.add_argument("--workdir", default=".cache/train/diffusion", help="checkpoints and log (resumable)")
    p.add_argument("--steps", type=int, default=10000)
    p.add_argument("--batch", type=int, default=4, help="per process")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--size", type=int, default=512, help="training crop side in pixels (a multiple of 8)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--scale-range", type=float, nargs=2, default=(2.0, 8.0))
    p.add_argument("--quality-range", type=float, nargs=2, default=(0.0, 0.8))
    p.add_argument("--prompt", default="", help="text conditioning during training (the bitstream's prompt slot)")
    p.add_argument("--base-channels", type=int, default=64, help="width of the adaptor's control branch")
    p.add_argument("--mixed-precision", default="no", choices=["no", "fp16", "bf16"])
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument("--save-every", type=int, default=500, help="checkpoint every N steps")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--overfit", action="store_true", help="debug: one fixed batch, noise and timesteps every step")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    return p


def _write_adaptor(acc, adaptor, a: argparse.Namespace, step: int, scheduler) -> None:
    """The trained adaptor as one safetensors file, recording how it was trained."""
    meta = {
        "train_diffusion": {
            "steps": step,
            "sd": Path(a.sd).name,
            "prediction_type": scheduler.config.prediction_type,
            "codec": a.codec,
            "size": a.size,
            "prompt": a.prompt,
        }
    }
    save_adaptor(acc.unwrap_model(adaptor), a.out, meta)
    print(f"wrote {a.out}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Train the adaptor (resumable from the newest checkpoint in ``--workdir``) and write ``--out``."""
    a = build_parser().parse_args(argv)
    if a.size % 8:
        raise SystemExit(f"--size must be a multiple of 8, got {a.size}")
    if a.threads:
        torch.set_num_threads(a.threads)

    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from ..model import load_model

    workdir = Path(a.workdir)
    acc = Accelerator(mixed_precision=a.mixed_precision, gradient_accumulation_steps=a.grad_accum)
    set_seed(a.seed + acc.process_index)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(a.mixed_precision, torch.float32)
    unet, vae, text_encoder, tokenizer, scheduler = load_sd(Path(a.sd), weight_dtype)
    unet.to(acc.device)
    vae.to(acc.device)
    text_encoder.to(acc.device)
    adaptor = ASSRAdaptor.for_unet_config(unet.config, base_channels=a.base_channels)
    if a.grad_checkpointing:
        unet.enable_gradient_checkpointing()
        adaptor.enable_gradient_checkpointing()
    adaptor.train()
    opt = torch.optim.AdamW(adaptor.parameters(), lr=a.lr, weight_decay=1e-2)
    adaptor, opt = acc.prepare(adaptor, opt)

    codec_model = load_model(a.model)
    images = [read_rgb(f) for f in photo_files(a.data)]
    pairs = PairMaker(images, codec_model, a.codec, a.size, a.scale_range, a.quality_range, a.seed + acc.process_index)
    ehs0 = encode_prompt(tokenizer, text_encoder, a.prompt, acc.device)
    sf = vae.config.scaling_factor
    T = scheduler.config.num_train_timesteps

    step = 0
    workdir.mkdir(parents=True, exist_ok=True)
    ck = checkpoints(workdir)[-1] if checkpoints(workdir) else None
    if ck is not None:
        acc.load_state(str(ck))
        step = json.loads((ck / "progress.json").read_text())["step"]
        acc.print(f"resumed from {ck} at step {step}")
    fixed = None
    log_path = workdir / "log.jsonl"
    t0 = time.perf_counter()
    while step < a.steps:
        if a.overfit and fixed is not None:
            batch, noise, timesteps = fixed
        else:
            batch = {k: v.to(acc.device) for k, v in pairs.batch(a.batch).items()}
            with torch.no_grad():
                lat = vae.encode((batch["target"] * 2 - 1).to(weight_dtype)).latent_dist.sample() * sf
            batch["latents"] = lat.float()
            noise = torch.randn_like(batch["latents"])
            timesteps = torch.randint(0, T, (a.batch,), device=acc.device).long()
            if a.overfit:
                fixed = (batch, noise, timesteps)
        with acc.accumulate(adaptor):
            with acc.autocast():
                ehs = ehs0.expand(a.batch, -1, -1)
                loss = diffusion_loss(unet, adaptor, scheduler, batch["latents"], batch, ehs, noise, timesteps)
            acc.backward(loss)
            if acc.sync_gradients:
                acc.clip_grad_norm_(adaptor.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        if acc.sync_gradients:
            step += 1
            loss_v = acc.gather(loss.detach()[None]).mean().item()
            if acc.is_main_process and (step % a.log_every == 0 or step == 1 or step == a.steps):
                rec = {"step": step, "loss": loss_v, "seconds": round(time.perf_counter() - t0, 2)}
                print(json.dumps(rec), flush=True)
                with open(log_path, "a") as f:
                    f.write(json.dumps(rec) + "\n")
            if step % a.save_every == 0 or step == a.steps:
                ck = workdir / f"checkpoint-{step}"
                acc.save_state(str(ck))
                if acc.is_main_process:
                    (ck / "progress.json").write_text(json.dumps({"step": step}))
                    for old in checkpoints(workdir)[:-2]:
                        shutil.rmtree(old)
    acc.wait_for_everyone()
    if acc.is_main_process:
        _write_adaptor(acc, adaptor, a, step, scheduler)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

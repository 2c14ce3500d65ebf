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
import copy
import dataclasses
import json
import shutil
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from ..bitstream import CODECS
from ..diffusion import ASSRAdaptor, save_adaptor
from .diffusion_data import (  # noqa: F401  (make_pair, photo_files, read_rgb: public here as before)
    PairSpec,
    PairStream,
    make_pair,
    pair_loader,
    photo_files,
    quality_codes,
    read_rgb,
    scale_codes,
)


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


def unet_prediction(unet, adaptor, noisy, timesteps, batch, ehs) -> torch.Tensor:
    """The UNet's prediction (epsilon or v) for ``noisy`` latents with the adaptor's residuals added to its skips."""
    res = adaptor(noisy, timesteps, batch["decoded"], batch["degradation"], batch["uncertainty"])
    dtype = unet.dtype
    return unet(
        noisy.to(dtype),
        timesteps,
        ehs.to(dtype),
        down_block_additional_residuals=[r.to(dtype) for r in res.down],
        mid_block_additional_residual=res.mid.to(dtype),
    ).sample


def predicted_x0(scheduler, noisy: torch.Tensor, pred: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """The clean latent the prediction implies: (x_t - sqrt(1 - a) eps) / sqrt(a), or sqrt(a) x_t - sqrt(1 - a) v."""
    a = scheduler.alphas_cumprod.to(noisy.device)[timesteps].float().view(-1, 1, 1, 1)
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return (noisy - (1 - a).sqrt() * pred.float()) / a.sqrt()
    if kind == "v_prediction":
        return a.sqrt() * noisy - (1 - a).sqrt() * pred.float()
    raise SystemExit(f"prediction type {kind!r} is not supported (epsilon or v_prediction)")


def diffusion_loss(unet, adaptor, scheduler, latents, batch, ehs, noise, timesteps) -> torch.Tensor:
    """The standard diffusion loss with the adaptor's residuals added to the UNet's skips."""
    noisy = scheduler.add_noise(latents, noise, timesteps)
    pred = unet_prediction(unet, adaptor, noisy, timesteps, batch, ehs)
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        target = noise
    elif kind == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    else:
        raise SystemExit(f"prediction type {kind!r} is not supported (epsilon or v_prediction)")
    return F.mse_loss(pred.float(), target.float())


class EMA:
    """Exponential moving average of a module's weights: after each step ``e = d * e + (1 - d) * p``."""

    def __init__(self, module: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise SystemExit(f"--ema must be in (0, 1) (or 0 for none), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(module).requires_grad_(False).eval()

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        for e, p in zip(self.module.parameters(), module.parameters(), strict=True):
            e.mul_(self.decay).add_(p.detach().to(e.dtype), alpha=1.0 - self.decay)
        for e, b in zip(self.module.buffers(), module.buffers(), strict=True):
            e.copy_(b)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)


def warmup_lr(step: int, base: float, warmup: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based): linear from base/warmup up to base, then base."""
    return base if warmup <= 0 else base * min(1.0, (step + 1) / warmup)


class PromptEncoder:
    """Text conditioning for a list of prompts, each distinct prompt encoded once (a bounded cache)."""

    def __init__(self, tokenizer, text_encoder, device, limit: int = 1024) -> None:
        self.tokenizer, self.text_encoder, self.device, self.limit = tokenizer, text_encoder, device, limit
        self.cache: dict[str, torch.Tensor] = {}

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        for p in prompts:
            if p not in self.cache:
                if len(self.cache) >= self.limit:
                    self.cache.clear()
                self.cache[p] = encode_prompt(self.tokenizer, self.text_encoder, p, self.device)
        return torch.cat([self.cache[p] for p in prompts])


def unet_family(config, choice: str = "auto") -> str:
    """The checkpoint family an adaptor trained on this diffusers UNet is for (recorded in the file, checked
    at patch time): ``choice``, or from the config (1024-wide cross-attention: SD 2.x, else SD 1.x). SDXL's
    added conditioning is not fed by this trainer, so an SDXL UNet is refused."""
    if getattr(config, "addition_embed_type", None) is not None:
        raise SystemExit(
            "this trainer feeds SD 1.x and SD 2.x UNets; the --sd folder's UNet has SDXL-style added conditioning"
        )
    if choice != "auto":
        return choice
    return "sd2" if config.cross_attention_dim == 1024 else "sd1"


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
    p.add_argument("--workdir", default=".cache/train/diffusion", help="checkpoints and logs (resumable)")
    p.add_argument("--steps", type=int, default=10000)
    p.add_argument("--batch", type=int, default=4, help="per process")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--size", type=int, default=512, help="training crop side in pixels (a multiple of 8)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=0, help="linear learning-rate warm-up over this many steps")
    p.add_argument("--ema", type=float, default=0.0, help="EMA decay of the written adaptor's weights (0: none)")
    p.add_argument("--scale-range", type=float, nargs=2, default=(1.0, 8.0), help="s, as stored scale codes")
    p.add_argument("--quality-range", type=float, nargs=2, default=(0.0, 1.0), help="q, as codec quality levels")
    p.add_argument("--prompt", default="", help="prompt of photos without a NAME.txt caption beside them")
    p.add_argument("--empty-prompt", type=float, default=0.5, help="share of samples trained with an empty prompt")
    p.add_argument(
        "--rate-controlled", type=float, default=0.8,
        help="share of pairs decoded at the decoder strength rate control stores (files coded to a target bpp); "
        "the rest at full strength (files coded at a given scale and quality)",
    )  # fmt: skip
    p.add_argument("--workers", type=int, default=0, help="DataLoader processes making pairs (0: the main one)")
    p.add_argument("--pair-cache", help="folder of pair shards: written on first use, read back after")
    p.add_argument("--val-images", help="folder of validation photos (default: every 10th training photo)")
    p.add_argument(
        "--val-every", type=int, default=500,
        help="validation every N steps (0: never): loss, and a PNG grid of x0 images with PSNR / MS-SSIM / consistency",
    )  # fmt: skip
    p.add_argument("--val-pairs", type=int, default=16, help="fixed validation pairs")
    p.add_argument("--family", default="auto", choices=["auto", "sd1", "sd2"], help="family recorded in the adaptor")
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
    """The trained adaptor (its EMA weights where ``--ema`` is set) as one safetensors file, recording how
    it was trained."""
    meta = {
        "train_diffusion": {
            "steps": step,
            "sd": Path(a.sd).name,
            "prediction_type": scheduler.config.prediction_type,
            "codec": a.codec,
            "size": a.size,
            "prompt": a.prompt,
            "empty_prompt": a.empty_prompt,
            "rate_controlled": a.rate_controlled,
            "scale_range": list(a.scale_range),
            "quality_range": list(a.quality_range),
            "ema": a.ema,
            "warmup": a.warmup,
        }
    }
    module = adaptor if a.ema else acc.unwrap_model(adaptor)
    save_adaptor(module, a.out, meta)
    print(f"wrote {a.out}", flush=True)


def split_photos(a: argparse.Namespace) -> tuple[list[Path], list[Path]]:
    """(training photos, validation photos): ``--val-images``, else every 10th photo held out (none of one)."""
    photos = photo_files(a.data)
    if a.val_images:
        return photos, photo_files(a.val_images)
    if len(photos) < 2:
        return photos, []
    held = photos[::10]
    return [p for p in photos if p not in held], held


def pair_spec(a: argparse.Namespace, rank: int) -> PairSpec:
    if not 0.0 <= a.empty_prompt <= 1.0:
        raise SystemExit(f"--empty-prompt must be in [0, 1], got {a.empty_prompt}")
    if not 0.0 <= a.rate_controlled <= 1.0:
        raise SystemExit(f"--rate-controlled must be in [0, 1], got {a.rate_controlled}")
    return PairSpec(
        a.codec,
        a.size,
        a.batch,
        scale_codes(a.codec, a.size, tuple(a.scale_range)),
        quality_codes(a.codec, tuple(a.quality_range)),
        a.prompt,
        a.empty_prompt,
        a.seed,
        rank,
        a.rate_controlled,
    )


def sample_latents(vae, target: torch.Tensor, dtype, gen: torch.Generator | None) -> torch.Tensor:
    """VAE latents of images in [0, 1]: a sample of the posterior drawn from ``gen`` (None: its mean)."""
    dist = vae.encode((target * 2 - 1).to(dtype)).latent_dist
    lat = dist.mean if gen is None else dist.sample(generator=gen)
    return lat.float() * vae.config.scaling_factor


class Trainer:
    """The frozen SD parts, the adaptor, its optimizer, EMA and generators, and one training step."""

    def __init__(self, a: argparse.Namespace, acc) -> None:
        self.a, self.acc = a, acc
        self.dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(a.mixed_precision, torch.float32)
        self.unet, self.vae, te, tok, self.scheduler = load_sd(Path(a.sd), self.dtype)
        for m in (self.unet, self.vae, te):
            m.to(acc.device)
        self.prompts = PromptEncoder(tok, te, acc.device)
        adaptor = ASSRAdaptor.for_unet_config(self.unet.config, base_channels=a.base_channels)
        adaptor.family = unet_family(self.unet.config, a.family)
        if a.grad_checkpointing:
            self.unet.enable_gradient_checkpointing()
            adaptor.enable_gradient_checkpointing()
        adaptor.train()
        self.ema = EMA(adaptor, a.ema) if a.ema else None
        opt = torch.optim.AdamW(adaptor.parameters(), lr=warmup_lr(0, a.lr, a.warmup), weight_decay=1e-2)
        self.adaptor, self.opt = acc.prepare(adaptor, opt)
        if self.ema is not None:
            self.ema.module.to(acc.device)
        # the generator of VAE posterior samples, noise and timesteps (saved in every checkpoint)
        self.gen = torch.Generator(device=acc.device).manual_seed(a.seed * 1009 + acc.process_index)

    def noised(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(latents, noise, timesteps) for a training batch, all drawn from the trainer's generator."""
        with torch.no_grad():
            lat = sample_latents(self.vae, batch["target"], self.dtype, self.gen)
        noise = torch.randn(lat.shape, generator=self.gen, device=lat.device)
        T = self.scheduler.config.num_train_timesteps
        t = torch.randint(0, T, (lat.shape[0],), generator=self.gen, device=lat.device).long()
        return lat, noise, t

    def step(self, step: int, batch: dict, lat, noise, t) -> torch.Tensor:
        """One optimizer (micro-)step at the warm-up learning rate; the EMA follows each synced step."""
        acc = self.acc
        for g in self.opt.param_groups:
            g["lr"] = warmup_lr(step, self.a.lr, self.a.warmup)
        with acc.accumulate(self.adaptor):
            with acc.autocast():
                ehs = self.prompts(batch["prompts"])
                loss = diffusion_loss(self.unet, self.adaptor, self.scheduler, lat, batch, ehs, noise, t)
            acc.backward(loss)
            if acc.sync_gradients:
                acc.clip_grad_norm_(self.adaptor.parameters(), 1.0)
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
        if acc.sync_gradients and self.ema is not None:
            self.ema.update(acc.unwrap_model(self.adaptor))
        return loss

    def save(self, ck: Path, step: int) -> None:
        """A checkpoint: accelerate's state (weights, optimizer, global RNGs), then the EMA and generator."""
        acc = self.acc
        acc.save_state(str(ck))
        extra = {"gen": self.gen.get_state(), "ema": self.ema.state_dict() if self.ema else None, "step": step}
        torch.save(extra, ck / f"trainer-{acc.process_index}.pt")
        acc.wait_for_everyone()
        if acc.is_main_process:
            (ck / "progress.json").write_text(json.dumps({"step": step}))

    def load(self, ck: Path) -> int:
        """Resume from ``ck``; returns its step."""
        self.acc.load_state(str(ck))
        extra_path = ck / f"trainer-{self.acc.process_index}.pt"
        # checkpoints written before the EMA and the generator were saved lack the file
        extra = torch.load(extra_path, map_location="cpu", weights_only=False) if extra_path.is_file() else {}
        if "gen" in extra:
            self.gen.set_state(extra["gen"])
        if self.ema is not None and extra.get("ema") is not None:
            self.ema.load_state_dict(extra["ema"])
        elif self.ema is not None:  # no EMA saved: it starts from the resumed weights
            self.ema = EMA(self.acc.unwrap_model(self.adaptor), self.a.ema)
        return json.loads((ck / "progress.json").read_text())["step"]


def to_device(batch: dict, device) -> dict:
    """A pair batch with its tensors on ``device`` (its prompts stay as they are)."""
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def _log(path: Path, rec: dict) -> None:
    print(json.dumps(rec), flush=True)
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


VAL_IMAGES = 4  # validation pairs shown in the PNG grid and measured as images (the first ones)
VAL_IMAGE_TIME = 0.3  # the shown x0 is predicted at this share of the training timesteps (fixed noise)


def decode_latents(vae, lat: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] of SD latents (scaled by the VAE's scaling factor), float32."""
    img = vae.decode((lat / vae.config.scaling_factor).to(vae.dtype)).sample
    return ((img.float() + 1) / 2).clamp(0, 1)


def to_8bit(x: torch.Tensor) -> torch.Tensor:
    """``x`` in [0, 1] rounded to the 8-bit levels a PNG stores (so figures are recomputable from the file)."""
    return (x.clamp(0, 1) * 255).round() / 255


def lowres_of(codec_model, codec: str, batch: dict) -> torch.Tensor:
    """The decoded low-res image of a one-pair batch: its target coded again at its stored (s, q) (the same
    bytes as when the pair was made)."""
    from ..bitstream import quantize_quality, quantize_scale
    from ..encoder import encode_at

    sc, qc = quantize_scale(float(batch["s"][0])), quantize_quality(float(batch["q"][0]))
    return encode_at(codec_model, batch["target"].cpu().float(), codec, sc, qc).lowres.x_hat.clamp(0, 1)


def image_figures(codec_model, codec: str, s: float, image, target, fidelity, lowres) -> dict:
    """Figures of one validation image (all (1, 3, H, W) in [0, 1]) against its target: PSNR and MS-SSIM
    (single-scale SSIM below 161 px, :func:`assr_eic.metrics.ms_ssim`), and the consistency figure: the
    PSNR of the image downsampled by s (the encoder's own downsampler) against the file's decoded low-res
    image; the same for the fidelity decode."""
    from ..bitstream import quantize_scale
    from ..encoder import downsample
    from ..metrics import ms_ssim, psnr

    sc = quantize_scale(s)
    return {
        "s": s,
        "psnr": psnr(image, target),
        "ms_ssim": ms_ssim(image, target),
        "consistency_psnr": psnr(downsample(codec_model, image, codec, sc), lowres),
        "fidelity_psnr": psnr(fidelity, target),
        "fidelity_consistency_psnr": psnr(downsample(codec_model, fidelity, codec, sc), lowres),
    }


class Validation:
    """The diffusion loss on fixed pairs with fixed noise and evenly spread timesteps, so that every point
    of the curve (``val.jsonl`` beside the checkpoints) is comparable; the EMA weights where there are.
    Also, on the first :data:`VAL_IMAGES` pairs, the adaptor's x0 prediction at one fixed timestep and noise,
    decoded by the VAE: one PNG grid per record (rows: fidelity decode | x0 | target) under ``val/``, and its
    figures (:func:`image_figures`, on the 8-bit images as saved) in the record."""

    def __init__(self, trainer: Trainer, spec: PairSpec, photos: list[Path], codec_model, count: int) -> None:
        self.trainer, self.codec_model, self.codec = trainer, codec_model, spec.codec
        vspec = dataclasses.replace(spec, batch=1, rank=0, seed=spec.seed + 1)
        self.batches = [PairStream(vspec, photos, codec_model).batch(i) for i in range(count)]
        T = trainer.scheduler.config.num_train_timesteps
        self.timesteps = torch.linspace(0, T - 1, count).round().long()
        self.noise: list[torch.Tensor | None] = [None] * count  # drawn on first use (the latent shape)
        self.gen = torch.Generator().manual_seed(spec.seed)
        self.shown = min(VAL_IMAGES, count)
        self.lowres = [lowres_of(codec_model, spec.codec, b) for b in self.batches[: self.shown]]
        self.image_t = round(VAL_IMAGE_TIME * (T - 1))
        self.image_noise: list[torch.Tensor] = []  # drawn on first use, in order, from their own generator
        self.image_gen = torch.Generator().manual_seed(spec.seed + 2)

    @torch.no_grad()
    def images(self, adaptor, png: Path) -> dict:
        """Write the PNG grid of ``adaptor``'s x0 predictions to ``png``; returns the figures (means over the
        shown pairs, and per image)."""
        from PIL import Image

        tr, dev = self.trainer, self.trainer.acc.device
        was = adaptor.training
        adaptor.eval()
        rows, per = [], []
        for i, b in enumerate(self.batches[: self.shown]):
            batch = to_device(b, dev)
            lat = sample_latents(tr.vae, batch["target"], tr.dtype, None)
            if len(self.image_noise) <= i:
                self.image_noise.append(torch.randn(lat.shape, generator=self.image_gen))
            t = torch.tensor([self.image_t], device=dev)
            noisy = tr.scheduler.add_noise(lat, self.image_noise[i].to(dev), t)
            with tr.acc.autocast():
                pred = unet_prediction(tr.unet, adaptor, noisy, t, batch, tr.prompts(batch["prompts"]))
            x0 = to_8bit(decode_latents(tr.vae, predicted_x0(tr.scheduler, noisy, pred, t)).cpu())
            target, fidelity = to_8bit(b["target"].float()), to_8bit(b["decoded"].float())
            rows.append(torch.cat([fidelity, x0, target], dim=-1))
            s = float(b["s"][0])
            figures = image_figures(self.codec_model, self.codec, s, x0, target, fidelity, self.lowres[i])
            per.append({"q": float(b["q"][0]), **figures})
        adaptor.train(was)
        grid = (torch.cat(rows, dim=-2)[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        png.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid).save(png)
        means = {f"val_{k}": sum(p[k] for p in per) / len(per) for k in per[0] if k not in ("s", "q")}
        return {**means, "val_image_figures": per}

    @torch.no_grad()
    def loss(self, adaptor) -> float:
        """The mean validation loss of ``adaptor`` (in eval mode, restored to train mode after)."""
        tr, dev = self.trainer, self.trainer.acc.device
        was = adaptor.training
        adaptor.eval()
        total = 0.0
        for i, b in enumerate(self.batches):
            batch = to_device(b, dev)
            lat = sample_latents(tr.vae, batch["target"], tr.dtype, None)
            if self.noise[i] is None:
                self.noise[i] = torch.randn(lat.shape, generator=self.gen).to(dev)
            t = self.timesteps[i : i + 1].to(dev)
            with tr.acc.autocast():
                ehs = tr.prompts(batch["prompts"])
                total += diffusion_loss(tr.unet, adaptor, tr.scheduler, lat, batch, ehs, self.noise[i], t).item()
        adaptor.train(was)
        return total / len(self.batches)

    def record(self, step: int, path: Path) -> dict:
        """One line of ``path`` (val.jsonl): the losses, and the images' grid (beside it, under ``val/``) and
        figures of the weights the adaptor file is written from (the EMA's where there is one)."""
        tr = self.trainer
        raw = tr.acc.unwrap_model(tr.adaptor)
        rec = {"step": step, "val_loss": self.loss(raw)}
        if tr.ema is not None:
            rec["val_loss_ema"] = self.loss(tr.ema.module)
        if self.shown:
            png = Path("val") / f"step-{step:08d}.png"
            rec["val_images"] = str(png)
            rec["val_image_weights"] = "ema" if tr.ema is not None else "raw"
            rec.update(self.images(tr.ema.module if tr.ema is not None else raw, path.parent / png))
        _log(path, rec)
        return rec


def _checkpoint(tr: Trainer, workdir: Path, step: int) -> None:
    tr.save(workdir / f"checkpoint-{step}", step)
    if tr.acc.is_main_process:
        for old in checkpoints(workdir)[:-2]:
            shutil.rmtree(old)


def train(a: argparse.Namespace, acc, tr: Trainer, codec_model) -> int:
    """The training loop from the newest checkpoint in ``--workdir`` (or step 0) to ``--steps``."""
    workdir = Path(a.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ck = checkpoints(workdir)[-1] if checkpoints(workdir) else None
    step = tr.load(ck) if ck is not None else 0
    if ck is not None:
        acc.print(f"resumed from {ck} at step {step}")
    photos, val_photos = split_photos(a)
    spec = pair_spec(a, acc.process_index)
    stream = PairStream(spec, photos, codec_model, start=step * a.grad_accum, cache=a.pair_cache)
    val = None
    batches = iter(pair_loader(stream, a.workers))
    fixed, t0 = None, time.perf_counter()
    while step < a.steps:
        if fixed is None:
            batch = to_device(next(batches), acc.device)
            noised = tr.noised(batch)
            fixed = (batch, noised) if a.overfit else None
        batch, noised = fixed if a.overfit else (batch, noised)
        loss = tr.step(step, batch, *noised)
        if not acc.sync_gradients:
            continue
        step += 1
        loss_v = acc.gather(loss.detach()[None]).mean().item()
        if acc.is_main_process and (step % a.log_every == 0 or step == 1 or step == a.steps):
            lr = tr.opt.param_groups[0]["lr"]
            rec = {"step": step, "loss": loss_v, "lr": lr, "seconds": round(time.perf_counter() - t0, 2)}
            _log(workdir / "log.jsonl", rec)
        if a.val_every and step % a.val_every == 0 and val_photos and acc.is_main_process:
            val = val or Validation(tr, spec, val_photos, codec_model, a.val_pairs)
            val.record(step, workdir / "val.jsonl")
        if step % a.save_every == 0 or step == a.steps:
            _checkpoint(tr, workdir, step)
    return step


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

    acc = Accelerator(mixed_precision=a.mixed_precision, gradient_accumulation_steps=a.grad_accum)
    set_seed(a.seed + acc.process_index)
    tr = Trainer(a, acc)
    step = train(a, acc, tr, load_model(a.model))
    acc.wait_for_everyone()
    if acc.is_main_process:
        _write_adaptor(acc, tr.ema.module if tr.ema else tr.adaptor, a, step, tr.scheduler)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

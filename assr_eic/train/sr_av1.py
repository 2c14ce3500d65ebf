"""Train the fidelity decoder for the ``av1`` base codec on pairs made by the real AV1 encoder.

Each pair: a random crop of a training photo, downsampled by a random s (log-uniform in [1, 8],
quantized exactly as files store it), coded by SVT-AV1 at a random quality level and decoded by dav1d.
The decoder learns to undo the downsampling and the codec's artefacts together, conditioned on (s, q).
Pairs live in a pool (encoding a low-res crop takes milliseconds) that is partly refreshed every step,
so the decoder sees new crops and new degradations throughout the run.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import torch

from ..bitstream import quantize_scale
from ..model import ASSRModel
from ..pipeline import downsample
from ..ratecontrol import quality_levels
from . import loop

S_RANGE = (1.0, 8.0)
Q_LEVELS = quality_levels("av1")


class CropSampler:
    """Random square crops of the training photos with zoom, flips and transposition."""

    def __init__(self, images: list[np.ndarray], crop: int, rng: random.Random) -> None:
        self.images, self.crop, self.rng = images, crop, rng

    def __call__(self) -> torch.Tensor:
        img = self.images[self.rng.randrange(len(self.images))]
        H, W = img.shape[:2]
        # random zoom so crops see structure at several scales (never upscale a photo)
        z = self.rng.uniform(max(self.crop / min(H, W), 0.35), 1.0)
        side = min(max(self.crop, round(self.crop / z)), H, W)
        y, x = self.rng.randrange(H - side + 1), self.rng.randrange(W - side + 1)
        t = torch.from_numpy(np.ascontiguousarray(img[y : y + side, x : x + side])).permute(2, 0, 1)[None].float() / 255
        if side != self.crop:
            t = torch.nn.functional.interpolate(t, size=(self.crop, self.crop), mode="bicubic", antialias=True)
        if self.rng.random() < 0.5:
            t = t.flip(-1)
        if self.rng.random() < 0.5:
            t = t.transpose(-1, -2)
        return t.clamp(0, 1)


class PairPool:
    """A pool of (low-res decoded, s, q, high-res target) pairs, refreshed a few at a time."""

    def __init__(self, images: list[np.ndarray], model: ASSRModel, crop: int, size: int, seed: int) -> None:
        self.model = model
        self.rng = random.Random(seed)
        self.random_crop = CropSampler(images, crop, self.rng)
        self.codec = model.codec("av1")
        self.pairs = [self.make() for _ in range(size)]

    def make(self) -> tuple[torch.Tensor, float, float, torch.Tensor]:
        hr = self.random_crop()
        s = math.exp(self.rng.uniform(math.log(S_RANGE[0]), math.log(S_RANGE[1])))
        sc = quantize_scale(s)
        qc = Q_LEVELS[self.rng.randrange(len(Q_LEVELS))]
        x_lr = downsample(self.model, hr, "av1", sc)
        with torch.inference_mode():
            lr = self.codec.encode(x_lr, qc).x_hat
        return lr.clone(), 1 + sc / 64, qc / 255, hr

    def refresh(self, n: int) -> None:
        for _ in range(n):
            self.pairs[self.rng.randrange(len(self.pairs))] = self.make()

    def batch(self, n: int) -> list:
        return [self.pairs[self.rng.randrange(len(self.pairs))] for _ in range(n)]


def charbonnier(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    return torch.sqrt((a - b) ** 2 + eps**2).mean()


def evaluate(sr, pairs) -> float:
    """Mean PSNR over fixed validation pairs (8-bit rounding as the decoder outputs)."""
    vals = []
    with torch.no_grad():
        for lr, s, q, hr in pairs:
            y = sr(lr, hr.shape[-2:], "av1", s, q, tile=4096).sample
            mse = torch.mean((torch.round(y * 255) / 255 - hr) ** 2).item()
            vals.append(10 * math.log10(1 / max(mse, 1e-12)))
    return float(np.mean(vals))


def bicubic_psnr(pairs) -> float:
    vals = []
    for lr, _, _, hr in pairs:
        y = torch.nn.functional.interpolate(lr, size=hr.shape[-2:], mode="bicubic").clamp(0, 1)
        mse = torch.mean((torch.round(y * 255) / 255 - hr) ** 2).item()
        vals.append(10 * math.log10(1 / max(mse, 1e-12)))
    return float(np.mean(vals))


def train(
    model: ASSRModel,
    train_images: list[np.ndarray],
    val_images: list[np.ndarray],
    workdir: Path,
    minutes: float | None = 30,
    steps: int | None = None,
    batch: int = 8,
    crop: int = 160,
    pool: int = 1500,
    lr: float = 4e-4,
    refresh: int = 2,
    seed: int = 0,
) -> dict:
    """Train ``model.sr["av1"]`` in place; resumable from ``workdir/sr_av1.ckpt``."""
    run = loop.setup()
    torch.manual_seed(seed + run.rank)
    sr = model.sr["av1"].train()
    ddp = loop.wrap(sr, run)
    opt = torch.optim.Adam(sr.parameters(), lr=lr)
    ckpt = workdir / "sr_av1.ckpt"
    state = loop.load_checkpoint(ckpt, {"sr": sr}, {"opt": opt})
    val = PairPool(val_images, model, crop=256, size=48, seed=12345).pairs
    if state.step == 0:
        loop.log(run, workdir / "log.jsonl", {"event": "start", "val_bicubic_psnr": bicubic_psnr(val)})
    pool_ = PairPool(train_images, model, crop, pool, seed + 1000 * run.rank + state.step)
    budget = loop.Budget(state, minutes, steps)
    total_guess = steps or 10**9
    while not budget.done():
        frac = budget.fraction()
        for g in opt.param_groups:
            g["lr"] = loop.cosine_lr(int(frac * 10000), 10000, lr, warmup=100)
        items = pool_.batch(batch)
        loss = sum(charbonnier(ddp(lr_, hr.shape[-2:], "av1", s, q, tile=4096).sample, hr) for lr_, s, q, hr in items)
        loss = loss / len(items)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(sr.parameters(), 1.0)
        opt.step()
        pool_.refresh(refresh)
        state.step += 1
        if state.step % 50 == 0:
            rec = {"step": state.step, "loss": round(loss.item(), 5), "lr": opt.param_groups[0]["lr"],
                   "minutes": round(budget.elapsed() / 60, 2)}  # fmt: skip
            if state.step % 250 == 0:
                sr.eval()
                rec["val_psnr"] = round(evaluate(sr, val), 3)
                sr.train()
                loop.save_checkpoint(ckpt, {"sr": sr}, {"opt": opt}, state)
            state.history.append(rec)
            loop.log(run, workdir / "log.jsonl", rec)
        if state.step >= total_guess:
            break
    sr.eval()
    result = {"steps": state.step, "minutes": round(budget.elapsed() / 60, 1), "val_psnr": evaluate(sr, val),
              "val_bicubic_psnr": bicubic_psnr(val)}  # fmt: skip
    loop.save_checkpoint(ckpt, {"sr": sr}, {"opt": opt}, state)
    loop.log(run, workdir / "log.jsonl", {"event": "done", **result})
    return result

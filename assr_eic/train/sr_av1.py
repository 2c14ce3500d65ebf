"""Train the fidelity decoder for the ``av1`` base codec on pairs made by the real AV1 encoder.

Each pair: a random crop of a training photo, downsampled by a random s (log-uniform in [1, 8],
quantized exactly as files store it), coded by the AV1 encoder (libaom) at a random quality level and
decoded by dav1d. The decoder learns to undo the downsampling and the codec's artefacts together, conditioned on (s, q).
Pairs live in a pool (encoding a low-res crop takes milliseconds) that is partly refreshed every step,
so the decoder sees new crops and new degradations throughout the run.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import multiprocessing as mp
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..bitstream import dequantize_scale, quantize_scale
from ..codec.av1 import AV1Codec, quantizer_from_quality
from ..model import ASSRModel
from ..pipeline import downsample
from . import loop

S_RANGE = (1.0, 8.0)
Q_LEVELS = AV1Codec.quality_levels()


class CropSampler:
    """Random square crops of the training photos with zoom, flips and transposition.

    ``device`` is where the resampling runs (a GPU keeps the trainer from waiting on the CPU).
    """

    def __init__(self, images: list[np.ndarray], crop: int, rng: random.Random, device: str = "cpu") -> None:
        self.images, self.crop, self.rng, self.device = images, crop, rng, torch.device(device)

    def __call__(self) -> torch.Tensor:
        img = self.images[self.rng.randrange(len(self.images))]
        H, W = img.shape[:2]
        # random zoom so crops see structure at several scales (never upscale a photo)
        z = self.rng.uniform(max(self.crop / min(H, W), 0.35), 1.0)
        side = min(max(self.crop, round(self.crop / z)), H, W)
        y, x = self.rng.randrange(H - side + 1), self.rng.randrange(W - side + 1)
        t = torch.from_numpy(np.ascontiguousarray(img[y : y + side, x : x + side])).to(self.device)
        t = t.permute(2, 0, 1)[None].float() / 255
        if side != self.crop:
            t = torch.nn.functional.interpolate(t, size=(self.crop, self.crop), mode="bicubic", antialias=True)
        if self.rng.random() < 0.5:
            t = t.flip(-1)
        if self.rng.random() < 0.5:
            t = t.transpose(-1, -2)
        return t.clamp(0, 1)


@dataclass
class PairGroup:
    """``n`` training pairs sharing one scale s (so they stack into one batch), each at its own quality.

    ``lr``: (n, 3, h, w) decoded low-res frames; ``hr``: (n, 3, crop, crop) uint8 targets;
    ``s``: the scale as files store it; ``q``: (n,) quality in [0, 1].
    """

    lr: torch.Tensor
    hr: torch.Tensor
    s: float
    q: torch.Tensor


class PairMaker:
    """Makes :class:`PairGroup` s with the real AV1 encoder and decoder (on the CPU)."""

    def __init__(
        self, images: list[np.ndarray], model: ASSRModel, crop: int, seed: int, levels: list[int] = Q_LEVELS
    ) -> None:
        self.model, self.seed, self.levels = model, seed, levels
        self.rng = random.Random(seed)
        self.random_crop = CropSampler(images, crop, self.rng)
        self.codec = model.codec("av1")

    def group(self, n: int) -> PairGroup:
        s = math.exp(self.rng.uniform(math.log(S_RANGE[0]), math.log(S_RANGE[1])))
        sc = quantize_scale(s)
        hr = torch.cat([self.random_crop() for _ in range(n)])
        qcs = [self.levels[self.rng.randrange(len(self.levels))] for _ in range(n)]
        with torch.inference_mode():
            x_lr = downsample(self.model, hr, "av1", sc)
            lr = torch.cat([self.codec.encode(x_lr[i : i + 1], qc).x_hat for i, qc in enumerate(qcs)])
        hr8 = torch.round(hr * 255).to(torch.uint8)
        return PairGroup(lr.clone(), hr8, dequantize_scale(sc), torch.tensor(qcs, dtype=torch.float32) / 255)


_worker_maker: PairMaker | None = None


def levels_for(quantizers: tuple[int, int]) -> list[int]:
    """The quality levels whose AV1 quantizer lies in ``quantizers`` = (finest, coarsest), inclusive."""
    lo, hi = quantizers
    levels = [c for c in Q_LEVELS if lo <= quantizer_from_quality(c) <= hi]
    if not levels:
        raise ValueError(f"no AV1 quantizer in {lo}-{hi} (they run from 1 to 63)")
    return levels


def _worker_init(photo_files: list[str], down_state: dict, crop: int, seed: int, levels: list[int]) -> None:
    global _worker_maker
    from PIL import Image

    torch.set_num_threads(1)
    images = [np.asarray(Image.open(p).convert("RGB")) for p in photo_files]
    model = ASSRModel()
    model.downsampler["av1"].load_state_dict(down_state)
    seed = seed * 1000 + int.from_bytes(os.urandom(2), "little")  # each worker its own stream
    _worker_maker = PairMaker(images, model, crop, seed, levels)


def _worker_group(n: int) -> PairGroup:
    assert _worker_maker is not None
    return _worker_maker.group(n)


class PairPool:
    """A pool of pair groups, partly renewed every step, inline or by CPU worker processes.

    With ``workers`` > 0 the AV1 coding runs in that many processes while the trainer (on a GPU,
    say) keeps training on the pool; each finished group replaces a random old one.
    """

    def __init__(self, maker: PairMaker, size: int, group: int, workers: int = 0, init_args: tuple = ()) -> None:
        self.maker, self.group, self.capacity = maker, group, size
        self.rng = random.Random(maker.seed + 1)
        self.groups: list[PairGroup] = []
        self.made = 0
        self.executor = None
        self.pending: list = []
        if workers > 0:
            self.executor = cf.ProcessPoolExecutor(
                workers, mp.get_context("spawn"), initializer=_worker_init, initargs=init_args
            )
            self.pending = [self.executor.submit(_worker_group, group) for _ in range(2 * workers)]
            while len(self.groups) < size:
                self._collect(block=True)
        else:
            while len(self.groups) < size:
                self._add(maker.group(group))

    def _add(self, g: PairGroup) -> None:
        if len(self.groups) < self.capacity:
            self.groups.append(g)
        else:
            self.groups[self.rng.randrange(len(self.groups))] = g
        self.made += 1

    def _collect(self, block: bool = False) -> None:
        done, _ = cf.wait(self.pending, timeout=None if block else 0, return_when=cf.FIRST_COMPLETED)
        for f in done:
            self.pending.remove(f)
            self.pending.append(self.executor.submit(_worker_group, self.group))
            self._add(f.result())

    def refresh(self, n: int) -> None:
        """Renew groups: ``n`` made inline, or whatever the workers have finished meanwhile."""
        if self.executor is not None:
            self._collect()
        else:
            for _ in range(n):
                self._add(self.maker.group(self.group))

    def sample(self) -> PairGroup:
        return self.groups[self.rng.randrange(len(self.groups))]

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)


def charbonnier(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    return torch.sqrt((a - b) ** 2 + eps**2).mean()


def _psnr(y: torch.Tensor, hr: torch.Tensor) -> list[float]:
    """Per-image PSNR with the output rounded to 8 bits as the decoder delivers it."""
    mse = ((torch.round(y.clamp(0, 1) * 255) / 255 - hr) ** 2).flatten(1).mean(1)
    return [10 * math.log10(1 / max(m, 1e-12)) for m in mse.tolist()]


def evaluate(sr, groups: list[PairGroup], device: torch.device) -> float:
    """Mean PSNR over fixed validation pairs."""
    vals = []
    with torch.no_grad():
        for g in groups:
            hr = g.hr.to(device).float() / 255
            vals += _psnr(sr(g.lr.to(device), hr.shape[-2:], "av1", g.s, g.q.to(device), tile=4096).sample, hr)
    return float(np.mean(vals))


def bicubic_psnr(groups: list[PairGroup]) -> float:
    vals = []
    for g in groups:
        hr = g.hr.float() / 255
        vals += _psnr(torch.nn.functional.interpolate(g.lr, size=hr.shape[-2:], mode="bicubic"), hr)
    return float(np.mean(vals))


def _remember_best(path: Path, sr: torch.nn.Module, step: int, val_psnr: float) -> None:
    """Keep ``sr``'s weights in ``path`` if ``val_psnr`` beats the best so far."""
    if path.is_file() and torch.load(path, map_location="cpu")["val_psnr"] >= val_psnr:
        return
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"sr": sr.state_dict(), "step": step, "val_psnr": val_psnr}, tmp)
    os.replace(tmp, path)


def train(
    model: ASSRModel,
    train_images: list[np.ndarray],
    val_images: list[np.ndarray],
    workdir: Path,
    minutes: float | None = 30,
    steps: int | None = None,
    batch: int = 8,
    crop: int = 160,
    pool: int = 200,
    lr: float = 4e-4,
    refresh: int = 1,
    seed: int = 0,
    workers: int = 0,
    train_files: list[Path] | None = None,
    keep: str = "last",
    quantizers: tuple[int, int] = (1, 63),
    val_groups: int = 12,
) -> dict:
    """Train ``model.sr["av1"]`` in place; resumable from ``workdir/sr_av1.ckpt``.

    A step is one group of ``batch`` pairs at one scale. ``workers`` > 0 makes pairs in that many CPU
    processes (needs ``train_files``, the paths of ``train_images``), for a GPU that would otherwise wait.
    ``keep="best"`` leaves the weights of the best validation score in the model (kept in
    ``workdir/sr_av1_best.pt``) instead of the last ones: on few photos the decoder starts to overfit.
    ``quantizers`` limits the AV1 quantizers of the pairs (training and validation alike), for instance
    to the coarse ones rate control picks at 0.01-0.3 bpp. Validation uses ``val_groups`` fixed groups of 4
    pairs (256 px crops of the held-out photos); more of them make the ``keep="best"`` choice less noisy.

    One function on purpose (about 100 lines): set-up, loop, validation and export share the optimiser,
    the pair pool, the budget and the best-weights file, which pieces would only pass around.
    """
    levels = levels_for(quantizers)
    run = loop.setup()
    torch.manual_seed(seed + run.rank)
    sr = model.sr["av1"].to(run.device).train()
    ddp = loop.wrap(sr, run)
    opt = torch.optim.Adam(sr.parameters(), lr=lr)
    ckpt = workdir / "sr_av1.ckpt"
    best_file = workdir / "sr_av1_best.pt"
    state = loop.load_checkpoint(ckpt, {"sr": sr}, {"opt": opt})
    val_maker = PairMaker(val_images, model, crop=256, seed=12345, levels=levels)
    val = [val_maker.group(4) for _ in range(val_groups)]
    if state.step == 0:
        sr.eval()
        start = {"event": "start", "val_bicubic_psnr": bicubic_psnr(val), "val_psnr": evaluate(sr, val, run.device)}
        sr.train()
        _remember_best(best_file, sr, 0, start["val_psnr"])  # a fine-tune that never beats its start exports it
        loop.log(run, workdir / "log.jsonl", {**start, "quantizers": list(quantizers)})
    maker = PairMaker(train_images, model, crop, seed + 1000 * run.rank + state.step, levels)
    if workers and train_files is None:
        raise ValueError("workers > 0 needs train_files (the photos' paths)")
    init_args = (
        [str(p) for p in train_files or []],
        model.downsampler["av1"].state_dict(),
        crop,
        seed + run.rank,
        levels,
    )
    pool_ = PairPool(maker, pool, batch, workers, init_args)
    budget = loop.Budget(state, minutes, steps)
    try:
        while not budget.done():
            for g in opt.param_groups:
                g["lr"] = loop.cosine_lr(int(budget.fraction() * 10000), 10000, lr, warmup=100)
            grp = pool_.sample()
            hr = grp.hr.to(run.device, non_blocking=True).float() / 255
            y = ddp(grp.lr.to(run.device), hr.shape[-2:], "av1", grp.s, grp.q.to(run.device), tile=4096).sample
            loss = charbonnier(y, hr)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(sr.parameters(), 1.0)
            opt.step()
            pool_.refresh(refresh)
            state.step += 1
            if state.step % 50 == 0:
                rec = {"step": state.step, "loss": round(loss.item(), 5), "lr": opt.param_groups[0]["lr"],
                       "groups_made": pool_.made, "minutes": round(budget.elapsed() / 60, 2)}  # fmt: skip
                if state.step % 1000 == 0 or (run.device.type == "cpu" and state.step % 250 == 0):
                    sr.eval()
                    rec["val_psnr"] = round(evaluate(sr, val, run.device), 3)
                    sr.train()
                    _remember_best(best_file, sr, state.step, rec["val_psnr"])
                    loop.save_checkpoint(ckpt, {"sr": sr}, {"opt": opt}, state)
                state.history.append(rec)
                loop.log(run, workdir / "log.jsonl", rec)
    finally:
        pool_.close()
    sr.eval()
    result = {"steps": state.step, "minutes": round(budget.elapsed() / 60, 1),
              "val_psnr": evaluate(sr, val, run.device), "val_bicubic_psnr": bicubic_psnr(val)}  # fmt: skip
    loop.save_checkpoint(ckpt, {"sr": sr}, {"opt": opt}, state)
    _remember_best(best_file, sr, state.step, result["val_psnr"])
    if keep == "best":
        best = torch.load(best_file, map_location=run.device)
        sr.load_state_dict(best["sr"])
        result.update(exported="best", exported_step=best["step"], exported_val_psnr=best["val_psnr"])
    loop.log(run, workdir / "log.jsonl", {"event": "done", **result})
    sr.cpu()
    return result

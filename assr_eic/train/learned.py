"""Train the ``learned`` base codec end to end: downsampler refinement, hyperprior codec, decoder.

Per batch a scale s (log-uniform in [1, 8]) and per image a quality q (uniform in [0, 1]) are drawn;
the loss is ``lmbda(q) * 255**2 * MSE(x, x_hat) + bpp`` with bpp counted over the ORIGINAL pixels
(what the user pays), plus the entropy bottleneck's auxiliary quantile loss.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import torch

from ..bitstream import lowres_size, quantize_scale
from ..model import ASSRModel
from ..rescale import pad_to_multiple
from . import loop
from .sr_av1 import CropSampler

S_RANGE = (1.0, 8.0)


def forward(model: ASSRModel, hr: torch.Tensor, s: float, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_hat at HR, bits per HR pixel per image) through the differentiable training path."""
    net = model.learned_net
    size = lowres_size(*hr.shape[-2:], quantize_scale(s))
    x_lr = model.downsampler["learned"](hr, size, "learned", s)
    padded, _ = pad_to_multiple(x_lr, net.downsampling_factor)
    out = net(padded, q)
    lr_hat = out["x_hat"][..., : size[0], : size[1]].clamp(0, 1)
    unc = (out["scales"] * net._interp(net.inv_gain, q)).mean(1, keepdim=True)
    unc = torch.nn.functional.interpolate(unc, scale_factor=16, mode="nearest")[..., : size[0], : size[1]]
    sr = model.sr["learned"]
    emb = sr.embedding("learned", s, q, hr.shape[0])
    y = sr.render_tile(lr_hat, unc, emb, hr.shape[-2:], (0, hr.shape[-2], 0, hr.shape[-1]))
    bits = sum(-torch.log2(lk).flatten(1).sum(1) for lk in out["likelihoods"].values())
    return y, bits / (hr.shape[-2] * hr.shape[-1])


def train(
    model: ASSRModel,
    train_images: list[np.ndarray],
    val_images: list[np.ndarray],
    workdir: Path,
    minutes: float | None = 25,
    steps: int | None = None,
    batch: int = 8,
    crop: int = 160,
    lr: float = 2e-4,
    seed: int = 0,
) -> dict:
    """Train the learned codec path of ``model`` in place; resumable from ``workdir/learned.ckpt``."""
    run = loop.setup()
    torch.manual_seed(seed + run.rank)
    rng = random.Random(seed + run.rank)
    net = model.learned_net.to(run.device).train()
    parts = {"net": net, "down": model.downsampler["learned"], "sr": model.sr["learned"]}
    for m in parts.values():
        m.to(run.device).train()
    main_params = [p for k, m in parts.items() for n, p in m.named_parameters() if not n.endswith("quantiles")]
    opt = torch.optim.Adam(main_params, lr=lr)
    aux_opt = torch.optim.Adam([p for n, p in net.named_parameters() if n.endswith("quantiles")], lr=1e-3)
    ckpt = workdir / "learned.ckpt"
    state = loop.load_checkpoint(ckpt, parts, {"opt": opt, "aux": aux_opt})
    crops = CropSampler(train_images, crop, rng, device=run.device)
    budget = loop.Budget(state, minutes, steps)
    while not budget.done():
        for g in opt.param_groups:
            g["lr"] = loop.cosine_lr(int(budget.fraction() * 10000), 10000, lr, warmup=100)
        hr = torch.cat([crops() for _ in range(batch)])
        s = math.exp(rng.uniform(math.log(S_RANGE[0]), math.log(S_RANGE[1])))
        q = torch.rand(batch, device=run.device)
        y, bpp = forward(model, hr, s, q)
        mse = ((y - hr) ** 2).flatten(1).mean(1)
        lmbda = net.lmbda(q)
        loss = (lmbda * 255**2 * mse + bpp).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(main_params, 1.0)
        opt.step()
        aux = net.aux_loss()
        aux_opt.zero_grad(set_to_none=True)
        aux.backward()
        aux_opt.step()
        state.step += 1
        if state.step % 50 == 0:
            psnr = (-10 * torch.log10(mse.detach().clamp_min(1e-10))).mean().item()
            rec = {"step": state.step, "loss": round(loss.item(), 4), "bpp": round(bpp.mean().item(), 4),
                   "psnr": round(psnr, 2), "aux": round(aux.item(), 2),
                   "minutes": round(budget.elapsed() / 60, 2)}  # fmt: skip
            state.history.append(rec)
            loop.log(run, workdir / "log.jsonl", rec)
            if state.step % 250 == 0:
                loop.save_checkpoint(ckpt, parts, {"opt": opt, "aux": aux_opt}, state)
    for m in parts.values():
        m.eval().cpu()
    loop.save_checkpoint(ckpt, parts, {"opt": opt, "aux": aux_opt}, state)
    result = {"steps": state.step, "minutes": round(budget.elapsed() / 60, 1), "last": state.history[-4:]}
    try:
        net.update(force=True)  # CDF tables, computed once and saved with the weights
    except NotImplementedError as e:  # CompressAI without its compiled extension (see scripts/gpu_train.sh)
        result["cdf_tables"] = f"missing ({e}); run the same command again on a full install to add them"
    loop.log(run, workdir / "log.jsonl", {"event": "done", **result})
    return result

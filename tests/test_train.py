"""The AV1 decoder's trainer: real AV1 pairs, learning on them, resuming, best-checkpoint export, workers."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from PIL import Image

from assr_eic.bitstream import lowres_size
from assr_eic.codec.av1 import quantizer_from_quality
from assr_eic.model import ASSRModel
from assr_eic.train import sr_av1


@pytest.fixture(scope="module")
def photos(photo, photo2) -> list[np.ndarray]:
    return [photo, photo2]


def group_psnr(sr, g: sr_av1.PairGroup) -> float:
    sr.eval()
    return sr_av1.evaluate(sr, [g], torch.device("cpu"))


def test_pair_group_is_real_av1_output(photos):
    g = sr_av1.PairMaker(photos, ASSRModel(), crop=96, seed=3).group(3)
    assert g.hr.dtype == torch.uint8 and g.hr.shape == (3, 3, 96, 96)
    s_code = round((g.s - 1) * 64)
    assert g.lr.shape[-2:] == lowres_size(96, 96, s_code)
    assert g.q.shape == (3,) and bool(((g.q >= 0) & (g.q <= 1)).all())
    # AV1 at these rates loses detail: the decoded frame is not the bicubic downsample itself
    hr = g.hr.float() / 255
    down = torch.nn.functional.interpolate(hr, size=g.lr.shape[-2:], mode="bicubic", antialias=True)
    assert 1e-5 < float(((g.lr - down) ** 2).mean()) < 0.05


def test_training_learns_a_fixed_group_then_resumes_and_keeps_best(photos, tmp_path):
    torch.manual_seed(0)
    model = ASSRModel()
    maker = sr_av1.PairMaker(photos, model, crop=64, seed=5)
    before = group_psnr(model.sr["av1"], maker.group(4))
    # pool of one group never refreshed: the decoder must fit it
    r1 = sr_av1.train(model, photos, photos, tmp_path, minutes=None, steps=150, batch=4, crop=64, pool=1,
                      refresh=0, lr=3e-3, seed=5)  # fmt: skip
    g = sr_av1.PairMaker(photos, ASSRModel(), crop=64, seed=5).group(4)  # the trainer's one group, remade
    after = group_psnr(model.sr["av1"], g)
    fresh = group_psnr(ASSRModel().sr["av1"], g)  # zero-initialised head: plain bicubic
    assert after > fresh + 0.3, (before, fresh, after)
    assert r1["steps"] == 150
    # resume: the step count continues from the checkpoint, the log keeps both runs
    r2 = sr_av1.train(model, photos, photos, tmp_path, minutes=None, steps=170, batch=4, crop=64, pool=1,
                      refresh=0, lr=3e-3, seed=5, keep="best")  # fmt: skip
    assert r2["steps"] == 170
    best = torch.load(tmp_path / "sr_av1_best.pt")
    assert r2["exported"] == "best" and r2["exported_val_psnr"] == best["val_psnr"]
    assert best["val_psnr"] >= max(r1["val_psnr"], r2["val_psnr"]) - 1e-9
    events = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [e["steps"] for e in events if e.get("event") == "done"] == [150, 170]


def test_keep_best_exports_the_start_when_training_only_hurts(photos, tmp_path):
    """A fine-tune that never beats its starting weights (here a learning rate that wrecks them) exports
    the start under keep="best", scored on the requested number of validation groups."""
    torch.manual_seed(0)
    model = ASSRModel()
    start = {k: v.clone() for k, v in model.sr["av1"].state_dict().items()}
    r = sr_av1.train(model, photos, photos, tmp_path, minutes=None, steps=4, batch=2, crop=64, pool=1,
                     refresh=0, lr=5.0, seed=2, keep="best", val_groups=2)  # fmt: skip
    assert r["exported"] == "best" and r["exported_step"] == 0
    assert r["val_psnr"] < r["exported_val_psnr"]  # the last weights score worse than the start
    assert all(torch.equal(v, start[k]) for k, v in model.sr["av1"].state_dict().items())
    first = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[0])
    assert first["event"] == "start" and first["val_psnr"] == r["exported_val_psnr"]


def test_worker_processes_make_pairs(photos, tmp_path):
    files = []
    for i, p in enumerate(photos):
        files.append(tmp_path / f"p{i}.png")
        Image.fromarray(p).save(files[-1])
    model = ASSRModel()
    levels = sr_av1.levels_for((40, 63))  # --quantizers 40-63: coarse pairs only, in the workers too
    maker = sr_av1.PairMaker(photos, model, crop=64, seed=1, levels=levels)
    init = ([str(f) for f in files], model.downsampler["av1"].state_dict(), 64, 1, levels)
    pool = sr_av1.PairPool(maker, size=3, group=2, workers=1, init_args=init)

    def quantizers() -> set[int]:
        return {quantizer_from_quality(round(q * 255)) for g in pool.groups for q in g.q.tolist()}

    try:
        assert len(pool.groups) == 3 and pool.made >= 3
        for g in pool.groups:
            assert g.hr.shape == (2, 3, 64, 64) and g.lr.shape[0] == 2
        made = pool.made
        for _ in range(200):  # the worker keeps coding in the background; refresh collects what it finished
            pool.refresh(1)
            if pool.made > made:
                break
            time.sleep(0.05)
        assert pool.made > made, "the worker delivered no new group in 10 s"
        assert min(quantizers()) >= 40 and max(quantizers()) <= 63
    finally:
        pool.close()


def test_quantizer_range_selects_levels():
    levels = sr_av1.levels_for((32, 63))
    assert sorted(quantizer_from_quality(c) for c in levels) == list(range(32, 64))
    with pytest.raises(ValueError, match="no AV1 quantizer in 70-80"):
        sr_av1.levels_for((70, 80))

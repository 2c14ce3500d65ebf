"""The adaptor's training script on a tiny diffusers SD folder built here (UNet, VAE, CLIP text encoder and
a CLIP tokenizer with a small offline vocabulary): it overfits a batch, resumes, and writes an adaptor
file that reloads with the residuals of the trained module."""

from __future__ import annotations

import json
import string

import numpy as np
import pytest
import torch

from assr_eic.diffusion import ASSRAdaptor, Degradation, load_adaptor
from assr_eic.train import diffusion as train_diffusion

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")


def make_tiny_sd(folder) -> None:
    """A random-weight SD-shaped diffusers folder: unet/, vae/ (8x down), text_encoder/, tokenizer/, scheduler/."""
    torch.manual_seed(0)
    diffusers.UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=8,
    ).save_pretrained(folder / "unet")
    diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        latent_channels=4,
        norm_num_groups=4,
        layers_per_block=1,
        sample_size=64,
    ).save_pretrained(folder / "vae")
    cfg = transformers.CLIPTextConfig(
        vocab_size=140,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=16,
        bos_token_id=136,
        eos_token_id=137,
        pad_token_id=137,
    )
    transformers.CLIPTextModel(cfg).save_pretrained(folder / "text_encoder")
    chars = sorted(set(string.ascii_lowercase + string.digits + string.punctuation))
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16)
    tok.save_pretrained(folder / "tokenizer")
    diffusers.DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear").save_pretrained(
        folder / "scheduler"
    )


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-sd")
    make_tiny_sd(folder)
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    from PIL import Image
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    for name in ("coffee", "chelsea"):
        Image.fromarray(getattr(data, name)()).save(folder / f"{name}.png")
    return folder


def read_log(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_tokenizer_and_text_encoder_load_offline(sd_folder):
    unet, vae, te, tok, sched = train_diffusion.load_sd(sd_folder, torch.float32)
    ehs = train_diffusion.encode_prompt(tok, te, "a red cup on a table", "cpu")
    assert ehs.shape == (1, 16, 32) and not any(p.requires_grad for p in unet.parameters())
    assert not torch.equal(ehs, train_diffusion.encode_prompt(tok, te, "", "cpu"))


def test_make_pair_uses_the_real_pipeline(model, photo):
    x = torch.tensor(photo[:64, :64]).permute(2, 0, 1)[None].float() / 255
    pair = train_diffusion.make_pair(model, x, "av1", 4.0, 0.2)
    assert pair["decoded"].shape == (1, 3, 64, 64) and pair["uncertainty"].shape == (1, 1, 64, 64)
    deg = pair["degradation"][0]
    assert deg[0] == pytest.approx(Degradation("av1", 4.0, 0.2, 0.1).vector()[0]) and deg[2] < -0.5
    err = (pair["decoded"] - x).abs().mean()
    assert 0.005 < err < 0.2  # a real, lossy reconstruction of this crop


@pytest.mark.slow  # about 1-4 minutes on these 2 CPUs (45 training steps, two runs)
def test_overfits_a_batch_resumes_and_saves_a_loadable_adaptor(sd_folder, photos, model_path, tmp_path):
    out, work = tmp_path / "adaptor.safetensors", tmp_path / "work"
    args = ["--sd", str(sd_folder), "--data", str(photos), "--model", model_path, "--out", str(out)]
    args += ["--workdir", str(work), "--size", "64", "--batch", "2", "--lr", "5e-3", "--base-channels", "8"]
    args += ["--overfit", "--save-every", "20", "--log-every", "1", "--grad-checkpointing", "--seed", "3"]
    assert train_diffusion.main([*args, "--steps", "20"]) == 0
    assert train_diffusion.main([*args, "--steps", "45"]) == 0  # resumes at step 20
    log = read_log(work / "log.jsonl")
    assert [r["step"] for r in log] == list(range(1, 46))  # no step repeated or skipped across the resume
    first, last = log[0]["loss"], np.mean([r["loss"] for r in log[-5:]])
    assert last < 0.5 * first, (first, last)

    # the written adaptor gives the trained module's residuals (weights from the last training checkpoint)
    from safetensors.torch import load_file

    loaded = load_adaptor(out)
    trained = ASSRAdaptor.from_config(loaded.config)
    trained.load_state_dict(load_file(str(work / "checkpoint-45" / "model.safetensors")))
    g = torch.Generator().manual_seed(0)
    x, dec = torch.randn(1, 4, 8, 8, generator=g), torch.rand(1, 3, 64, 64, generator=g)
    unc, deg = torch.rand(1, 1, 64, 64, generator=g), Degradation("av1", 3.0, 0.3, 0.02).vector()[None]
    with torch.no_grad():
        a, b = loaded(x, torch.tensor([400]), dec, deg, unc), trained.eval()(x, torch.tensor([400]), dec, deg, unc)
    assert max(r.abs().max() for r in a.down) > 0  # it learned something
    for ra, rb in zip([*a.down, a.mid], [*b.down, b.mid], strict=True):
        assert torch.equal(ra, rb)
    assert json.loads(loaded_meta(out)["train_diffusion"])["steps"] == 45


def loaded_meta(path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


# --- the GPU-run features: workers and pair cache, quantised (s, q), prompts, EMA, warm-up, validation, resume


def tiny_spec(**kw):
    from assr_eic.train.diffusion_data import PairSpec, quality_codes, scale_codes

    base = dict(codec="av1", size=64, batch=1, scale_codes=scale_codes("av1", 64, (1.0, 8.0)))
    base["quality_codes"] = quality_codes("av1", (0.0, 1.0))
    return PairSpec(**{**base, **kw})


def test_sampled_s_and_q_are_the_values_the_encoder_writes(photos):
    from assr_eic.bitstream import dequantize_quality, dequantize_scale, quantize_quality, quantize_scale
    from assr_eic.ratecontrol import quality_levels

    spec = tiny_spec(empty_prompt=0.25, prompt="a photo")
    rng = spec.rng(0)
    codes = [spec.draw_codes(rng) for _ in range(4000)]
    s = np.array([dequantize_scale(c) for c, _ in codes])
    q = np.array([dequantize_quality(c) for _, c in codes])
    assert s.min() >= 1.0 and s.max() <= 8.0 and q.min() >= 0.0 and q.max() <= 1.0
    assert all(quantize_scale(v) == c and dequantize_scale(c) == v for v, (c, _) in zip(s, codes, strict=True))
    assert {c for _, c in codes} == set(quality_levels("av1"))  # every distinct level, nothing between
    assert all(quantize_quality(v) == c for v, (_, c) in zip(q, codes, strict=True))
    # log-uniform in s: the share in [1, 2] is log 2 / log 8 = 1/3, in [4, 8] also 1/3
    assert np.mean(s <= 2.0) == pytest.approx(1 / 3, abs=0.03) and np.mean(s >= 4.0) == pytest.approx(1 / 3, abs=0.03)
    assert s.min() < 1.05 and s.max() > 7.9
    narrow = tiny_spec(scale_codes=train_diffusion.scale_codes("av1", 64, (2.0, 3.0)))
    assert {dequantize_scale(narrow.draw_codes(rng)[0]) for _ in range(500)} <= set(np.arange(2.0, 3.0 + 1e-9, 1 / 64))

    (photos / "coffee.txt").write_text("a cup of coffee\n")
    try:
        drawn = [spec.draw_prompt(rng, photos / "coffee.png") for _ in range(4000)]
        assert np.mean([d == "" for d in drawn]) == pytest.approx(0.25, abs=0.03)
        assert {d for d in drawn if d} == {"a cup of coffee"}  # the caption beside the photo
        assert {spec.draw_prompt(rng, photos / "chelsea.png") for _ in range(50)} == {"", "a photo"}
    finally:
        (photos / "coffee.txt").unlink()


def test_worker_batches_have_distinct_seeds_and_match_the_single_process_stream(photos, model):
    from assr_eic.train.diffusion_data import PairStream, pair_loader

    spec = tiny_spec(seed=5, batch=2)
    files = train_diffusion.photo_files(photos)
    seen = []
    for workers in (0, 2):
        it = iter(pair_loader(PairStream(spec, files, model, start=3), workers))
        seen.append([next(it) for _ in range(4)])
    assert [b["index"] for b in seen[1]] == [3, 4, 5, 6] and [b["worker"] for b in seen[1]] == [0, 1, 0, 1]
    seeds = {tuple(spec.rng(b["index"]).bit_generator.seed_seq.entropy) for b in seen[1]}
    assert len(seeds) == 4
    for a, b in zip(*seen, strict=True):  # the same data whichever process made it
        assert a["prompts"] == b["prompts"]
        for k in ("target", "decoded", "uncertainty", "degradation", "s", "q"):
            assert torch.equal(a[k], b[k]), k
    assert not torch.equal(seen[1][0]["target"], seen[1][1]["target"])  # workers 0 and 1 made different crops
    assert len({(float(b["s"][i]), float(b["q"][i])) for b in seen[1] for i in range(2)}) > 1


def test_pair_cache_writes_shards_once_and_reads_them_back(photos, model, tmp_path):
    from assr_eic.train.diffusion_data import PairStream

    files = train_diffusion.photo_files(photos)
    spec = tiny_spec(seed=2)
    made = PairStream(spec, files, model, cache=tmp_path / "c").batch(7)
    shard = tmp_path / "c" / "batch-0-00000007.safetensors"
    assert shard.is_file()
    stamp = shard.stat().st_mtime_ns
    again = PairStream(spec, files, model, cache=tmp_path / "c").batch(7)
    assert shard.stat().st_mtime_ns == stamp and again["prompts"] == made["prompts"]
    assert all(torch.equal(made[k], again[k]) for k in ("target", "decoded", "s", "q"))
    with pytest.raises(SystemExit, match="other settings"):
        PairStream(tiny_spec(seed=3), files, model, cache=tmp_path / "c")


def test_ema_equals_its_formula_after_three_steps():
    m = torch.nn.Linear(3, 2)
    ps = [torch.randn(2, 3, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    with torch.no_grad():
        m.weight.copy_(ps[0])
    ema = train_diffusion.EMA(m, 0.9)
    for p in ps[1:]:
        with torch.no_grad():
            m.weight.copy_(p)
        ema.update(m)
    d = 0.9
    expected = d**3 * ps[0] + (1 - d) * (d**2 * ps[1] + d * ps[2] + ps[3])
    assert torch.allclose(ema.module.weight, expected, atol=1e-6)
    assert not torch.allclose(ema.module.weight, ps[3], atol=1e-2)
    with pytest.raises(SystemExit):
        train_diffusion.EMA(m, 1.0)


def test_warmup_learning_rates_per_step():
    lrs = [train_diffusion.warmup_lr(i, 1e-3, 4) for i in range(6)]
    assert lrs == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    assert train_diffusion.warmup_lr(0, 1e-3, 0) == 1e-3


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.mark.slow  # about 1-3 minutes here: six short runs
def test_resume_is_bit_exact_with_ema_warmup_validation_and_the_pair_cache(sd_folder, photos, model_path, tmp_path):
    base = ["--sd", str(sd_folder), "--data", str(photos), "--model", model_path, "--size", "64", "--batch", "1"]
    base += ["--lr", "1e-3", "--base-channels", "8", "--seed", "4", "--ema", "0.8", "--warmup", "3"]
    base += ["--log-every", "1", "--save-every", "2", "--val-every", "2", "--val-pairs", "2"]
    for cache in (None, tmp_path / "pairs"):
        extra = ["--pair-cache", str(cache)] if cache else []
        runs = {}
        for name, stops in (("straight", [4]), ("resumed", [2, 4])):
            work, out = tmp_path / f"{name}-{cache is not None}", tmp_path / f"{name}-{cache is not None}.st"
            for n in stops:
                args = [*base, *extra, "--workdir", str(work), "--out", str(out), "--steps", str(n)]
                assert train_diffusion.main(args) == 0
            runs[name] = (work, out)
        (ws, os_), (wr, or_) = runs["straight"], runs["resumed"]
        a, b = _weights(os_), _weights(or_)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # the EMA adaptor
        raw_a, raw_b = (
            _weights(ws / "checkpoint-4" / "model.safetensors"),
            _weights(wr / "checkpoint-4" / "model.safetensors"),
        )
        assert all(torch.equal(raw_a[k], raw_b[k]) for k in raw_a)
        assert any(not torch.equal(a[k], raw_a[k]) for k in a)  # the file holds the EMA, not the raw weights
        log = read_log(wr / "log.jsonl")
        assert [r["step"] for r in log] == [1, 2, 3, 4] and read_log(ws / "log.jsonl") == [
            {**r, "seconds": s["seconds"]} for r, s in zip(log, read_log(ws / "log.jsonl"), strict=True)
        ]
        assert [r["lr"] for r in log] == pytest.approx([train_diffusion.warmup_lr(i, 1e-3, 3) for i in range(4)])
        val_s, val_r = read_log(ws / "val.jsonl"), read_log(wr / "val.jsonl")
        assert [r["step"] for r in val_r] == [2, 4] and val_s == val_r  # recorded, deterministic
        assert all(0 < r["val_loss"] < 10 and 0 < r["val_loss_ema"] < 10 for r in val_r)
        assert val_r[0]["val_loss"] != val_r[1]["val_loss"]  # it measures the weights of that step
    assert len(list((tmp_path / "pairs").glob("batch-0-*.safetensors"))) == 4  # 4 batches, made once, reused
    assert loaded_meta(or_)["family"] == "sd1" and json.loads(loaded_meta(or_)["train_diffusion"])["ema"] == 0.8


def test_the_adaptor_records_the_family_of_the_unet_it_was_trained_on(sd_folder):
    from types import SimpleNamespace

    unet = diffusers.UNet2DConditionModel.from_pretrained(sd_folder / "unet")
    assert train_diffusion.unet_family(unet.config) == "sd1"
    assert train_diffusion.unet_family(SimpleNamespace(cross_attention_dim=1024)) == "sd2"
    assert train_diffusion.unet_family(SimpleNamespace(cross_attention_dim=768)) == "sd1"
    assert train_diffusion.unet_family(SimpleNamespace(cross_attention_dim=768), "sd2") == "sd2"
    with pytest.raises(SystemExit, match="SDXL"):
        train_diffusion.unet_family(SimpleNamespace(cross_attention_dim=2048, addition_embed_type="text_time"))


def test_pairs_carry_the_decoder_strength_files_store(photo, model):
    """A pair's fidelity decode is the one a real file of that crop decodes to: rate control's file (coded to a
    target bpp) at its codes stores a decoder strength, and the pair made at those codes has that strength and
    that decode; without rate control (files coded at a given scale and quality) full strength. In a batch the
    choice is drawn from the batch's seed."""
    from assr_eic.bitstream import FULL_STRENGTH
    from assr_eic.pipeline import decode
    from assr_eic.ratecontrol import search
    from assr_eic.train.diffusion_data import make_pair_codes

    stored = []
    for y0, x0, bpp in ((0, 0, 0.3), (200, 300, 0.1), (120, 200, 0.5), (300, 40, 0.2)):
        x = torch.tensor(photo[y0 : y0 + 64, x0 : x0 + 64]).permute(2, 0, 1)[None].float() / 255
        enc = search(model, x, bpp, "av1")
        bs = enc.bitstream
        pair = make_pair_codes(model, x, "av1", bs.scale_code, bs.quality_code)
        assert int(pair["decoder_strength"]) == bs.decoder_strength
        assert torch.allclose(pair["decoded"], decode(enc.data, model=model).image.clamp(0, 1), atol=1e-6)
        full = make_pair_codes(model, x, "av1", bs.scale_code, bs.quality_code, rate_controlled=False)
        assert int(full["decoder_strength"]) == FULL_STRENGTH
        stored.append(bs.decoder_strength)
        if bs.decoder_strength != FULL_STRENGTH:
            assert not torch.equal(pair["decoded"], full["decoded"])
    print(f"decoder strengths rate control stored: {stored}")
    assert set(stored) != {FULL_STRENGTH}, "the check can fail: some file here stores less than full strength"


def test_batches_draw_the_strength_rule_from_their_seed(photos, model):
    from assr_eic.bitstream import FULL_STRENGTH
    from assr_eic.train.diffusion_data import make_batch, make_pair_codes, random_crop, read_rgb

    files = train_diffusion.photo_files(photos)
    spec = tiny_spec(seed=9, batch=6, rate_controlled=0.5)
    a, b = make_batch(spec, files, model, 3), make_batch(spec, files, model, 3)
    assert torch.equal(a["decoder_strength"], b["decoder_strength"]) and torch.equal(a["decoded"], b["decoded"])
    # the same draws again by hand: photo, crop, codes, then whether rate control sets the strength
    rng, chosen = spec.rng(3), []
    for i in range(spec.batch):
        path = files[int(rng.integers(len(files)))]
        x = random_crop(read_rgb(path), spec.size, rng)
        sc, qc = spec.draw_codes(rng)
        chosen.append(bool(rng.random() < spec.rate_controlled))
        spec.draw_prompt(rng, path)
        pair = make_pair_codes(model, x, spec.codec, sc, qc, chosen[-1])
        assert int(a["decoder_strength"][i]) == int(pair["decoder_strength"])
        assert torch.equal(a["decoded"][i], pair["decoded"][0])
        if not chosen[-1]:
            assert int(a["decoder_strength"][i]) == FULL_STRENGTH
    assert True in chosen and False in chosen, chosen
    none = make_batch(tiny_spec(seed=9, batch=6, rate_controlled=0.0), files, model, 3)
    assert set(none["decoder_strength"].tolist()) == {FULL_STRENGTH}


def test_validation_writes_an_image_grid_and_recomputable_figures(sd_folder, photos, model_path, model, tmp_path):
    from PIL import Image

    work = tmp_path / "work"
    args = ["--sd", str(sd_folder), "--data", str(photos), "--model", model_path, "--size", "64", "--batch", "1"]
    args += ["--base-channels", "8", "--seed", "6", "--ema", "0.5", "--steps", "2", "--val-every", "2"]
    args += ["--val-pairs", "2", "--val-images", str(photos), "--workdir", str(work), "--out", str(tmp_path / "a.st")]
    assert train_diffusion.main(args) == 0
    (rec,) = read_log(work / "val.jsonl")
    assert rec["step"] == 2 and rec["val_image_weights"] == "ema"
    grid = np.asarray(Image.open(work / rec["val_images"]).convert("RGB"))
    assert grid.shape == (2 * 64, 3 * 64, 3), "one row per shown pair: fidelity decode | x0 | target"
    figures = rec["val_image_figures"]
    assert len(figures) == 2
    for i, f in enumerate(figures):
        fid, x0, target = (
            torch.from_numpy(grid[64 * i : 64 * (i + 1), 64 * j : 64 * (j + 1)].copy()).permute(2, 0, 1)[None].float()
            / 255
            for j in range(3)
        )
        lowres = train_diffusion.lowres_of(model, "av1", {"target": target, "s": [f["s"]], "q": [f["q"]]})
        again = train_diffusion.image_figures(model, "av1", f["s"], x0, target, fid, lowres)
        assert all(np.isfinite(f[k]) for k in again), f
        assert again == pytest.approx({k: f[k] for k in again}, rel=1e-9, abs=1e-9), (again, f)
        assert not torch.equal(x0, fid) and f["psnr"] != f["fidelity_psnr"]
    for k in ("psnr", "ms_ssim", "consistency_psnr", "fidelity_psnr", "fidelity_consistency_psnr"):
        assert rec[f"val_{k}"] == pytest.approx(np.mean([f[k] for f in figures]))
    print({k: round(v, 3) for k, v in rec.items() if k.startswith("val_") and isinstance(v, float)})

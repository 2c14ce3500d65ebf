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

"""The fidelity decoder: any output size, tiling invariance, conditioning."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from assr_eic.layers import ReplicateConv3x3, _native_bf16, inference_dtype, onednn_fusion
from assr_eic.rescale import Downsampler, pad_to_multiple, resize, unpad
from assr_eic.sr import SRDecoder, _coords


@pytest.fixture(scope="module")
def sr() -> SRDecoder:
    torch.manual_seed(0)
    net = SRDecoder().eval()
    with torch.no_grad():
        net.head_out.weight.normal_(0, 0.05)
        for b in net.trunk:
            b.film.weight.normal_(0, 0.1)
    return net


@pytest.mark.parametrize("size", [(384, 512), (1, 1), (7, 3000), (100, 33), (45, 60)])
def test_any_output_size(sr, photo, size):
    x = resize(torch.tensor(photo).permute(2, 0, 1)[None].float() / 255, (96, 128))
    with torch.inference_mode():
        y = sr(x, size, "av1", 4.0, 0.5).sample
    assert y.shape == (1, 3, *size) and 0 <= y.min() and y.max() <= 1


def test_tiled_equals_whole(sr, photo):
    x = resize(torch.tensor(photo).permute(2, 0, 1)[None].float() / 255, (77, 103))
    with torch.inference_mode():
        whole = sr(x, (300, 401), "av1", 3.9, 0.3, tile=4096).sample
        tiled = sr(x, (300, 401), "av1", 3.9, 0.3, tile=64).sample
    assert (whole - tiled).abs().max() < 1e-5


def test_inference_folds_film_into_the_conv_exactly(sr, photo):
    """At inference on one image FiLM's scale and shift are folded into conv2's weights: the same output
    as the training path (modulate the features, then convolve), borders included."""
    x = resize(torch.tensor(photo).permute(2, 0, 1)[None].float() / 255, (60, 80))
    block = sr.trunk[0]
    h = sr.act(sr.trunk_in(torch.cat([x, torch.zeros_like(x[:, :1])], 1)))
    emb = sr.embedding("av1", 2.5, 0.4)
    with torch.no_grad():
        with torch.enable_grad():
            modulated = block(h, emb)  # grad on: the unfolded path
        folded = block(h, emb)
        gamma = block.film(emb)[:, : h.shape[1]]
    assert gamma.abs().max() > 0.05  # the modulation is not trivially identity
    assert (folded - modulated).abs().max() < 1e-5
    assert (folded - modulated).abs().max() < 1e-3 * modulated.abs().max()


def test_zero_head_is_bicubic(photo):
    net = SRDecoder().eval()  # fresh: the output layer starts at zero
    x = resize(torch.tensor(photo).permute(2, 0, 1)[None].float() / 255, (96, 128))
    with torch.inference_mode():
        y = net(x, (384, 512), "av1", 4.0, 0.5).sample
        ref = torch.nn.functional.interpolate(x, size=(384, 512), mode="bicubic", align_corners=False).clamp(0, 1)
    assert (y - ref).abs().max() < 2e-3


def test_conditioning_changes_output(sr, photo):
    x = resize(torch.tensor(photo).permute(2, 0, 1)[None].float() / 255, (96, 128))
    with torch.inference_mode():
        a = sr(x, (192, 256), "av1", 2.0, 0.1).sample
        b = sr(x, (192, 256), "av1", 2.0, 0.9).sample
        c = sr(x, (192, 256), "learned", 2.0, 0.1).sample
    assert (a - b).abs().mean() > 1e-4 and (a - c).abs().mean() > 1e-4


def test_downsampler_starts_as_antialiased_resampling(photo):
    x = torch.tensor(photo).permute(2, 0, 1)[None].float() / 255
    d = Downsampler().eval()
    with torch.inference_mode():
        y = d(x, (128, 171), "av1", 3.0)
    assert y.shape == (1, 3, 128, 171)
    assert torch.allclose(y, resize(x, (128, 171)).clamp(0, 1))


@pytest.mark.parametrize("h,w,m", [(1, 1, 64), (63, 65, 64), (64, 64, 64), (7, 3000, 16)])
def test_padding_is_undone_exactly(h, w, m):
    x = torch.rand(1, 3, h, w)
    p, size = pad_to_multiple(x, m)
    assert p.shape[-2] % m == 0 and p.shape[-1] % m == 0
    assert torch.equal(unpad(p, size), x)


@pytest.mark.parametrize("post", ["slope", "residual", "none"])
def test_fused_conv_equals_the_unfused_one(post):
    """In inference the conv's activation or residual sum runs inside oneDNN's convolution
    (:func:`onednn_fusion`): the same numbers as the training path's separate passes, borders included."""
    torch.manual_seed(1)
    conv = ReplicateConv3x3(32, 32)
    x = torch.randn(1, 32, 37, 41).contiguous(memory_format=torch.channels_last)
    kw = {"slope": 0.2} if post == "slope" else {"residual": torch.randn_like(x)} if post == "residual" else {}
    with torch.enable_grad():
        ref = conv.forward_with(x, **kw).detach()
    with torch.inference_mode():
        fused = conv.forward_with(x, **kw)
    assert (fused - ref).abs().max() <= 1e-5 * ref.abs().max()
    unposted = conv.forward_with(x).detach()  # the post-op did something
    assert (unposted - ref).abs().max() > 0.1 or post == "none"


def test_edges_pad_only_the_image_borders():
    """A side not named in ``edges`` (a tile's cut inside the image) is zero-padded: only that side's ring
    changes, and the replicated sides are exactly as before."""
    torch.manual_seed(2)
    conv = ReplicateConv3x3(8, 8)
    x = torch.rand(1, 8, 20, 30) + 1  # far from zero, so replicate and zero padding differ
    with torch.inference_mode():
        every = conv.forward_with(x)
        top_cut = conv.forward_with(x, edges=(False, True, True, True))
        zero = nn.functional.conv2d(x, conv.weight, conv.bias, padding=1)
    assert torch.allclose(top_cut[..., 0, 1:-1], zero[..., 0, 1:-1], atol=1e-5)  # the cut side: zero padding
    assert (top_cut[..., 0, 1:-1] - every[..., 0, 1:-1]).abs().mean() > 0.05
    assert torch.equal(top_cut[..., 1:, :], every[..., 1:, :])


def test_head_equals_its_1x1_convolutions(sr):
    """The per-pixel MLP runs as matrix products; it is the head's 1x1 convolutions on the bicubic colour and
    the phase channels (sin, cos of 2 pi u per axis), as the weights were trained."""
    torch.manual_seed(3)
    hid, base = torch.randn(2, 16, 9, 11), torch.rand(2, 3, 9, 11)
    uy, ux = torch.rand(9) * 5, torch.rand(11) * 5
    py, px = 2 * math.pi * uy, 2 * math.pi * ux
    rows, cols = [py.sin(), py.cos()], [px.sin(), px.cos()]
    phase = torch.stack([r[:, None].expand(9, 11) for r in rows] + [c[None].expand(9, 11) for c in cols])
    phase = phase[None].expand(2, -1, -1, -1)
    with torch.inference_mode():
        ref = sr.head_out(sr.act(sr.head_mid(sr.act(hid + sr.head_rgb(base) + sr.head_pos(phase)))))
        out = sr._head(hid, torch.cat([base, phase], 1))
    assert ref.abs().max() > 0.01 and (out - ref).abs().max() < 1e-5


def test_bfloat16_trunk_decodes_like_float32(photo, monkeypatch):
    """On CPUs with native bfloat16 the shipped decoder's trunk runs in it: the decoded image within 2 levels
    of the float32 decode and the same PSNR to 0.005 dB; ``ASSR_EIC_PRECISION=float32`` turns it off."""
    from assr_eic.metrics import psnr
    from assr_eic.model import load_model

    probe = torch.zeros(1, 3, 4, 4)
    if not (_native_bf16() and onednn_fusion()):
        with torch.inference_mode():
            assert inference_dtype(probe) == torch.float32
        pytest.skip("no native bfloat16 on this CPU: the decoder runs in float32")
    sr_ = load_model().sr["av1"]
    x = resize(torch.tensor(photo).permute(2, 0, 1)[None].float() / 255, (160, 213))

    def decode() -> torch.Tensor:
        with torch.inference_mode():
            return torch.round(sr_(x, (384, 512), "av1", 2.4, 120.0).sample * 255)

    with torch.inference_mode():
        assert inference_dtype(probe) == torch.bfloat16
    assert inference_dtype(probe) == torch.float32  # training: always float32
    fast = decode()
    monkeypatch.setenv("ASSR_EIC_PRECISION", "float32")
    with torch.inference_mode():
        assert inference_dtype(probe) == torch.float32
    exact = decode()
    assert 0 < (fast - exact).abs().max() <= 2  # bfloat16 did run, and changed little

    def score(t: torch.Tensor) -> float:
        return psnr(photo, t[0].permute(1, 2, 0).numpy().astype("uint8"))

    assert abs(score(fast) - score(exact)) < 0.005


def test_batched_inference_matches_one_image_at_a_time(sr, photo):
    """A batch with one quality per image (the trainer's validation) takes the unfolded FiLM path, in the
    trunk's inference dtype too; each image decodes as it does alone."""
    x = resize(torch.tensor(photo).permute(2, 0, 1)[None].float() / 255, (48, 64))
    x = torch.cat([x, x.flip(-1)])
    q = torch.tensor([0.3, 0.8])
    with torch.no_grad():
        both = sr(x, (120, 160), "av1", 2.5, q).sample
        one = [sr(x[i : i + 1], (120, 160), "av1", 2.5, q[i].item()).sample for i in range(2)]
    assert (both[:1] - both[1:].flip(-1)).abs().max() > 1e-3  # the qualities differ
    assert max((both[i : i + 1] - one[i]).abs().max().item() for i in range(2)) < 2 / 255


def test_native_size_skips_resampling_exactly(sr, photo):
    """At the low-res image's own size (s = 1) the output pixels sit on the low-res pixel centres, where
    bicubic and bilinear resampling return the pixels themselves (to float rounding): the decoder skips
    them, and plain decoding returns the decoded frame exactly."""
    x = resize(torch.tensor(photo).permute(2, 0, 1)[None].float() / 255, (70, 90))
    gy = ((_coords(70, 70, 0, 70) + 0.5) / 70 * 2 - 1).float()
    gx = ((_coords(90, 90, 0, 90) + 0.5) / 90 * 2 - 1).float()
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)[None]
    for mode in ("bicubic", "bilinear"):
        resampled = nn.functional.grid_sample(x, grid, mode=mode, padding_mode="border", align_corners=False)
        assert (resampled - x).abs().max() < 1e-5
    with torch.inference_mode():
        plain = sr(x, (70, 90), "av1", 1.0, 0.5, tile=32, residual=0.0).sample
        full = sr(x, (70, 90), "av1", 1.0, 0.5, tile=32).sample
    assert torch.equal(plain, x.clamp(0, 1))
    assert (full - x).abs().max() > 1e-3  # the decoder's correction is there


def test_tile_parts_add_up_to_every_strength_exactly(sr, photo):
    """Rate control scores each decoder strength from one pass (bicubic + correction); each sum must be
    the tile a decode at that strength writes, bit for bit."""
    x = resize(torch.tensor(photo).permute(2, 0, 1)[None].float() / 255, (60, 80))
    unc = torch.zeros_like(x[:, :1])
    emb = sr.embedding("av1", 2.5, 0.4)
    box = (17, 120, 33, 150)
    with torch.inference_mode():
        base, correction = sr.render_tile_parts(x, unc, emb, (150, 200), box)
        assert sr.render_tile_parts(x, unc, emb, (150, 200), box, decoder=False)[1] is None
        assert torch.equal(sr.render_tile(x, unc, emb, (150, 200), box, 0.0), base)
        assert torch.equal(sr.render_tile(x, unc, emb, (150, 200), box), base + correction)
        assert torch.equal(sr.render_tile(x, unc, emb, (150, 200), box, 1 / 3), base + 1 / 3 * correction)
    assert correction.abs().max() > 1e-3

"""The fidelity decoder: any output size, tiling invariance, conditioning."""

from __future__ import annotations

import pytest
import torch

from assr_eic.rescale import Downsampler, pad_to_multiple, resize, unpad
from assr_eic.sr import SRDecoder


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

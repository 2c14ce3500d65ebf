"""A file decodes in fresh processes with 1 and 2 threads to identical latents / AV1 frames."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from assr_eic.bitstream import quantize_quality, quantize_scale
from assr_eic.pipeline import encode_at, to_tensor

DECODE = r"""
import sys, numpy as np, torch
torch.set_num_threads(int(sys.argv[1]))
from assr_eic.model import ASSRModel
from assr_eic.pipeline import decode
model = ASSRModel.load(sys.argv[2])
d = decode(open(sys.argv[3], "rb").read(), model=model)
np.savez(sys.argv[4], symbols=d.lowres.symbols[0].numpy(), lowres=d.lowres.x_hat.numpy(),
         image=(d.image[0] * 255).round().numpy())
"""


@pytest.mark.parametrize("codec,s,q", [("av1", 2.5, 0.4), ("learned", 2.0, 0.6)])
def test_fresh_processes_with_1_and_2_threads(tmp_path, model, model_path, photo, codec, s, q):
    enc = encode_at(model, to_tensor(photo), codec, quantize_scale(s), quantize_quality(q))
    f = tmp_path / "x.assr"
    f.write_bytes(enc.data)
    outs = []
    for threads in (1, 2):
        out = tmp_path / f"t{threads}.npz"
        subprocess.run([sys.executable, "-c", DECODE, str(threads), model_path, str(f), str(out)], check=True)
        outs.append(np.load(out))
    a, b = outs
    assert np.array_equal(a["symbols"], b["symbols"])  # entropy-decoded latents / AV1 YUV planes
    assert np.array_equal(a["symbols"], enc.lowres.symbols[0].numpy())  # and the encoder's own
    assert np.abs(a["image"] - b["image"]).max() <= 1  # final pixels within one level
    if codec == "av1":  # integer decoding and fixed colour conversion
        assert np.array_equal(a["lowres"], b["lowres"])
    assert torch.isfinite(torch.from_numpy(a["image"])).all()


class TestEntropyParametersUnderFloatNoise:
    """The hyper-decoder's outputs sit on a 1/64 grid and are re-snapped: relative noise of 1e-5 changes nothing.

    Uses the shipped (trained) model, whose scales and means are those of real images.
    """

    SEEDS = range(5)

    @pytest.fixture(scope="class")
    def coded(self, photo):
        from assr_eic.model import load_model

        model = load_model()
        net = model.learned_net
        enc = encode_at(model, to_tensor(photo), "learned", quantize_scale(1.0), quantize_quality(0.6))
        z_string, y_string = enc.bitstream.streams
        h, w = enc.bitstream.lowres_size
        z_hat = net.entropy_bottleneck.decompress([z_string], (-(-h // 64), -(-w // 64)))
        return net, enc, y_string, z_hat

    @staticmethod
    def noisy(t: torch.Tensor, seed: int, rel: float = 1e-5) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return t.double() * (1 + rel * (2 * torch.rand(t.shape, generator=g, dtype=torch.float64) - 1))

    def test_outputs_are_on_the_grid(self, coded):
        from assr_eic.codec.learned import PARAM_FRAC_BITS

        net, _, _, z_hat = coded
        for t in net.h_s_exact(z_hat):
            u = t.double() * 2**PARAM_FRAC_BITS
            assert torch.equal(u, torch.round(u))
        _, scales, means = net.entropy_parameters(*net.h_s_exact(z_hat))
        assert scales.min() >= 0.11 and scales.max() <= 256 and means.abs().max() <= 256

    def test_noise_on_the_hyper_decoder_output_decodes_bit_exactly(self, coded):
        net, enc, y_string, z_hat = coded
        scales, means = net.h_s_exact(z_hat)
        indexes, s_ref, m_ref = net.entropy_parameters(scales, means)
        y_ref = net.gaussian_conditional.decompress([y_string], indexes, means=m_ref)
        assert torch.equal(y_ref, enc.lowres.symbols[0])  # the clean decode is the encoder's latent
        q = torch.tensor([enc.bitstream.quality])
        x_ref = net._lowres_out(y_ref, s_ref, q, enc.bitstream.lowres_size).x_hat
        for seed in self.SEEDS:
            idx, s_n, m_n = net.entropy_parameters(self.noisy(scales, seed), self.noisy(means, 100 + seed))
            assert torch.equal(idx, indexes) and torch.equal(s_n, s_ref) and torch.equal(m_n, m_ref)
            y_n = net.gaussian_conditional.decompress([y_string], idx, means=m_n)
            assert torch.equal(y_n, y_ref)
            assert torch.equal(net._lowres_out(y_n, s_n, q, enc.bitstream.lowres_size).x_hat, x_ref)

    def test_without_snapping_the_same_noise_changes_indexes_and_latents(self, coded):
        """The control: the float hyper-decoder's outputs, used as they are, move under the same noise."""
        net, _, y_string, z_hat = coded
        gc = net.gaussian_conditional
        with torch.no_grad():
            scales, means = net.h_s(z_hat).chunk(2, 1)  # float path, no fixed point, no grid
        flips = 0
        for seed in self.SEEDS:
            flips += (gc.build_indexes(self.noisy(scales, seed).float()) != gc.build_indexes(scales)).sum().item()
        assert flips > 0  # measured: 2-7 of 73 728 indexes per seed
        # the grid values themselves, perturbed but not re-snapped, give other latents (means are added)
        s_grid, m_grid = net.h_s_exact(z_hat)
        indexes, _, _ = net.entropy_parameters(s_grid, m_grid)
        y_ref = gc.decompress([y_string], indexes, means=m_grid)
        y_n = gc.decompress([y_string], indexes, means=self.noisy(m_grid, 100).float())
        assert not torch.equal(y_n, y_ref)

"""Data consistency by construction (assr_eic.diffusion.consistency) on real files: whatever the prior
painted (here uniform noise, the worst case, as a random-weight checkpoint gives), the output downsampled
by the encoder's own downsampler matches the file's low-res image at least as well as the fidelity decode
does; the prior's share of the band above the low-res Nyquist grows with realism; a structure below the
cutoff is pulled back whole, one above it is left to the prior; and denoise is one starting sigma."""

from __future__ import annotations

import math

import pytest
import torch

from assr_eic import pipeline
from assr_eic.bitstream import parse
from assr_eic.diffusion.colorfix import wavelet_color_fix
from assr_eic.diffusion.consistency import band_energy, keep_low_band, latent_hold, lowpass, nyquist, prior_share
from assr_eic.diffusion.guidance import consistency_step
from assr_eic.diffusion.schedule import from_start_sigma


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / (a.float() - b.float()).pow(2).mean()))


@pytest.fixture(scope="module")
def files(photo, model):
    """For s = 2, 4, 8: the fidelity decode, the decoded low-res image and the encoder's downsampler."""
    crop = photo[:128, :128]
    out = {}
    for s in (2, 4, 8):
        bs = parse(pipeline.compress(crop, scale=s, quality=0.3, codec="av1", model=model))
        dec = pipeline.decode(bs, model=model)

        def down(z, bs=bs):
            return pipeline.downsample(model, z, bs.codec, bs.scale_code)

        out[s] = (dec.image.clamp(0, 1).float(), dec.lowres.x_hat.clamp(0, 1).float(), down)
    return out


@pytest.mark.parametrize("s", [2, 4, 8])
def test_output_keeps_the_files_low_band_at_every_realism(files, s):
    fid, y, down = files[s]
    noise = torch.rand(fid.shape, generator=torch.Generator().manual_seed(s))
    u = torch.rand((1, 1, *fid.shape[-2:]), generator=torch.Generator().manual_seed(1))
    p_fid = psnr(down(fid), y)
    today = psnr(down(wavelet_color_fix(noise, fid)), y)  # the colour fix alone: what main does after sampling
    for r in (0.0, 0.5, 1.0):
        out = keep_low_band(noise, fid, y, down, r, u)
        assert out.shape == fid.shape and 0 <= out.min() and out.max() <= 1
        p = psnr(down(out), y)
        print(f"s={s} realism={r}: A(out) vs y {p:.2f} dB, fidelity {p_fid:.2f} dB, colour fix only {today:.2f} dB")
        assert p >= p_fid - 1.0, (s, r, p, p_fid)
    assert today < p_fid - 3.0, (today, p_fid)


@pytest.mark.parametrize("s", [2, 4, 8])
def test_freedom_above_the_low_res_nyquist_grows_with_realism(files, s):
    fid, y, down = files[s]
    noise = torch.rand(fid.shape, generator=torch.Generator().manual_seed(3))
    cut = nyquist(fid.shape[-1] / y.shape[-1])
    e = [band_energy(keep_low_band(noise, fid, y, down, r) - fid, cut) for r in (0.0, 0.5, 1.0)]
    print(f"s={s}: energy above the low-res Nyquist added to the fidelity decode at realism 0/0.5/1: {e}")
    assert e[0] < e[1] < e[2], e
    assert e[2] > 10 * e[0], e


def _wave(shape, freq: float, amp: float = 0.08) -> torch.Tensor:
    xs = torch.arange(shape[-1], dtype=torch.float32)
    return (amp * torch.cos(2 * math.pi * freq * xs)).expand(shape).clone()


def _share(out: torch.Tensor, fid: torch.Tensor, wave: torch.Tensor) -> float:
    """Projection of the output's change on the added wave: 1 = kept whole, 0 = removed."""
    d, w = (out - fid)[..., 8:-8, 8:-8], wave[..., 8:-8, 8:-8]
    return float((d * w).sum() / (w * w).sum())


def test_structures_below_the_cutoff_are_pulled_back_above_left_to_the_prior(files):
    fid, y, down = files[4]
    cut = nyquist(4.0)  # 1/8 cycle per pixel: periods above 8 px are the file's
    low, high = _wave(fid.shape, 0.4 * cut), _wave(fid.shape, 2.5 * cut)  # periods 20 px and 3.2 px
    base = fid * 0.8 + 0.1  # keep the waves away from the clamp
    for r in (0.0, 0.5, 1.0):
        s_low = _share(keep_low_band(base + low, base, y, down, r), base, low)
        s_high = _share(keep_low_band(base + high, base, y, down, r), base, high)
        print(f"realism {r}: share kept of a 20 px structure {s_low:.3f}, of a 3.2 px one {s_high:.3f}")
        assert abs(s_low) < 0.05, (r, s_low)  # today's step pulls back under 1% of periods up to 32 px
        assert abs(s_high - r * r) < 0.1, (r, s_high)  # the prior's share: r^2 where the codec was sure (u = 0)


def test_uncertainty_acts_only_above_the_kept_band(files):
    fid, y, down = files[2]
    noise = torch.rand(fid.shape, generator=torch.Generator().manual_seed(5)) * 0.5 + 0.25
    sure, unsure = (torch.full((1, 1, *fid.shape[-2:]), v) for v in (0.0, 1.0))
    a, b = (keep_low_band(noise, fid, y, down, 0.5, u) for u in (sure, unsure))
    cut = nyquist(2.0)
    low_diff = (lowpass(a, 0.5 * cut) - lowpass(b, 0.5 * cut)).abs().mean()
    high_diff = ((a - lowpass(a, cut)) - (b - lowpass(b, cut))).abs().mean()
    assert high_diff > 0.02 and low_diff < 0.1 * high_diff, (low_diff, high_diff)
    assert prior_share(0.5, unsure).min() > prior_share(0.5, sure).max()


def test_latent_hold_schedule():
    assert latent_hold(0.0, 0.0) == latent_hold(0.0, 1.0) == 1.0
    assert latent_hold(1.0, 0.5) == 0.0
    assert latent_hold(0.5, 1.0) > latent_hold(0.5, 0.0) > latent_hold(0.8, 0.0)
    with pytest.raises(ValueError, match="realism"):
        latent_hold(1.5, 0.0)
    # the step it weights still works as before
    x, ref = torch.zeros(1, 4, 8, 8), torch.ones(1, 4, 8, 8)
    assert torch.allclose(consistency_step(x, ref, None, latent_hold(0.0, 0.3), 0.1), ref, atol=1e-5)


@pytest.mark.parametrize("shape", ["karras", "exponential", "linear", "simple"])
def test_denoise_is_one_start_sigma_for_every_schedule(shape):
    n, smin, smax = 400, 0.03, 14.6
    t = torch.linspace(0, 1, n, dtype=torch.float64)
    full = {
        "karras": (smax ** (1 / 7) + t * (smin ** (1 / 7) - smax ** (1 / 7))) ** 7,
        "exponential": torch.exp(math.log(smax) + t * (math.log(smin) - math.log(smax))),
        "linear": smax + t * (smin - smax),
        "simple": smax * (1 - t) ** 3 + smin,
    }[shape]
    full = torch.cat([full, torch.zeros(1, dtype=full.dtype)])
    for start, steps in ((0.9, 4), (3.2, 20), (100.0, 3)):
        sig = from_start_sigma(full, start, steps)
        assert sig.shape == (steps + 1,)
        assert math.isclose(float(sig[0]), min(start, float(full[0])), rel_tol=1e-5)
        assert float(sig[-1]) == 0.0 and bool((sig[1:] < sig[:-1]).all())
    with pytest.raises(ValueError, match="start sigma"):
        from_start_sigma(full, 0.0, 4)

"""The diffusion decoder's library: adaptor residuals through a real (tiny) diffusers UNet, the modulator's
locality, save/load, the uncertainty map on real codec output, colour fixes and the consistency step."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from assr_eic import pipeline
from assr_eic.bitstream import parse
from assr_eic.codec.base import LowresCode
from assr_eic.diffusion import (
    AdaptorFileError,
    ASSRAdaptor,
    Degradation,
    adain_color_fix,
    consistency_step,
    denoise_strength,
    gaussian_lowpass,
    load_adaptor,
    lowfreq_error,
    save_adaptor,
    uncertainty_map,
    wavelet_color_fix,
)
from assr_eic.diffusion.sampler import img2img, img2img_timesteps, tiled

diffusers = pytest.importorskip("diffusers")

TINY_UNET = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (8, 16),
    "layers_per_block": 1,
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 16,
    "attention_head_dim": 2,
    "norm_num_groups": 4,
}
SD15_BLOCKS = (320, 640, 1280, 1280)


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return diffusers.UNet2DConditionModel(**TINY_UNET).eval()


def randomise(module: torch.nn.Module, seed: int = 0, std: float = 0.2) -> torch.nn.Module:
    """Give the zero-initialised parts (residual projections, FiLM heads) random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "zero_convs" in name or "mid_out" in name or "modulator.heads" in name:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


def inputs(batch: int = 1, h: int = 8, w: int = 8, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, h, w, generator=g)
    decoded = torch.rand(batch, 3, 8 * h, 8 * w, generator=g)
    unc = torch.rand(batch, 1, 8 * h, 8 * w, generator=g)
    deg = torch.stack([Degradation("av1", 4.0, 0.3, 0.02).vector()] * batch)
    ctx = torch.randn(batch, 5, 16, generator=g)
    return x, decoded, unc, deg, ctx


class TestAdaptor:
    def test_zero_initialised_adaptor_leaves_unet_bit_identical(self, unet):
        torch.manual_seed(3)
        adaptor = ASSRAdaptor.for_unet_config(unet.config, base_channels=8).eval()
        x, decoded, unc, deg, ctx = inputs()
        t = torch.tensor([700])
        with torch.no_grad():
            res = adaptor(x, t, decoded, deg, unc)
            assert len(res.down) == 4 and all(torch.count_nonzero(r) == 0 for r in [*res.down, res.mid])
            plain = unet(x, t, ctx).sample
            ctrl = unet(
                x, t, ctx, down_block_additional_residuals=res.down, mid_block_additional_residual=res.mid
            ).sample
        assert torch.equal(plain, ctrl)

    def test_nonzero_adaptor_changes_unet_output(self, unet):
        torch.manual_seed(3)
        adaptor = randomise(ASSRAdaptor.for_unet_config(unet.config, base_channels=8)).eval()
        x, decoded, unc, deg, ctx = inputs()
        t = torch.tensor([700])
        with torch.no_grad():
            res = adaptor(x, t, decoded, deg, unc)
            plain = unet(x, t, ctx).sample
            ctrl = unet(
                x, t, ctx, down_block_additional_residuals=res.down, mid_block_additional_residual=res.mid
            ).sample
            half = adaptor(x, t, decoded, deg, unc, residual_scale=0.5)
        assert (plain - ctrl).abs().mean() > 1e-2
        for a, b in zip(res.down, half.down, strict=True):
            torch.testing.assert_close(a * 0.5, b)

    def test_degradation_changes_residuals(self, unet):
        adaptor = randomise(ASSRAdaptor.for_unet_config(unet.config, base_channels=8)).eval()
        x, decoded, unc, _, _ = inputs()
        d1 = Degradation("av1", 2.0, 0.8, 0.2).vector()[None]
        d2 = Degradation("av1", 8.0, 0.1, 0.004).vector()[None]
        with torch.no_grad():
            r1 = adaptor(x, torch.tensor([500]), decoded, d1, unc)
            r2 = adaptor(x, torch.tensor([500]), decoded, d2, unc)
        assert all((a - b).abs().mean() > 1e-3 for a, b in zip(r1.down, r2.down, strict=True))

    def test_modulator_map_changes_residuals_only_where_it_differs(self, unet):
        # hint_channels=3: the map reaches the residuals only through the modulator's spatial FiLM
        adaptor = randomise(ASSRAdaptor.for_unet_config(unet.config, base_channels=8, hint_channels=3)).eval()
        x, decoded, _, deg, _ = inputs(h=8, w=8)
        u1 = torch.full((1, 1, 64, 64), 0.2)
        u2 = u1.clone()
        u2[..., :32, 32:] = 0.9  # top-right quarter: latent rows 0..3, cols 4..7
        with torch.no_grad():
            r1 = adaptor(x, torch.tensor([500]), decoded, deg, u1)
            r2 = adaptor(x, torch.tensor([500]), decoded, deg, u2)
        for a, b in zip([*r1.down, r1.mid], [*r2.down, r2.mid], strict=True):
            h, w = a.shape[-2:]
            inside = torch.zeros(h, w, dtype=torch.bool)
            inside[: h // 2, w // 2 :] = True
            diff = (a - b).abs().amax(1)[0]
            assert diff[~inside].max() == 0
            assert diff[inside].min() > 1e-4

    def test_modulator_map_changes_full_adaptor_residuals(self, unet):
        adaptor = randomise(ASSRAdaptor.for_unet_config(unet.config, base_channels=8)).eval()
        x, decoded, _, deg, _ = inputs()
        with torch.no_grad():
            r1 = adaptor(x, torch.tensor([500]), decoded, deg, torch.zeros(1, 1, 64, 64))
            r2 = adaptor(x, torch.tensor([500]), decoded, deg, torch.ones(1, 1, 64, 64))
        assert all((a - b).abs().mean() > 1e-3 for a, b in zip(r1.down, r2.down, strict=True))

    def test_sd15_layout_matches_the_unet_skips(self):
        adaptor = ASSRAdaptor()  # defaults: SD 1.x
        cfg = {"block_out_channels": SD15_BLOCKS, "layers_per_block": 2, "in_channels": 4}
        assert ASSRAdaptor.for_unet_config(cfg).config == adaptor.config
        x = torch.randn(1, 4, 16, 24)
        with torch.no_grad():
            res = adaptor(x, torch.tensor([10]), torch.rand(1, 3, 128, 192), torch.zeros(1, 3))
        shapes = [tuple(r.shape[1:]) for r in res.down]
        expected = (
            [(320, 16, 24)] * 3
            + [(320, 8, 12), (640, 8, 12), (640, 8, 12), (640, 4, 6), (1280, 4, 6), (1280, 4, 6)]
            + [(1280, 2, 3)] * 3
        )
        assert shapes == expected and tuple(res.mid.shape[1:]) == (1280, 2, 3)

    def test_bad_inputs_raise_one_clear_error(self, unet):
        adaptor = ASSRAdaptor.for_unet_config(unet.config, base_channels=8)
        x, decoded, unc, deg, _ = inputs()
        with pytest.raises(ValueError, match="channels"):
            adaptor(torch.randn(1, 3, 8, 8), torch.tensor([1]), decoded, deg, unc)
        with pytest.raises(ValueError, match="degradation"):
            adaptor(x, torch.tensor([1]), decoded, torch.zeros(1, 2), unc)
        with pytest.raises(ValueError, match="hint_channels"):
            ASSRAdaptor(hint_channels=5)
        with pytest.raises(ValueError, match="layers_per_block"):
            ASSRAdaptor.for_unet_config({"block_out_channels": (8, 16), "layers_per_block": [1, 2]})

    def test_save_load_round_trip_gives_identical_residuals(self, unet, tmp_path):
        adaptor = randomise(ASSRAdaptor.for_unet_config(unet.config, base_channels=8)).eval()
        path = tmp_path / "adaptor.safetensors"
        save_adaptor(adaptor, path, {"steps": 3})
        loaded = load_adaptor(path)
        assert loaded.config == adaptor.config
        x, decoded, unc, deg, _ = inputs(batch=2)
        with torch.no_grad():
            t = torch.tensor([3, 900])
            a, b = adaptor(x, t, decoded, deg, unc), loaded(x, t, decoded, deg, unc)
        for ra, rb in zip([*a.down, a.mid], [*b.down, b.mid], strict=True):
            assert torch.equal(ra, rb)

    def test_bad_files_raise_adaptor_file_error(self, tmp_path):
        from safetensors.torch import save_file

        with pytest.raises(AdaptorFileError, match="not found"):
            load_adaptor(tmp_path / "missing.safetensors")
        junk = tmp_path / "junk.safetensors"
        junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
        with pytest.raises(AdaptorFileError, match="not a readable safetensors"):
            load_adaptor(junk)
        foreign = tmp_path / "foreign.safetensors"
        save_file({"w": torch.zeros(2)}, str(foreign))
        with pytest.raises(AdaptorFileError, match="not an ASSR diffusion adaptor"):
            load_adaptor(foreign)
        good = tmp_path / "good.safetensors"
        save_adaptor(ASSRAdaptor(model_channels=8, channel_mult=(1, 2), num_res_blocks=1, base_channels=8), good)
        data = bytearray(good.read_bytes())
        truncated = tmp_path / "truncated.safetensors"
        truncated.write_bytes(bytes(data[: len(data) // 2]))
        with pytest.raises(AdaptorFileError):
            load_adaptor(truncated)


class TestDescriptor:
    def test_vector_values_and_validation(self):
        v = Degradation("learned", 8.0, 0.25, 0.01).vector()
        torch.testing.assert_close(v, torch.tensor([1.0, 0.25, -2.0]))
        for bad in [("jpeg", 2, 0.5, 0.1), ("av1", 0.5, 0.5, 0.1), ("av1", 2, 1.5, 0.1), ("av1", 2, 0.5, 0.0)]:
            with pytest.raises(ValueError):
                Degradation(*bad)

    def test_from_bitstream_of_a_real_file(self, photo, model):
        data = pipeline.compress(photo[:128, :160], scale=3.0, quality=0.4, model=model)
        bs = parse(data)
        d = Degradation.from_bitstream(bs)
        assert d.codec == "av1" and d.s == bs.scale and abs(d.s - 3.0) < 1 / 64 and d.q == bs.quality
        assert d.bpp == pytest.approx(len(data) * 8 / (128 * 160))

    def test_av1_estimate_predicts_where_the_codec_erred(self, photo, model):
        """On a real AV1 decode, the estimated map correlates with the actual local error."""
        x = pipeline.to_tensor(photo)
        for q in (0.15, 0.5):
            dec = pipeline.decode(pipeline.compress(photo, scale=2.0, quality=q, model=model), model=model)
            lr = dec.lowres.x_hat
            u = uncertainty_map(lr, dec.lowres)
            assert u.shape == (1, 1, *lr.shape[-2:]) and 0 <= u.min() and u.max() <= 1
            ref = torch.nn.functional.interpolate(x, size=lr.shape[-2:], mode="bicubic", antialias=True)
            err = torch.nn.functional.avg_pool2d((lr - ref).abs().mean(1, keepdim=True), 5, 1, 2)
            corr = np.corrcoef(u.flatten().numpy(), err.flatten().numpy())[0, 1]
            assert corr > 0.4, (q, corr)

    def test_learned_scales_are_squashed_monotonically(self):
        decoded = torch.rand(1, 3, 32, 32)
        scales = torch.linspace(0, 8, 16 * 16).view(1, 1, 16, 16)
        u = uncertainty_map(decoded, LowresCode(streams=(), x_hat=decoded, uncertainty=scales))
        assert u.shape == (1, 1, 32, 32) and u.min() >= 0 and u.max() <= 1
        assert u[0, 0, 0, 0] < 0.05 and u[0, 0, -1, -1] > 0.95
        assert uncertainty_map(decoded[:, :, ::2, ::2], LowresCode((), decoded, scales))[0, 0].diff(dim=1).min() >= 0


class TestColorFix:
    def test_adain_moves_channel_statistics_to_the_reference(self):
        g = torch.Generator().manual_seed(0)
        img = torch.rand(2, 3, 64, 64, generator=g) * 0.3 + torch.tensor([0.6, 0.2, 0.3]).view(1, 3, 1, 1)
        ref = torch.rand(2, 3, 16, 16, generator=g) * 0.5 + torch.tensor([0.2, 0.3, 0.25]).view(1, 3, 1, 1)
        out = adain_color_fix(img, ref)
        torch.testing.assert_close(out.mean((2, 3)), ref.mean((2, 3)), atol=2e-3, rtol=0)
        torch.testing.assert_close(out.std((2, 3)), ref.std((2, 3)), atol=2e-3, rtol=0)
        assert (img.mean((2, 3)) - ref.mean((2, 3))).abs().max() > 0.2

    def test_wavelet_removes_a_spatially_varying_cast_and_keeps_detail(self, photo):
        x = pipeline.to_tensor(photo)[..., :128, :128]
        ref = torch.nn.functional.interpolate(x, size=(32, 32), mode="bicubic", antialias=True).clamp(0, 1)
        ramp = torch.linspace(-1, 1, 128).view(1, 1, 1, 128)  # red drifts up left to right, blue down
        img = (x + 0.12 * ramp * torch.tensor([1.0, 0.0, -1.0]).view(1, 3, 1, 1)).clamp(0, 1)
        up = torch.nn.functional.interpolate(ref, size=(128, 128), mode="bicubic").clamp(0, 1)
        out = wavelet_color_fix(img, ref)
        before, after = lowfreq_error(img, up, 4.0), lowfreq_error(out, up, 4.0)
        assert after < 0.2 * before, (after, before)  # measured 0.0063 vs 0.0564
        assert after < 0.3 * lowfreq_error(adain_color_fix(img, ref), up, 4.0)  # a global fix cannot do this
        detail_img, detail_out = img - gaussian_lowpass(img, 1.0), out - gaussian_lowpass(out, 1.0)
        corr = np.corrcoef(detail_img.flatten().numpy(), detail_out.flatten().numpy())[0, 1]
        assert corr > 0.9

    def test_shapes_are_checked(self):
        with pytest.raises(ValueError):
            adain_color_fix(torch.rand(1, 4, 8, 8), torch.rand(1, 3, 8, 8))
        with pytest.raises(ValueError):
            wavelet_color_fix(torch.rand(2, 3, 8, 8), torch.rand(3, 3, 8, 8))


class TestGuidance:
    def test_denoise_strength_grows_with_degradation_and_realism(self):
        mild, harsh = Degradation("av1", 1.5, 0.9, 0.25), Degradation("av1", 6.0, 0.1, 0.005)
        assert 0 < denoise_strength(mild, 0.5) < denoise_strength(harsh, 0.5) <= 1
        vals = [denoise_strength(harsh, r) for r in (0.0, 0.5, 1.0)]
        assert vals[0] < vals[1] < vals[2] and vals[1] == pytest.approx(0.2 + 0.5 * 0.8963, abs=0.02)
        with pytest.raises(ValueError):
            denoise_strength(mild, 1.5)

    def test_consistency_step_respects_the_weight_map(self):
        g = torch.Generator().manual_seed(0)
        pred, ref = torch.randn(1, 4, 16, 16, generator=g), torch.randn(1, 4, 16, 16, generator=g) + 1.0
        weight = torch.ones(1, 1, 16, 16)
        weight[..., :, :8] = 0
        out = consistency_step(pred, ref, weight, amount=1.0, sigma_lowpass=1.5)
        assert torch.equal(out[..., :8], pred[..., :8])
        before = lowfreq_error(pred[..., 10:], ref[..., 10:], 1.5)
        assert lowfreq_error(out[..., 10:], ref[..., 10:], 1.5) < 0.5 * before
        torch.testing.assert_close(consistency_step(pred, ref, None, 0.0), pred)
        with pytest.raises(ValueError):
            consistency_step(pred, ref[..., :8], None, 1.0)

    def test_consistency_in_sampling_loop_lowers_lowfreq_error(self, unet):
        """Img2img through a real diffusers UNet, same seed and strength, with and without consistency."""
        g = torch.Generator().manual_seed(5)
        ref = torch.randn(1, 4, 16, 16, generator=g)
        ctx = torch.randn(1, 5, 16, generator=g)

        def eps_fn(x, t):
            return unet(x, t, ctx).sample

        def run(amount, weight=None):
            return img2img(eps_fn, ref, 0.6, 10, torch.Generator().manual_seed(9), weight, amount, 2.0)

        plain, pulled = run(0.0), run(1.0)
        e_plain, e_pulled = lowfreq_error(plain, ref), lowfreq_error(pulled, ref)
        assert e_pulled < 0.5 * e_plain, (e_pulled, e_plain)
        weight = torch.zeros(1, 1, 16, 16)
        weight[..., 8:] = 1
        half = run(1.0, weight)

        def err(a, cols):
            return lowfreq_error(a[..., cols], ref[..., cols])

        right, left = slice(11, 16), slice(0, 5)
        assert err(half, right) < 0.5 * err(plain, right)
        assert err(half, left) > 0.7 * err(plain, left)

    def test_img2img_timesteps_follow_strength(self):
        assert img2img_timesteps(10, 1.0) == [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]
        assert img2img_timesteps(10, 0.3) == [201, 101, 1]

    def test_tiled_equals_whole_for_a_local_function(self):
        x = torch.randn(1, 4, 40, 56)
        fn = lambda t, box: t * 2 + 1  # noqa: E731 - pointwise, so tiling is exact
        torch.testing.assert_close(tiled(fn, x, tile=16, overlap=4), fn(x, None))
        seen = []
        tiled(lambda t, box: seen.append(box) or t, x, tile=16, overlap=4)
        covered = torch.zeros(40, 56)
        for y0, y1, x0, x1 in seen:
            assert y1 - y0 <= 16 and x1 - x0 <= 16
            covered[y0:y1, x0:x1] = 1
        assert covered.all() and math.prod(covered.shape) == 40 * 56

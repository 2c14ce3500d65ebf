"""The diffusion decoder on every checkpoint family, inside a real (imported) ComfyUI, on small random-weight
models that ComfyUI's own Load Diffusion Model node detects as SD 1.x, SD 2.x-v, SDXL, SD 3.x and Flux
(tests/comfy/diffusion_families.py), with text conditioning made in-process.

Random weights make noise: these figures measure the sampler, not the prior. Per family: the detection
and its defaults; the consistency figure (the output downsampled by s within 1 dB of the fidelity
decode's match to the file's low-res image, realism 0, 0.5, 1) through the stock KSampler and through the
all-in-one node; the energy above the low-res Nyquist growing with realism; an adaptor of another family
refused with one sentence before sampling; an unknown family one clear error. And seams: a 2048x1536
output (a 256x192 latent) tiled inside one trajectory through the stock KSampler.
"""

from __future__ import annotations

import diffusion_families
import pytest
import torch

from assr_eic.diffusion import ASSRAdaptor, save_adaptor
from assr_eic.diffusion.family import FAMILIES, UnknownFamilyError

pytestmark = pytest.mark.comfy

FAMILY_KEYS = ("sd1", "sd2", "sdxl", "sd3", "flux")
SEED = 3


run = diffusion_families.run_node
node_module = diffusion_families.node_module


@pytest.fixture(scope="module")
def nodes(comfy_inproc):
    return comfy_inproc


@pytest.fixture(scope="module")
def assr_model(nodes):
    return run(nodes, "ASSR_LoadModel", model_name="default (built-in)")[0]


def load_family(nodes, folders, family: str):
    return diffusion_families.load_family(nodes, folders["models"], family)


@pytest.fixture(scope="module")
def item(nodes, assr_model):
    """A real 64x64 photograph crop coded at s = 4 (a 16x16 low-res image)."""
    return diffusion_families.coded_item(nodes, assr_model, 4.0)


@pytest.mark.parametrize("family", FAMILY_KEYS)
def test_family_detected_with_its_defaults_and_the_figures_hold(nodes, folders, assr_model, item, family):
    import comfy.model_base

    f = diffusion_families.family_figures(nodes, folders["models"], assr_model, item, family)
    print(f"{family}: ComfyUI detects {f['config']}, {f['model_type']}, {f['parameters_m']:.1f} M parameters")
    assert f["config"] == diffusion_families.CLASS_NAMES[family]
    fam = FAMILIES[family]
    assert f["family_key"] == family
    want_type = {"sd2": "V_PREDICTION", "sd3": "FLOW", "flux": "FLUX"}.get(family, "EPS")
    assert f["model_type"] == getattr(comfy.model_base.ModelType, want_type).name
    energy = {"ksampler": [], "all-in-one": []}
    for row in f["rows"]:
        r, p, p_fid, e = row["realism"], row["psnr"], row["fidelity_psnr"], row["energy_above_nyquist"]
        if row["path"] == "ksampler":
            assert row["cfg"] == fam.cfg and row["latent_channels"] == fam.latent_channels
            today = row["wavelet_fix_psnr"]
            print(f"{family} KSampler realism {r}: {p:.2f} dB (fidelity {p_fid:.2f}, wavelet fix {today:.2f}), "
                  f"energy {e:.5f}")  # fmt: skip
            assert today < p_fid - 3.0, (family, r, today, p_fid)
        else:
            print(f"{family} all-in-one realism {r}: {p:.2f} dB (fidelity {p_fid:.2f}), energy {e:.5f}")
        assert p >= p_fid - 1.0, (family, row["path"], r, p, p_fid)
        energy[row["path"]].append(e)
    assert [len(e) for e in energy.values()] == [3, 3]
    for path, e in energy.items():
        assert e[0] < e[1] < e[2], (family, path, e)


def vae(family: str):
    return diffusion_families.load_vae(FAMILIES[family].latent_channels)


def test_adaptor_of_another_family_is_refused_before_sampling(nodes, folders, assr_model, item):
    adaptors = folders["models"] / "assr_eic_adaptors"
    adaptors.mkdir(parents=True, exist_ok=True)
    save_adaptor(ASSRAdaptor(base_channels=32), adaptors / "sd1_family.safetensors")
    xl = ASSRAdaptor(base_channels=32)
    xl.family = "sdxl"
    save_adaptor(xl, adaptors / "sdxl_family.safetensors")
    for family, name, trained, given in (
        ("sdxl", "sd1_family.safetensors", "SD 1.x", "SDXL"),
        ("sd1", "sdxl_family.safetensors", "SDXL", "SD 1.x"),
        ("sd3", "sd1_family.safetensors", "SD 1.x", "SD 3.x"),
        ("flux", "sdxl_family.safetensors", "SDXL", "Flux"),
    ):
        model = load_family(nodes, folders, family)
        calls: list = []

        def wrapper(f, a, calls=calls):
            calls.append(1)
            return f(a["input"], a["timestep"], **a["c"])

        model.model_options = dict(model.model_options, model_function_wrapper=wrapper)
        with pytest.raises(ValueError) as e:
            run(
                nodes, "ASSR_DiffusionDecode", model=model, vae=vae(family), bitstream=[item], assr_model=assr_model,
                adaptor=name, realism=0.5, factor=1.0, adaptor_strength=1.0, seed=0, steps=2, cfg=0.0,
                sampler_name="euler", scheduler="normal", conditioning=diffusion_families.conditioning(family),
            )  # fmt: skip
        msg = str(e.value)
        print(msg)
        assert msg.count(". ") == 0 and "\n" not in msg, "one sentence"
        assert f"was trained for {trained} checkpoints, but this checkpoint is {given}" in msg
        assert not calls, "refused before sampling"


def test_unknown_family_is_one_clear_error(nodes, assr_model, item):
    import comfy.model_detection
    import comfy.sd

    # a 4x upscaler layout (ComfyUI runs it; the diffusion decoder does not know it), reduced
    config = dict(diffusion_families.CONFIGS["sd1"], in_channels=7, model_channels=256, context_dim=1024,
                  use_linear_in_transformer=True, channel_mult=[1, 1, 1, 1], num_res_blocks=[1] * 4,
                  transformer_depth=[0, 0, 0, 1], transformer_depth_output=[0] * 6 + [1, 1])  # fmt: skip
    mc = comfy.model_detection.model_config_from_unet_config(config)
    with torch.device("cpu"):
        sd = mc.get_model({}, device="cpu").diffusion_model.state_dict()
    model = comfy.sd.load_diffusion_model_state_dict(sd)
    assert type(model.model.model_config).__name__ == "SD_X4Upscaler"
    with pytest.raises(UnknownFamilyError, match=r"does not support this model \(SD_X4Upscaler\); it supports"):
        run(
            nodes, "ASSR_DiffusionPrepare", model=model, vae=None, bitstream=[item], assr_model=assr_model,
            adaptor="none (training-free)", realism=0.5, factor=1.0, adaptor_strength=1.0,
        )  # fmt: skip


def _gradient_energy(x: torch.Tensor) -> torch.Tensor:
    """Per-position squared gradient of a (1, C, h, w) latent, summed over channels (h-1, w-1)."""
    dx = x[..., :-1, 1:] - x[..., :-1, :-1]
    dy = x[..., 1:, :-1] - x[..., :-1, :-1]
    return (dx.pow(2) + dy.pow(2)).sum(1)[0]


def test_seams_on_a_2048x1536_output_tiled_inside_one_trajectory(nodes, folders):
    from assr_eic.diffusion.sampler import tile_boxes, tiled

    nm = node_module(nodes)
    model = load_family(nodes, folders, "sd1")
    h, w = 192, 256  # the latent of a 2048x1536 output
    tile = FAMILIES["sd1"].native // 8
    g = torch.Generator().manual_seed(0)
    latent = torch.nn.functional.interpolate(torch.randn(1, 4, h // 8, w // 8, generator=g), size=(h, w),
                                             mode="bicubic", align_corners=False)  # fmt: skip
    pos = diffusion_families.conditioning("sd1", 1)
    m = model.clone()
    patch = nm.add_tiling(m, tile, (h, w))
    boxes = tile_boxes(h, w, tile, patch.overlap)
    with torch.inference_mode():
        ours = nodes.common_ksampler(m, SEED, 2, 1.0, "euler", "normal", pos, pos, {"samples": latent},
                                     denoise=0.75)[0]["samples"]  # fmt: skip
    assert patch.calls == 2 * len(boxes) and len(boxes) >= 12

    # where the tiles overlap (covered twice or more) and their interiors (covered once)
    cover = torch.zeros(h, w)
    for y0, y1, x0, x1 in boxes:
        cover[y0:y1, x0:x1] += 1
    cover = cover[:-1, :-1]
    band, inner = cover >= 2, cover == 1

    def ratio(x: torch.Tensor) -> float:
        e = _gradient_energy(x.float())
        return float(e[band].mean() / e[inner].mean())

    # main's way for comparison: each tile sampled on its own (the same noise there), crossfaded at the end
    noise_all = torch.randn(latent.shape, generator=torch.Generator().manual_seed(SEED))

    def alone(lat: torch.Tensor, box) -> torch.Tensor:
        y0, y1, x0, x1 = box
        import comfy.sample

        with torch.inference_mode():
            return comfy.sample.sample(model, noise_all[..., y0:y1, x0:x1], 2, 1.0, "euler", "normal", pos, pos, lat,
                                       denoise=0.75).float()  # fmt: skip

    def own_noise(lat: torch.Tensor, box) -> torch.Tensor:
        """A tile sampled on its own with noise of its own: the textures of neighbours disagree."""
        import comfy.sample

        noise = torch.randn(lat.shape, generator=torch.Generator().manual_seed(SEED + 1 + boxes.index(box)))
        with torch.inference_mode():
            return comfy.sample.sample(model, noise, 2, 1.0, "euler", "normal", pos, pos, lat,
                                       denoise=0.75).float()  # fmt: skip

    independent = tiled(alone, latent, tile, patch.overlap)
    disagreeing = tiled(own_noise, latent, tile, patch.overlap)
    r_ours, r_indep, r_own = ratio(ours), ratio(independent), ratio(disagreeing)
    print(f"gradient energy, tile overlaps / interiors: one trajectory {r_ours:.3f}, independent tiles "
          f"{r_indep:.3f}, independent tiles with their own noise {r_own:.3f}")
    assert abs(r_ours - 1) < 0.1, r_ours
    # the measure can fail: tiles whose textures disagree (blended where they overlap) leave a seam it sees
    assert abs(r_own - 1) > 0.1, r_own

"""The diffusion decoder on the user's own SD checkpoint: ComfyUI glue only (the maths is ``assr_eic.diffusion``).

- ASSR Diffusion Prepare: fidelity-decodes the bitstreams, and returns a patched MODEL (the adaptor's
  residuals added to the UNet through a UNet function wrapper; the training-free consistency step on the
  denoised prediction through a post-CFG function), the prompt as CONDITIONING, the fidelity decode
  VAE-encoded as LATENT and the denoise strength for the stock KSampler.
- ASSR Color Fix: AdaIN or wavelet colour fix of the VAE-decoded image against the fidelity decode.
- ASSR Diffusion Decode: all of it in one node, sampling through ``comfy.sample.sample`` with live preview
  and progress, tiled for large outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import comfy.model_management as mm
import comfy.sample
import comfy.samplers
import comfy.utils
import folder_paths
import latent_preview
import node_helpers
import torch
from comfy.model_patcher import ModelPatcher
from comfy_api.latest import io, ui
from torch.nn import functional as F

from assr_eic.diffusion import (
    AdaptorFileError,
    ASSRAdaptor,
    Degradation,
    adain_color_fix,
    consistency_step,
    denoise_strength,
    uncertainty_map,
    wavelet_color_fix,
)
from assr_eic.diffusion.adaptor import load_adaptor
from assr_eic.diffusion.consistency import keep_low_band, latent_hold, latent_sigma
from assr_eic.diffusion.family import Family, check_adaptor_family, family_of
from assr_eic.diffusion.sampler import tiled
from assr_eic.diffusion.schedule import from_start_sigma
from assr_eic.limits import NODE_MAX_SIDE
from assr_eic.pipeline import decode, downsample
from assr_eic.rescale import resize

from .common import (
    CATEGORY,
    ASSRBitstreamType,
    ASSRModelType,
    ModelHandle,
    Progress,
    decode_error,
    items_of,
    model_handle,
    model_path,
    register_model_folder,
    to_comfy_image,
)

ADAPTOR_FOLDER = "assr_eic_adaptors"
NO_ADAPTOR = "none (training-free)"
ADAPTOR_KEY = "assr_eic_adaptor"
COLOR_FIXES = ("consistency", "wavelet", "adain", "none")
FIX_NEEDS_HINTS = "consistency"
SCHEDULE_RESOLUTION = 1000  # steps of the fine schedule a start sigma is cut from
NEGATIVE_DEFAULT = "blurry, lowres, jpeg artifacts, compression artifacts, noise, oversmoothed"
LOWPASS_SIGMA = 2.0  # latent pixels: main's fixed band, kept as the fallback when no scale is known
MAX_SIDE = NODE_MAX_SIDE  # the nodes' largest output side, as in ASSR Decode
ASSRHintsType = io.Custom("ASSR_DIFFUSION_HINTS")
TILE_TOOLTIP = (
    "Outputs larger than this (pixels) are denoised tile by tile inside every model call, the predictions "
    "blended (one trajectory, one noise: no seams). 0: the family's native resolution (SD 1.x 512, SD 2.x 768, "
    "SDXL, SD 3.x and Flux 1024)."
)


register_model_folder(ADAPTOR_FOLDER)


def adaptor_names() -> list[str]:
    return [NO_ADAPTOR, *folder_paths.get_filename_list(ADAPTOR_FOLDER)]


def load_adaptor_file(name: str) -> ASSRAdaptor | None:
    """The adaptor chosen in the node (None for training-free mode), from inside the adaptor folders only;
    bad files are one clear ValueError."""
    if name in (None, "", NO_ADAPTOR):
        return None
    path = model_path(name, ADAPTOR_FOLDER, "ASSR adaptor")
    try:
        return load_adaptor(path, "the file").eval()  # messages name the file as the user chose it, no server path
    except AdaptorFileError as e:
        raise ValueError(f"cannot load the ASSR adaptor {name!r}: {e}") from None


# --- what the bitstreams give the sampler ---------------------------------------------------------


@dataclass
class Hints:
    """Everything decoded from the bitstreams, on the CPU: the fidelity decode (B, 3, H, W) in [0, 1] at
    the output size, the uncertainty maps (B, 1, H, W) upsampled to it (as training does), the degradation
    vectors (B, 3) and their descriptors, the prompt carried by the files; for the consistency projection,
    each file's decoded low-res image and header, the ASSR model (its encoder's downsampler) and realism."""

    decoded: torch.Tensor
    uncertainty: torch.Tensor
    degradation: torch.Tensor
    degradations: list[Degradation]
    prompt: str | None
    lowres: list = field(default_factory=list)
    bitstreams: list = field(default_factory=list)
    net: object = None
    realism: float = 0.5

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.decoded.shape[-2:])

    def crop(self, y0: int, y1: int, x0: int, x1: int) -> Hints:
        """The hints of an image-space window."""
        win = (..., slice(y0, y1), slice(x0, x1))
        return replace(self, decoded=self.decoded[win], uncertainty=self.uncertainty[win])

    def keep_file_band(self, images: torch.Tensor) -> torch.Tensor:
        """The sampled images (B, 3, H, W) with each file's band below its low-res Nyquist restored
        (:func:`assr_eic.diffusion.consistency.keep_low_band`, the prior's share above it set by realism)."""
        n = self.decoded.shape[0]
        if images.shape[-2:] != self.decoded.shape[-2:]:
            H, W = self.size
            raise ValueError(
                f"the images are {images.shape[-1]}x{images.shape[-2]} but the fidelity decode is {W}x{H}: "
                "the consistency fix needs the sampled images at the size ASSR Diffusion Prepare gave"
            )
        out = []
        for i in range(images.shape[0]):
            j = i % n
            bs = self.bitstreams[j]

            def down(z: torch.Tensor, bs=bs) -> torch.Tensor:
                return downsample(self.net, resize(z, (bs.height, bs.width)), bs.codec, bs.scale_code)

            out.append(
                keep_low_band(
                    images[i : i + 1],
                    self.decoded[j : j + 1],
                    self.lowres[j],
                    down,
                    self.realism,
                    self.uncertainty[j : j + 1],
                )  # fmt: skip
            )
        return torch.cat(out)


def output_size(items, factor: float) -> tuple[int, int]:
    """The batch's output size: the original size times ``factor``, rounded to the VAE's multiple of 8."""
    sizes = {(max(8, round(it.bitstream.height * factor / 8) * 8), max(8, round(it.bitstream.width * factor / 8) * 8))
             for it in items}  # fmt: skip
    if len(sizes) > 1:
        listed = ", ".join(f"{w}x{h}" for h, w in sorted(sizes))
        raise ValueError(f"the bitstreams in this batch decode to different sizes ({listed}); decode them one by one")
    (h, w) = sizes.pop()
    if max(h, w) > MAX_SIDE:
        raise ValueError(f"the output would be {w}x{h}, larger than {MAX_SIDE} px on a side; lower the factor")
    return h, w


def decode_hints(items, handle: ModelHandle, size: tuple[int, int], progress: Progress | None = None) -> Hints:
    """Fidelity-decode each bitstream at ``size`` and gather the hints the diffusion decoder reads."""
    codecs = {it.bitstream.codec for it in items}
    net = handle.ready(codecs)
    decoded, maps, degs, lowres = [], [], [], []
    for it in items:
        if progress is not None:
            progress.check()
        try:
            out = decode(it.bitstream, size=size, model=net)
        except ValueError as e:
            raise decode_error(it, e) from None
        decoded.append(out.image.clamp(0, 1).float())
        u = uncertainty_map(out.lowres.x_hat, out.lowres).float()
        maps.append(F.interpolate(u, size=size, mode="bilinear", align_corners=False))
        degs.append(Degradation.from_bitstream(it.bitstream))
        lowres.append(out.lowres.x_hat.clamp(0, 1).float())
    prompts = {it.bitstream.prompt for it in items if it.bitstream.prompt}
    return Hints(
        torch.cat(decoded),
        torch.cat(maps),
        torch.stack([d.vector() for d in degs]),
        degs,
        prompts.pop() if len(prompts) == 1 else None,
        lowres,
        [it.bitstream for it in items],
        net,
    )


# --- the model patches ----------------------------------------------------------------------------


def _repeat_to(x: torch.Tensor, batch: int) -> torch.Tensor:
    if x.shape[0] == batch:
        return x
    if batch % x.shape[0]:
        raise ValueError(f"the sampler's batch of {batch} does not fit the {x.shape[0]} decoded image(s)")
    return x.repeat(batch // x.shape[0], *([1] * (x.ndim - 1)))


def merge_control(prev: dict | None, add: dict) -> dict:
    """Add our residuals to those another control (a ControlNet) already put in the UNet's control dict."""
    if not prev:
        return add
    out = {k: list(v) for k, v in prev.items()}
    for key, values in add.items():
        have = out.get(key, [])
        if len(have) != len(values):
            if have:
                raise ValueError(f"cannot combine the ASSR adaptor with another control: '{key}' lists differ")
            out[key] = list(values)
            continue
        out[key] = [v if h is None else h + v.to(h.dtype) for h, v in zip(have, values, strict=True)]
    return out


@dataclass
class AdaptorPatch:
    """The UNet function wrapper that computes the adaptor's residuals for each UNet call and hands them
    to ComfyUI's UNet as its control dict (``output``: the 12 down residuals, which the UNet pops from the
    end while walking its output blocks, as for a ControlNet; ``middle``: the mid residual)."""

    adaptor: ASSRAdaptor
    hints: Hints
    residual_scale: float
    model_sampling: object
    unet_dtype: torch.dtype
    previous: object = None
    latent_hw: tuple | None = None
    _cache: dict = field(default_factory=dict)

    def residuals(self, x: torch.Tensor, sigma: torch.Tensor, box: tuple | None = None) -> dict:
        """The control dict for UNet input ``x`` (sampler space) at noise level ``sigma`` (B,); ``box``: the
        latent window (y0, y1, x0, x1) ``x`` is, when :class:`TilePatch` runs the model tile by tile."""
        ms = self.model_sampling
        xc = ms.calculate_input(sigma, x)  # what the UNet itself sees (VP-scaled noisy latent)
        t = ms.timestep(sigma).float()
        dev = next(self.adaptor.parameters()).device
        key = (dev, x.shape[0], box)
        if key not in self._cache:
            h = self.hints
            if box is not None:
                f = h.size[0] // self.latent_hw[0] if self.latent_hw else 8
                h = h.crop(*(f * v for v in box))
            self._cache[key] = tuple(
                _repeat_to(v, x.shape[0]).to(dev) for v in (h.decoded, h.degradation, h.uncertainty)
            )
        decoded, deg, unc = self._cache[key]
        with torch.no_grad():
            out = self.adaptor(xc.to(dev), t.to(dev), decoded, deg, unc, residual_scale=self.residual_scale)
        cast = {"device": x.device, "dtype": self.unet_dtype}
        return {"output": [r.to(**cast) for r in out.down], "middle": [out.mid.to(**cast)]}

    def __call__(self, apply_model, args: dict) -> torch.Tensor:
        x, sigma, c = args["input"], args["timestep"], dict(args["c"])
        c["control"] = merge_control(c.get("control"), self.residuals(x, sigma, args.get(BOX_KEY)))
        if self.previous is not None:
            return self.previous(apply_model, {**args, "c": c})
        return apply_model(x, sigma, **c)


def _crop_spatial(v, box: tuple[int, int, int, int], hw: tuple[int, int]):
    """The window ``box`` (latent pixels of an ``hw`` latent) of a conditioning tensor on the latent grid
    or a multiple of it (image conditioning, control residuals); other values as they are."""
    if isinstance(v, dict):
        return {k: _crop_spatial(t, box, hw) for k, t in v.items()}
    if isinstance(v, (list, tuple)):
        return type(v)(_crop_spatial(t, box, hw) for t in v)
    if isinstance(v, torch.Tensor) and v.ndim >= 4:
        fy, fx = v.shape[-2] / hw[0], v.shape[-1] / hw[1]
        if fy == fx and fy > 0 and (fy * box[0]).is_integer() and (fy * box[1]).is_integer():
            y0, y1, x0, x1 = (round(fy * b) for b in box)
            return v[..., y0:y1, x0:x1]
    return v


BOX_KEY = "assr_tile_box"
SPATIAL_CONDS = ("c_concat", "control")


@dataclass
class TilePatch:
    """Tiling inside one trajectory (MultiDiffusion, Bar-Tal et al. 2023) as a UNet function wrapper: every
    model call runs on overlapping latent tiles of ``tile`` and the predictions are blended with linear
    ramps, so the sampler steps one latent with one noise and neighbouring tiles agree at every step.
    Works under any sampler (the stock KSampler included); a latent no larger than ``tile`` is one call."""

    tile: int
    overlap: int
    previous: object = None
    calls: int = 0  # model calls on a tile so far (tests and diagnostics)

    def __call__(self, apply_model, args: dict) -> torch.Tensor:
        x, sigma, c = args["input"], args["timestep"], args["c"]
        hw = tuple(x.shape[-2:])

        def one(xt: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
            mm.throw_exception_if_processing_interrupted()
            self.calls += 1
            ct = {k: (_crop_spatial(v, box, hw) if k in SPATIAL_CONDS else v) for k, v in c.items()}
            if self.previous is not None:
                return self.previous(apply_model, {**args, "input": xt, "c": ct, BOX_KEY: box})
            return apply_model(xt, sigma, **ct)

        return tiled(one, x, self.tile, self.overlap)


def tile_overlap(tile: int) -> int:
    """Latent pixels two neighbouring tiles share: a quarter of the tile, at most 32 (256 image pixels)."""
    return max(1, min(tile // 4, 32))


def add_tiling(m, tile: int, latent_hw: tuple[int, int]):
    """Attach :class:`TilePatch` (outermost wrapper) to the patched clone ``m`` when the latent is larger than
    ``tile`` latent pixels; returns the patch or None."""
    if max(latent_hw) <= tile:
        return None
    patch = TilePatch(tile, tile_overlap(tile), m.model_options.get("model_function_wrapper"))
    m.set_model_unet_function_wrapper(patch)
    return patch


def sampling_progress(args: dict) -> float:
    """How far the sampler is, in [0, 1], from the sigmas ComfyUI's sampler records (0.5 if it records none)."""
    sigmas = args.get("model_options", {}).get("transformer_options", {}).get("sample_sigmas")
    if sigmas is None:
        return 0.5
    nonzero = sigmas[sigmas > 0].float()
    if nonzero.numel() < 2:
        return 1.0
    hi, lo = float(nonzero.max().log()), float(nonzero.min().log())
    sigma = float(args["sigma"].flatten()[0].clamp(min=1e-8).log())
    return min(1.0, max(0.0, (hi - sigma) / max(hi - lo, 1e-8)))


@dataclass
class ConsistencyPatch:
    """The post-CFG function of the training-free mode: each step's denoised prediction is pulled towards
    the fidelity decode's latent, on the band the file determines (cutoff tied to s), as strongly as
    :func:`~assr_eic.diffusion.consistency.latent_hold` says for this realism and this point of sampling
    (``amount`` given: that fixed pull instead). The uncertainty map does not weaken it (the file knows its
    low band even where the codec was unsure); ``weight`` (None: 1) is only for callers that want a map."""

    x0_ref: torch.Tensor  # sampler space (latent_format.process_in of the VAE latent)
    weight: torch.Tensor | None  # (B, 1, h, w) at the latent size, or None
    amount: float | None = None
    sigma_lowpass: float = LOWPASS_SIGMA
    realism: float = 0.5

    def __call__(self, args: dict) -> torch.Tensor:
        denoised = args["denoised"]
        ref = _repeat_to(self.x0_ref, denoised.shape[0]).to(denoised.device, denoised.dtype)
        weight = None
        if self.weight is not None:
            weight = _repeat_to(self.weight, denoised.shape[0]).to(denoised.device, denoised.dtype)
        amount = latent_hold(self.realism, sampling_progress(args)) if self.amount is None else self.amount
        return consistency_step(denoised, ref, weight, amount, self.sigma_lowpass)


def patch_model(
    model,
    hints: Hints,
    latent: torch.Tensor,
    adaptor: ASSRAdaptor | None,
    adaptor_strength: float,
    consistency: float,
    tile: int | None = None,
):
    """A clone of the user's MODEL with the adaptor (if any), the consistency step (if > 0) and, for a latent
    larger than ``tile`` latent pixels, tiling inside the trajectory attached.

    ``consistency`` = 1 - realism: the step's pull follows the realism's schedule over sampling time."""
    m = model.clone()
    base = m.model
    if adaptor is not None:
        unet_dtype = base.manual_cast_dtype or base.get_dtype()
        patcher = ModelPatcher(adaptor, load_device=m.load_device, offload_device=mm.unet_offload_device())
        m.set_additional_models(ADAPTOR_KEY, [patcher])  # loaded and offloaded with the UNet
        previous = m.model_options.get("model_function_wrapper")
        ms = m.get_model_object("model_sampling")
        patch = AdaptorPatch(adaptor, hints, adaptor_strength, ms, unet_dtype, previous, tuple(latent.shape[-2:]))
        m.set_model_unet_function_wrapper(patch)
    if consistency > 0:
        latent_format = m.get_model_object("latent_format")
        x0_ref = latent_format.process_in(latent.float())
        s = sum(d.s for d in hints.degradations) / len(hints.degradations)
        sigma = latent_sigma(s, hints.size[0] / latent.shape[-2])
        m.set_model_sampler_post_cfg_function(ConsistencyPatch(x0_ref, None, None, sigma, 1.0 - consistency))
    if tile is not None:
        add_tiling(m, tile, tuple(latent.shape[-2:]))
    return m


def model_family(model) -> Family:
    """The checkpoint family of a ComfyUI MODEL, from the config ComfyUI detected for it (one clear error
    for a family the decoder does not know)."""
    config = getattr(getattr(model, "model", None), "model_config", None)
    if config is None:
        raise ValueError("the model input must be a MODEL from Load Checkpoint or Load Diffusion Model")
    return family_of(type(config).__name__, model.get_model_object("latent_format").latent_channels)


def with_guidance(conditioning: list, family: Family) -> list:
    """Flux-style distilled guidance set on conditioning that has none (other families: unchanged)."""
    if family.guidance is None or all("guidance" in c[1] for c in conditioning):
        return conditioning
    return node_helpers.conditioning_set_values(conditioning, {"guidance": family.guidance})


def encode_prompt(clip, text: str):
    if clip is None:
        raise ValueError("the clip input is missing: connect the CLIP of your checkpoint")
    tokens = clip.tokenize(text)
    return clip.encode_from_tokens_scheduled(tokens)


def choose_prompt(hints: Hints, override: str, items) -> str:
    text = (override or "").strip()
    if text:
        return text
    prompts = {it.bitstream.prompt for it in items if it.bitstream.prompt}
    if len(prompts) > 1:
        raise ValueError("the bitstreams carry different prompts; type one prompt for the whole batch")
    return hints.prompt or ""


@dataclass
class Prepared:
    model: object
    positive: list
    negative: list
    latent: torch.Tensor
    denoise: float
    hints: Hints
    prompt: str
    adaptor: ASSRAdaptor | None
    consistency: float
    family: Family | None = None

    @property
    def tiling(self) -> TilePatch | None:
        wrapper = self.model.model_options.get("model_function_wrapper")
        return wrapper if isinstance(wrapper, TilePatch) else None


def prepare(
    model, clip, vae, bitstream, assr_model, adaptor_name, realism, factor, adaptor_strength, prompt, negative,
    progress: Progress | None = None, tile_size: int = 0, conditioning=None, negative_conditioning=None,
) -> Prepared:  # fmt: skip
    """Everything the sampler needs, shared by the split nodes and the all-in-one node. ``tile_size`` 0: the
    family's native resolution; ``conditioning`` (and ``negative_conditioning``) given: used instead of
    encoding the prompt (image semantics through the stock unCLIP or style nodes, or any conditioning)."""
    model_handle(assr_model, "assr_model")
    family = model_family(model)
    if vae is None:
        raise ValueError("the vae input is missing: connect the VAE of your checkpoint")
    adaptor = load_adaptor_file(adaptor_name)
    if adaptor is not None:
        check_adaptor_family(adaptor.family, family, f"the ASSR adaptor {adaptor_name!r}")
    items = items_of(bitstream)
    hints = decode_hints(items, assr_model, output_size(items, factor), progress)
    text = choose_prompt(hints, prompt, items)
    positive = conditioning if conditioning is not None else encode_prompt(clip, text)
    if negative_conditioning is not None:
        negative = negative_conditioning
    else:
        negative = encode_prompt(clip, (negative or "").strip())
    positive, negative = with_guidance(positive, family), with_guidance(negative, family)
    latent = vae.encode(hints.decoded.movedim(1, -1))
    denoise = sum(denoise_strength(d, realism) for d in hints.degradations) / len(hints.degradations)
    consistency = max(0.0, min(1.0, 1.0 - realism))
    hints = replace(hints, realism=float(realism))
    tile = (tile_size or family.native) // 8
    patched = patch_model(model, hints, latent, adaptor, adaptor_strength, consistency, max(1, tile))
    return Prepared(patched, positive, negative, latent, denoise, hints, text, adaptor, consistency, family)


# --- shared widgets -------------------------------------------------------------------------------


def _inputs() -> list:
    return [
        io.Model.Input(
            "model", tooltip="Your SD 1.x, SD 2.x, SDXL, SD 3.x or Flux model (Load Checkpoint or Load Diffusion Model)"
        ),
        io.Clip.Input(
            "clip",
            optional=True,
            tooltip="The text encoder of the same checkpoint (encodes the prompt; not needed with conditioning).",
        ),
        io.Vae.Input("vae", tooltip="The VAE of the same checkpoint (encodes the fidelity decode to a latent)."),
        ASSRBitstreamType.Input("bitstream", tooltip="The .assr bitstreams to decode (one image each)."),
        ASSRModelType.Input("assr_model", tooltip="The ASSR model that wrote the bitstreams (fidelity decoder)."),
        io.Combo.Input(
            "adaptor",
            options=adaptor_names(),
            default=NO_ADAPTOR,
            tooltip=(
                f"Trained adaptor weights from models/{ADAPTOR_FOLDER}/ (degradation-aware control residuals), or "
                "none: training-free mode, which works with any SD checkpoint."
            ),
        ),
        io.Float.Input(
            "realism",
            default=0.5,
            min=0.0,
            max=1.0,
            step=0.05,
            tooltip=(
                "Fidelity <-> realism: 0 keeps close to the fidelity decode (little denoising, strong "
                "low-frequency consistency), 1 lets the diffusion model invent more detail."
            ),
        ),
        io.Float.Input(
            "factor",
            default=1.0,
            min=0.125,
            max=8.0,
            step=0.125,
            tooltip="Output size relative to the original image (rounded to a multiple of 8 pixels).",
        ),
        io.Float.Input(
            "adaptor_strength",
            default=1.0,
            min=0.0,
            max=2.0,
            step=0.05,
            tooltip="Scale of the adaptor's residuals (no effect in training-free mode).",
        ),
        io.String.Input(
            "prompt",
            default="",
            multiline=True,
            optional=True,
            tooltip="Text prompt; empty: use the prompt carried in the bitstream (or none).",
        ),
        io.String.Input(
            "negative",
            default=NEGATIVE_DEFAULT,
            multiline=True,
            optional=True,
            tooltip="Negative prompt (what the result should not look like).",
        ),
        io.Conditioning.Input(
            "conditioning",
            optional=True,
            tooltip=(
                "Optional conditioning used instead of the prompt: e.g. CLIP Text Encode followed by unCLIP "
                "Conditioning or Apply Style Model, to add an image's semantics (CLIP vision) to the text."
            ),
        ),
        io.Conditioning.Input(
            "negative_conditioning", optional=True, tooltip="Optional negative conditioning instead of the negative."
        ),
    ]


def _summary(p: Prepared) -> str:
    H, W = p.hints.size
    mode = "adaptor" if p.adaptor is not None else "training-free"
    shown = p.prompt if len(p.prompt) <= 60 else p.prompt[:57] + "..."
    return (
        f"{len(p.hints.degradations)} image(s) at {W}x{H}, {mode}, {p.family.name if p.family else '?'}\n"
        f"denoise {p.denoise:.3f}, consistency {p.consistency:.2f}\nprompt: {shown or '(none)'}"
    )


class ASSRDiffusionPrepare(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ASSR_DiffusionPrepare",
            display_name="ASSR Diffusion Prepare",
            category=CATEGORY,
            description=(
                "Sets up the degradation-aware diffusion decoder for the stock KSampler: decodes the bitstreams "
                "with the fidelity decoder, patches your SD model (adaptor residuals and the low-frequency "
                "consistency step), encodes the prompt, and gives the VAE-encoded fidelity decode with the "
                "denoise strength the degradation calls for. Follow with KSampler, VAE Decode and ASSR Color Fix."
            ),
            inputs=[
                *_inputs(),
                io.Int.Input("tile_size", default=0, min=0, max=4096, step=64, optional=True, tooltip=TILE_TOOLTIP),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="Your model, patched: connect it to KSampler."),
                io.Conditioning.Output(display_name="positive", tooltip="The prompt (from the file or typed)."),
                io.Conditioning.Output(display_name="negative", tooltip="The negative prompt."),
                io.Latent.Output(display_name="latent", tooltip="The fidelity decode, VAE-encoded: KSampler's input."),
                io.Float.Output(
                    display_name="denoise", tooltip="Denoise strength from the degradation and realism: KSampler's."
                ),
                io.Image.Output(
                    display_name="fidelity", tooltip="The fidelity decode at the output size (Color Fix reference)."
                ),
                ASSRHintsType.Output(
                    display_name="hints",
                    tooltip="What the files say (low-res images, scales, uncertainty, realism): ASSR Color Fix's "
                    "consistency method keeps it.",
                ),
                io.Float.Output(display_name="cfg", tooltip="The classifier-free guidance that suits this family."),
            ],
        )

    @classmethod
    def execute(
        cls, model, vae, bitstream, assr_model, adaptor, realism, factor, adaptor_strength, clip=None,
        prompt: str = "", negative: str = NEGATIVE_DEFAULT, tile_size: int = 0, conditioning=None,
        negative_conditioning=None,
    ) -> io.NodeOutput:  # fmt: skip
        p = prepare(
            model, clip, vae, bitstream, assr_model, adaptor, realism, factor, adaptor_strength, prompt, negative,
            tile_size=tile_size, conditioning=conditioning, negative_conditioning=negative_conditioning,
        )  # fmt: skip
        fidelity = to_comfy_image([p.hints.decoded[i : i + 1] for i in range(p.hints.decoded.shape[0])])
        return io.NodeOutput(
            p.model, p.positive, p.negative, {"samples": p.latent}, p.denoise, fidelity, p.hints, p.family.cfg,
            ui=ui.PreviewText(_summary(p)),
        )  # fmt: skip


def apply_color_fix(
    images: torch.Tensor, reference: torch.Tensor, method: str, hints: Hints | None = None
) -> torch.Tensor:
    """Colour-fix an IMAGE batch (B, H, W, 3) against the reference batch (resized to the images' size);
    "consistency" restores the files' band below their low-res Nyquist from ``hints`` instead."""
    if method not in COLOR_FIXES:
        raise ValueError(f"unknown colour fix {method!r}; choose one of: {', '.join(COLOR_FIXES)}")
    for name, t in (("image", images), ("reference", reference)):
        if not isinstance(t, torch.Tensor) or t.ndim != 4 or t.shape[-1] < 3:
            raise ValueError(f"the {name} input must be an IMAGE batch (B, H, W, 3)")
    if method == "none":
        return images
    x = images[..., :3].movedim(-1, 1).float().cpu()
    if method == FIX_NEEDS_HINTS:
        if not isinstance(hints, Hints):
            raise ValueError(
                "the consistency method needs the hints input: connect ASSR Diffusion Prepare's hints output"
            )
        return to_comfy_image([hints.keep_file_band(x)])
    ref = _repeat_to(reference[..., :3].movedim(-1, 1).float().cpu(), x.shape[0])
    if ref.shape[-2:] != x.shape[-2:]:
        ref = F.interpolate(ref, size=x.shape[-2:], mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    fix = wavelet_color_fix if method == "wavelet" else adain_color_fix
    return to_comfy_image([fix(x[i : i + 1], ref[i : i + 1]) for i in range(x.shape[0])])


class ASSRColorFix(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ASSR_ColorFix",
            display_name="ASSR Color Fix",
            category=CATEGORY,
            description=(
                "Corrects the colour drift of a diffusion result against the fidelity decode: wavelet keeps the "
                "result's fine detail and takes the reference's low frequencies; AdaIN matches per-channel mean "
                "and spread."
            ),
            inputs=[
                io.Image.Input("image", tooltip="The diffusion result (after VAE Decode)."),
                io.Image.Input("reference", tooltip="The fidelity decode (ASSR Diffusion Prepare's fidelity output)."),
                io.Combo.Input(
                    "method",
                    options=list(COLOR_FIXES),
                    default="wavelet",
                    tooltip=(
                        "consistency: the files' band below the low-res Nyquist restored exactly, the model's detail "
                        "above it as realism allows (needs hints); wavelet, AdaIN, or none."
                    ),
                ),
                ASSRHintsType.Input(
                    "hints", optional=True, tooltip="ASSR Diffusion Prepare's hints (for the consistency method)."
                ),
            ],
            outputs=[io.Image.Output(display_name="image", tooltip="The colour-fixed images.")],
        )

    @classmethod
    def execute(cls, image, reference, method, hints=None) -> io.NodeOutput:
        return io.NodeOutput(apply_color_fix(image, reference, method, hints))


# --- all in one -----------------------------------------------------------------------------------


class ASSRDiffusionDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ASSR_DiffusionDecode",
            display_name="ASSR Diffusion Decode",
            category=CATEGORY,
            description=(
                "Decodes .assr bitstreams with the degradation-aware diffusion decoder on your SD checkpoint in one "
                "node: fidelity decode, VAE encode, sampling with the adaptor and the consistency step (live "
                "preview and progress), VAE decode and colour fix. Large outputs are sampled in overlapping tiles."
            ),
            inputs=[
                *_inputs(),
                io.Int.Input(
                    "seed",
                    default=0,
                    min=0,
                    max=0xFFFFFFFFFFFFFFFF,
                    control_after_generate=True,
                    tooltip="Seed of the sampling noise.",
                ),  # fmt: skip
                io.Int.Input("steps", default=20, min=1, max=1000, tooltip="Sampling steps (before denoise)."),
                io.Float.Input(
                    "cfg",
                    default=0.0,
                    min=0.0,
                    max=30.0,
                    step=0.1,
                    round=0.01,
                    tooltip="Classifier-free guidance; 0: the family's (4 for SD, 3.5 for SD 3.x, 1 for Flux, which "
                    "gets distilled guidance 3.5 instead).",
                ),
                io.Combo.Input(
                    "sampler_name", options=comfy.samplers.SAMPLER_NAMES, default="euler", tooltip="The sampler."
                ),
                io.Combo.Input(
                    "scheduler", options=comfy.samplers.SCHEDULER_NAMES, default="normal", tooltip="The schedule."
                ),
                io.Combo.Input(
                    "color_fix",
                    options=list(COLOR_FIXES),
                    default="consistency",
                    tooltip=(
                        "consistency: the files' band below the low-res Nyquist kept exactly, the model's detail "
                        "above it as realism allows; wavelet/AdaIN: colour fixes against the fidelity decode."
                    ),
                ),
                io.Int.Input(
                    "tile_size",
                    default=0,
                    min=0,
                    max=4096,
                    step=64,
                    tooltip=TILE_TOOLTIP,
                ),
            ],
            outputs=[
                io.Image.Output(display_name="image", tooltip="The diffusion-decoded images."),
                io.Image.Output(display_name="fidelity", tooltip="The fidelity decode at the same size."),
            ],
        )

    @classmethod
    def execute(
        cls, model, vae, bitstream, assr_model, adaptor, realism, factor, adaptor_strength, seed, steps, cfg,
        sampler_name, scheduler, clip=None, color_fix: str = "consistency", tile_size: int = 0, prompt: str = "",
        negative: str = NEGATIVE_DEFAULT, conditioning=None, negative_conditioning=None,
    ) -> io.NodeOutput:  # fmt: skip
        p = prepare(
            model, clip, vae, bitstream, assr_model, adaptor, realism, factor, adaptor_strength, prompt, negative,
            tile_size=tile_size, conditioning=conditioning, negative_conditioning=negative_conditioning,
        )  # fmt: skip
        samples = sample_prepared(model, p, seed, steps, cfg or p.family.cfg, sampler_name, scheduler)
        images = vae.decode(samples)
        if images.ndim == 5:  # some VAEs return (B, T, H, W, C)
            images = images.reshape(-1, *images.shape[-3:])
        fidelity = to_comfy_image([p.hints.decoded[i : i + 1] for i in range(p.hints.decoded.shape[0])])
        images = apply_color_fix(images.to(fidelity.device), fidelity, color_fix, p.hints)
        return io.NodeOutput(images, fidelity, ui=ui.PreviewText(_summary(p)))


def start_sigmas(model, scheduler: str, steps: int, denoise: float) -> torch.Tensor:
    """The scheduler's ``steps`` sigmas below one starting sigma: the model's own sigma at ``1 - denoise`` of
    its time range (close to what KSampler's denoise gives with the normal scheduler), the same for every scheduler."""
    ms = model.get_model_object("model_sampling")
    full = comfy.samplers.calculate_sigmas(ms, scheduler, SCHEDULE_RESOLUTION).float().cpu()
    return from_start_sigma(full, ms.percent_to_sigma(1.0 - denoise), steps)


def sample_prepared(model, p: Prepared, seed, steps, cfg, sampler_name, scheduler) -> torch.Tensor:
    """Sample the prepared latent in one trajectory (tiled inside each model call when the prepared model
    tiles), from one starting sigma whatever the scheduler, with progress and live preview per step."""
    sigmas = start_sigmas(model, scheduler, steps, p.denoise)
    latent = comfy.sample.fix_empty_latent_channels(model, p.latent)
    noise = comfy.sample.prepare_noise(latent, seed)
    pbar = comfy.utils.ProgressBar(steps)
    previewer = latent_preview.get_previewer(model.load_device, model.model.latent_format)

    def callback(step, x0_pred, x, total_steps):
        preview = previewer.decode_latent_to_preview_image("JPEG", x0_pred) if previewer else None
        pbar.update_absolute(step + 1, steps, preview)

    out = comfy.sample.sample(
        p.model, noise, steps, cfg, sampler_name, scheduler, p.positive, p.negative, latent, sigmas=sigmas,
        callback=callback, disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed,
    )  # fmt: skip
    return out.float().cpu()

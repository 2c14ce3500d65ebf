"""ASSR Encode, ASSR Decode and ASSR Bitstream Info: thin wrappers over ``assr_eic.pipeline``."""

from __future__ import annotations

import comfy.model_management as mm
import torch
from comfy_api.latest import io, ui

from assr_eic.bitstream import CODECS
from assr_eic.limits import DEFAULT_MAX_DECODE_PIXELS, MAX_OUTPUT_PIXELS, NODE_MAX_SIDE
from assr_eic.pipeline import check_decode_size, compress, decompress_with_lowres
from assr_eic.ratecontrol import EFFORTS

from .common import (
    CATEGORY,
    ASSRBitstreamType,
    ASSRModelType,
    BitstreamItem,
    Progress,
    decode_error,
    image_items,
    items_of,
    model_handle,
    to_comfy_image,
)

MODE_BPP = "target bpp"
MODE_SQ = "scale + quality"
CODEC_DEFAULT = "model default"
SIZE_ORIGINAL = "original"
SIZE_FACTOR = "factor"
SIZE_EXACT = "width x height"
MAX_SIDE = NODE_MAX_SIDE


class ASSREncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ASSR_Encode",
            display_name="ASSR Encode",
            category=CATEGORY,
            description=(
                "Compresses each image of the batch to an .assr bitstream: downsampled by a scale s, then coded "
                "by the base codec at quality q. Give a target rate (the node picks s and q per image) or s and "
                "q yourself."
            ),
            inputs=[
                io.Image.Input("image", tooltip="The images to compress; each batch item becomes one bitstream."),
                ASSRModelType.Input("model", tooltip="The ASSR model from Load ASSR Model."),
                io.Combo.Input(
                    "mode",
                    options=[MODE_BPP, MODE_SQ],
                    default=MODE_BPP,
                    tooltip="target bpp: rate control picks scale and quality. scale + quality: use the values below.",
                ),
                io.Float.Input(
                    "bpp",
                    default=0.05,
                    min=0.001,
                    max=8.0,
                    step=0.001,
                    round=0.0001,
                    tooltip=(
                        "Target bits per pixel of the whole file (header included), in target bpp mode. The file "
                        "lands within 10% of it, or the node says which range this image can reach."
                    ),
                ),
                io.Float.Input(
                    "scale",
                    default=4.0,
                    min=1.0,
                    max=8.0,
                    step=0.015625,
                    round=0.015625,
                    tooltip="Downsampling factor s in [1, 8] (stored in steps of 1/64), in scale + quality mode.",
                ),
                io.Float.Input(
                    "quality",
                    default=0.5,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    round=0.001,
                    tooltip="Base-codec quality q in [0, 1] (higher = more bytes), in scale + quality mode.",
                ),
                io.Combo.Input(
                    "codec",
                    options=[CODEC_DEFAULT, *CODECS],
                    default=CODEC_DEFAULT,
                    tooltip="Base codec of the low-res image: raw AV1 intra frames, or the learned codec.",
                ),
                io.String.Input(
                    "prompt",
                    default="",
                    multiline=True,
                    optional=True,
                    tooltip="Optional short text stored in the file for the decoder; its bytes count in the bpp.",
                ),
                io.Combo.Input(
                    "effort",
                    options=list(EFFORTS),
                    default=EFFORTS[0],
                    optional=True,
                    tooltip=(
                        "Rate control's effort, in target bpp mode. fast: one quicker final encode, and plain "
                        "bicubic where s < 1.41: about 0.3-1 s at 768x512 for usually 0.05-0.17 dB lower PSNR "
                        "(more on some images). best: also a second near-full-size encode from 0.1 bpp up, "
                        "about 1.4x the time of normal for up to 0.06 dB more."
                    ),
                ),
            ],
            outputs=[
                ASSRBitstreamType.Output(
                    display_name="bitstream", tooltip="One .assr bitstream per image, for Save, Decode, Info, Compare."
                )
            ],
        )

    @classmethod
    def execute(
        cls, image, model, mode, bpp, scale, quality, codec, prompt: str = "", effort: str = EFFORTS[0]
    ) -> io.NodeOutput:
        handle = model_handle(model)
        if mode not in (MODE_BPP, MODE_SQ):
            raise ValueError(f"unknown mode {mode!r}; choose {MODE_BPP!r} or {MODE_SQ!r}")
        codec = None if codec == CODEC_DEFAULT else codec
        prompt = (prompt or "").strip() or None
        xs = image_items(image)
        net = handle.ready([codec or handle.model.config["default_codec"]])
        progress = Progress(len(xs), steps=100)
        items: list[BitstreamItem] = []
        for i, x in enumerate(xs):
            if mode == MODE_BPP:
                kw = {"target_bpp": bpp, "effort": effort}
            else:
                kw = {"scale": scale, "quality": quality}
            try:
                data = compress(x, codec=codec, prompt=prompt, model=net, progress=progress.callback(), **kw)
            except ValueError as e:
                where = f"image {i + 1} of {len(xs)}: " if len(xs) > 1 else ""
                raise ValueError(f"ASSR Encode, {where}{e}") from None
            items.append(BitstreamItem.from_bytes(data, f"encoded image {i + 1}"))
            progress.next_item()
        text = "\n".join(it.summary() for it in items)
        return io.NodeOutput(items, ui=ui.PreviewText(text))


class ASSRDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ASSR_Decode",
            display_name="ASSR Decode",
            category=CATEGORY,
            description=(
                "Decodes .assr bitstreams with the fidelity decoder at any output size, and also returns the "
                "decoded low-res image the base codec carried."
            ),
            inputs=[
                ASSRBitstreamType.Input("bitstream", tooltip="The bitstreams to decode (one image each)."),
                ASSRModelType.Input("model", tooltip="The ASSR model that wrote the bitstreams."),
                io.Combo.Input(
                    "size",
                    options=[SIZE_ORIGINAL, SIZE_FACTOR, SIZE_EXACT],
                    default=SIZE_ORIGINAL,
                    tooltip="original: the encoded image's size. factor: original size times factor. "
                    "width x height: exactly that size.",
                ),
                io.Float.Input(
                    "factor",
                    default=1.0,
                    min=0.05,
                    max=8.0,
                    step=0.05,
                    round=0.001,
                    tooltip="Output size relative to the original image, in factor mode.",
                ),
                io.Int.Input(
                    "width", default=512, min=1, max=MAX_SIDE, step=1, tooltip="Output width, in width x height mode."
                ),
                io.Int.Input(
                    "height", default=512, min=1, max=MAX_SIDE, step=1, tooltip="Output height, in width x height mode."
                ),
                io.Int.Input(
                    "max_pixels",
                    default=DEFAULT_MAX_DECODE_PIXELS,
                    min=1,
                    max=MAX_OUTPUT_PIXELS,
                    step=1,
                    optional=True,  # workflows saved before this input still load and run
                    tooltip="Largest output (width x height) to decode: a bitstream declaring more, or a larger "
                    "chosen size, is refused before any work. Raise it for very large images (64 Mpx by default; "
                    "the output IMAGE takes 12 bytes per pixel).",
                ),
            ],
            outputs=[
                io.Image.Output(display_name="image", tooltip="The decoded images at the chosen size."),
                io.Image.Output(
                    display_name="lowres",
                    tooltip="The decoded low-res images (what the base codec carried), before super-resolution.",
                ),
            ],
        )

    @classmethod
    def execute(
        cls, bitstream, model, size, factor, width, height, max_pixels: int = DEFAULT_MAX_DECODE_PIXELS
    ) -> io.NodeOutput:
        items = items_of(bitstream)
        handle = model_handle(model)
        sizes = []
        for it in items:
            bs = it.bitstream
            if size == SIZE_ORIGINAL:
                sizes.append((bs.height, bs.width))
            elif size == SIZE_FACTOR:
                sizes.append((max(1, round(bs.height * factor)), max(1, round(bs.width * factor))))
            elif size == SIZE_EXACT:
                sizes.append((height, width))
            else:
                raise ValueError(f"unknown size mode {size!r}")
        if len(set(sizes)) > 1:
            listed = ", ".join(f"{w}x{h}" for h, w in sizes)
            raise ValueError(
                f"the bitstreams in this batch decode to different sizes ({listed}); an IMAGE batch needs one "
                "size, so choose width x height"
            )
        for it, hw in zip(items, sizes, strict=True):  # every item's size, from the headers, before any work
            try:
                check_decode_size(it.bitstream, None if size == SIZE_ORIGINAL else hw, max_pixels)
            except ValueError as e:
                raise decode_error(it, e) from None
        codecs = {it.bitstream.codec for it in items}
        net = handle.ready(codecs)
        progress = Progress(len(items))
        h, w = sizes[0]
        images = torch.empty((len(items), h, w, 3))  # the IMAGE batch, filled in place: 8-bit levels, as the CLI
        lowres = []
        for i, (it, hw) in enumerate(zip(items, sizes, strict=True)):
            progress.check()
            try:
                pixels, code = decompress_with_lowres(it.bitstream, size=hw, model=net, max_pixels=max_pixels)
            except ValueError as e:
                raise decode_error(it, e) from None
            images[i].copy_(torch.from_numpy(pixels)).div_(255)
            del pixels
            lowres.append(code.x_hat)
            progress.next_item()
        note = ""
        lr_sizes = {tuple(x.shape[-2:]) for x in lowres}
        if len(lr_sizes) > 1:  # rate control picks a scale per image: show them at one size, pixels kept
            h = max(s[0] for s in lr_sizes)
            w = max(s[1] for s in lr_sizes)
            lowres = [torch.nn.functional.interpolate(x, size=(h, w), mode="nearest-exact") for x in lowres]
            note = f"\nlow-res images of different sizes shown at {w}x{h} (nearest neighbour)"
        text = f"{len(items)} image(s) decoded at {w}x{h}" + note
        return io.NodeOutput(images.to(mm.intermediate_device()), to_comfy_image(lowres), ui=ui.PreviewText(text))


class ASSRBitstreamInfo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ASSR_BitstreamInfo",
            display_name="ASSR Bitstream Info",
            category=CATEGORY,
            description=(
                "Reads the header of one bitstream of the batch: size on disk, rate, dimensions, s, q and prompt."
            ),
            inputs=[
                ASSRBitstreamType.Input("bitstream", tooltip="The bitstreams to describe."),
                io.Int.Input(
                    "index", default=0, min=0, max=4095, tooltip="Which batch item to describe (0 = the first)."
                ),
            ],
            outputs=[
                io.Int.Output(display_name="bytes", tooltip="File size in bytes (header, prompt and CRC included)."),
                io.Float.Output(display_name="bpp", tooltip="Bits per pixel of the whole file over the original size."),
                io.Int.Output(display_name="width", tooltip="Original image width in pixels."),
                io.Int.Output(display_name="height", tooltip="Original image height in pixels."),
                io.Float.Output(display_name="scale", tooltip="Downsampling factor s the encoder used."),
                io.Float.Output(display_name="quality", tooltip="Base-codec quality q the encoder used."),
                io.String.Output(display_name="prompt", tooltip="The text stored in the file (empty when none)."),
            ],
            is_output_node=True,  # runs (and shows the header on the node) even with no outputs connected
        )

    @classmethod
    def execute(cls, bitstream, index: int = 0) -> io.NodeOutput:
        items = items_of(bitstream)
        if not 0 <= index < len(items):
            raise ValueError(f"index {index} is out of range: this batch holds {len(items)} bitstream(s)")
        bs = items[index].bitstream
        text = "\n".join(f"{k}: {v:.6g}" if isinstance(v, float) else f"{k}: {v}" for k, v in bs.info().items())
        return io.NodeOutput(
            bs.nbytes, bs.bpp, bs.width, bs.height, bs.scale, bs.quality, bs.prompt or "", ui=ui.PreviewText(text)
        )

"""ASSR Compare: ours next to JPEG, WebP and AVIF at the same file size, as one labelled grid."""

from __future__ import annotations

import torch
from comfy_api.latest import io, ui

from assr_eic.baselines import DEFAULT_SCALES, get_codec, matched
from assr_eic.image import to_uint8
from assr_eic.metrics import psnr
from assr_eic.pipeline import decode
from assr_eic.viz import labelled_grid

from .common import (
    CATEGORY,
    ASSRBitstreamType,
    ASSRModelType,
    Progress,
    decode_error,
    image_items,
    items_of,
    model_handle,
    to_comfy_image,
)

BASELINES = (("jpeg", "JPEG"), ("webp", "WebP"), ("avif", "AVIF"))
PAD = 4  # pixels between tiles
SCALES_BEST = "best of 1x-6x downscales"
SCALES_OURS = "ASSR's downscale"
SCALES_FULL = "full size only"


def label_height(height: int) -> int:
    """Height of the caption strip under each tile of an image ``height`` pixels high."""
    return max(16, height // 14)


def grid_size(height: int, width: int, rows: int) -> tuple[int, int]:
    """(H, W) of the Compare grid for ``rows`` images of height x width: original, ours and 3 baselines."""
    cols = 2 + len(BASELINES)
    return rows * (height + label_height(height) + PAD) + PAD, cols * (width + PAD) + PAD


def scales_for(choice: str, bs) -> tuple[float, ...]:
    if choice == SCALES_BEST:
        return tuple(DEFAULT_SCALES)
    if choice == SCALES_OURS:
        return (bs.scale,)
    if choice == SCALES_FULL:
        return (1.0,)
    raise ValueError(f"unknown baseline_scales {choice!r}")


class ASSRCompare(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ASSR_Compare",
            display_name="ASSR Compare",
            category=CATEGORY,
            description=(
                "Decodes each bitstream and sets it beside the original and beside JPEG, WebP and AVIF files no "
                "larger than it (best quality that fits), with bpp and PSNR under every tile. One row per image."
            ),
            inputs=[
                io.Image.Input("image", tooltip="The original images the bitstreams were encoded from."),
                ASSRBitstreamType.Input("bitstream", tooltip="The bitstreams of those images, in the same order."),
                ASSRModelType.Input("model", tooltip="The ASSR model that wrote the bitstreams."),
                io.Combo.Input(
                    "baseline_scales",
                    options=[SCALES_BEST, SCALES_OURS, SCALES_FULL],
                    default=SCALES_BEST,
                    tooltip=(
                        "How the classical codecs reach the budget. best: each codec's best PSNR over "
                        "downscales 1x-6x (fair, slower). ASSR's downscale: the same s as the bitstream. full "
                        "size: no downscaling (JPEG and WebP rarely fit extreme budgets)."
                    ),
                ),
            ],
            outputs=[
                io.Image.Output(
                    display_name="grid",
                    tooltip="Labelled grid: original | ASSR | JPEG | WebP | AVIF, one row per image.",
                )
            ],
        )

    @classmethod
    def execute(cls, image, bitstream, model, baseline_scales: str = SCALES_BEST) -> io.NodeOutput:

        xs = image_items(image)
        items = items_of(bitstream)
        handle = model_handle(model)
        if len(items) != len(xs):
            raise ValueError(
                f"ASSR Compare got {len(xs)} image(s) but {len(items)} bitstream(s); connect the images the "
                "bitstreams were encoded from"
            )
        net = handle.ready(it.bitstream.codec for it in items)
        progress = Progress(len(xs), steps=1 + len(BASELINES))
        tiles, lines = [], []
        for x, it in zip(xs, items, strict=True):
            bs = it.bitstream
            H, W = x.shape[-2:]
            if (bs.height, bs.width) != (H, W):
                raise ValueError(
                    f"{it.source} holds a {bs.width}x{bs.height} image but the image input is {W}x{H}; connect "
                    "the original the bitstream was encoded from"
                )
            ref = to_uint8(x)
            progress.check()
            try:
                ours = to_uint8(decode(bs, model=net).image)
            except ValueError as e:
                raise decode_error(it, e) from None
            p = psnr(ref, ours)
            row = [(ref, f"original {W}x{H}"), (ours, f"ASSR {bs.bpp:.4f} bpp  {p:.2f} dB")]
            lines.append(f"ASSR: {bs.nbytes} bytes, {bs.bpp:.4f} bpp, {p:.2f} dB")
            progress.bar.update(1)
            for codec, name in BASELINES:
                progress.check()
                reason = get_codec(codec).unavailable_reason()
                r = None if reason else matched(ref, codec, bs.nbytes, scales=scales_for(baseline_scales, bs))
                if reason:
                    text = f"{name} unavailable here"
                    row.append((ref * 0, text))
                    lines.append(f"{text}: {reason}")
                elif r is None:
                    text = f"{name}: no file fits {bs.nbytes} bytes"
                    row.append((ref * 0, text))
                    lines.append(text)
                else:
                    row.append((r.image, f"{name} {r.bpp:.4f} bpp  {r.psnr:.2f} dB  s={r.scale:g}"))
                    lines.append(
                        f"{name}: {r.nbytes} bytes, {r.bpp:.4f} bpp, {r.psnr:.2f} dB "
                        f"(downscale {r.scale:g}, quality {r.quality})"
                    )
                progress.bar.update(1)
            tiles += row
            progress.next_item()
        H, W = xs[0].shape[-2:]
        grid = labelled_grid(tiles, cols=2 + len(BASELINES), pad=PAD, label_height=label_height(H))
        out = torch.from_numpy(grid.copy()).permute(2, 0, 1)[None].float() / 255
        return io.NodeOutput(to_comfy_image([out]), ui=ui.PreviewText("\n".join(lines)))

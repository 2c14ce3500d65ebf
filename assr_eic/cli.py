"""``assr-eic``: compress | decompress | info | demo | bench.

User mistakes (bad files, bad arguments, unreachable rates) end with exit code 2 and one line on
stderr that says what is wrong; only real bugs print a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .limits import DEFAULT_MAX_DECODE_PIXELS, MAX_OUTPUT_PIXELS


class UserError(Exception):
    """A mistake in what the user asked for; printed as one line."""


def _size(text: str) -> tuple[int, int]:
    """'WxH' -> (H, W)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 768x512 (WIDTHxHEIGHT), got {text!r}") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"size must be at least 1x1, got {text!r}")
    return h, w


def _check_output(path: Path, overwrite: bool) -> None:
    """Refuse early (before any work) an output that could not be written: bad name, missing folder,
    or an existing file without ``--overwrite``. The write itself checks again, atomically."""
    from .files import sanitize_name

    sanitize_name(path.name, "output file name")
    if not path.parent.is_dir():
        raise UserError(f"output folder does not exist: {path.parent}")
    if os.path.lexists(path) and not overwrite:
        raise UserError(f"{path} exists; refusing to overwrite it (pass --overwrite to replace it)")


def _write(path: Path, data: bytes, overwrite: bool) -> None:
    """Write the output atomically (see ``assr_eic.files``); never a partial file, never a silent overwrite."""
    from .files import OutputExistsError, atomic_write_bytes

    try:
        atomic_write_bytes(path, data, overwrite=overwrite)
    except OutputExistsError:  # appeared while we worked
        raise UserError(f"{path} exists; refusing to overwrite it (pass --overwrite to replace it)") from None


def cmd_compress(a: argparse.Namespace) -> None:
    from .image import load_image
    from .pipeline import compress

    if a.bpp is None and (a.scale is None or a.quality is None):
        raise UserError("give --bpp X, or both --scale S and --quality Q")
    if a.bpp is not None and (a.scale is not None or a.quality is not None):
        raise UserError("give either --bpp or --scale/--quality, not both")
    if a.effort != "normal" and a.bpp is None:
        raise UserError("--effort is rate control's: it needs --bpp")
    _check_output(Path(a.output), a.overwrite)
    image = load_image(a.input)
    t = time.perf_counter()
    data = compress(
        image, target_bpp=a.bpp, scale=a.scale, quality=a.quality, codec=a.codec, prompt=a.prompt, model=a.model,
        effort=a.effort,
    )  # fmt: skip
    dt = time.perf_counter() - t
    _write(Path(a.output), data, a.overwrite)
    from .bitstream import parse

    bs = parse(data)
    print(
        f"{a.output}: {len(data)} bytes, {bs.bpp:.4f} bpp, {bs.width}x{bs.height}, scale {bs.scale:.3f}, "
        f"quality {bs.quality:.3f}, {bs.codec}, {dt * 1000:.0f} ms"
    )


def cmd_decompress(a: argparse.Namespace) -> None:
    from PIL import Image

    from .pipeline import decompress, read_bitstream

    out = Path(a.output)
    if out.suffix.lower() not in (".png", ".bmp", ".tif", ".tiff", ".webp", ".jpg", ".jpeg"):
        raise UserError(f"unknown output image type {out.suffix!r}; use .png")
    _check_output(out, a.overwrite)
    data = read_bitstream(a.input)
    t = time.perf_counter()
    img = decompress(data, size=a.size, model=a.model, max_pixels=a.max_pixels)
    dt = time.perf_counter() - t
    import io

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=Image.registered_extensions()[out.suffix.lower()])
    _write(out, buf.getvalue(), a.overwrite)
    print(f"{a.output}: {img.shape[1]}x{img.shape[0]}, {dt * 1000:.0f} ms")


def cmd_info(a: argparse.Namespace) -> None:
    from .bitstream import parse
    from .pipeline import read_bitstream

    info = parse(read_bitstream(a.input)).info()
    if a.json:
        print(json.dumps(info))
        return
    print(f"{a.input}")
    print(f"  size      {info['width']}x{info['height']} (low-res {info['lowres_width']}x{info['lowres_height']})")
    print(f"  scale     {info['scale']:.4f}")
    print(f"  quality   {info['quality']:.4f}")
    print(f"  codec     {info['codec']}")
    print(f"  bytes     {info['bytes']}")
    print(f"  bpp       {info['bpp']:.5f}")
    print(f"  model     {info['model_fingerprint']}")
    print(f"  upsample  {info['upsampling']}")
    print(f"  prompt    {info['prompt']!r}")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        print(f"{self.prog}: error: {message} (see {self.prog.split()[0]} --help)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="assr-eic", description="Extreme image compression with ASSR-EIC.")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compress", help="image -> .assr file")
    c.add_argument("input", help="image file (PNG, JPEG, BMP, ...)")
    c.add_argument("-o", "--output", required=True, help="output .assr file")
    c.add_argument("--bpp", type=float, help="target bits per pixel (rate control picks scale and quality)")
    c.add_argument("--scale", type=float, help="downsampling factor s in [1, 8]")
    c.add_argument("--quality", type=float, help="base-codec quality q in [0, 1]")
    c.add_argument("--codec", choices=["av1", "learned"], help="base codec (default: the model's)")
    c.add_argument(
        "--effort",
        choices=["normal", "fast", "best"],
        default="normal",
        help="rate control effort with --bpp: fast is quicker for slightly lower quality; best spends about "
        "1.4x the time from 0.1 bpp up for a little more (default: normal)",
    )
    c.add_argument("--prompt", help="short text stored in the file (its bytes count)")
    c.add_argument("--model", help="model file (default: the shipped model)")
    c.add_argument("--overwrite", action="store_true", help="replace the output file if it exists (still atomic)")
    c.set_defaults(func=cmd_compress)

    d = sub.add_parser("decompress", help=".assr file -> image")
    d.add_argument("input", help=".assr file")
    d.add_argument("-o", "--output", required=True, help="output image (.png)")
    d.add_argument("--size", type=_size, help="output size WIDTHxHEIGHT (default: the original size)")
    d.add_argument("--model", help="model file (default: the shipped model)")
    d.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_DECODE_PIXELS,
        metavar="N",
        help=f"decode outputs of up to N pixels (default {DEFAULT_MAX_DECODE_PIXELS}, 64 Mpx; at most "
        f"{MAX_OUTPUT_PIXELS}): a file declaring more, or a larger --size, is refused from its header",
    )
    d.add_argument("--overwrite", action="store_true", help="replace the output image if it exists (still atomic)")
    d.set_defaults(func=cmd_decompress)

    i = sub.add_parser("info", help="describe an .assr file")
    i.add_argument("input", help=".assr file")
    i.add_argument("--json", action="store_true", help="print one JSON object")
    i.set_defaults(func=cmd_info)
    for name, text in (
        ("demo", "compress and decompress sample photos (see assr-eic demo --help)"),
        ("bench", "benchmark on the Kodak crops against classical codecs (see assr-eic bench --help)"),
    ):
        sub.add_parser(name, help=text, add_help=False)
    return p


_DELEGATED = {"demo": "assr_eic.demo", "bench": "assr_eic.bench"}  # subcommands with their own parsers


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in _DELEGATED:
        import importlib

        return importlib.import_module(_DELEGATED[argv[0]]).main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (UserError, ValueError) as e:  # every library error for bad input is a ValueError subclass
        print(f"assr-eic {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"assr-eic {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

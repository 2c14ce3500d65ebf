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


STDOUT = "-"  # ``-o -``: write the output's bytes to standard output


def _check_output(path: Path, overwrite: bool) -> None:
    """Refuse early (before any work) an output that could not be written: bad name, missing folder,
    an existing file without ``--overwrite``, or anything but a regular file (``--overwrite`` never
    replaces a device, FIFO, socket or folder); ``-`` is standard output unless that is a terminal.
    The write itself checks again, atomically."""
    from .files import sanitize_name, special_kind

    if str(path) == STDOUT:
        if sys.stdout.isatty():
            raise UserError(
                "refusing to write binary data to a terminal: redirect standard output or name a file with -o"
            )
        return
    sanitize_name(path.name, "output file name")
    if not path.parent.is_dir():
        raise UserError(f"output folder does not exist: {path.parent}")
    if os.path.lexists(path):
        kind = special_kind(os.lstat(path).st_mode)
        if kind is not None and not os.path.islink(path):
            raise UserError(f"{path} is {kind}, not a regular file; refusing to replace it, even with --overwrite")
        if not overwrite:
            raise UserError(f"{path} exists; refusing to overwrite it (pass --overwrite to replace it)")


def _write(path: Path, data: bytes, overwrite: bool) -> None:
    """Write the output atomically (see ``assr_eic.files``); never a partial file, never a silent overwrite.
    ``-``: the bytes go to standard output and nothing else does."""
    from .files import OutputExistsError, atomic_write_bytes

    if str(path) == STDOUT:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    try:
        atomic_write_bytes(path, data, overwrite=overwrite)
    except OutputExistsError:  # appeared while we worked
        raise UserError(f"{path} exists; refusing to overwrite it (pass --overwrite to replace it)") from None


def _folder(a: argparse.Namespace, mode: str) -> None:
    """A folder at a time (``assr_eic.batch``): exit status 2 when any file failed, 130 when interrupted."""
    import signal

    from .batch import run_folder

    if a.workers is not None and a.workers < 1:
        raise UserError(f"--workers must be at least 1, got {a.workers}")
    keys = ("bpp", "scale", "quality", "codec", "prompt", "effort", "psnr") if mode == "compress" else ("size",)
    options = {k: getattr(a, k) for k in (*keys, "model", "overwrite")}
    if options["model"] is not None:
        options["model"] = str(Path(options["model"]).resolve())
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a kill stops the workers as Ctrl-C does
    rows = run_folder(mode, a.input, a.output, options, workers=a.workers, scheduler=a.scheduler,
                      originals=getattr(a, "originals", None))  # fmt: skip
    bad = [r for r in rows if r.status == "error"]
    print(
        f"{a.output}: {len(rows) - len(bad)} of {len(rows)} files done "
        f"({sum(r.status == 'skipped' for r in rows)} finished earlier), summary in {Path(a.output) / 'summary.csv'}"
    )
    if bad:
        raise UserError(f"{len(bad)} of {len(rows)} files failed (first: {bad[0].input}: {bad[0].error})")


def _folder_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, help="folder input: worker processes (default: min(2, CPU cores))")
    p.add_argument("--scheduler", help="folder input: run on this Dask scheduler (tcp://HOST:PORT) instead")


def _report(a: argparse.Namespace, line: str) -> None:
    """The summary line: on stdout, or on stderr when stdout carries the output's bytes."""
    print(line, file=sys.stderr if a.output == STDOUT else sys.stdout)


def _read_checked(path: str):
    """Read, parse and check a file from its header, lengths and the codecs' own headers, without torch or
    a model: a hostile or corrupt file is refused in milliseconds (the decoders check it all again)."""
    from .bitstream import parse, read_bitstream
    from .codec import check_headers

    data = read_bitstream(path)
    bs = parse(data)
    check_headers(bs)
    return data, bs


def cmd_compress(a: argparse.Namespace) -> None:
    from .image import load_image
    from .pipeline import compress

    if a.bpp is None and (a.scale is None or a.quality is None):
        raise UserError("give --bpp X, or both --scale S and --quality Q")
    if a.bpp is not None and (a.scale is not None or a.quality is not None):
        raise UserError("give either --bpp or --scale/--quality, not both")
    if a.effort != "normal" and a.bpp is None:
        raise UserError("--effort is rate control's: it needs --bpp")
    if Path(a.input).is_dir():
        return _folder(a, "compress")
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
    _report(
        a,
        f"{a.output}: {len(data)} bytes, {bs.bpp:.4f} bpp, {bs.width}x{bs.height}, scale {bs.scale:.3f}, "
        f"quality {bs.quality:.3f}, {bs.codec}, {dt * 1000:.0f} ms",
    )


def cmd_decompress(a: argparse.Namespace) -> None:
    if Path(a.input).is_dir():
        return _folder(a, "decompress")
    out = Path(a.output)
    _check_output(out, a.overwrite)
    suffix = ".png" if a.output == STDOUT else out.suffix.lower()
    if suffix not in (".png", ".bmp", ".tif", ".tiff", ".webp", ".jpg", ".jpeg"):
        raise UserError(f"unknown output image type {out.suffix!r}; use .png")
    data, bs = _read_checked(a.input)
    from .decode_size import check_decode_size

    check_decode_size(bs, a.size, a.max_pixels)  # a declared size over the limit: refused before torch too
    from PIL import Image  # torch, the model and Pillow only once the file passed every cheap check

    from .pipeline import decompress

    t = time.perf_counter()
    img = decompress(data, size=a.size, model=a.model, max_pixels=a.max_pixels)
    dt = time.perf_counter() - t
    import io

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=Image.registered_extensions()[suffix])
    _write(out, buf.getvalue(), a.overwrite)
    _report(a, f"{a.output}: {img.shape[1]}x{img.shape[0]}, {dt * 1000:.0f} ms")


def cmd_info(a: argparse.Namespace) -> None:
    from .bitstream import parse, read_bitstream

    data = read_bitstream(a.input)
    info = parse(data).info()
    if a.text:  # the file as one line of text, for ComfyUI's ASSR Embedded Bitstream node
        from .bitstream import to_text

        print(to_text(data))
        return
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
    from .bitstream import CODECS

    p = _Parser(prog="assr-eic", description="Extreme image compression with ASSR-EIC.")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compress", help="image -> .assr file")
    c.add_argument("input", help="image file (PNG, JPEG, BMP, ...), or a folder: every image in its tree")
    c.add_argument("-o", "--output", required=True, help="output .assr file ('-': stdout), or the output folder")
    c.add_argument("--bpp", type=float, help="target bits per pixel (rate control picks scale and quality)")
    c.add_argument("--scale", type=float, help="downsampling factor s in [1, 8]")
    c.add_argument("--quality", type=float, help="base-codec quality q in [0, 1]")
    c.add_argument("--codec", choices=CODECS, help="base codec (default: the model's)")
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
    c.add_argument("--psnr", action="store_true", help="folder input: decode each file for the summary's PSNR")
    _folder_args(c)
    c.set_defaults(func=cmd_compress)

    d = sub.add_parser("decompress", help=".assr file -> image")
    d.add_argument("input", help=".assr file, or a folder: every .assr file in its tree")
    d.add_argument("-o", "--output", required=True, help="output image (.png; '-': stdout), or the output folder")
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
    d.add_argument("--originals", help="folder input: the original images' folder (same tree), for PSNR")
    _folder_args(d)
    d.set_defaults(func=cmd_decompress)

    i = sub.add_parser("info", help="describe an .assr file")
    i.add_argument("input", help=".assr file")
    i.add_argument("--json", action="store_true", help="print one JSON object")
    i.add_argument("--text", action="store_true", help="print the file as text (assr:base64) to embed in a workflow")
    i.set_defaults(func=cmd_info)
    for name, text in (
        ("demo", "compress and decompress sample photos (see assr-eic demo --help)"),
        ("bench", "benchmark on the Kodak crops against classical codecs (see assr-eic bench --help)"),
    ):
        sub.add_parser(name, help=text, add_help=False)
    return p


_DELEGATED = {"demo": "assr_eic.demo"}  # subcommands with their own parsers


def _bench(argv: list[str]) -> int:
    """``assr-eic bench``: the benchmark is a developer tool of the source tree (``bench/kodak.py``), not part of
    the library, so it is run from there like ``python bench/kodak.py``; an installed wheel has none."""
    script = Path(__file__).resolve().parents[1] / "bench" / "kodak.py"
    if not script.is_file():
        print(
            "assr-eic bench: error: the benchmark ships with the source repository (bench/kodak.py); run it from "
            "a clone of the project",
            file=sys.stderr,
        )
        return 2
    import runpy

    return runpy.run_path(str(script), run_name="assr_eic_bench")["main"](argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "bench":
        return _bench(argv[1:])
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

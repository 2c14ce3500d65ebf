"""SHA-256 of every file the project writes for a fixed set of inputs, and of the decoded pixels.

    .venv/bin/python scripts/file_hashes.py --out bench/results/file_hashes/after.txt

A change of structure (issue 19: one home per concept) must leave every line of this output as it was:
compare with ``bench/results/file_hashes/before.txt``, recorded at the commit before the redesign
(``cmp before.txt after.txt``). One line per item, ``name bytes sha256``:

- ``kodak/<codec>-<effort>/<image>@<bpp>``: the benchmark's files (``bench/kodak.py``), the five Kodak
  crops at its seven targets, ``av1`` at rate control's three efforts and ``learned`` (one torch thread,
  as the benchmark runs);
- ``speed/<image>@<bpp>``: the 768x512 speed image of three Kodak crops (``speed_image`` of the
  benchmark: upscaled by 1.5, the middle 768x512) at three rates, torch's default threads, as the speed
  runs make them;
- ``sq/...``: files made with ``scale`` and ``quality`` given, both codecs, with and without a prompt,
  an odd-sized image, the downsampler's tiled path (a low-res image over 512 pixels a side);
- ``perturbed/...``: the same through a model whose av1 downsampler refinement is not zero (the shipped
  one is, so its network is skipped) and whose decoder weights are changed, rate control included;
- ``large/...``: a 1728x1296 image (above 2 Mpx, where rate control scores on sampled tiles);
- ``progress/...``: the progress calls of one search; ``model/...``, ``adaptor/...``: a model file and
  a diffusion adaptor file as ``ASSRModel.save`` and ``save_adaptor`` write them; ``pairs/...``: a
  training pair group of the AV1 decoder's trainer;
- ``decode-<mode>/...``: the decoded uint8 pixels of every file above (``decompress``), in
  ``ASSR_EIC_PRECISION=float32`` mode and in the default mode, and at two other output sizes for the
  speed files; ``decode-float32-tensor/...``: ``decode(...).image`` as float32 bytes (bit for bit).

The first lines say which trunk dtype the default mode picks on this CPU (bfloat16 only where it has
native bfloat16; elsewhere the default mode is float32 and the two decode sets are equal).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KODAK = ("kodim03", "kodim04", "kodim06", "kodim08", "kodim19")
TARGETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3)
EFFORTS = ("normal", "fast", "best")
SPEED_IMAGES = ("kodim03", "kodim08", "kodim19")
SPEED_BPP = (0.02, 0.1, 0.3)
SQ = ((1.0, 0.5), (2.37, 0.3), (4.0, 0.8), (7.9, 0.1))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def kodak_images(cache: Path) -> dict[str, np.ndarray]:
    """The five Kodak crops as the benchmark loads them (uint8 RGB), fetched first if missing."""
    folder = cache / "kodak"
    if not all((folder / f"{n}.png").is_file() for n in KODAK):
        raise SystemExit(f"no Kodak crops in {folder}: fetch them first (see bench/README.md)")
    out = {}
    for n in KODAK:
        with Image.open(folder / f"{n}.png") as im:
            out[n] = np.array(im.convert("RGB"))
    return out


def speed_image(img: np.ndarray) -> np.ndarray:
    """The benchmark's speed image: ``img`` upscaled by 1.5 (PIL bicubic), the middle 768x512."""
    H, W = img.shape[:2]
    big = Image.fromarray(img).resize((round(W * 1.5), round(H * 1.5)), Image.Resampling.BICUBIC)
    left, top = (big.width - 768) // 2, (big.height - 512) // 2
    return np.asarray(big.crop((left, top, left + 768, top + 512)))


def inference_dtype_name() -> str:
    """The trunk dtype the default mode picks here (the probe's module moved in the redesign)."""
    import importlib

    for name in ("assr_eic.cpu", "assr_eic.layers"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(mod, "inference_dtype"):
            with torch.inference_mode():
                return str(mod.inference_dtype(torch.zeros(1))).replace("torch.", "")
    return "unknown"


def canonical_safetensors(data: bytes) -> bytes:
    """A safetensors file with its JSON header's keys sorted: safetensors writes the header from a Rust
    HashMap, so the same tensors and metadata come out in a different key order in every process."""
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    return json.dumps(header, sort_keys=True).encode() + data[8 + n :]


class Hashes:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.files: list[tuple[str, bytes]] = []  # (name, .assr bytes) for the decode passes
        self.speed: set[str] = set()

    def add(self, name: str, data: bytes, decode: bool = True) -> None:
        digest = sha(canonical_safetensors(data) if name.endswith(".safetensors") else data)
        self.lines.append(f"{name} {len(data)} {digest}")
        print(self.lines[-1], flush=True)
        if decode:
            self.files.append((name, data))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="also write the lines to this file")
    p.add_argument("--data", default=str(ROOT / ".cache" / "data"), help="data cache holding kodak/")
    a = p.parse_args(argv)
    os.environ.pop("ASSR_EIC_PRECISION", None)

    from assr_eic.bitstream import parse
    from assr_eic.model import DEFAULT_MODEL_PATH, ASSRModel, load_model
    from assr_eic.pipeline import compress, decode, decompress

    h = Hashes()
    h.lines.append(f"# trunk dtype in the default mode on this CPU: {inference_dtype_name()}")
    print(h.lines[-1], flush=True)
    images = kodak_images(Path(a.data))
    model = load_model()
    default_threads = torch.get_num_threads()

    torch.set_num_threads(1)  # the benchmark's --threads default
    for name, img in images.items():
        for t in TARGETS:
            for effort in EFFORTS:
                h.add(f"kodak/av1-{effort}/{name}@{t:g}", _try(compress, img, target_bpp=t, codec="av1",
                                                               model=model, effort=effort))
            h.add(f"kodak/learned-normal/{name}@{t:g}", _try(compress, img, target_bpp=t, codec="learned", model=model))

    torch.set_num_threads(default_threads)  # the speed worker runs with torch's default
    for name in SPEED_IMAGES:
        big = speed_image(images[name])
        for t in SPEED_BPP:
            h.add(f"speed/{name}@{t:g}", compress(big, target_bpp=t, model=model))
            h.speed.add(h.files[-1][0])

    torch.set_num_threads(1)
    odd = np.ascontiguousarray(images["kodim08"][:383, :509])
    for codec in ("av1", "learned"):
        for img_name, img in (("kodim03", images["kodim03"]), ("kodim19", images["kodim19"]), ("odd383x509", odd)):
            for s, q in SQ:
                h.add(f"sq/{codec}/{img_name}@s{s:g}q{q:g}",
                      compress(img, scale=s, quality=q, codec=codec, model=model))
        h.add(f"sq/{codec}/kodim03@s2q0.5+prompt", compress(images["kodim03"], scale=2.0, quality=0.5, codec=codec,
                                                              model=model, prompt="a red barn by a lake, sunset"))
    big03 = speed_image(images["kodim03"])
    h.add("sq/learned/speed-kodim03@s1.2q0.4", compress(big03, scale=1.2, quality=0.4, codec="learned", model=model))

    perturbed = ASSRModel.load(DEFAULT_MODEL_PATH)
    params = dict(perturbed.named_parameters())
    g = torch.Generator().manual_seed(19)
    with torch.no_grad():
        for key in ("downsampler.av1.tail.weight", "downsampler.av1.tail.bias", "sr.av1.head_out.weight"):
            params[key].add_(torch.randn(params[key].shape, generator=g) * 0.01)
    h.lines.append(f"# perturbed model fingerprint {perturbed.fingerprint.hex()}")
    print(h.lines[-1], flush=True)
    for s, q in ((1.0, 0.5), (1.3, 0.4), (3.0, 0.6)):
        h.add(f"perturbed/av1/speed-kodim03@s{s:g}q{q:g}", compress(big03, scale=s, quality=q, codec="av1",
                                                                    model=perturbed))
    for t in (0.02, 0.1, 0.3):
        h.add(f"perturbed/av1/kodim19@{t:g}", compress(images["kodim19"], target_bpp=t, model=perturbed))
    h.add("perturbed/av1/speed-kodim03@0.1", compress(big03, target_bpp=0.1, model=perturbed))

    large = np.asarray(Image.fromarray(images["kodim03"]).resize((1728, 1296), Image.Resampling.BICUBIC))
    for effort in ("normal", "fast"):
        h.add(f"large/av1-{effort}/kodim03-1728x1296@0.02", compress(large, target_bpp=0.02, model=model,
                                                                      effort=effort))

    seen: list[tuple[int, int]] = []
    compress(images["kodim04"], target_bpp=0.05, model=model, progress=lambda d, t: seen.append((d, t)))
    h.add("progress/kodim04@0.05", json.dumps(seen).encode(), decode=False)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        model.save(path, {"train_note": {"hash": "check"}})
        h.add("model/default-resaved.safetensors", path.read_bytes(), decode=False)
        from assr_eic.diffusion import ASSRAdaptor, save_adaptor

        torch.manual_seed(19)
        adaptor = ASSRAdaptor(model_channels=32, channel_mult=(1, 2), num_res_blocks=1, base_channels=8)
        apath = Path(tmp) / "adaptor.safetensors"
        save_adaptor(adaptor, apath, {"note": "hash check"})
        h.add("adaptor/tiny.safetensors", apath.read_bytes(), decode=False)

    from assr_eic.train.sr_av1 import PairMaker

    group = PairMaker([images["kodim06"]], model, crop=64, seed=19).group(3)
    buf = io.BytesIO()
    for t in (group.lr, group.hr, group.q):
        buf.write(t.contiguous().numpy().tobytes())
    buf.write(repr(group.s).encode())
    h.add("pairs/sr_av1-kodim06-crop64-seed19", buf.getvalue(), decode=False)

    for mode in ("float32", "default"):
        if mode == "float32":
            os.environ["ASSR_EIC_PRECISION"] = "float32"
        else:
            os.environ.pop("ASSR_EIC_PRECISION", None)
        for name, data in h.files:
            if not data:
                continue
            m = perturbed if name.startswith("perturbed/") else model
            pix = decompress(data, model=m)
            h.add(f"decode-{mode}/{name}", pix.tobytes() + repr(pix.shape).encode(), decode=False)
            if name in h.speed:
                bs = parse(data)
                for size in ((777, 1153), (bs.height // 3 + 1, bs.width // 3 + 2)):
                    pix = decompress(data, size=size, model=m)
                    h.add(f"decode-{mode}/{name}@{size[1]}x{size[0]}", pix.tobytes() + repr(pix.shape).encode(),
                          decode=False)
            if mode == "float32" and (name in h.speed or name.startswith(("sq/", "perturbed/"))):
                img = decode(data, model=m).image.contiguous()
                h.add(f"decode-float32-tensor/{name}", img.numpy().tobytes() + repr(tuple(img.shape)).encode(),
                      decode=False)
    os.environ.pop("ASSR_EIC_PRECISION", None)
    if a.out:
        Path(a.out).write_text("\n".join(h.lines) + "\n")
    return 0


def _try(compress, img, **kw) -> bytes:
    """The file, or b"" where the rate is unreachable (the benchmark records those as unreachable)."""
    from assr_eic.ratecontrol import RateError

    try:
        return compress(img, **kw)
    except RateError:
        return b""


if __name__ == "__main__":
    raise SystemExit(main())

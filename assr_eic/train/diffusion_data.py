"""Training pairs for the diffusion adaptor: made by our own codec in DataLoader workers, or read back from
an offline pair cache.

A batch is a pure function of ``(seed, process rank, batch index)``: its NumPy generator is seeded with
that triple, so worker ``w`` of ``N`` makes batches ``w, w + N, ...`` (the DataLoader hands them back in
order) and the stream is the same for every worker count, and a resumed run restarts the stream at its
batch index. Photos are listed, and decoded only when a crop is cut from them.

(s, q) are drawn as the encoder writes them: scale codes (``s = 1 + c / 64``) whose low-res image the codec
can code at this crop size, log-uniform in s, and the codec's distinct quality codes, uniformly. The
fidelity decode uses the decoder strength files store (``Bitstream.decoder_strength``): in a share
``rate_controlled`` of pairs the strength rate control chooses for that crop at those codes (what a file coded
to a target bpp stores: the best of the strengths on the image, 0 where the decoder loses), in the rest full
strength (what a file coded at a given scale and quality stores). The
prompt is what a file may carry: the photo's caption (a ``NAME.txt`` beside it) or ``--prompt``, and an
empty prompt in a stated share of samples (the nodes pass an empty prompt when the file has none).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..bitstream import dequantize_quality, dequantize_scale, lowres_size, quantize_scale
from ..codec import lowres_fits
from ..diffusion import Degradation, uncertainty_map
from ..files import atomic_write_bytes
from ..ratecontrol import quality_levels

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
TENSOR_KEYS = ("target", "decoded", "uncertainty", "degradation", "s", "q", "decoder_strength")


def photo_files(folder: Path) -> list[Path]:
    """Training photos in ``folder`` (never the Kodak evaluation crops)."""
    files = sorted(p for p in Path(folder).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SystemExit(f"no training photos in {folder}; run: python -m assr_eic.train.fetch --cache .cache/data")
    return files


def read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def caption(path: Path, default: str) -> str:
    """The photo's caption (``NAME.txt`` beside it), else ``default``."""
    side = Path(path).with_suffix(".txt")
    return side.read_text(encoding="utf-8").strip() if side.is_file() else default


def random_crop(img: np.ndarray, size: int, rng: np.random.Generator) -> torch.Tensor:
    """A random ``size`` x ``size`` crop (the photo is upscaled first if smaller), random flip: (1, 3, S, S)."""
    x = torch.from_numpy(np.array(img, copy=True)).permute(2, 0, 1)[None].float() / 255
    h, w = x.shape[-2:]
    if min(h, w) < size:
        f = size / min(h, w)
        x = F.interpolate(x, size=(max(size, round(h * f)), max(size, round(w * f))), mode="bicubic").clamp(0, 1)
        h, w = x.shape[-2:]
    y0, x0 = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
    x = x[..., y0 : y0 + size, x0 : x0 + size]
    return x.flip(-1) if rng.random() < 0.5 else x


def make_pair_codes(
    model, x: torch.Tensor, codec: str, scale_code: int, quality_code: int, rate_controlled: bool = True
) -> dict[str, torch.Tensor]:
    """Compress ``x`` at stored codes with our pipeline and decode it: the adaptor's inputs and the target.
    ``rate_controlled``: at the decoder strength rate control stores for this crop (else full strength, as
    files coded at a given scale and quality), kept in ``"decoder_strength"``."""
    from ..pipeline import encode_at, reconstruct
    from ..ratecontrol import with_stored_strength

    enc = encode_at(model, x, codec, scale_code, quality_code)
    if rate_controlled:
        enc = with_stored_strength(model, enc, x)
    fidelity = reconstruct(model, enc.bitstream, enc.lowres).clamp(0, 1)
    unc = uncertainty_map(enc.lowres.x_hat, enc.lowres)
    unc = F.interpolate(unc, size=x.shape[-2:], mode="bilinear", align_corners=False)
    deg = Degradation.from_bitstream(enc.bitstream).vector()[None]
    strength = torch.tensor([enc.bitstream.decoder_strength], dtype=torch.int64)
    return {"target": x, "decoded": fidelity, "uncertainty": unc, "degradation": deg, "decoder_strength": strength}


def make_pair(model, x: torch.Tensor, codec: str, s: float, q: float) -> dict[str, torch.Tensor]:
    """:func:`make_pair_codes` at the codes nearest to (s, q)."""
    from ..bitstream import quantize_quality

    return make_pair_codes(model, x, codec, quantize_scale(s), quantize_quality(q))


def scale_codes(codec: str, size: int, s_range: tuple[float, float]) -> tuple[int, ...]:
    """The scale codes in ``s_range`` whose low-res image of a ``size`` crop ``codec`` can code."""
    lo, hi = quantize_scale(s_range[0]), quantize_scale(s_range[1])
    codes = tuple(c for c in range(lo, hi + 1) if lowres_fits(codec, *lowres_size(size, size, c)))
    if not codes:
        raise SystemExit(f"no scale in {list(s_range)} gives {codec} a low-res image of a {size} px crop it can code")
    return codes


def quality_codes(codec: str, q_range: tuple[float, float]) -> tuple[int, ...]:
    """The codec's distinct quality codes (as rate control searches them) inside ``q_range``."""
    codes = tuple(c for c in quality_levels(codec) if q_range[0] <= dequantize_quality(c) <= q_range[1])
    if not codes:
        raise SystemExit(f"{codec} has no quality level in {list(q_range)}")
    return codes


@dataclass(frozen=True)
class PairSpec:
    """What a batch of pairs is drawn from (everything but the photos and the codec model)."""

    codec: str
    size: int
    batch: int
    scale_codes: tuple[int, ...]
    quality_codes: tuple[int, ...]
    prompt: str = ""
    empty_prompt: float = 0.5
    seed: int = 0
    rank: int = 0
    rate_controlled: float = 0.8  # share of pairs at the decoder strength rate control stores (else full)

    def rng(self, index: int) -> np.random.Generator:
        """The generator of batch ``index`` (per process; the same in whichever worker makes it)."""
        return np.random.default_rng([self.seed, self.rank, index])

    def draw_codes(self, rng: np.random.Generator) -> tuple[int, int]:
        """One (scale code, quality code): log-uniform in s (density 1/s), uniform over quality levels."""
        s = np.array([dequantize_scale(c) for c in self.scale_codes])
        w = 1.0 / s if len(s) > 1 else np.ones(1)
        sc = int(rng.choice(self.scale_codes, p=w / w.sum()))
        return sc, int(rng.choice(self.quality_codes))

    def draw_prompt(self, rng: np.random.Generator, path: Path) -> str:
        """Empty in a share ``empty_prompt`` of samples, else the photo's caption (or the default prompt)."""
        return "" if rng.random() < self.empty_prompt else caption(path, self.prompt)


def make_batch(spec: PairSpec, photos: list[Path], model, index: int) -> dict:
    """Batch ``index``: tensors (B, ...) under :data:`TENSOR_KEYS` and ``"prompts"``, a list of B strings
    (:class:`PairStream` adds the batch ``"index"`` and the ``"worker"`` that made it)."""
    rng = spec.rng(index)
    items, prompts = [], []
    for _ in range(spec.batch):
        path = photos[int(rng.integers(len(photos)))]
        x = random_crop(read_rgb(path), spec.size, rng)
        sc, qc = spec.draw_codes(rng)
        pair = make_pair_codes(model, x, spec.codec, sc, qc, bool(rng.random() < spec.rate_controlled))
        pair["s"] = torch.tensor([dequantize_scale(sc)], dtype=torch.float64)
        pair["q"] = torch.tensor([dequantize_quality(qc)], dtype=torch.float64)
        items.append(pair)
        prompts.append(spec.draw_prompt(rng, path))
    out: dict = {k: torch.cat([it[k] for it in items]) for k in TENSOR_KEYS}
    out["prompts"] = prompts
    return out


class PairCache:
    """Batches written once as safetensors shards (``batch-RANK-INDEX.safetensors``) and read back."""

    def __init__(self, folder: Path, spec: PairSpec, photos: list[Path]) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        key = {**asdict(spec), "photos": [str(p) for p in photos]}
        key["scale_codes"], key["quality_codes"] = list(spec.scale_codes), list(spec.quality_codes)
        meta = self.folder / "cache.json"
        if meta.is_file() and json.loads(meta.read_text()) != key:
            raise SystemExit(f"the pair cache {self.folder} was made with other settings; use another --pair-cache")
        if not meta.is_file():
            atomic_write_bytes(meta, json.dumps(key).encode(), overwrite=True)
        self.rank = spec.rank

    def path(self, index: int) -> Path:
        return self.folder / f"batch-{self.rank}-{index:08d}.safetensors"

    def get(self, index: int, make) -> dict:
        """Batch ``index`` from its shard, or ``make(index)`` written to the shard first."""
        from safetensors.torch import load_file, save

        p = self.path(index)
        if p.is_file():
            from safetensors import safe_open

            with safe_open(str(p), framework="pt") as f:
                prompts = json.loads(f.metadata()["prompts"])
            return {**load_file(str(p)), "prompts": prompts}
        batch = make(index)
        tensors = {k: batch[k].contiguous() for k in TENSOR_KEYS}
        atomic_write_bytes(p, save(tensors, metadata={"prompts": json.dumps(batch["prompts"])}), overwrite=True)
        return batch


class PairStream(IterableDataset):
    """Endless batches ``start, start + 1, ...``; in DataLoader worker ``w`` of ``N``: ``start + w``, step ``N``."""

    def __init__(self, spec: PairSpec, photos: list[Path], model, start: int = 0, cache: Path | None = None) -> None:
        self.spec, self.photos, self.model, self.start = spec, list(photos), model, start
        self.cache = PairCache(cache, spec, self.photos) if cache else None

    def batch(self, index: int) -> dict:
        def make(i: int) -> dict:
            return make_batch(self.spec, self.photos, self.model, i)

        return self.cache.get(index, make) if self.cache else make(index)

    def __iter__(self):
        info = get_worker_info()
        w, n = (info.id, info.num_workers) if info else (0, 1)
        for k in range(self.start + w, 2**62, n):
            yield {**self.batch(k), "index": k, "worker": w}


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)  # N workers would otherwise each take every core


def pair_loader(stream: PairStream, workers: int) -> DataLoader:
    """Batches in index order, made in ``workers`` processes (0: in this one)."""
    extra = {"prefetch_factor": 2, "worker_init_fn": _one_thread} if workers else {}
    return DataLoader(stream, batch_size=None, num_workers=workers, **extra)

"""The sample .assr files shipped in samples/: each is exactly what scripts/make_samples.py makes now
with the shipped default model, and each decodes with that model to its photograph."""

from __future__ import annotations

import make_samples
import pytest

from assr_eic.bitstream import parse
from assr_eic.metrics import psnr
from assr_eic.model import DEFAULT_MODEL_PATH, ASSRModel
from assr_eic.pipeline import decompress

# measured with the shipped model (scripts/make_samples.py, 2026-12-07): 25.2, 25.9, 27.3 dB
MIN_PSNR = {"astronaut": 24.5, "coffee": 25.0, "chelsea": 26.5}


@pytest.fixture(scope="module")
def shipped() -> ASSRModel:
    return ASSRModel.load(DEFAULT_MODEL_PATH)


def test_the_samples_folder_holds_exactly_the_scripts_samples():
    found = sorted(p.name for p in make_samples.SAMPLES_DIR.iterdir())
    assert found == sorted(s.filename for s in make_samples.SAMPLES) and len(found) >= 3


@pytest.mark.parametrize("sample", make_samples.SAMPLES, ids=lambda s: s.photo)
def test_sample_is_bit_exact_and_decodes_with_the_shipped_model(sample, shipped):
    data = (make_samples.SAMPLES_DIR / sample.filename).read_bytes()
    assert make_samples.make(sample, shipped) == data, "stale sample: run scripts/make_samples.py"
    bs = parse(data)
    _, _, h, w = sample.crop
    assert (bs.height, bs.width, bs.codec) == (h, w, "av1")
    assert abs(bs.scale - sample.scale) < 1e-3 and abs(bs.quality - sample.quality) < 1e-2
    assert len(data) < 2000 and bs.bpp < 0.1  # small, at the product's extreme rates
    img = decompress(data, model=shipped)  # refuses a file written by other weights
    assert img.shape == (h, w, 3)
    assert psnr(sample.image(), img) > MIN_PSNR[sample.photo]

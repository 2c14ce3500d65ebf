"""Hostile files with a valid CRC (issue 21): the regression corpus in ``tests/data/hostile/`` decodes to
the outcome its manifest records, files drawn from the structure-aware generator (``bench/hostile.py``)
decode or raise the one documented error, and the CLI refuses corpus files in one line.

The corpus and its seed files carry the shipped model's fingerprint: after the shipped weights change,
rewrite them with ``python bench/hostile.py --seeds --corpus`` (and look at what moved in the manifest).
"""

from __future__ import annotations

import json
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assr_eic import pipeline
from assr_eic.bitstream import BitstreamError, ModelMismatchError, parse
from assr_eic.model import load_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import hostile  # noqa: E402

MANIFEST = json.loads(hostile.MANIFEST.read_text())
ERRORS = {"BitstreamError": BitstreamError, "ModelMismatchError": ModelMismatchError,
          "OutputTooLargeError": pipeline.OutputTooLargeError}  # fmt: skip
CLI = [sys.executable, "-m", "assr_eic.cli"]


@pytest.fixture(scope="module")
def shipped():
    """The shipped model, which wrote the corpus."""
    model = load_model()
    seed = parse(hostile.load_seeds()["av1-s2"])
    assert seed.fingerprint == model.fingerprint, "the shipped weights changed: rewrite the hostile corpus"
    return model


@pytest.fixture(scope="module")
def seeds() -> hostile.Seeds:
    return hostile.load_seeds()


def decode_or_error(data: bytes, model) -> str:
    """Decode with the hostile decoding limit: ``"ok"`` after checking the image against the header, or the
    class name of the BitstreamError, whose message must be one sentence; anything else fails the test."""
    try:
        bs = parse(data)
        image = pipeline.decode(bs, model=model, max_pixels=hostile.DECODE_MAX_PIXELS).image
    except BitstreamError as e:
        text = str(e)
        assert text and "\n" not in text and "Traceback" not in text, repr(text)
        return type(e).__name__
    assert image.shape == (1, 3, bs.height, bs.width)
    assert torch.isfinite(image).all() and image.min() >= 0 and image.max() <= 1
    return "ok"


def test_the_manifest_covers_the_corpus_and_every_outcome():
    on_disk = {p.relative_to(hostile.CORPUS).as_posix() for p in hostile.CORPUS.rglob("*.assr")}
    assert on_disk == set(MANIFEST)
    assert 50 <= len(MANIFEST) <= 100
    assert set(MANIFEST.values()) == {"ok", *ERRORS}
    families = {name.split("-")[0] for name in MANIFEST if not name.startswith("seeds/")}
    assert families >= {f.split("-")[0] for f in hostile.FAMILIES}
    assert max(p.stat().st_size for p in hostile.CORPUS.rglob("*.assr")) < 8192


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_corpus_file_has_its_recorded_outcome(shipped, name):
    data = (hostile.CORPUS / name).read_bytes()
    assert zlib.crc32(data[:-4]) == int.from_bytes(data[-4:], "little")  # hostile, not corrupt
    assert decode_or_error(data, shipped) == MANIFEST[name]
    assert hostile.outcome(data, shipped) == MANIFEST[name]  # decompress, the CLI's and the nodes' path


class TestGenerator:
    def test_split_and_join_are_exact(self, seeds):
        for data in seeds.values():
            assert hostile.join(hostile.split(data)) == data

    def test_deterministic_and_sealed(self, seeds):
        a, b = hostile.generate(48, seed=5, seeds=seeds), hostile.generate(48, seed=5, seeds=seeds)
        assert a == b and a != hostile.generate(48, seed=6, seeds=seeds)
        assert {h.family for h in a} == set(hostile.FAMILIES)
        assert len({h.data for h in a}) > 40
        for h in a:
            assert zlib.crc32(h.data[:-4]) == int.from_bytes(h.data[-4:], "little"), h.name

    @settings(max_examples=30, deadline=30_000, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
    @given(family=st.sampled_from(sorted(hostile.FAMILIES)), seed=st.integers(0, 2**32))
    def test_generated_files_decode_or_raise_the_documented_error(self, shipped, seeds, family, seed):
        h = hostile.one(family, seed, seeds)
        assert zlib.crc32(h.data[:-4]) == int.from_bytes(h.data[-4:], "little")
        assert decode_or_error(h.data, shipped) in {"ok", *ERRORS}


def _first(prefix: str, outcome: str, codec: str | None = None) -> str:
    for name in sorted(MANIFEST):
        if name.startswith(prefix) and MANIFEST[name] == outcome:
            if codec is None or parse((hostile.CORPUS / name).read_bytes()).codec == codec:
                return name
    raise LookupError(f"no {prefix}* file with outcome {outcome} in the corpus")


CLI_CASES = [
    ("seeds/av1-s2.assr", None, None),  # valid: a decode
    ("rans", "BitstreamError", "learned"),  # refused by the rANS decoder, after torch and the model
    ("av1-frame", "BitstreamError", "av1"),  # refused by dav1d
    ("prompt", "BitstreamError", None),  # refused from the header
    ("large", "OutputTooLargeError", None),  # refused from the header by --max-pixels
]


@pytest.mark.parametrize("prefix,outcome,codec", CLI_CASES, ids=[c[0].split("/")[-1] for c in CLI_CASES])
def test_cli_answers_hostile_files_in_one_line(tmp_path, prefix, outcome, codec):
    name = prefix if outcome is None else _first(prefix, outcome, codec)
    out = tmp_path / "out.png"
    r = subprocess.run(
        [*CLI, "decompress", str(hostile.CORPUS / name), "-o", str(out),
         "--max-pixels", str(hostile.DECODE_MAX_PIXELS)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "Warning" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    if MANIFEST[name] == "ok":
        assert r.returncode == 0 and r.stderr == "", r.stderr
        bs = parse((hostile.CORPUS / name).read_bytes())
        from PIL import Image

        assert Image.open(out).size == (bs.width, bs.height)
        return
    assert r.returncode == 2
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("assr-eic decompress: error: "), r.stderr
    assert not out.exists()


def test_cli_refuses_a_declared_size_over_max_pixels_before_importing_torch():
    name = _first("large", "OutputTooLargeError")
    code = (
        "import sys; from assr_eic import cli; "
        f"rc = cli.main(['decompress', {str(hostile.CORPUS / name)!r}, '-o', 'unused.png', "
        f"'--max-pixels', '{hostile.DECODE_MAX_PIXELS}']); print(rc, 'torch' in sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.split() == ["2", "False"], (r.stdout, r.stderr)
    assert "above the decoding limit" in r.stderr and len(r.stderr.splitlines()) == 1


@pytest.mark.parametrize("stream", [0, 1])
def test_words_after_the_last_latent_symbol_are_refused(shipped, seeds, stream):
    """One byte string per stream: a real learned file with a word appended to either rANS stream."""
    parts = hostile.split(seeds["learned-s3"])
    streams = list(parse(seeds["learned-s3"]).streams)
    streams[stream] += b"\0\0\0\0"
    hostile.with_streams(parts, streams)
    with pytest.raises(BitstreamError, match="does not end where its last symbol does"):
        pipeline.decode(hostile.join(parts), model=shipped)

"""Model files: safetensors round trip, fingerprints, clear errors."""

from __future__ import annotations

import pytest
import torch

from assr_eic.bitstream import ModelMismatchError, quantize_quality, quantize_scale
from assr_eic.model import DEFAULT_MODEL_PATH, ASSRModel, ModelFileError, load_model
from assr_eic.pipeline import decode, encode_at, to_tensor


def test_save_load_round_trip(tmp_path, model):
    p = tmp_path / "m.safetensors"
    model.save(p, {"note": "test"})
    m2 = ASSRModel.load(p)
    assert m2.fingerprint == model.fingerprint
    a, b = model.tensors(), m2.tensors()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert m2.metadata["note"] == "test"
    assert oct(p.stat().st_mode & 0o777) == "0o644"


def test_fingerprint_depends_on_weights(model):
    m2 = ASSRModel(model.config)
    m2.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        m2.sr["av1"].head_mid.bias[0] += 1e-3
    assert m2.fingerprint != model.fingerprint


def test_other_model_is_refused(model, photo):
    enc = encode_at(model, to_tensor(photo), "av1", quantize_scale(4.0), quantize_quality(0.3))
    torch.manual_seed(99)
    other = ASSRModel()
    with pytest.raises(ModelMismatchError, match="written with model"):
        decode(enc.data, model=other)


@pytest.mark.parametrize("content", [b"", b"not a model at all", b"\x08\x00\x00\x00\x00\x00\x00\x00{}"])
def test_bad_model_files(tmp_path, content):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(content)
    with pytest.raises(ModelFileError):
        ASSRModel.load(p)


def test_foreign_safetensors_is_refused(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(p), metadata={"format": "pt"})
    with pytest.raises(ModelFileError, match="not an assr-eic model"):
        ASSRModel.load(p)


def test_missing_file():
    with pytest.raises(ModelFileError, match="not found"):
        ASSRModel.load("/nonexistent/model.safetensors")


def test_default_model_ships_in_the_package():
    assert DEFAULT_MODEL_PATH.is_file()
    m = load_model()
    assert len(m.fingerprint) == 3 and m.fingerprint.hex() == m.metadata["fingerprint"]


def test_bad_config_values():
    with pytest.raises(ValueError, match="default_codec"):
        ASSRModel({"default_codec": "jpeg"})

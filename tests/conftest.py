"""Shared fixtures: a seeded (untrained) model saved to a real file, and real photographs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from assr_eic.model import ASSRModel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))  # scripts the tests check


@pytest.fixture(scope="session")
def model_path(tmp_path_factory) -> str:
    torch.manual_seed(1234)
    m = ASSRModel()
    # perturb the zero-initialised output layers so the decoder is not just bicubic
    with torch.no_grad():
        for sr in m.sr.values():
            sr.head_out.weight.normal_(0, 0.01)
    path = tmp_path_factory.mktemp("model") / "test-model.safetensors"
    m.save(path)
    return str(path)


@pytest.fixture(scope="session")
def model(model_path) -> ASSRModel:
    return ASSRModel.load(model_path)


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """A 512x384 crop of a real photograph (scikit-image's astronaut; never the Kodak eval set)."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[40:424, :512])


@pytest.fixture(scope="session")
def photo2() -> np.ndarray:
    """An odd-sized real photograph (scikit-image's coffee, 400x600 cropped to 399x597)."""
    from skimage import data

    return np.ascontiguousarray(data.coffee()[:399, :597])

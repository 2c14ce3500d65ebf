"""A file decodes in fresh processes with 1 and 2 threads to identical latents / AV1 frames."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from assr_eic.bitstream import quantize_quality, quantize_scale
from assr_eic.pipeline import encode_at, to_tensor

DECODE = r"""
import sys, numpy as np, torch
torch.set_num_threads(int(sys.argv[1]))
from assr_eic.model import ASSRModel
from assr_eic.pipeline import decode
model = ASSRModel.load(sys.argv[2])
d = decode(open(sys.argv[3], "rb").read(), model=model)
np.savez(sys.argv[4], symbols=d.lowres.symbols[0].numpy(), lowres=d.lowres.x_hat.numpy(),
         image=(d.image[0] * 255).round().numpy())
"""


@pytest.mark.parametrize("codec,s,q", [("av1", 2.5, 0.4), ("learned", 2.0, 0.6)])
def test_fresh_processes_with_1_and_2_threads(tmp_path, model, model_path, photo, codec, s, q):
    enc = encode_at(model, to_tensor(photo), codec, quantize_scale(s), quantize_quality(q))
    f = tmp_path / "x.assr"
    f.write_bytes(enc.data)
    outs = []
    for threads in (1, 2):
        out = tmp_path / f"t{threads}.npz"
        subprocess.run([sys.executable, "-c", DECODE, str(threads), model_path, str(f), str(out)], check=True)
        outs.append(np.load(out))
    a, b = outs
    assert np.array_equal(a["symbols"], b["symbols"])  # entropy-decoded latents / AV1 YUV planes
    assert np.array_equal(a["symbols"], enc.lowres.symbols[0].numpy())  # and the encoder's own
    assert np.abs(a["image"] - b["image"]).max() <= 1  # final pixels within one level
    if codec == "av1":  # integer decoding and fixed colour conversion
        assert np.array_equal(a["lowres"], b["lowres"])
    assert torch.isfinite(torch.from_numpy(a["image"])).all()

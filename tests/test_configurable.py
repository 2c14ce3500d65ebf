"""One config source per module: the constructor's signature (``assr_eic/configurable.py``)."""

from __future__ import annotations

import pytest
import torch

from assr_eic.configurable import ConfigModule, default_config, register_to_config
from assr_eic.model import DEFAULT_CONFIG, ASSRModel
from assr_eic.rescale import Downsampler
from assr_eic.sr import SRDecoder


class Toy(ConfigModule):
    def __init__(self, width: int = 4, mult: tuple[int, ...] = (1, 2), gain: float = 0.5) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(width, width * mult[-1])


def test_config_is_the_constructor_arguments_as_stored():
    assert Toy().config == {"width": 4, "mult": [1, 2], "gain": 0.5} == default_config(Toy)
    toy = Toy(3, mult=(2, 3))
    assert toy.config == {"width": 3, "mult": [2, 3], "gain": 0.5}
    again = Toy.from_config(toy.config)
    assert again.config == toy.config and again.lin.out_features == 9


def test_arguments_without_defaults_are_named():
    class NoDefault(ConfigModule):
        def __init__(self, width: int) -> None:
            super().__init__()

    assert NoDefault(2).config == {"width": 2}
    with pytest.raises(TypeError, match="NoDefault has arguments without defaults: width"):
        default_config(NoDefault)


def test_decorator_for_modules_of_other_libraries():
    class Plain:
        @register_to_config
        def __init__(self, n: int = 1, m: int = 2) -> None:
            pass

    assert Plain(m=5).config == {"n": 1, "m": 5}


def test_model_defaults_come_from_the_modules():
    assert DEFAULT_CONFIG["downsampler"] == Downsampler().config == {"channels": 16, "blocks": 2, "emb_dim": 32}
    assert DEFAULT_CONFIG["sr"] == SRDecoder().config == {"channels": 32, "blocks": 4, "head": 16, "emb_dim": 64}
    model = ASSRModel()
    assert model.config["learned"] == {}  # filled in when the network is built
    net = model.learned_net
    learned = {"N": 64, "M": 96, "levels": 6, "lmbda_min": 0.0018, "lmbda_max": 0.13}
    assert model.config["learned"] == net.config == learned

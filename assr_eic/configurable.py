"""Config-driven modules, after diffusers' ``register_to_config``: a module's constructor signature is its
config, written once. A :class:`ConfigModule` subclass (or an ``__init__`` decorated with
:func:`register_to_config`) records its arguments, defaults filled in, as ``self.config`` in the JSON form
a model file stores (tuples become lists); :func:`default_config` reads the same defaults without building
anything. Written here rather than importing diffusers, which costs about 5 s on these CPUs and would
slow every command-line call."""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from typing import TypeVar

from torch import nn

Init = TypeVar("Init", bound=Callable[..., None])


def _as_stored(config: dict) -> dict:
    return json.loads(json.dumps(config))


def register_to_config(init: Init) -> Init:
    """Decorate a module's ``__init__`` so that ``self.config`` holds every constructor argument."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs) -> None:
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        init(self, *args, **kwargs)
        self.config = _as_stored({k: v for k, v in list(bound.arguments.items())[1:]})

    return wrapper  # type: ignore[return-value]


def default_config(cls: type) -> dict:
    """The config ``cls()`` would record: its constructor's defaults (every argument must have one)."""
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    missing = [p.name for p in params if p.default is inspect.Parameter.empty]
    if missing:
        raise TypeError(f"{cls.__name__} has arguments without defaults: {', '.join(missing)}")
    return _as_stored({p.name: p.default for p in params})


class ConfigModule(nn.Module):
    """A module whose constructor arguments are its config (kept in ``self.config``, recorded on its own:
    every subclass's ``__init__`` is wrapped by :func:`register_to_config`)."""

    config: dict

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = register_to_config(cls.__dict__["__init__"])

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

"""The ASSR model: per base codec a downsampler refinement and a fidelity decoder, plus the learned codec.

Saved as ONE safetensors file whose metadata holds the config (JSON), so a loader (the CLI, the
ComfyUI node) rebuilds the modules from the file alone. The model fingerprint, written into every
``.assr`` file, is the first 3 bytes of the SHA-256 over the tensors (names, dtypes, shapes, bytes).

The learned codec's network is built on first use: it needs CompressAI, whose import costs several
seconds, and AV1 files never need it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path

import torch
from torch import nn

from .bitstream import CODECS
from .codec import codec_class
from .configurable import default_config
from .rescale import Downsampler
from .sr import SRDecoder

FORMAT = "assr-eic-model"
DEFAULT_MODEL_PATH = Path(__file__).parent / "weights" / "default.safetensors"
# each part's defaults are its constructor's; the learned codec's are filled in when its network is built
# (importing it needs compressai, which the av1 path never loads)
DEFAULT_CONFIG: dict = {
    "downsampler": default_config(Downsampler),
    "sr": default_config(SRDecoder),
    "learned": {},
    "default_codec": "av1",
}
_LEARNED = "learned_codec."


class ModelFileError(ValueError):
    """A model file that is missing, unreadable or not an assr-eic model."""


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def fingerprint_of(tensors: dict[str, torch.Tensor]) -> bytes:
    """First 3 bytes of SHA-256 over (name, dtype, shape, data) of every tensor, names sorted."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.digest()[:3]


class ASSRModel(nn.Module):
    """Everything with weights that an ``.assr`` file depends on."""

    def __init__(self, config: dict | None = None) -> None:
        super().__init__()
        self.config = _merge(DEFAULT_CONFIG, config or {})
        if self.config["default_codec"] not in CODECS:
            raise ValueError(f"default_codec must be one of {CODECS}, got {self.config['default_codec']!r}")
        # one downsampler and one decoder per base codec: each pair is trained with its codec
        self.downsampler = nn.ModuleDict({c: Downsampler(**self.config["downsampler"]) for c in CODECS})
        self.sr = nn.ModuleDict({c: SRDecoder(**self.config["sr"]) for c in CODECS})
        self._learned_state: dict[str, torch.Tensor] | None = None  # loaded but not yet built
        self.metadata: dict = {}
        self.source: str = "in-memory"
        self.eval()

    @property
    def learned_net(self):
        """The learned codec network, built on first use (fresh and untrained for a new in-memory model)."""
        if "learned_codec" not in self._modules:
            network = codec_class("learned").network  # says what to install where compressai is missing
            with torch.inference_mode(False):  # first use may be inside inference_mode: keep normal params
                net = network(**self.config["learned"])
                self.config["learned"] = net.config
                if self._learned_state is not None:
                    net.load_state_dict({k: v.clone() for k, v in self._learned_state.items()})
                else:
                    net.update(force=True)
            self.add_module("learned_codec", net.eval())
            self._learned_state = None
        return self._modules["learned_codec"]

    def codec(self, name: str):
        """The base codec ``name`` as this model runs it (see ``assr_eic.codec``'s registry)."""
        return codec_class(name).from_model(self)

    def tensors(self) -> dict[str, torch.Tensor]:
        """All tensors as saved: the modules' state plus the learned codec's (built or not)."""
        if "learned_codec" not in self._modules and self._learned_state is None:
            self.learned_net  # noqa: B018 - a fresh model draws its learned codec now, so the fingerprint is stable
        out = dict(self.state_dict())
        if self._learned_state is not None:
            out.update({_LEARNED + k: v for k, v in self._learned_state.items()})
        return {k: v.detach().cpu().contiguous() for k, v in out.items()}

    @property
    def fingerprint(self) -> bytes:
        return fingerprint_of(self.tensors())

    def save(self, path: str | os.PathLike, metadata: dict | None = None) -> None:
        """Write one safetensors file (config and optional extra metadata in its header), atomically:
        an existing file at ``path`` is replaced in one step (checkpoints are rewritten in place)."""
        from safetensors.torch import save

        from .files import atomic_write_bytes

        tensors = self.tensors()
        meta = {"format": FORMAT, "config": json.dumps(self.config), "fingerprint": fingerprint_of(tensors).hex()}
        meta.update({k: json.dumps(v) if not isinstance(v, str) else v for k, v in (metadata or {}).items()})
        atomic_write_bytes(path, save(tensors, metadata=meta), overwrite=True)  # replaces, never half a file

    @classmethod
    def load(cls, path: str | os.PathLike) -> ASSRModel:
        """Load a model file; raises :class:`ModelFileError` with a clear sentence on any problem."""
        from .files import read_safetensors

        path = Path(path)
        tensors, meta = read_safetensors(path, ModelFileError, "model file")
        if meta.get("format") != FORMAT:
            raise ModelFileError(f"{path} is not an assr-eic model (no '{FORMAT}' format tag in its metadata)")
        try:
            model = cls(json.loads(meta["config"]))
            learned = {k[len(_LEARNED) :]: v for k, v in tensors.items() if k.startswith(_LEARNED)}
            rest = {k: v for k, v in tensors.items() if not k.startswith(_LEARNED)}
            model.load_state_dict(rest)
        except (KeyError, ValueError, RuntimeError, TypeError) as e:
            raise ModelFileError(f"{path} does not match the assr-eic model layout ({e})") from None
        if not learned:
            raise ModelFileError(f"{path} has no learned-codec weights; it is incomplete")
        model._learned_state = learned
        model.source = str(path)
        model.metadata = meta
        return model


_cache: dict[tuple[str, int], ASSRModel] = {}


def load_model(path: str | os.PathLike | None = None) -> ASSRModel:
    """Load a model file, or the shipped default when ``path`` is None (cached per file and mtime)."""
    if path is None:
        if not DEFAULT_MODEL_PATH.is_file():
            raise ModelFileError(
                f"the default model is missing at {DEFAULT_MODEL_PATH}; reinstall assr-eic or pass a model file"
            )
        path = DEFAULT_MODEL_PATH
    path = Path(path).resolve()
    key = (str(path), path.stat().st_mtime_ns if path.is_file() else 0)
    if key not in _cache:
        _cache[key] = ASSRModel.load(path)
    return _cache[key]

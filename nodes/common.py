"""What every ASSR node shares: socket types, the models folder, the model handle, files and progress.

Only ComfyUI plumbing lives here (paths, ModelPatcher, ProgressBar, tensors in ComfyUI's layout); the
compression itself is ``assr_eic``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import comfy.model_management as mm
import comfy.utils
import folder_paths
import torch
from comfy.model_patcher import ModelPatcher
from comfy_api.latest import io

from assr_eic import files
from assr_eic.bitstream import Bitstream, BitstreamError, parse
from assr_eic.image import composite_over_white
from assr_eic.limits import MAX_FILE_BYTES
from assr_eic.model import DEFAULT_MODEL_PATH, ASSRModel

CATEGORY = "image/compression/assr"
FOLDER = "assr_eic"
DEFAULT_MODEL = "default (built-in)"
EXTENSION = ".assr"

ASSRModelType = io.Custom("ASSR_MODEL")
ASSRBitstreamType = io.Custom("ASSR_BITSTREAM")


def register_model_folder(folder: str) -> None:
    """``models/<folder>/`` as a ComfyUI model folder: user paths from extra_model_paths.yaml are kept,
    and only .safetensors files are listed (model files are never pickles)."""
    default = [os.path.join(folder_paths.models_dir, folder)]
    paths = folder_paths.folder_names_and_paths.get(folder, (default, None))[0]
    folder_paths.folder_names_and_paths[folder] = (paths, {".safetensors"})


register_model_folder(FOLDER)


# --- the ASSR_MODEL wire value -------------------------------------------------------------------


def load_device() -> torch.device:
    """Where ComfyUI places the ASSR modules.

    ``assr_eic`` runs its codecs and decoders on CPU tensors (the base codecs are CPU programs and the
    pipeline does not yet move tensors to the model's device), so its modules load on the CPU under
    ComfyUI's memory manager. Once the library accepts another device this returns
    ``mm.get_torch_device()``.
    """
    return torch.device("cpu")


@dataclass
class ModelHandle:
    """What travels on an ASSR_MODEL wire: the model, its ModelPatcher and the name it was loaded as."""

    model: ASSRModel
    patcher: ModelPatcher
    name: str

    @classmethod
    def wrap(cls, model: ASSRModel, name: str) -> ModelHandle:
        patcher = ModelPatcher(model, load_device=load_device(), offload_device=mm.unet_offload_device())
        return cls(model, patcher, name)

    def ready(self, codecs: Iterable[str] = ()) -> ASSRModel:
        """Build the networks ``codecs`` run, let ComfyUI load the modules (offloading others), return the model."""
        for codec in set(codecs):
            self.model.codec(codec)  # builds the network a codec runs (on first use) before ComfyUI places it
        mm.load_models_gpu([self.patcher])
        return self.model

    def __repr__(self) -> str:  # shown by ComfyUI's debug views
        return f"ASSR model {self.name} ({self.model.fingerprint.hex()})"


# --- the ASSR_BITSTREAM wire value ---------------------------------------------------------------


@dataclass(frozen=True)
class BitstreamItem:
    """One ``.assr`` file: its exact bytes, the parsed header, and where it came from (for messages)."""

    data: bytes
    bitstream: Bitstream
    source: str

    @classmethod
    def from_bytes(cls, data: bytes, source: str) -> BitstreamItem:
        try:
            return cls(data, parse(data), source)
        except BitstreamError as e:
            raise ValueError(f"{source} is not a usable .assr file: {e}") from None

    def summary(self) -> str:
        bs = self.bitstream
        return (
            f"{bs.nbytes} bytes, {bs.bpp:.4f} bpp, {bs.width}x{bs.height},\n"
            f"  scale {bs.scale:.3f}, quality {bs.quality:.3f}, {bs.codec}"
        )


def items_of(bitstreams) -> list[BitstreamItem]:
    """Accept the wire value (a list of items) and refuse anything else with a sentence."""
    if isinstance(bitstreams, BitstreamItem):
        return [bitstreams]
    if not isinstance(bitstreams, (list, tuple)) or not all(isinstance(b, BitstreamItem) for b in bitstreams):
        raise ValueError("the bitstream input must come from an ASSR Encode or Load ASSR Bitstream node")
    if not bitstreams:
        raise ValueError("the bitstream input is empty")
    return list(bitstreams)


# --- images in ComfyUI's layout (B, H, W, C) float in [0, 1] -------------------------------------


def image_items(image: torch.Tensor) -> list[torch.Tensor]:
    """A ComfyUI IMAGE batch -> a list of (1, 3, H, W) float tensors in [0, 1] on the CPU."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"expected an IMAGE batch of shape (B, H, W, 3), got {shape}")
    if image.shape[0] == 0:
        raise ValueError("the image batch is empty")
    x = image.detach().to("cpu", torch.float32).clamp(0, 1)
    if x.shape[-1] == 1:
        x = x.expand(*x.shape[:-1], 3)
    elif x.shape[-1] == 4:  # the library's alpha rule: transparent pixels become white
        x = composite_over_white(x[..., :3], x[..., 3:])
    return [x[i : i + 1].movedim(-1, 1).contiguous() for i in range(x.shape[0])]


def to_comfy_image(xs: list[torch.Tensor]) -> torch.Tensor:
    """(1, 3, H, W) tensors of one size -> a ComfyUI IMAGE batch on the intermediate device."""
    out = torch.cat([x.detach().float().clamp(0, 1) for x in xs], 0).movedim(1, -1).contiguous()
    return out.to(mm.intermediate_device())


# --- progress and interruption -------------------------------------------------------------------


class Progress:
    """A ComfyUI progress bar over ``items`` pieces of work of ``steps`` steps each; every update
    also honours the Cancel button, in or out of the server."""

    def __init__(self, items: int, steps: int = 1) -> None:
        self.steps = max(1, steps)
        self.bar = comfy.utils.ProgressBar(items * self.steps)
        self.item = 0

    def check(self) -> None:
        mm.throw_exception_if_processing_interrupted()

    def callback(self) -> Callable[[int, int], None]:
        """A ``progress(done, total)`` callback for the library, for the current item."""

        def report(done: int, total: int) -> None:
            self.check()
            frac = min(max(done / total, 0.0), 1.0) if total else 1.0
            self.bar.update_absolute(self.item * self.steps + round(frac * self.steps))

        return report

    def next_item(self) -> None:
        self.item += 1
        self.bar.update_absolute(self.item * self.steps)
        self.check()


# --- files: loads only from the input/models folders, saves only under the output folder ---------
# The rules live in assr_eic.files (atomic writes, sanitised names, confined loads); here they are
# pointed at ComfyUI's folders and their errors become the plain ValueError sentences nodes raise.

INPUT_LABEL = "ComfyUI's input folder"
OUTPUT_LABEL = "ComfyUI's output folder"
SAMPLES_DIR = Path(__file__).resolve().parent.parent / "samples"  # shipped, read-only (scripts/make_samples.py)
SAMPLE_TAG = " [sample]"  # input-folder names end in .assr, so a tagged name never means an input file


def list_input_bitstreams() -> list[str]:
    """``.assr`` files under the input folder (relative, '/'-separated, sorted), symlinked folders not
    followed, then the pack's samples as ``name.assr [sample]``. Fresh on every call, so the node's
    list follows the folder."""
    samples = sorted(p.name + SAMPLE_TAG for p in SAMPLES_DIR.glob("*" + EXTENSION) if p.is_file())
    root = folder_paths.get_input_directory()
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = os.path.relpath(dirpath, root)
        for f in filenames:
            if f.lower().endswith(EXTENSION) and not f.startswith("."):
                out.append(f if rel == "." else f"{rel}/{f}".replace(os.sep, "/"))
    return sorted(out) + samples


def input_bitstream_path(name: str) -> Path:
    """The real path of input-folder file ``name`` (or of shipped sample ``x.assr [sample]``); refuses
    names and symlinks that lead outside that folder."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError("choose an .assr file from the input folder")
    root, label = folder_paths.get_input_directory(), INPUT_LABEL
    if name.endswith(SAMPLE_TAG):
        root, label, name = SAMPLES_DIR, "the pack's samples folder", name.removesuffix(SAMPLE_TAG)
    try:
        return files.confined_path(root, name, label)
    except files.FileError as e:
        raise ValueError(str(e)) from None


def model_path(name: str, folder: str = FOLDER, what: str = "ASSR model") -> Path:
    """The real path of model file ``name`` inside one of the ``models/<folder>`` folders (including
    those added in extra_model_paths.yaml); symlinks leading elsewhere are refused."""
    if not name.lower().endswith(".safetensors"):
        raise ValueError(f"{what} {name!r} is not a .safetensors file; ASSR models are never pickles")
    try:
        return files.confined_path(folder_paths.get_folder_paths(folder), name, f"models/{folder}/")
    except files.FileError as e:
        raise ValueError(f"cannot load the {what} {name!r}: {e}") from None


def model_handle(value, input_name: str = "model") -> ModelHandle:
    """``value`` as a :class:`ModelHandle`, or one sentence saying where that input must come from."""
    if not isinstance(value, ModelHandle):
        raise ValueError(f"the {input_name} input must come from a Load ASSR Model node")
    return value


def relative_message(e: Exception, roots: dict[str, str | os.PathLike]) -> str:
    """``e``'s sentence with the server's absolute folders taken out: a path under a root is shown
    relative to it and the root itself by its label, so errors sent to API clients name no server path."""
    text = str(e)
    for label, root in roots.items():
        for r in sorted({str(Path(root)), str(Path(root).resolve())}, key=len, reverse=True):
            text = text.replace(r + os.sep, "").replace(r, label)
    return text


def model_roots(folder: str = FOLDER) -> dict[str, str | os.PathLike]:
    """Labels of the model folders of ``folder`` (extra_model_paths.yaml ones included) and the pack's weights."""
    roots: dict[str, str | os.PathLike] = {}
    for i, root in enumerate(folder_paths.get_folder_paths(folder)):
        roots[f"models/{folder}" + (f" (folder {i + 1})" if i else "")] = root
    roots["the pack's weights folder"] = Path(DEFAULT_MODEL_PATH).parent
    return roots


def decode_error(item: BitstreamItem, e: Exception) -> ValueError:
    """The node error for a file that does not decode: its name and the sentence, with no server path (a
    foreign file's sentence names the loaded model's file)."""
    return ValueError(f"cannot decode {item.source}: {relative_message(e, model_roots())}")


def _input_roots() -> dict[str, str | os.PathLike]:
    return {INPUT_LABEL: folder_paths.get_input_directory(), "the pack's samples folder": SAMPLES_DIR}


def read_input_bitstream(name: str) -> BitstreamItem:
    path = input_bitstream_path(name)
    try:
        data = files.read_limited(path, MAX_FILE_BYTES, "an .assr file")
    except files.FileError as e:
        raise ValueError(f"file {name!r}: {relative_message(e, _input_roots())}") from None
    return BitstreamItem.from_bytes(data, f"file {name!r}")


def file_digest(name: str) -> str:
    """Content hash of an input file (ComfyUI re-runs the loader when it changes); any problem is
    reported by the node itself when it runs. The size is checked before a byte is read, and the file
    is hashed in chunks: a huge or special file costs no memory here."""
    try:
        path = input_bitstream_path(name)
        st = os.stat(path)
        if files.special_kind(st.st_mode) is not None or st.st_size > MAX_FILE_BYTES:
            return f"unreadable:{name}:{st.st_mode}:{st.st_size}:{st.st_mtime_ns}"
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
                if f.tell() > MAX_FILE_BYTES:  # grew past the limit while hashed
                    return f"unreadable:{name}:grew"
        return h.hexdigest()
    except (ValueError, OSError):
        return f"unreadable:{name}"


def save_bitstreams(items: list[BitstreamItem], filename_prefix: str) -> list[dict]:
    """Write each item as ``<prefix>_<counter>_.assr`` under the output folder, like SaveImage.

    The prefix is a sanitised name, optionally under subfolders that must stay inside the output
    folder (real paths compared, so symlinks cannot lead out). Each file is written atomically under
    a fresh number: a reader never sees half a file and an existing file is never replaced.
    """
    root = Path(folder_paths.get_output_directory())
    try:
        parts, stem = files.split_prefix(filename_prefix)
    except files.FileError as e:
        raise ValueError(str(e).replace("the output folder", "ComfyUI's output folder")) from None
    folder = root.joinpath(*parts)
    outside = ValueError(
        f"the filename prefix {filename_prefix!r} points outside ComfyUI's output folder; use a plain name "
        "or a subfolder inside it"
    )
    if not files.is_inside(folder, root):
        raise outside
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create the output subfolder {'/'.join(parts)!r}: {e.strerror or e}") from None
    if not files.is_inside(folder, root):  # a symlink created meanwhile
        raise outside
    results = []
    for item in items:
        try:
            path = files.write_new(folder, stem, EXTENSION, item.data)
        except files.FileError as e:
            raise ValueError(f"ASSR Save Bitstream: {relative_message(e, {OUTPUT_LABEL: root})}") from None
        results.append({"filename": path.name, "subfolder": "/".join(parts), "type": "output"})
    return results


def display_path(result: dict) -> str:
    return str(Path(result["subfolder"]) / result["filename"]) if result["subfolder"] else result["filename"]

"""The ComfyUI nodes of assr-eic (typed schema API). Thin wrappers: the work is done by ``assr_eic``.

Imported only inside ComfyUI (the root ``__init__.py`` checks), because these modules import ComfyUI.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from comfy_api.latest import ComfyExtension, io

if importlib.util.find_spec("assr_eic") is None:
    # the pack was copied into custom_nodes/ without `pip install`: use the library that ships beside it
    # (appended, so nothing of the pack shadows ComfyUI's own modules)
    sys.path.append(str(Path(__file__).resolve().parent.parent))

from .compare import ASSRCompare  # noqa: E402
from .diffusion import ASSRColorFix, ASSRDiffusionDecode, ASSRDiffusionPrepare  # noqa: E402
from .encode_decode import ASSRBitstreamInfo, ASSRDecode, ASSREncode  # noqa: E402
from .load_save import ASSREmbeddedBitstream, LoadASSRBitstream, LoadASSRModel, SaveASSRBitstream  # noqa: E402

NODES: list[type[io.ComfyNode]] = [
    LoadASSRModel,
    ASSREncode,
    SaveASSRBitstream,
    LoadASSRBitstream,
    ASSREmbeddedBitstream,
    ASSRDecode,
    ASSRBitstreamInfo,
    ASSRCompare,
    ASSRDiffusionPrepare,
    ASSRColorFix,
    ASSRDiffusionDecode,
]


class ASSRExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> ASSRExtension:
    return ASSRExtension()

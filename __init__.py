"""ComfyUI entry point of the assr-eic node pack; it only wires the nodes up.

ComfyUI imports this file when the repository sits in ``custom_nodes/``. Anywhere else (no ComfyUI on
the path: ``import assr_eic``, pytest, tools) it defines nothing and imports nothing.
"""

import importlib.util

WEB_DIRECTORY = "./web"
__all__ = []

if __package__ and importlib.util.find_spec("comfy_api") is not None:
    from .nodes import comfy_entrypoint

    __all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]

"""Fixtures for the node-pack tests: a real ComfyUI (fetched by scripts/fetch_comfyui.sh into .cache/),
in-process for the node functions and as a server for the API and browser tests.

Every test module here is marked ``comfy``; run them with ``pytest tests/comfy``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402


@pytest.fixture(scope="session")
def comfy_root() -> Path:
    return harness.fetch_comfyui()


@pytest.fixture(scope="session")
def comfy_inproc(comfy_root, tmp_path_factory):
    """ComfyUI imported into this process, custom nodes loaded (ENVIRONMENT.md's recipe), with its
    folders in a fresh base folder. Returns ComfyUI's ``nodes`` module."""
    nodes = harness.import_comfy(comfy_root, harness.make_base(tmp_path_factory.mktemp("comfy-inproc")))
    missing = [n for n in EXPECTED_NODES if n not in nodes.NODE_CLASS_MAPPINGS]
    assert not missing, f"the pack did not register {missing}"
    return nodes


@pytest.fixture(scope="session")
def folders(comfy_inproc):
    import folder_paths

    return {
        "input": Path(folder_paths.get_input_directory()),
        "output": Path(folder_paths.get_output_directory()),
        "models": Path(folder_paths.models_dir),
    }


@pytest.fixture(scope="session")
def server(comfy_0375_server):
    """The real ComfyUI server (0.3.75) with the pack in custom_nodes/ and the photographs in its input
    folder. Modules whose tests run on every version override it with ``comfy_server``."""
    return comfy_0375_server


@pytest.fixture(scope="session")
def comfy_0375_server(comfy_root, tmp_path_factory):
    base = harness.make_base(tmp_path_factory.mktemp("comfy-server"))
    harness.put_photos(base / "input")
    srv = harness.ComfyServer(base).start()
    harness.quiet_first_run(srv)  # no first-run template dialog over the canvas
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def object_info(server) -> dict:
    return server.get("/object_info")


@pytest.fixture(scope="session", params=harness.COMFY_VERSIONS, ids=lambda v: f"comfyui-{v}")
def comfy(request) -> harness.Comfy:
    """Each ComfyUI version the real-server and browser tests run against; 0.33.0 skips (one line) where
    the project's shared folder is absent."""
    try:
        return harness.fetch_comfy(request.param)
    except LookupError as e:
        pytest.skip(f"ComfyUI {request.param}: {e}")


@pytest.fixture(scope="session")
def comfy_server(comfy, request):
    """The ``server`` fixture's setup on each version of ``comfy`` (0.3.75 is that very server)."""
    if comfy.version == "0.3.75":
        yield request.getfixturevalue("comfy_0375_server")
        return
    base = harness.make_base(request.getfixturevalue("tmp_path_factory").mktemp(f"comfy-server-{comfy.version}"))
    harness.put_photos(base / "input")
    srv = comfy.server(base).start()
    harness.quiet_first_run(srv)
    try:
        yield srv
    finally:
        srv.stop()


EXPECTED_NODES = (
    "ASSR_LoadModel",
    "ASSR_Encode",
    "ASSR_SaveBitstream",
    "ASSR_LoadBitstream",
    "ASSR_Decode",
    "ASSR_BitstreamInfo",
    "ASSR_Compare",
)

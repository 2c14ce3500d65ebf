#!/usr/bin/env bash
# The test job on a fresh machine: set up, fetch what the integration tests need, lint, run every test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
if [ -f scripts/fetch_comfyui.sh ]; then bash scripts/fetch_comfyui.sh; fi
if [ -f scripts/fetch_comfyui_033.sh ]; then bash scripts/fetch_comfyui_033.sh; fi  # skips in one line without ../shared
.venv/bin/ruff check .
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"

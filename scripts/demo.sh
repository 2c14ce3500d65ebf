#!/usr/bin/env bash
# The main job on a fresh machine: set up, fetch the five sample photos, compress + decompress them with
# the shipped default model at 0.01 / 0.03 / 0.1 bpp, write out/demo/ (files, PNGs, side_by_side.png).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
.venv/bin/python -m assr_eic.train.fetch --eval-only --cache .cache/data
.venv/bin/assr-eic demo --out out/demo "$@"

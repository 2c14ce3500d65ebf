#!/usr/bin/env bash
# Train the shipped default model from scratch on a CPU (the model card records what this produced).
#   AV1_MINUTES / LEARNED_MINUTES set the budgets; interrupted runs resume from .cache/train/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
py=.venv/bin/python
$py -m assr_eic.train.fetch --cache .cache/data
$py -m assr_eic.train av1 --minutes "${AV1_MINUTES:-40}" --out .cache/train/stage1.safetensors
$py -m assr_eic.train learned --init .cache/train/stage1.safetensors --minutes "${LEARNED_MINUTES:-25}" \
    --out .cache/train/default.safetensors
echo "trained model: .cache/train/default.safetensors (copy to assr_eic/weights/ after checking its scores)"

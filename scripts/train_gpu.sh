#!/usr/bin/env bash
# Train both learnable paths at once on one GPU machine: the AV1 fidelity decoder (its AV1 pairs made by
# CPU worker processes) and the learned codec end to end, side by side on the same GPU.
#   DATA     folder holding train/ photos          (default .cache/data)
#   WORK     checkpoints and logs; resumable       (default .cache/train)
#   MINUTES  training budget of each trainer        (default 60)
#   WORKERS  AV1 pair-making processes              (default: CPU cores - 3)
#   INIT     model file both start from             (default: the shipped default model)
# Each trainer writes WORK/<part>.safetensors. On a machine whose CompressAI lacks its compiled
# extension the learned trainer keeps only its checkpoint; rerun the same command on a full install
# (it resumes with nothing left to train) to add the CDF tables and write the model.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
py=${PYTHON:-python3}
DATA=${DATA:-.cache/data}
WORK=${WORK:-.cache/train}
MINUTES=${MINUTES:-60}
WORKERS=${WORKERS:-$(($(nproc) - 3))}
INIT=${INIT:-assr_eic/weights/default.safetensors}
mkdir -p "$WORK"
common=(--init "$INIT" --data "$DATA" --workdir "$WORK" --minutes "$MINUTES")
$py -m assr_eic.train av1 "${common[@]}" --batch 16 --crop 192 --keep best --workers "$WORKERS" --threads 1 \
    --out "$WORK/av1.safetensors" >"$WORK/av1.out" 2>&1 &
$py -m assr_eic.train learned "${common[@]}" --batch 16 --crop 256 --lr 3e-4 --threads 2 \
    --out "$WORK/learned.safetensors" >"$WORK/learned.out" 2>&1 &
wait
tail -n 3 "$WORK/av1.out" "$WORK/learned.out"

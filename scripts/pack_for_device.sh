#!/usr/bin/env bash
# Pack what a lent GPU machine without network needs to run scripts/train_gpu.sh (how the shipped model was
# trained): the PyAV and Pillow wheels (PyAV's dav1d decodes AV1; Pillow's AVIF writer, libaom, encodes
# it, and the machine's own Pillow may lack AVIF), CompressAI's Python code (its compiled coder has no build for that machine's
# Python; training needs only the entropy models' likelihoods, so small stand-ins raise if coding is
# attempted), and the training photos as JPEG quality 91 (4:4:4, 13 MB) to fit the 64 MiB transfer.
# Then, on the machine:  pip install --target /tmp/site .gpu/*.whl; PYTHONPATH=/tmp/site:.gpu/site:.
#   DATA=.gpu/data WORK=$OUT/w MINUTES=6.5 WORKERS=12 bash scripts/train_gpu.sh
# and finish the learned codec here by rerunning its command (adds the CDF tables; see the model card).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
py=.venv/bin/python
[ -d .cache/data/train ] || $py -m assr_eic.train.fetch --cache .cache/data
site=$($py -c "import compressai, os; print(os.path.dirname(os.path.dirname(compressai.__file__)))")
rm -rf .gpu && mkdir -p .gpu/site .gpu/data/train
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
cp -r "$site/compressai" "$site/pytorch_msssim" .gpu/site/
find .gpu/site \( -name '*.so' -o -name '__pycache__' \) -prune -exec rm -rf {} +
cat > .gpu/site/compressai/_CXX.py <<'PY'
def pmf_to_quantized_cdf(*args, **kwargs):
    raise NotImplementedError("compressai._CXX is not built for this Python")
PY
cat > .gpu/site/compressai/ans.py <<'PY'
class _Missing:
    def __getattr__(self, name):
        raise NotImplementedError("compressai.ans is not built for this Python")


class BufferedRansEncoder(_Missing):
    pass


class RansEncoder(_Missing):
    pass


class RansDecoder(_Missing):
    pass
PY
$py -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 -d .gpu "av==$($py -c 'import av; print(av.__version__)')" \
    "pillow==$($py -c 'import PIL; print(PIL.__version__)')"
$py - <<'PY'
from pathlib import Path
from PIL import Image
for p in sorted(Path(".cache/data/train").glob("*.png")):
    Image.open(p).convert("RGB").save(Path(".gpu/data/train") / (p.stem + ".jpg"), quality=91, subsampling=0)
PY
du -sh .gpu

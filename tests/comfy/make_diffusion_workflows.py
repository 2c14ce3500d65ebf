"""Author the two diffusion-decoder example workflows on the real ComfyUI canvas (as make_workflows.py does
for the others) and save them as the canvas saves them, with JPEG thumbnails.

    .venv/bin/python tests/comfy/make_diffusion_workflows.py

The workflows name ComfyUI's usual SD 1.5 file (``v1-5-pruned-emaonly-fp16.safetensors``) in Load
Checkpoint; users pick their own checkpoint there. No real SD weights exist on this machine, so the
thumbnails are canvas screenshots of a run with the random-weight SD 1.5 test checkpoint linked under that name
(the canvas shows the graph; the sampled picture in it is noise-like, as random weights give).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import diffusion_checkpoint  # noqa: E402
import harness  # noqa: E402
import make_workflows  # noqa: E402

CHECKPOINT = "v1-5-pruned-emaonly-fp16.safetensors"

STEPS = 4  # minutes on a CPU at 20 steps; this finishes in about a minute
NOTE_STEPS = (
    f"Steps: {STEPS}, so a CPU finishes in about a minute. On a GPU raise steps to 20-30 for more detail "
    "(KSampler's steps, or ASSR Diffusion Decode's)."
)
NOTE_SPLIT = (
    "Diffusion decoding of an .assr file on your own Stable Diffusion 1.x/2.x checkpoint, with the stock KSampler.\n\n"
    "1. Choose your checkpoint in Load Checkpoint.\n2. Put an .assr file in the input folder (or upload it on Load "
    "ASSR Bitstream).\n3. ASSR Diffusion Prepare decodes it with the fidelity decoder and patches the model; its "
    "denoise output drives KSampler's denoise (more for files that lost more). realism: 0 = faithful, 1 = more "
    "invented detail. adaptor: trained weights from models/assr_eic_adaptors/, or none (training-free).\n"
    "4. ASSR Color Fix pulls the colours back to the fidelity decode.\n\n"
    f"{NOTE_STEPS}"
)
NOTE_ALL = (
    "The same diffusion decoding in one node: ASSR Diffusion Decode samples with live preview and progress, "
    "decodes and colour-fixes; outputs larger than tile_size are sampled in overlapping tiles.\n\n"
    "Choose your SD checkpoint in Load Checkpoint and an .assr file in Load ASSR Bitstream (it starts on a sample "
    "the pack ships), then Run.\n\n"
    f"{NOTE_STEPS}"
)

WORKFLOWS = {
    "assr_diffusion_split": {
        "nodes": [
            {"id": "note", "type": "Note", "pos": [40, 40], "size": [300, 320], "widgets": {"text": NOTE_SPLIT}},
            {"id": "ckpt", "type": "CheckpointLoaderSimple", "pos": [40, 420], "size": [300, 100],
             "widgets": {"ckpt_name": CHECKPOINT}},
            {"id": "load", "type": "ASSR_LoadBitstream", "pos": [40, 580], "size": [300, 120],
             "widgets": {"bitstream": "coffee.assr [sample]"}},
            {"id": "model", "type": "ASSR_LoadModel", "pos": [40, 760], "size": [300, 60], "collapsed": True},
            {"id": "prep", "type": "ASSR_DiffusionPrepare", "pos": [380, 40], "size": [320, 560]},
            {"id": "ks", "type": "KSampler", "pos": [740, 40], "size": [280, 480],
             "widgets": {"steps": STEPS, "cfg": 4.0, "sampler_name": "euler", "scheduler": "normal"}},
            {"id": "vaedec", "type": "VAEDecode", "pos": [740, 640], "size": [220, 50], "collapsed": True},
            {"id": "fix", "type": "ASSR_ColorFix", "pos": [1060, 40], "size": [300, 110],
             "widgets": {"method": "wavelet"}},
            {"id": "saveimg", "type": "SaveImage", "pos": [1060, 210], "size": [300, 320],
             "widgets": {"filename_prefix": "assr/diffusion"}},
            {"id": "fid", "type": "PreviewImage", "pos": [1060, 590], "size": [300, 240], "title": "fidelity decode"},
        ],
        "links": [
            ["ckpt", "MODEL", "prep", "model"], ["ckpt", "CLIP", "prep", "clip"], ["ckpt", "VAE", "prep", "vae"],
            ["load", "bitstream", "prep", "bitstream"], ["model", "model", "prep", "assr_model"],
            ["prep", "model", "ks", "model"], ["prep", "positive", "ks", "positive"],
            ["prep", "negative", "ks", "negative"], ["prep", "latent", "ks", "latent_image"],
            ["prep", "denoise", "ks", "denoise"], ["ks", "LATENT", "vaedec", "samples"],
            ["ckpt", "VAE", "vaedec", "vae"], ["vaedec", "IMAGE", "fix", "image"],
            ["prep", "fidelity", "fix", "reference"], ["fix", "image", "saveimg", "images"],
            ["prep", "fidelity", "fid", "images"],
        ],
    },
    "assr_diffusion_all_in_one": {
        "nodes": [
            {"id": "note", "type": "Note", "pos": [40, 40], "size": [380, 220], "widgets": {"text": NOTE_ALL}},
            {"id": "ckpt", "type": "CheckpointLoaderSimple", "pos": [40, 300], "size": [380, 100],
             "widgets": {"ckpt_name": CHECKPOINT}},
            {"id": "load", "type": "ASSR_LoadBitstream", "pos": [40, 440], "size": [380, 120],
             "widgets": {"bitstream": "coffee.assr [sample]"}},
            {"id": "model", "type": "ASSR_LoadModel", "pos": [40, 600], "size": [380, 90]},
            {"id": "dec", "type": "ASSR_DiffusionDecode", "pos": [460, 40], "size": [360, 760],
             "widgets": {"steps": STEPS, "cfg": 4.0}},
            {"id": "saveimg", "type": "SaveImage", "pos": [860, 40], "size": [380, 420],
             "widgets": {"filename_prefix": "assr/diffusion"}},
            {"id": "fid", "type": "PreviewImage", "pos": [860, 500], "size": [380, 300], "title": "fidelity decode"},
        ],
        "links": [
            ["ckpt", "MODEL", "dec", "model"], ["ckpt", "CLIP", "dec", "clip"], ["ckpt", "VAE", "dec", "vae"],
            ["load", "bitstream", "dec", "bitstream"], ["model", "model", "dec", "assr_model"],
            ["dec", "image", "saveimg", "images"], ["dec", "fidelity", "fid", "images"],
        ],
    },
}  # fmt: skip


async def author(srv: harness.ComfyServer, out_dir: Path) -> None:
    # thumbnails: the canvas after a run of the workflow as saved, on the shipped sample (the sampled picture
    # itself would be noise: no real SD weights exist here)
    async with harness.Browser(1600, 1000) as b:
        for name, spec in WORKFLOWS.items():
            await make_workflows.author_one(b, srv, out_dir, name, spec, timeout=900, thumb="canvas")


def main() -> int:
    harness.fetch_comfyui()
    base = harness.make_base(Path(tempfile.mkdtemp(prefix="assr-diffusion-workflows-")))
    src = diffusion_checkpoint.ensure()
    (base / "models" / "checkpoints").mkdir(parents=True, exist_ok=True)
    (base / "models" / "checkpoints" / CHECKPOINT).symlink_to(src)
    return make_workflows.author_with_server(base, author, start_timeout=600)  # a busy machine starts it slowly


if __name__ == "__main__":
    sys.exit(main())

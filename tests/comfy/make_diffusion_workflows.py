"""Author the diffusion-decoder example workflows on the real ComfyUI canvas (as make_workflows.py does for
the others) and save them as the canvas saves them, with JPEG thumbnails: SD 1.5 (split, with the stock
KSampler, and all-in-one), SDXL (Load Checkpoint) and SD 3.5 (Load Diffusion Model + DualCLIPLoader + Load
VAE), all-in-one.

    .venv/bin/python tests/comfy/make_diffusion_workflows.py [NAME ...]   (default: all of them)

The workflows name the usual files of each family (``v1-5-pruned-emaonly-fp16.safetensors``,
``sd_xl_base_1.0.safetensors``, ``sd3.5_medium.safetensors`` with ``clip_l`` / ``clip_g``); users pick their
own there. No real weights exist on this machine, so the thumbnails are rendered with the random-weight
fixtures (diffusion_checkpoint.py, diffusion_families.py) linked under those names (the canvas shows the
graph; the sampled picture in it is noise-like, as random weights give). Every workflow starts on the sample
the pack ships (``coffee.assr [sample]``), so it runs on a fresh install once a checkpoint is chosen.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import diffusion_checkpoint  # noqa: E402
import diffusion_families  # noqa: E402
import harness  # noqa: E402
import make_workflows  # noqa: E402

CHECKPOINT = "v1-5-pruned-emaonly-fp16.safetensors"
SAMPLE = "coffee.assr [sample]"  # samples/coffee.assr, shipped with the pack

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
GPU_NOTE = (
    "The defaults here suit a CPU (4 steps). On a GPU raise steps to 20-30 on ASSR Diffusion Decode and set "
    "factor to the output size you want; cfg 0 takes the family's guidance, tile_size 0 its native resolution."
)
NOTE_ALL = (
    "The same diffusion decoding in one node: ASSR Diffusion Decode samples with live preview and progress, "
    "decodes and colour-fixes; outputs larger than tile_size are sampled in overlapping tiles.\n\n"
    "Choose your SD 1.x/2.x checkpoint in Load Checkpoint and an .assr file in Load ASSR Bitstream (it starts on "
    "a sample the pack ships), then Run.\n\n" + GPU_NOTE
)

WORKFLOWS = {
    "assr_diffusion_split": {
        "nodes": [
            {"id": "note", "type": "Note", "pos": [40, 40], "size": [300, 320], "widgets": {"text": NOTE_SPLIT}},
            {"id": "ckpt", "type": "CheckpointLoaderSimple", "pos": [40, 420], "size": [300, 100],
             "widgets": {"ckpt_name": CHECKPOINT}},
            {"id": "load", "type": "ASSR_LoadBitstream", "pos": [40, 580], "size": [300, 120],
             "widgets": {"bitstream": SAMPLE}},
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
             "widgets": {"bitstream": SAMPLE}},
            {"id": "model", "type": "ASSR_LoadModel", "pos": [40, 600], "size": [380, 90]},
            {"id": "dec", "type": "ASSR_DiffusionDecode", "pos": [460, 40], "size": [360, 760],
             "widgets": {"steps": STEPS, "cfg": 0.0, "color_fix": "consistency"}},
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

# The same all-in-one decode on the other families, each with the stock loaders its files need. The names are
# the usual ones of the real files (users pick theirs); on a CPU the defaults finish in a minute or so.
CHECKPOINT_SDXL = "sd_xl_base_1.0.safetensors"
UNET_SD35, CLIP_L, CLIP_G, VAE_SD35 = (
    "sd3.5_medium.safetensors", "clip_l.safetensors", "clip_g.safetensors", "sd3.5_vae.safetensors",
)  # fmt: skip
NOTE_SDXL = (
    "Diffusion decoding of an .assr file on your SDXL checkpoint, in one node.\n\n1. Choose your SDXL checkpoint "
    "in Load Checkpoint (its CLIP-L + CLIP-G text encoders and VAE come with it).\n2. Choose an .assr file in "
    "Load ASSR Bitstream, then queue. realism: 0 = faithful to the file, 1 = more invented detail; the band "
    "the file determines is kept whatever realism says.\n\n" + GPU_NOTE
)
NOTE_SD35 = (
    "Diffusion decoding of an .assr file on Stable Diffusion 3.5 (16-channel latents), in one node.\n\n1. Load "
    "Diffusion Model: the SD 3.5 model file (models/diffusion_models).\n2. DualCLIPLoader (type sd3): clip_l "
    "and clip_g (models/text_encoders). For the full prompt encoder use TripleCLIPLoader with t5xxl too; a "
    "checkpoint with its text encoders can replace the three loaders with Load Checkpoint.\n3. Load VAE: the "
    "SD 3.5 VAE.\n4. Choose an .assr file in Load ASSR Bitstream, then queue.\n\n" + GPU_NOTE
)
_DEC = {"steps": STEPS, "cfg": 0.0, "factor": 2.0, "color_fix": "consistency"}
FAMILY_WORKFLOWS = {
    "assr_diffusion_sdxl": {
        "nodes": [
            {"id": "note", "type": "Note", "pos": [40, 40], "size": [380, 220], "widgets": {"text": NOTE_SDXL}},
            {"id": "ckpt", "type": "CheckpointLoaderSimple", "pos": [40, 300], "size": [380, 100],
             "widgets": {"ckpt_name": CHECKPOINT_SDXL}},
            {"id": "load", "type": "ASSR_LoadBitstream", "pos": [40, 440], "size": [380, 120],
             "widgets": {"bitstream": SAMPLE}},
            {"id": "model", "type": "ASSR_LoadModel", "pos": [40, 600], "size": [380, 90]},
            {"id": "dec", "type": "ASSR_DiffusionDecode", "pos": [460, 40], "size": [360, 760], "widgets": _DEC},
            {"id": "saveimg", "type": "SaveImage", "pos": [860, 40], "size": [380, 420],
             "widgets": {"filename_prefix": "assr/diffusion_sdxl"}},
            {"id": "fid", "type": "PreviewImage", "pos": [860, 500], "size": [380, 300], "title": "fidelity decode"},
        ],
        "links": [
            ["ckpt", "MODEL", "dec", "model"], ["ckpt", "CLIP", "dec", "clip"], ["ckpt", "VAE", "dec", "vae"],
            ["load", "bitstream", "dec", "bitstream"], ["model", "model", "dec", "assr_model"],
            ["dec", "image", "saveimg", "images"], ["dec", "fidelity", "fid", "images"],
        ],
    },
    "assr_diffusion_sd35": {
        "nodes": [
            {"id": "note", "type": "Note", "pos": [40, 40], "size": [380, 200], "widgets": {"text": NOTE_SD35}},
            {"id": "unet", "type": "UNETLoader", "pos": [40, 280], "size": [380, 90],
             "widgets": {"unet_name": UNET_SD35}},
            {"id": "clip", "type": "DualCLIPLoader", "pos": [40, 410], "size": [380, 130],
             "widgets": {"clip_name1": CLIP_L, "clip_name2": CLIP_G, "type": "sd3"}},
            {"id": "vae", "type": "VAELoader", "pos": [40, 580], "size": [380, 60], "widgets": {"vae_name": VAE_SD35}},
            {"id": "load", "type": "ASSR_LoadBitstream", "pos": [40, 680], "size": [380, 120],
             "widgets": {"bitstream": SAMPLE}},
            {"id": "model", "type": "ASSR_LoadModel", "pos": [40, 840], "size": [380, 60], "collapsed": True},
            {"id": "dec", "type": "ASSR_DiffusionDecode", "pos": [460, 40], "size": [360, 760], "widgets": _DEC},
            {"id": "saveimg", "type": "SaveImage", "pos": [860, 40], "size": [380, 420],
             "widgets": {"filename_prefix": "assr/diffusion_sd35"}},
            {"id": "fid", "type": "PreviewImage", "pos": [860, 500], "size": [380, 300], "title": "fidelity decode"},
        ],
        "links": [
            ["unet", "MODEL", "dec", "model"], ["clip", "CLIP", "dec", "clip"], ["vae", "VAE", "dec", "vae"],
            ["load", "bitstream", "dec", "bitstream"], ["model", "model", "dec", "assr_model"],
            ["dec", "image", "saveimg", "images"], ["dec", "fidelity", "fid", "images"],
        ],
    },
}  # fmt: skip


def chosen(names: list[str]) -> dict:
    """The workflow specs named (all of them when none is)."""
    every = {**WORKFLOWS, **FAMILY_WORKFLOWS}
    unknown = [n for n in names if n not in every]
    if unknown:
        raise SystemExit(f"no diffusion workflow {unknown}; choose from {', '.join(every)}")
    return {n: every[n] for n in names} if names else every


def author_some(specs: dict):
    # thumbnails: the canvas after a run of the workflow as saved, on the shipped sample (the sampled picture
    # itself would be noise: no real SD weights exist here)
    async def author(srv: harness.ComfyServer, out_dir: Path) -> None:
        async with harness.Browser(1600, 1000) as b:
            for name, spec in specs.items():
                await make_workflows.author_one(b, srv, out_dir, name, spec, timeout=900, thumb="canvas")

    return author


def install_models(models: Path) -> None:
    """The random-weight fixtures linked under the file names the workflows choose."""
    fx = diffusion_families.workflow_files()
    links = {
        ("checkpoints", CHECKPOINT): diffusion_checkpoint.ensure(),
        ("checkpoints", CHECKPOINT_SDXL): fx["sdxl_checkpoint"], ("diffusion_models", UNET_SD35): fx["sd3"],
        ("text_encoders", CLIP_L): fx["clip_l"], ("text_encoders", CLIP_G): fx["clip_g"], ("vae", VAE_SD35): fx["kl16"],
    }  # fmt: skip
    for (folder, name), src in links.items():
        (models / folder).mkdir(parents=True, exist_ok=True)
        (models / folder / name).symlink_to(src)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="workflows to author (default: all)")
    specs = chosen(ap.parse_args(argv).names)

    harness.fetch_comfyui()
    base = harness.make_base(Path(tempfile.mkdtemp(prefix="assr-diffusion-workflows-")))
    install_models(base / "models")
    # a busy machine starts it slowly
    return make_workflows.author_with_server(base, author_some(specs), start_timeout=600)


if __name__ == "__main__":
    sys.exit(main())

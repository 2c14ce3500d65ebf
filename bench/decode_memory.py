"""Peak memory and wall time of decoding legal files that declare large images, each in a fresh process.

    python bench/decode_memory.py --out bench/results/decode_memory --tag after

A few bytes can declare a 16384 x 16384 image (issue 21): each file here is a real ``.assr`` file, a Bitstream
packed around a tiny real payload of the low-res size the header implies (a flat grey frame, coded once by the
codec itself and cached under ``.cache/decode_memory/``), at the declared size (H, W), scale s, both codecs
and both decoders (strength 3: the fidelity decoder; 0: plain bicubic). Each decode runs in a fresh subprocess
through the library ``decompress`` or the CLI (``assr-eic decompress``, which also writes the PNG); its peak
RSS is the child's high-water mark (``os.wait4``), its time the child's wall time. Linux carries a process's
high-water mark across fork and exec into the child's, so the files are crafted in a child of their own
(``--craft``) and this process stays small: its own peak (``parent_peak_mb`` in the JSON) is below every
figure it reports. ``base`` is the peak of a process that imports the package and loads the model (what every
decode pays before touching the file). Writes ``<tag>.json`` and ``<tag>.png``; ``--formula`` adds, per run,
the bound of :mod:`assr_eic.limits` (:func:`~assr_eic.limits.decode_peak_bound`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "decode_memory"
QUALITY_CODE = 128

# (codec, H, W, scale code): the declared sizes; s = 1 + code / 64
DEFAULT_CASES = (
    ("av1", 1024, 1024, 64),
    ("av1", 4096, 4096, 448),
    ("av1", 4096, 4096, 64),
    ("av1", 8192, 8192, 448),
    ("av1", 8192, 8192, 64),
    ("learned", 4096, 4096, 64),
    ("learned", 8192, 8192, 192),
)


def payload(codec: str, lowres: tuple[int, int]) -> tuple[bytes, ...]:
    """The codec's streams for a flat grey low-res image of size ``lowres`` (cached)."""
    h, w = lowres
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"{codec}-{w}x{h}-q{QUALITY_CODE}.bin"
    if not path.is_file():
        import numpy as np
        import torch

        if codec == "av1":
            from assr_eic.codec import av1, obu

            ph, pw = av1._padded_size(h, w)
            data = av1._avif_payload(np.full((ph, pw, 3), 128, np.uint8), av1.quantizer_from_quality(QUALITY_CODE), 9)
            streams = (obu.compact(data, ph, pw),)
        else:
            from assr_eic.model import load_model

            x = torch.full((1, 3, h, w), 0.5)
            streams = load_model().codec("learned").encode(x, QUALITY_CODE, reconstruct=False).streams
        path.write_bytes(json.dumps([s.hex() for s in streams]).encode())
    return tuple(bytes.fromhex(s) for s in json.loads(path.read_text()))


def craft(codec: str, H: int, W: int, scale_code: int, strength: int) -> bytes:
    """A legal ``.assr`` file declaring H x W at s = 1 + scale_code / 64, around a real flat payload."""
    from assr_eic.bitstream import Bitstream, lowres_size, pack
    from assr_eic.model import load_model

    streams = payload(codec, lowres_size(H, W, scale_code))
    fp = load_model().fingerprint
    bs = Bitstream(codec, fp, H, W, scale_code, QUALITY_CODE, streams, decoder_strength=strength)
    return pack(bs)


def child_library(path: str, max_pixels: int | None) -> None:
    """Decode ``path`` through ``decompress`` (in this fresh process) and print its result."""
    import inspect

    import torch

    from assr_eic.pipeline import decompress

    torch.set_num_threads(int(os.environ.get("ASSR_BENCH_THREADS", "2")))
    kwargs = {}
    if max_pixels is not None and "max_pixels" in inspect.signature(decompress).parameters:
        kwargs["max_pixels"] = max_pixels
    out = decompress(Path(path).read_bytes(), **kwargs)
    print(json.dumps({"shape": list(out.shape), "mean": float(out[:: max(1, out.shape[0] // 64)].mean())}))


def run_one(via: str, path: str, max_pixels: int | None) -> dict:
    """One decode in a fresh process: its peak RSS (MB), wall time (s), exit code."""
    if via == "library":
        cmd = [sys.executable, __file__, "--child", path]
        if max_pixels is not None:
            cmd += ["--max-pixels", str(max_pixels)]
    elif via == "cli":
        out = str(Path(path).with_suffix(".png"))
        cmd = [sys.executable, "-m", "assr_eic.cli", "decompress", path, "-o", out, "--overwrite"]
        if max_pixels is not None and _cli_has_max_pixels():
            cmd += ["--max-pixels", str(max_pixels)]
    elif via == "base":
        cmd = [sys.executable, "-c", "from assr_eic.model import load_model; import assr_eic.pipeline; load_model()"]
    else:
        raise ValueError(via)
    t = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    stdout, stderr = p.stdout.read().decode(), p.stderr.read().decode()
    p.returncode = os.waitstatus_to_exitcode(status)
    if via == "cli":
        Path(path).with_suffix(".png").unlink(missing_ok=True)
    return {
        "peak_mb": round(usage.ru_maxrss / 1024, 1),
        "wall_s": round(wall, 2),
        "rc": p.returncode,
        "stdout": stdout.strip()[-300:],
        "stderr": stderr.strip()[-300:],
    }


def _cli_has_max_pixels() -> bool:
    return "--max-pixels" in (ROOT / "assr_eic" / "cli.py").read_text()


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        if r.get("rc") != 0 or r["via"] == "base":
            continue
        marker = {"av1": "o", "learned": "s"}[r["codec"]]
        color = {("library", 3): "C0", ("library", 0): "C1", ("cli", 3): "C2", ("cli", 0): "C3"}[
            (r["via"], r["strength"])
        ]
        ax.scatter(r["H"] * r["W"] / 1e6, r["peak_mb"], marker=marker, color=color)
        if "bound_mb" in r:
            ax.scatter(r["H"] * r["W"] / 1e6, r["bound_mb"], marker="_", color=color, s=200)
    for (via, st), c in {("library", 3): "C0", ("library", 0): "C1", ("cli", 3): "C2", ("cli", 0): "C3"}.items():
        ax.scatter([], [], color=c, label=f"{via}, {'decoder' if st else 'bicubic'}")
    ax.scatter([], [], marker="o", color="k", label="av1")
    ax.scatter([], [], marker="s", color="k", label="learned")
    ax.scatter([], [], marker="_", color="k", s=200, label="formula's bound")
    ax.set_xlabel("declared output size (Mpx)")
    ax.set_ylabel("peak RSS (MB)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Decoding legal files that declare large images: peak memory")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "decode_memory"))
    p.add_argument("--tag", default="after")
    p.add_argument("--via", nargs="+", default=["library", "cli"], choices=["library", "cli"])
    p.add_argument("--strengths", nargs="+", type=int, default=[3, 0])
    p.add_argument("--case", action="append", help="codec:HxW:scale_code (repeatable; default: a fixed set)")
    p.add_argument("--max-pixels", type=int, default=1 << 28, help="passed to decompress / the CLI where they take it")
    p.add_argument("--formula", action="store_true", help="add the bound of assr_eic.limits.decode_peak_bound")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--craft", nargs=6, help=argparse.SUPPRESS)  # codec H W scale_code strength out
    a = p.parse_args(argv)
    if a.child:
        child_library(a.child, a.max_pixels)
        return 0
    if a.craft:
        codec, H, W, code, strength, dest = a.craft
        Path(dest).write_bytes(craft(codec, int(H), int(W), int(code), int(strength)))
        return 0
    cases = DEFAULT_CASES
    if a.case:
        cases = []
        for c in a.case:
            codec, size, code = c.split(":")
            h, w = (int(v) for v in size.split("x"))
            cases.append((codec, h, w, int(code)))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results = [{"via": "base", **run_one("base", "", None)}]
    print(f"base: {results[0]['peak_mb']} MB", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for codec, H, W, code in cases:
            for strength in a.strengths:
                path = os.path.join(tmp, f"{codec}-{W}x{H}-{code}-{strength}.assr")
                # crafted in a child: encoding a large payload here would raise every later child's figure
                subprocess.run([sys.executable, __file__, "--craft", codec, str(H), str(W), str(code), str(strength),
                                path], cwd=ROOT, check=True)  # fmt: skip
                data = Path(path).read_bytes()
                for via in a.via:
                    r = run_one(via, path, a.max_pixels)
                    from assr_eic.bitstream import lowres_size

                    lh, lw = lowres_size(H, W, code)
                    r = {"codec": codec, "H": H, "W": W, "scale_code": code, "scale": 1 + code / 64, "lowres": [lh, lw],
                         "strength": strength, "via": via, "file_bytes": len(data), **r}  # fmt: skip
                    if a.formula:
                        from assr_eic.limits import decode_peak_bound

                        r["bound_mb"] = round(
                            decode_peak_bound(
                                codec, (H, W), (lh, lw), cli=via == "cli", base=results[0]["peak_mb"] * 2**20
                            )
                            / 2**20,
                            1,
                        )
                    r["parent_peak_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
                    results.append(r)
                    print(
                        f"{codec:8s} {W}x{H} s={1 + code / 64:.3f} low-res {lw}x{lh} strength {strength} {via:8s} "
                        f"rc={r['rc']} peak {r['peak_mb']} MB {r['wall_s']} s"
                        + (f" bound {r['bound_mb']} MB" if "bound_mb" in r else "")
                        + (f" [{r['stderr'][-160:]}]" if r["rc"] else ""),
                        flush=True,
                    )
                    (out / f"{a.tag}.json").write_text(json.dumps(results, indent=1))
    plot(results, out / f"{a.tag}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

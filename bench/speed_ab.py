"""Encode + decode speed of the working tree against a git revision, measured side by side.

    python bench/speed_ab.py --baseline HEAD --bpp 0.02,0.05,0.1,0.2 --reps 5 --out bench/results/speed_ab

These 2 shared cores drift by 1.5-2x between sessions, so one timed call says little and two figures from
different runs cannot be compared. This runs the benchmark's speed worker (``assr-eic bench``'s: a fresh
process, rate control included, the second call timed) for each version in turn, rep by rep, on the
benchmark's 768x512 image, and reports medians, minima and the ratio of medians. The baseline is checked
out into a temporary git worktree and runs with its own shipped model. Writes ``speed_ab.json`` and
``speed_ab.png``. ``--method`` (one or several, comma-separated, all from the working tree) and
``--baseline-method`` pick the speed worker's methods, so one run also compares rate control's efforts:

    python bench/speed_ab.py --baseline HEAD --baseline-method ours-av1-best \
        --method ours-av1,ours-av1-fast --out bench/results/speed_efforts
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# the speed worker of the tree in argv[1]: bench/kodak.py since the benchmark left the library, before that
# assr_eic/bench.py (so a revision from either side of that move can be the baseline)
_WORKER = (
    "import os, sys; root = sys.argv.pop(1); sys.path.insert(0, root)\n"
    "if os.path.isfile(os.path.join(root, 'bench', '__init__.py')):\n    from bench.kodak import main\n"
    "else:\n    from assr_eic.bench import main\n"
    "sys.exit(main())"
)


def time_once(tree: Path, image: Path, bpp: float, cwd: str, method: str = "ours-av1") -> dict:
    """One speed-worker process of the code in ``tree``: its result (``warm_*_ms``, ``bytes``)."""
    cmd = [sys.executable, "-c", _WORKER, str(tree), "--speed-worker", method, "--image", str(image),
           "--speed-bpp", str(bpp)]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=600)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        raise SystemExit(f"speed worker of {tree} failed: {(p.stderr.strip().splitlines() or ['no output'])[-1]}")
    return json.loads(lines[-1])


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bpps, sides = result["bpp"], result["sides"]
    colors = ["tab:gray", "tab:blue", "tab:orange", "tab:green", "tab:purple"]
    width = 0.8 / len(sides)
    fig, ax = plt.subplots(figsize=(7.5, 4))
    for k, (name, side) in enumerate(sides.items()):
        xs = np.arange(len(bpps)) + (k - (len(sides) - 1) / 2) * width
        runs = [side["runs"][str(b)]["ms"] for b in bpps]
        color = colors[k % len(colors)]
        ax.bar(xs, [np.median(r) for r in runs], width * 0.95, color=color, alpha=0.6, label=f"{name}: {side['label']}")
        for x, r in zip(xs, runs, strict=True):
            ax.scatter([x] * len(r), r, s=10, color=color)
    ax.axhline(1000, color="tab:red", lw=1, ls="--", label="1 s target")
    ax.set_xticks(range(len(bpps)), [f"{b:g} bpp" for b in bpps])
    ax.set_ylabel("encode + decode (ms), 768x512, 2 cores")
    ax.set_title(f"median of {result['reps']} interleaved runs (dots: each run)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", default="HEAD", help="git revision to compare the working tree with")
    p.add_argument("--bpp", default="0.02,0.05,0.1,0.2")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--out", default="bench/results/speed_ab")
    p.add_argument(
        "--method",
        default="ours-av1",
        help="the working tree's speed-worker method, or several, comma-separated (ours-av1-fast, ...)",
    )
    p.add_argument("--baseline-method", default="ours-av1", help="the baseline's speed-worker method")
    a = p.parse_args(argv)
    from PIL import Image

    from bench.speed import speed_image

    kodim03 = ROOT / ".cache" / "data" / "kodak" / "kodim03.png"
    if not kodim03.is_file():
        raise SystemExit("no Kodak crops in .cache/data/kodak (run scripts/setup.sh)")
    bpps = [float(v) for v in a.bpp.split(",")]
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", a.baseline], capture_output=True,
                         text=True, check=True).stdout.strip()  # fmt: skip
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    current = f"{head.stdout.strip()}{' + uncommitted changes' if dirty else ''}"
    methods = a.method.split(",")
    result: dict = {"bpp": bpps, "reps": a.reps, "sides": {}}
    result["sides"]["baseline"] = {"label": f"{rev} {a.baseline_method}", "method": a.baseline_method, "runs": {}}
    for m in methods:
        name = "current" if len(methods) == 1 else f"current {m}"
        result["sides"][name] = {"label": f"{current} {m}", "method": m, "runs": {}}
    with tempfile.TemporaryDirectory(prefix="assr-speed-ab-") as tmp:
        base = Path(tmp) / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(base), rev], check=True)
        try:
            image = Path(tmp) / "speed.png"
            speed_image(np.asarray(Image.open(kodim03).convert("RGB"))).save(image)
            for rep in range(a.reps):
                for name, side in result["sides"].items():
                    tree = base if name == "baseline" else ROOT
                    for b in bpps:
                        r = time_once(tree, image, b, tmp, side["method"])
                        runs = side["runs"].setdefault(str(b), {"ms": [], "bytes": r["bytes"]})
                        runs["ms"].append(r["warm_encode_ms"] + r["warm_decode_ms"])
                        ms = runs["ms"][-1]
                        print(f"rep {rep + 1}/{a.reps} {name:8s} {b:g} bpp: {ms:.0f} ms, {r['bytes']} B", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False)
    for b in bpps:
        med = {n: float(np.median(side["runs"][str(b)]["ms"])) for n, side in result["sides"].items()}
        for n in med:
            if n != "baseline":
                result.setdefault("ratio_of_medians", {}).setdefault(n, {})[str(b)] = med[n] / med["baseline"]
        print(f"{b:g} bpp: " + ", ".join(f"{n} {v:.0f} ms" for n, v in med.items()))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "speed_ab.json").write_text(json.dumps(result, indent=1))
    plot(result, out / "speed_ab.png")
    print(f"wrote {out / 'speed_ab.json'}, {out / 'speed_ab.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

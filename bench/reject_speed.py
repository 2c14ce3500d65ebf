"""How fast the CLI refuses a hostile file, against a valid decode, for both base codecs.

    python bench/reject_speed.py --reps 3 --out bench/results/reject_speed

Hostile files carry a valid CRC and the shipped model's fingerprint (what a hostile sender writes):
``header`` ones are refused from the file header, the lengths and the codec's own headers (an AV1
sequence header declaring 16384x16384; a rANS stream that is not whole 32-bit words), ``payload`` ones
pass those and are refused by the decoders (an AV1 frame cut to 3 bytes; a rANS stream whose state
runs dry at once). Each case runs ``assr-eic decompress`` in a fresh interpreter ``--reps`` times and
records the median wall time of the whole process and the time spent after the package was imported
(``main()`` alone, timed inside the process), plus the exit code, stderr's line count and whether
torch was imported. ``python -c pass`` gives the interpreter's own start-up. Writes
``reject_speed.json`` and ``reject_speed.png`` (bars) to ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the CLI in a fresh interpreter; the last stdout line reports the in-process times
_PROBE = """
import sys, time
t0 = time.perf_counter()
import assr_eic.cli as cli
t1 = time.perf_counter()
rc = cli.main(sys.argv[1:])
t2 = time.perf_counter()
print("PROBE", rc, t1 - t0, t2 - t1, "torch" in sys.modules, flush=True)
"""


def make_files(folder: Path) -> dict[str, Path]:
    """The valid and hostile files of both codecs, written with the shipped model."""
    import numpy as np
    from skimage import data as skd

    from assr_eic.bitstream import pack, parse, varint
    from assr_eic.codec.obu import sequence_header
    from assr_eic.model import load_model
    from assr_eic.pipeline import compress

    model = load_model()
    photo = np.ascontiguousarray(skd.astronaut()[40:424, :512])
    valid = {
        "av1": parse(compress(photo, scale=4.0, quality=0.3, codec="av1", model=model)),
        "learned": parse(compress(photo, scale=4.0, quality=0.3, codec="learned", model=model)),
    }
    av1, learned = valid["av1"], valid["learned"]
    header = sequence_header(16384, 16384, 0, 0, 8)
    big = b"\x0a" + varint(len(header)) + header + b"\x32" + varint(len(av1.streams[0]) - 1) + av1.streams[0][1:]
    cases = {
        "av1 valid": av1,
        "av1 hostile header": dataclasses.replace(av1, streams=(big,)),
        "av1 hostile payload": dataclasses.replace(av1, streams=(av1.streams[0][:4],)),
        "learned valid": learned,
        "learned hostile header": dataclasses.replace(learned, streams=(learned.streams[0], learned.streams[1][:-1])),
        "learned hostile payload": dataclasses.replace(learned, streams=(learned.streams[0], b"\x00" * 8)),
    }
    out = {}
    for name, bs in cases.items():
        p = folder / (name.replace(" ", "-") + ".assr")
        p.write_bytes(pack(bs))
        out[name] = p
    return out


def run_once(args: list[str]) -> dict:
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, cwd=ROOT, timeout=600)
    wall = time.perf_counter() - t
    probe = [ln for ln in r.stdout.splitlines() if ln.startswith("PROBE ")]
    if not probe:
        raise RuntimeError(f"the probe did not report: {r.stderr[-2000:]}")
    _, rc, t_import, t_main, torch = probe[-1].split()
    return {
        "wall_s": wall,
        "import_s": float(t_import),
        "after_import_s": float(t_main),
        "rc": int(rc),
        "stderr_lines": len(r.stderr.splitlines()),
        "stderr": r.stderr.strip()[:300],
        "torch_imported": torch == "True",
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["cases"])
    wall = [results["cases"][n]["median_wall_s"] for n in names]
    after = [results["cases"][n]["median_after_import_s"] for n in names]
    fig, ax = plt.subplots(figsize=(9, 4.2))
    ys = range(len(names))
    ax.barh([y + 0.2 for y in ys], wall, height=0.4, label="whole CLI process (wall)")
    ax.barh([y - 0.2 for y in ys], after, height=0.4, label="after the package import (main())")
    ax.axvline(results["interpreter_start_s"], color="k", ls=":", lw=1, label="python -c pass")
    ax.set_yticks(list(ys), names)
    ax.invert_yaxis()
    ax.set_xlabel("median seconds")
    ax.set_title(f"assr-eic decompress: rejecting hostile files vs a valid decode ({results['reps']} runs each)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=3, help="runs per case (the median is reported)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "reject_speed")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        files = make_files(Path(tmp))
        starts = []
        for _ in range(a.reps):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], check=True)
            starts.append(time.perf_counter() - t)
        cases = {}
        for name, path in files.items():
            runs = []
            for i in range(a.reps):
                out = Path(tmp) / f"out-{i}.png"
                runs.append(run_once(["decompress", str(path), "-o", str(out), "--overwrite"]))
            cases[name] = {
                "bytes": path.stat().st_size,
                "median_wall_s": statistics.median(r["wall_s"] for r in runs),
                "median_after_import_s": statistics.median(r["after_import_s"] for r in runs),
                "median_import_s": statistics.median(r["import_s"] for r in runs),
                "rc": sorted({r["rc"] for r in runs}),
                "stderr_lines": sorted({r["stderr_lines"] for r in runs}),
                "torch_imported": sorted({r["torch_imported"] for r in runs}),
                "stderr": runs[0]["stderr"],
                "runs": runs,
            }
            c = cases[name]
            print(
                f"{name:26s} wall {c['median_wall_s']:.3f} s, after import {c['median_after_import_s']:.3f} s, "
                f"rc {c['rc']}, stderr lines {c['stderr_lines']}, torch {c['torch_imported']}",
                flush=True,
            )
    results = {
        "command": " ".join([Path(sys.executable).name, "bench/reject_speed.py", *(argv or sys.argv[1:])]),
        "reps": a.reps,
        "interpreter_start_s": statistics.median(starts),
        "cpu_note": "2 shared cores; other sessions ran at the same time",
        "cases": cases,
    }
    (a.out / "reject_speed.json").write_text(json.dumps(results, indent=1))
    plot(results, a.out / "reject_speed.png")
    print(f"wrote {a.out / 'reject_speed.json'} and reject_speed.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The real ComfyUI server under a long queue of good and bad prompts, back to back.

Starts ComfyUI (fetched by scripts/fetch_comfyui.sh) with the pack, lays out its folders with
tests/comfy/long_queue.py (small photographs, good and hostile .assr files, broken and foreign models,
a full and a read-only output subfolder where mount namespaces work), queues N prompts, and records
for each: whether it behaved as required (good: succeeded and its outputs check out; bad: failed in
the right node with the right sentence), the wall time and the server's RSS after it. Writes JSON and
a PNG plot of RSS and per-prompt time.

    PYTHONPATH=$PWD .venv/bin/python bench/server_queue.py --prompts 200 --out bench/results/server_queue
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import requests
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "comfy"))
sys.path.insert(0, str(REPO / "tests"))

import harness  # noqa: E402
import long_queue  # noqa: E402
import mounts  # noqa: E402

from assr_eic.model import ASSRModel  # noqa: E402


def foreign_model(folder: Path) -> str:
    """Other weights than the shipped model (a seeded fresh model), to decode with by mistake."""
    torch.manual_seed(1234)
    path = folder / "foreign.safetensors"
    ASSRModel().save(path)
    return str(path)


def growth(rss: list[float], last: int) -> float:
    """RSS growth over the last ``last`` samples: the last sample minus the one before them (MiB)."""
    if len(rss) <= last:
        return rss[-1] - rss[0]
    return rss[-1] - rss[-last - 1]


def median(xs: list[float | None]) -> float | None:
    xs = sorted(x for x in xs if x is not None)
    return round(xs[len(xs) // 2], 3) if xs else None


def plot(results: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = [r["index"] for r in results]
    fig, (a, b) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    a.plot(idx, [r["rss_mb"] for r in results], "-", color="tab:blue")
    a.set_ylabel("server RSS after prompt (MiB)")
    a.set_title(title)
    a.grid(alpha=0.3)
    for good, colour, label in ((True, "tab:green", "good prompt"), (False, "tab:red", "bad prompt")):
        pts = [(r["index"], r["exec_seconds"] or r["seconds"]) for r in results if r["kind"].startswith("good") == good]
        if pts:
            b.scatter(*zip(*pts, strict=True), s=12, color=colour, label=label)
    b.set_ylabel("server execution time (s)")
    b.set_xlabel("prompt number")
    b.set_yscale("log")
    b.grid(alpha=0.3)
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prompts", type=int, default=50, help="how many prompts to queue (default 50)")
    p.add_argument("--seed", type=int, default=0, help="seed of the good/bad order")
    p.add_argument(
        "--clear-history",
        action="store_true",
        help="clear ComfyUI's prompt history after each prompt (tells its growth apart from a leak)",
    )
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "server_queue"), help="output path stem")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    harness.fetch_comfyui()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="assr-queue-") as tmp:
        base = harness.make_base(Path(tmp) / "base")
        lay = long_queue.prepare(base, foreign_model(Path(tmp)))
        prefix = mounts.wrap(lay.setup, []) if lay.setup else []
        srv = harness.ComfyServer(base, prefix=prefix)
        t0 = time.perf_counter()
        srv.start()
        start_s = time.perf_counter() - t0
        rss_start = srv.rss_mb()
        results = []
        try:
            for i, case in enumerate(long_queue.cases(lay, a.prompts, a.seed)):
                res = long_queue.run_case(srv, case, i)
                if a.clear_history:
                    requests.post(srv.url + "/history", json={"clear": True}, timeout=30).raise_for_status()
                    res.rss_mb = srv.rss_mb()
                results.append(asdict(res))
                flag = "ok " if res.ok else "BAD"
                print(
                    f"{i:4d} {flag} {res.status:8s} {res.seconds:6.2f}s {res.rss_mb:7.1f} MiB  {res.kind}", flush=True
                )
            alive = srv.proc.poll() is None and srv.get("/system_stats") is not None
        finally:
            srv.stop()
    rss = [r["rss_mb"] for r in results]
    good = [r for r in results if r["kind"].startswith("good")]
    summary = {
        "command": "PYTHONPATH=$PWD .venv/bin/python bench/server_queue.py " + " ".join(argv or sys.argv[1:]),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, torch threads 1 in the client",
        "load_average_1_5_15": os.getloadavg(),
        "clear_history": a.clear_history,
        "mounts": bool(lay.setup),
        "prompts": len(results),
        "good": len(good),
        "bad": len(results) - len(good),
        "as_required": sum(r["ok"] for r in results),
        "not_as_required": [r for r in results if not r["ok"]],
        "server_alive_after": alive,
        "server_start_s": round(start_s, 2),
        "rss_mb": {
            "after_start": round(rss_start, 1),
            "after_first": round(rss[0], 1),
            "max": round(max(rss), 1),
            "last": round(rss[-1], 1),
            "growth_last_30": round(growth(rss, 30), 1),
            "growth_second_half": round(rss[-1] - rss[len(rss) // 2], 1),
        },
        "seconds": {
            "total_wall": round(sum(r["seconds"] for r in results), 1),
            "exec_median_good": median([r["exec_seconds"] for r in good]),
            "exec_median_bad": median([r["exec_seconds"] for r in results if r not in good]),
            "exec_max": max((r["exec_seconds"] or 0.0) for r in results),
        },
        "results": results,
    }
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    plot(results, out.with_suffix(".png"), f"ComfyUI server, {len(results)} ASSR prompts back to back")
    brief = {k: v for k, v in summary.items() if k not in ("results",)}
    print(json.dumps(brief, indent=1))
    return 0 if brief["as_required"] == len(results) and alive else 1


if __name__ == "__main__":
    sys.exit(main())

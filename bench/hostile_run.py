"""Hostile files with a valid CRC through the library, the CLI and the real ComfyUI server (issue 21).

    nice -n 10 python bench/hostile_run.py --library 10000 --cli 1000 --server 200 --out bench/results/hostile

Files come from ``bench/hostile.py`` (structure-aware, deterministic from ``--seed``; each part draws its
own files). Decoding uses the hostile limit ``max_pixels`` = :data:`hostile.DECODE_MAX_PIXELS` (larger
declared images are refused from the header).

- library: ``decompress`` in ``--workers`` long-lived worker processes (shipped model, one torch thread).
  Per file: the outcome, the time, and the peak resident memory of that file alone (the worker resets its
  high-water mark through ``/proc/self/clear_refs`` first), compared with ``limits.decode_peak_bound``
  over the worker's resident memory before the file. A file that runs past ``--cap`` seconds is a hang
  (its worker is killed and replaced); a worker that dies, or any exception but ``BitstreamError``, is
  a crash.
- cli: ``python -m assr_eic.cli decompress`` in a fresh process per file (``--cap`` s of CPU time each, and
  180 s of wall time: on loaded shared cores a valid decode took 19 s of wall time for 3.5 s of CPU): exit code,
  stderr lines (exactly one for an error, with no warning), wall time and the process's peak RSS.
- server: ``python main.py`` of the fetched ComfyUI with the pack; Load ASSR Bitstream + ASSR Decode
  per file through ``POST /prompt``: a success, or a ``ValueError`` node error whose message has no
  absolute path; the server must answer ``/system_stats`` after every file; its RSS before and after.

Counts (decoded, documented error, crash, hang, over the formula) and the findings' files go to
``--out``: ``hostile.json`` (each part's figures; a part run alone updates its entry), ``hostile.png``
and ``findings/``. Every crash or hang is a bug to fix in the library, then a file for the corpus.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import hostile  # noqa: E402

DOCUMENTED = ("BitstreamError", "ModelMismatchError", "OutputTooLargeError")
PART_SEEDS = {"library": 1, "cli": 2, "server": 3}


def _file(part: str, i: int, seeds: hostile.Seeds) -> hostile.Hostile:
    names = list(hostile.FAMILIES)
    return hostile.one(names[i % len(names)], PART_SEEDS[part] * 1_000_003 + i, seeds)


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


# --- library: the worker ------------------------------------------------------------------------------------


def worker() -> None:
    """Read file indices on stdin, answer one JSON line per file on stdout."""
    import torch

    from assr_eic.bitstream import BitstreamError, parse
    from assr_eic.limits import decode_peak_bound
    from assr_eic.model import load_model
    from assr_eic.pipeline import decompress

    torch.set_num_threads(1)
    model = load_model()
    seeds = hostile.load_seeds()
    for data in seeds.values():  # build both codecs' networks before the first measured file
        decompress(data, model=model)
    for line in sys.stdin:
        h = _file("library", int(line), seeds)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM: the peak below is this file's
        base = _status_kb("VmRSS") * 1024
        t = time.perf_counter()
        row = {"i": int(line), "name": h.name, "family": h.family}
        bs = None
        try:
            bs = parse(h.data)
            img = decompress(bs, model=model, max_pixels=hostile.DECODE_MAX_PIXELS)
            assert img.shape == (bs.height, bs.width, 3), (img.shape, bs.height, bs.width)
            row["outcome"] = "ok"
        except BitstreamError as e:
            row["outcome"] = type(e).__name__
            if "\n" in str(e) or not str(e):
                row["outcome"], row["error"] = "crash", f"not one sentence: {str(e)!r}"
        except Exception as e:  # noqa: BLE001 - anything else is the finding this benchmark looks for
            row["outcome"], row["error"] = "crash", "".join(traceback.format_exception(e))[-3000:]
        row["seconds"] = time.perf_counter() - t
        peak = _status_kb("VmHWM") * 1024
        row["peak_over_base_mb"] = (peak - base) / 2**20
        if bs is not None:
            bound = decode_peak_bound(bs.codec, (bs.height, bs.width), bs.lowres_size, base=base)
            row["bound_over_base_mb"] = (bound - base) / 2**20
            row["over_formula"] = peak > bound
        print(json.dumps(row), flush=True)


class Worker:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def ask(self, i: int, cap: float) -> dict | str:
        """The worker's row for file ``i``, or "hang" / "crash" (the worker is then gone)."""
        try:
            self.proc.stdin.write(f"{i}\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            return "crash"
        ready, _, _ = select.select([self.proc.stdout], [], [], cap)
        if not ready:
            self.proc.kill()
            self.proc.wait()
            return "hang"
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            return "crash"
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def run_library(n: int, workers: int, cap: float, out: Path) -> dict:
    seeds = hostile.load_seeds()
    todo = list(range(n))
    lock = threading.Lock()
    rows: list[dict] = []
    warmup_cap = 300.0  # the first answer waits for the model and the warm-up decodes

    def drive() -> None:
        w, first = Worker(), True
        while True:
            with lock:
                if not todo:
                    break
                i = todo.pop(0)
            got = w.ask(i, warmup_cap if first else cap)
            first = False
            if isinstance(got, str):
                h = _file("library", i, seeds)
                got = {"i": i, "name": h.name, "family": h.family, "outcome": got}
                _save_finding(out, h, got["outcome"], "library")
                w, first = Worker(), True
            elif got["outcome"] == "crash":
                _save_finding(out, _file("library", i, seeds), got.get("error", ""), "library")
            with lock:
                rows.append(got)
                if len(rows) % 500 == 0:
                    print(f"library: {len(rows)}/{n}", flush=True)
        w.close()

    t = time.monotonic()
    _in_threads(drive, workers)
    rows.sort(key=lambda r: r["i"])
    res = _counts(rows)
    parsed = [r for r in rows if "bound_over_base_mb" in r]
    res.update(
        files=n, workers=workers, cap_s=cap, wall_s=time.monotonic() - t,
        over_formula=sum(bool(r.get("over_formula")) for r in rows),
        peak_over_base_mb_max=max((r["peak_over_base_mb"] for r in parsed), default=None),
        median_s={k: _median([r["seconds"] for r in rows if _kind(r["outcome"]) == k]) for k in ("ok", "error")},
        max_s=max((r.get("seconds", cap) for r in rows), default=None),
        by_family=_by_family(rows),
        worst_margin=_worst_margin(parsed),
    )  # fmt: skip
    return res


def _worst_margin(parsed: list[dict]) -> dict | None:
    """The file whose peak came nearest its bound (peak / bound, both over the worker's base)."""
    if not parsed:
        return None
    r = max(parsed, key=lambda r: r["peak_over_base_mb"] / r["bound_over_base_mb"])
    return {k: r[k] for k in ("name", "outcome", "peak_over_base_mb", "bound_over_base_mb")}


# --- the CLI ---------------------------------------------------------------------------------------------------


def _cpu_cap(seconds: float):
    def limit() -> None:  # in the child, before exec: SIGXCPU past ``seconds`` of CPU time
        resource.setrlimit(resource.RLIMIT_CPU, (int(seconds), int(seconds) + 1))

    return limit


def run_cli_one(path: Path, out_png: Path, cap: float, wall_cap: float) -> dict:
    """One CLI process. ``cap`` is CPU seconds (on shared, loaded cores a valid decode can take 20 s of
    wall time with 3 s of CPU); ``wall_cap`` catches a process that waits without computing."""
    cmd = [sys.executable, "-m", "assr_eic.cli", "decompress", str(path), "-o", str(out_png),
           "--max-pixels", str(hostile.DECODE_MAX_PIXELS)]  # fmt: skip
    with tempfile.TemporaryFile() as err:
        t = time.monotonic()
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT, preexec_fn=_cpu_cap(cap))
        timer = threading.Timer(wall_cap, p.kill)
        timer.start()
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.monotonic() - t
        timer.cancel()
        p.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    lines = stderr.splitlines()
    cpu = usage.ru_utime + usage.ru_stime
    if p.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        outcome = "hang"
    elif p.returncode == 0 and not lines and out_png.is_file():
        outcome = "ok"
    elif p.returncode == 2 and len(lines) == 1 and "warning" not in stderr.lower() and ": error: " in lines[0]:
        outcome = "error"
    else:
        outcome = "crash"
    return {"outcome": outcome, "rc": p.returncode, "wall_s": wall, "cpu_s": cpu, "peak_rss_mb": usage.ru_maxrss / 1024,
            "stderr_lines": len(lines), "stderr": stderr[-2000:]}  # fmt: skip


def run_cli(n: int, jobs: int, cap: float, out: Path, budget_s: float | None = None, wall_cap: float = 180.0) -> dict:
    """``n`` files, ``jobs`` at a time; with ``budget_s``, no file is started after that many seconds (the
    figures then count the files that ran)."""
    seeds = hostile.load_seeds()
    t = time.monotonic()
    todo = list(range(n))
    lock = threading.Lock()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="hostile-cli-") as d:

        def drive() -> None:
            while True:
                with lock:
                    if not todo or (budget_s is not None and time.monotonic() - t > budget_s):
                        return
                    i = todo.pop(0)
                row = one(i)
                with lock:
                    rows.append(row)

        def one(i: int) -> dict:
            h = _file("cli", i, seeds)
            f = Path(d) / f"{i}.assr"
            f.write_bytes(h.data)
            row = run_cli_one(f, Path(d) / f"{i}.png", cap, wall_cap)
            row.update(i=i, name=h.name, family=h.family)
            if row["outcome"] in ("crash", "hang"):
                _save_finding(out, h, row["stderr"] or row["outcome"], "cli")
            for p in (f, Path(d) / f"{i}.png"):
                p.unlink(missing_ok=True)
            if i % 100 == 0:
                print(f"cli: {i}/{n}", flush=True)
            return row

        _in_threads(drive, jobs)
    rows.sort(key=lambda r: r["i"])
    res = _counts([{**r, "outcome": "DocumentedError" if r["outcome"] == "error" else r["outcome"]} for r in rows])
    res.update(
        files=len(rows), files_asked=n, budget_s=budget_s, jobs=jobs, cpu_cap_s=cap, wall_cap_s=wall_cap,
        wall_s=time.monotonic() - t,
        median_wall_s={"valid decode": _median([r["wall_s"] for r in rows if r["outcome"] == "ok"]),
                       "rejection": _median([r["wall_s"] for r in rows if r["outcome"] == "error"])},
        median_cpu_s={"valid decode": _median([r["cpu_s"] for r in rows if r["outcome"] == "ok"]),
                      "rejection": _median([r["cpu_s"] for r in rows if r["outcome"] == "error"])},
        max_cpu_s=max((r["cpu_s"] for r in rows), default=None),
        max_peak_rss_mb={"valid decode": max((r["peak_rss_mb"] for r in rows if r["outcome"] == "ok"), default=None),
                         "rejection": max((r["peak_rss_mb"] for r in rows if r["outcome"] == "error"), default=None)},
        by_family=_by_family(rows),
        rejection_wall_s=sorted(r["wall_s"] for r in rows if r["outcome"] == "error"),
    )  # fmt: skip
    return res


# --- the server ----------------------------------------------------------------------------------------------


_ABSOLUTE = re.compile(r"(?<![\w.])/(tmp|work|home|root|usr|proc|etc|var)/")


def run_server(n: int, cap: float, out: Path) -> dict:
    sys.path.insert(0, str(ROOT / "tests" / "comfy"))
    import harness

    seeds = hostile.load_seeds()
    harness.fetch_comfyui()
    rows = []
    with tempfile.TemporaryDirectory(prefix="hostile-server-") as d:
        base = harness.make_base(Path(d) / "base")
        srv = harness.ComfyServer(base).start(timeout=600)  # slow to start on busy shared cores
        try:
            info = srv.get("/object_info")
            prompt = harness.ui_to_api(harness.load_workflow("assr_load_and_decode"), info)
            load = next(k for k, v in prompt.items() if v["class_type"] == "ASSR_LoadBitstream")
            dec = next(k for k, v in prompt.items() if v["class_type"] == "ASSR_Decode")
            prompt[dec]["inputs"].update(max_pixels=hostile.DECODE_MAX_PIXELS, size="original")
            (base / "input" / "warmup.assr").write_bytes(seeds["av1-s2"])
            prompt[load]["inputs"]["bitstream"] = "warmup.assr"
            srv.run(prompt)
            for name in ("learned-s3", "av1-s1-prompt"):
                (base / "input" / f"warmup-{name}.assr").write_bytes(seeds[name])
                prompt[load]["inputs"]["bitstream"] = f"warmup-{name}.assr"
                srv.run(prompt)
            rss_before = srv.rss_mb()
            t0 = time.monotonic()
            for i in range(n):
                h = _file("server", i, seeds)
                fname = f"h{i:05d}.assr"
                (base / "input" / fname).write_bytes(h.data)
                prompt[load]["inputs"]["bitstream"] = fname
                t = time.monotonic()
                row = {"i": i, "name": h.name, "family": h.family}
                try:
                    entry = srv.run(prompt, timeout=cap)
                    err = harness.history_error(entry)
                    if entry["status"]["status_str"] == "success":
                        row["outcome"] = "ok"
                    elif err and err["exception_type"] == "ValueError" and not _ABSOLUTE.search(
                        err["exception_message"]) and str(base) not in err["exception_message"]:  # fmt: skip
                        row["outcome"], row["node"] = "DocumentedError", err["node_type"]
                    else:
                        row["outcome"], row["error"] = "crash", json.dumps(err)[:2000]
                except TimeoutError:
                    row["outcome"] = "hang"
                row["seconds"] = time.monotonic() - t
                try:
                    row["answers"] = srv.get("/system_stats", timeout=10) is not None
                except Exception:  # noqa: BLE001 - a server that stopped answering is the finding
                    row["answers"] = False
                if row["outcome"] in ("crash", "hang") or not row["answers"]:
                    _save_finding(out, h, row.get("error", row["outcome"]), "server")
                (base / "input" / fname).unlink()
                rows.append(row)
                if not row["answers"]:
                    break
            rss_after = srv.rss_mb()
            wall = time.monotonic() - t0
        finally:
            srv.stop()
    res = _counts(rows)
    res.update(
        files=len(rows), cap_s=cap, wall_s=wall, rss_before_mb=rss_before, rss_after_mb=rss_after,
        answered_after_every_file=all(r["answers"] for r in rows),
        node_errors={k: sum(r.get("node") == k for r in rows) for k in ("ASSR_LoadBitstream", "ASSR_Decode")},
        median_s=_median([r["seconds"] for r in rows]), by_family=_by_family(rows),
    )  # fmt: skip
    return res


# --- bookkeeping ------------------------------------------------------------------------------------------------


def _kind(outcome: str) -> str:
    return "ok" if outcome == "ok" else "error" if outcome in (*DOCUMENTED, "DocumentedError") else outcome


def _counts(rows: list[dict]) -> dict:
    c = {"decoded": 0, "documented_error": 0, "crash": 0, "hang": 0}
    names = {"ok": "decoded", "error": "documented_error", "crash": "crash", "hang": "hang"}
    classes: dict[str, int] = {}
    for r in rows:
        c[names[_kind(r["outcome"])]] += 1
        classes[r["outcome"]] = classes.get(r["outcome"], 0) + 1
    return {**c, "outcomes": classes}


def _by_family(rows: list[dict]) -> dict:
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        d = out.setdefault(r["family"], {})
        d[_kind(r["outcome"])] = d.get(_kind(r["outcome"]), 0) + 1
    return out


def _in_threads(drive, k: int) -> None:
    """Run ``drive`` in ``k`` threads at once and wait for all of them."""
    threads = [threading.Thread(target=drive) for _ in range(k)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _save_finding(out: Path, h: hostile.Hostile, text: str, part: str) -> None:
    folder = out / "findings"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{part}-{h.name}.assr").write_bytes(h.data)
    (folder / f"{part}-{h.name}.txt").write_text(text)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = [p for p in ("library", "cli", "server") if p in results["parts"]]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    kinds = ("decoded", "documented_error", "crash", "hang")
    colours = ("tab:green", "tab:blue", "tab:red", "k")
    left = [0] * len(parts)
    for k, col in zip(kinds, colours, strict=True):
        vals = [results["parts"][p][k] for p in parts]
        axes[0].barh(parts, vals, left=left, color=col, label=k)
        left = [a + b for a, b in zip(left, vals, strict=True)]
    for y, p in enumerate(parts):
        r = results["parts"][p]
        axes[0].text(left[y], y, f"  {r['crash']} crashes, {r['hang']} hangs", va="center", fontsize=8)
    axes[0].set_xlabel("hostile files (valid CRC)")
    axes[0].legend(fontsize=8, loc="lower right")
    axes[0].invert_yaxis()
    axes[0].set_title("outcomes")
    lib = results["parts"].get("library", {})
    cli = results["parts"].get("cli", {})
    if cli.get("rejection_wall_s"):
        import numpy as np

        times = cli["rejection_wall_s"]
        axes[1].hist(times, bins=np.geomspace(min(times), max(times), 40), color="tab:blue")
        axes[1].set_xscale("log")
        for k, (label, v) in enumerate(cli["median_wall_s"].items()):
            if v is not None:
                axes[1].axvline(v, ls=":", color="k")
                axes[1].text(v, axes[1].get_ylim()[1] * (0.9 - 0.15 * k), f" median {label}: {v:.2f} s", fontsize=8)
        axes[1].set_xlabel("assr-eic decompress wall time of a rejection (s, log scale; loaded cores)")
        axes[1].set_title(f"CLI, {cli['files']} files, {cli['jobs']} at a time on shared cores")
    elif lib:
        axes[1].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--library", type=int, default=0, help="files through the library")
    p.add_argument("--cli", type=int, default=0, help="files through the CLI (a process each)")
    p.add_argument("--server", type=int, default=0, help="files through the real ComfyUI server")
    p.add_argument("--workers", type=int, default=2, help="library worker processes")
    p.add_argument("--jobs", type=int, default=2, help="CLI processes at a time")
    p.add_argument("--cli-budget", type=float, help="CLI: start no file after this many seconds")
    p.add_argument("--cap", type=float, default=20.0, help="seconds per file before it counts as a hang")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "hostile")
    a = p.parse_args(argv)
    if a.worker:
        worker()
        return 0
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / "hostile.json"
    results = json.loads(path.read_text()) if path.is_file() else {"parts": {}}
    results.update(machine=f"{platform.machine()}, {os.cpu_count()} cores (shared)", python=platform.python_version(),
                   decode_max_pixels=hostile.DECODE_MAX_PIXELS,
                   command="nice -n 10 python bench/hostile_run.py " + " ".join(argv or sys.argv[1:]))  # fmt: skip
    for part, n, fn in (("library", a.library, lambda: run_library(a.library, a.workers, a.cap, a.out)),
                        ("cli", a.cli, lambda: run_cli(a.cli, a.jobs, a.cap, a.out, a.cli_budget)),
                        ("server", a.server, lambda: run_server(a.server, a.cap, a.out))):  # fmt: skip
        if n:
            figures = {**fn(), "command": results["command"]}
            if path.is_file():  # another run may have written its parts meanwhile
                results["parts"] = json.loads(path.read_text())["parts"]
            results["parts"][part] = figures
            path.write_text(json.dumps(results, indent=1) + "\n")
            r = results["parts"][part]
            print(f"{part}: {r['decoded']} decoded, {r['documented_error']} documented errors, {r['crash']} crashes, "
                  f"{r['hang']} hangs", flush=True)  # fmt: skip
    plot(results, a.out / "hostile.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

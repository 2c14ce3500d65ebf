"""A folder at a time: compress every image (or decompress every ``.assr`` file) of a folder tree.

The tree is mirrored under the output folder (``photos/a/b.jpg`` -> ``OUT/a/b.assr``). The files are
shared among worker processes (``spawn`` context, the model loaded once per worker by the pool's
initializer, so torch's start-up is paid once per worker, not once per file); :func:`process_one` is the
per-file function, the same one a Dask cluster runs (:func:`run_dask`).

Resuming: every output is written by :func:`assr_eic.files.atomic_write_bytes` (temporary file, fsync,
then the name), so an output that exists is complete; a rerun skips it. A run killed mid-write can leave
only a temporary file (``.NAME.XXXX.tmp`` beside the output), which the next run removes; a lock file
keeps two runs out of one output folder. One bad file never stops the run: its error is a row of the
summary (``summary.csv`` and ``summary.json`` in the output folder) and the exit status is 2 at the end.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

__all__ = [
    "IMAGE_EXTS",
    "BatchError",
    "Job",
    "Row",
    "discover",
    "process_one",
    "run_local",
    "run_dask",
    "run_folder",
    "write_summary",
]

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pnm", ".tga")
SUMMARY_NAMES = ("summary.csv", "summary.json")
LOCK_NAME = ".assr-eic-batch.lock"


class BatchError(ValueError):
    """A folder run that cannot start (bad folders, another run holding the output folder)."""


@dataclass(frozen=True)
class Job:
    """One file's work: ``mode`` is "compress" or "decompress"; ``options`` the CLI's settings."""

    mode: str
    src: str
    dst: str
    rel: str  # the input's path relative to the input folder ('/'-separated)
    options: dict = field(default_factory=dict)
    original: str | None = None  # decompress: the original image, for PSNR


@dataclass
class Row:
    """One line of the summary."""

    input: str
    output: str
    status: str  # ok | skipped | error
    bytes: int | None = None  # the .assr file's size
    bpp: float | None = None  # the .assr file's bits per pixel of the original size
    width: int | None = None
    height: int | None = None
    psnr: float | None = None
    seconds: float | None = None
    error: str = ""


# --- discovery ------------------------------------------------------------------------------------


def _walk(root: Path, exclude: Path | None) -> Iterator[Path]:
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (exclude is None or (here / d) != exclude))
        for name in sorted(files):
            if not name.startswith("."):
                yield here / name


def discover(src_dir: str | os.PathLike, out_dir: str | os.PathLike, mode: str, options: dict | None = None,
             originals: str | os.PathLike | None = None) -> list[Job]:  # fmt: skip
    """Every job of a folder run, in sorted order: images (compress) or ``.assr`` files (decompress)
    under ``src_dir`` (hidden files and folders skipped, and ``out_dir`` when it lies inside), each with
    its output path in the mirrored tree under ``out_dir``. Two images that would share an output name
    (``a.png``, ``a.jpg``) keep their extension in it (``a.png.assr``, ``a.jpg.assr``)."""
    if mode not in ("compress", "decompress"):
        raise ValueError(f"mode must be compress or decompress, got {mode!r}")
    src, out = Path(src_dir).resolve(), Path(out_dir).resolve()
    if not src.is_dir():
        raise BatchError(f"input folder does not exist: {src_dir}")
    if out == src:
        raise BatchError("the output folder must differ from the input folder")
    exts = IMAGE_EXTS if mode == "compress" else (".assr",)
    paths = [p for p in _walk(src, out) if p.suffix.lower() in exts and p.is_file()]
    if not paths:
        what = "images (" + ", ".join(sorted(IMAGE_EXTS)) + ")" if mode == "compress" else ".assr files"
        raise BatchError(f"{src_dir} is a folder with no {what} in its tree: nothing to {mode}")
    suffix = ".assr" if mode == "compress" else ".png"
    rels = [p.relative_to(src) for p in paths]
    targets = [r.with_suffix(suffix) for r in rels]
    taken: dict[Path, int] = {}
    for t in targets:
        taken[t] = taken.get(t, 0) + 1
    orig_dir = Path(originals).resolve() if originals is not None else None
    jobs = []
    for p, r, t in zip(paths, rels, targets, strict=True):
        if taken[t] > 1:
            t = r.with_name(r.name + suffix)
        jobs.append(
            Job(mode, str(p), str(out / t), r.as_posix(), dict(options or {}),
                _find_original(orig_dir, r) if orig_dir is not None else None)
        )  # fmt: skip
    return jobs


def _find_original(orig_dir: Path, rel: Path) -> str | None:
    """The image ``orig_dir/<rel without .assr>.<any image extension>``, if there is one."""
    base = orig_dir / rel.with_suffix("")
    for ext in IMAGE_EXTS:
        for cand in (base.with_name(base.name + ext), base.with_name(base.name + ext.upper())):
            if cand.is_file():
                return str(cand)
    return None


# --- the per-file function ------------------------------------------------------------------------


def _psnr(a, b) -> float:
    import numpy as np

    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _header(data: bytes) -> dict:
    from .bitstream import parse

    bs = parse(data)
    return {"bytes": len(data), "bpp": bs.bpp, "width": bs.width, "height": bs.height}


def _compress(job: Job) -> dict:
    from .image import load_image
    from .model import load_model
    from .pipeline import compress, decompress

    o = job.options
    model = load_model(o.get("model"))
    image = load_image(job.src)
    data = compress(
        image, target_bpp=o.get("bpp"), scale=o.get("scale"), quality=o.get("quality"), codec=o.get("codec"),
        prompt=o.get("prompt"), model=model, effort=o.get("effort", "normal"),
    )  # fmt: skip
    _write(job, data)
    info = _header(data)
    if o.get("psnr"):
        info["psnr"] = _psnr(decompress(data, model=model), image)
    return info


def _decompress(job: Job) -> dict:
    from PIL import Image

    from .bitstream import read_bitstream
    from .image import load_image
    from .model import load_model
    from .pipeline import decompress

    o = job.options
    data = read_bitstream(job.src)
    info = _header(data)
    img = decompress(data, size=o.get("size"), model=load_model(o.get("model")))
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    _write(job, buf.getvalue())
    if job.original is not None:
        ref = load_image(job.original)
        if ref.shape == img.shape:
            info["psnr"] = _psnr(img, ref)
    return info


def _write(job: Job, data: bytes) -> None:
    from .files import atomic_write_bytes

    Path(job.dst).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(job.dst, data, overwrite=bool(job.options.get("overwrite")))


def process_one(job: Job) -> Row:
    """Do one job and return its summary row; a user-level failure (a bad image, a bad file, a rate
    that cannot be reached, a file that cannot be written) is a row with status "error", never raised."""
    from .files import OutputExistsError

    t = time.perf_counter()
    try:
        info = _compress(job) if job.mode == "compress" else _decompress(job)
    except OutputExistsError:  # written meanwhile by another writer (a worker of a killed run finishing its file)
        return skipped_row(job, {})
    except (ValueError, OSError, MemoryError) as e:  # the library's bad-input errors are ValueErrors
        msg = " ".join(str(e).split()) or type(e).__name__
        return Row(job.rel, job.dst, "error", seconds=time.perf_counter() - t, error=msg)
    return Row(job.rel, job.dst, "ok", seconds=time.perf_counter() - t, **info)


def skipped_row(job: Job, previous: dict[str, dict]) -> Row:
    """The row of an output a previous run finished: that run's row (time, PSNR) where the summary
    has it for the same file size, else the figures read from the file."""
    size = os.path.getsize(job.dst)
    old = previous.get(job.rel)
    if old and old.get("status") in ("ok", "skipped") and old.get("output") == job.dst:
        if job.mode == "decompress" or old.get("bytes") == size:
            keep = {f.name: old.get(f.name) for f in fields(Row) if f.name not in ("input", "output", "status")}
            return Row(job.rel, job.dst, "skipped", **keep)
    row = Row(job.rel, job.dst, "skipped")
    try:
        from .bitstream import read_bitstream

        info = _header(read_bitstream(job.dst if job.mode == "compress" else job.src))
        row.bytes, row.bpp, row.width, row.height = info["bytes"], info["bpp"], info["width"], info["height"]
    except ValueError as e:
        row.error = f"finished earlier, but its header cannot be read: {e}"
    return row


# --- worker pools ---------------------------------------------------------------------------------


def _init_worker(model: str | None, threads: int) -> None:
    """Once per worker process: the parent handles Ctrl-C; torch and the model are loaded here."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch

    from .model import load_model

    torch.set_num_threads(threads)
    load_model(model)


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def run_local(jobs: list[Job], workers: int, model: str | None = None) -> Iterator[Row]:
    """Run ``jobs`` in ``workers`` spawned processes, yielding rows as files finish (in no fixed order).
    Stopping the iteration (Ctrl-C, SIGTERM) terminates the workers: nothing half-written is left, as
    every output is written atomically."""
    if not jobs:
        return
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    threads = max(1, (os.cpu_count() or 1) // workers)
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                               initargs=(model, threads))  # fmt: skip
    finished = False
    try:
        pending = set()
        queue = iter(jobs)
        for job in queue:  # keep a short queue per worker so an interruption cancels cheaply
            pending.add(pool.submit(process_one, job))
            if len(pending) >= 2 * workers:
                break
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                yield f.result()
                nxt = next(queue, None)
                if nxt is not None:
                    pending.add(pool.submit(process_one, nxt))
        finished = True
    finally:
        if not finished:
            for p in list(getattr(pool, "_processes", {}).values()):
                p.terminate()
        pool.shutdown(wait=True, cancel_futures=True)


def run_dask(jobs: list[Job], scheduler: str | object) -> Iterator[Row]:
    """Run ``jobs`` on a Dask cluster: ``scheduler`` is its address (``tcp://host:8786``) or a
    ``distributed.Client``. Each worker process loads the model once (``load_model``'s cache); input and
    output folders must be the same paths on every worker (a shared file system)."""
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise BatchError("--scheduler needs Dask: pip install 'assr-eic[distributed]'") from None
    client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
    try:
        futures = client.map(process_one, jobs, pure=False)
        for f in as_completed(futures):
            yield f.result()
    finally:
        if client is not scheduler:
            client.close()


# --- the folder run -------------------------------------------------------------------------------


class _Progress:
    """A one-line progress bar on stderr (a line per file when stderr is not a terminal)."""

    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.stream, self.t0 = total, stream, time.perf_counter()
        self.counts = {"ok": 0, "skipped": 0, "error": 0}
        self.tty = hasattr(stream, "isatty") and stream.isatty()

    def update(self, row: Row) -> None:
        self.counts[row.status] += 1
        n = sum(self.counts.values())
        c = self.counts
        tail = f"{c['ok']} ok, {c['skipped']} skipped, {c['error']} errors"
        if self.tty:
            done = int(30 * n / max(self.total, 1))
            el = time.perf_counter() - self.t0
            worked = max(n - c["skipped"], 1)
            eta = el / worked * (self.total - n)
            self.stream.write(f"\r[{'#' * done}{'.' * (30 - done)}] {n}/{self.total} {tail}, eta {eta:.0f} s ")
            if n == self.total:
                self.stream.write("\n")
        else:
            note = f": {row.error}" if row.error else ""
            self.stream.write(f"[{n}/{self.total}] {row.input} {row.status}{note}\n")
        self.stream.flush()


def _read_previous(out: Path) -> dict[str, dict]:
    try:
        rows = json.loads((out / "summary.json").read_text())["files"]
        return {r["input"]: r for r in rows}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def write_summary(out: str | os.PathLike, rows: Iterable[Row], extra: dict | None = None) -> None:
    """``summary.csv`` and ``summary.json`` in ``out`` (atomically replaced), rows sorted by input."""
    from .files import atomic_write_bytes

    rows = sorted(rows, key=lambda r: r.input)
    names = [f.name for f in fields(Row)]
    buf = io.StringIO()
    w = csv.DictWriter(buf, names, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in asdict(r).items()})
    counts = {s: sum(r.status == s for r in rows) for s in ("ok", "skipped", "error")}
    doc = {**(extra or {}), "counts": counts, "files": [asdict(r) for r in rows]}
    atomic_write_bytes(Path(out) / "summary.csv", buf.getvalue().encode(), overwrite=True)
    # inf (a lossless PSNR) is not JSON: written as null there, "inf" in the CSV
    text = json.dumps(doc, indent=1, default=str).replace("Infinity", "null")
    atomic_write_bytes(Path(out) / "summary.json", text.encode(), overwrite=True)


def _lock(out: Path):
    """Hold an exclusive lock on the output folder for this run (POSIX; elsewhere no lock)."""
    try:
        import fcntl
    except ImportError:
        return None
    f = open(out / LOCK_NAME, "a")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise BatchError(f"another run is writing to {out}; wait for it to finish") from None
    return f


def _remove_stale_temps(jobs: list[Job]) -> int:
    """Temporary files a killed run left beside the outputs (``.NAME.XXXX.tmp``, see ``files``)."""
    n = 0
    for d in {Path(j.dst).parent for j in jobs}:
        if d.is_dir():
            names = {Path(j.dst).name[:60] for j in jobs if Path(j.dst).parent == d} | {s[:60] for s in SUMMARY_NAMES}
            for f in d.iterdir():
                if f.name.endswith(".tmp") and f.name.startswith(".") and f.name[1:].rsplit(".", 2)[0] in names:
                    f.unlink(missing_ok=True)
                    n += 1
    return n


def run_folder(
    mode: str,
    src_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    options: dict,
    *,
    workers: int | None = None,
    scheduler: str | object | None = None,
    originals: str | os.PathLike | None = None,
    progress: Callable[[Row], None] | None = None,
) -> list[Row]:
    """Run a whole folder (see the module docstring) and write its summary; returns the rows.

    ``options``: bpp / scale / quality / codec / prompt / effort / model / psnr (compress), size / model
    (decompress), overwrite (recompute and replace finished outputs instead of skipping them).
    """
    out = Path(out_dir)
    jobs = discover(src_dir, out, mode, options, originals)
    out.mkdir(parents=True, exist_ok=True)
    lock = _lock(out.resolve())
    try:
        _remove_stale_temps(jobs)
        previous = _read_previous(out)
        rows: list[Row] = []
        todo = []
        for j in jobs:
            if not options.get("overwrite") and os.path.isfile(j.dst):
                rows.append(skipped_row(j, previous))
            else:
                todo.append(j)
        bar = progress or _Progress(len(jobs)).update
        for r in rows:
            bar(r)
        t0 = time.perf_counter()
        workers = workers or default_workers()
        engine = run_dask(todo, scheduler) if scheduler is not None else run_local(todo, workers, options.get("model"))
        extra = {"mode": mode, "input_dir": str(src_dir), "output_dir": str(out), "workers": workers,
                 "scheduler": None if scheduler is None else str(scheduler), "options": options}  # fmt: skip
        try:
            for r in engine:
                rows.append(r)
                bar(r)
        except BaseException:
            engine.close()  # terminate the workers before anything else
            write_summary(out, rows, {**extra, "interrupted": True})
            raise
        write_summary(out, rows, {**extra, "wall_seconds": time.perf_counter() - t0})
        return rows
    finally:
        if lock is not None:
            lock.close()

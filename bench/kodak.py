"""The Kodak benchmark: ASSR-EIC against JPEG, WebP, AVIF, JPEG XL and HEIC at matched rate.

``python bench/kodak.py --out bench/results`` (or ``assr-eic bench ...``). On the five Kodak crops
(``assr_eic.train.data.load_eval_set``), or with ``--set mpx --out bench/results/mpx`` on the eight
1024x1024 held-out pictures (three photographs, five illustrations from the Debian wallpaper packages,
never trained on), for each target bpp it measures

* ``ours-av1`` and ``ours-learned``: ``compress(target_bpp=...)`` (rate control picks s and q), decoded
  with the fidelity decoder; ``ours-av1-fast`` and ``ours-av1-best`` the same with rate control's
  ``effort="fast"`` and ``"best"``;
* ``ours-av1+bicubic`` (ablation): the SAME av1 file, its decoded low-res image upsampled with plain
  bicubic instead of the fidelity decoder (what the learning adds);
* every classical codec at every scale in ``SCALES`` (``{codec}@{scale}``): the image downscaled by the
  scale (antialiased bicubic), coded at the highest quality whose whole file fits the budget, decoded and
  upsampled back with bicubic. The budget is the byte size of OUR av1 file for that image and target
  (matched rate; the target's bytes where our file is unreachable);
* derived rows: ``{codec}@best`` (the codec's best PSNR over scales) and ``best-classical`` (per image and
  target the max PSNR over all classical codecs and scales: the upper envelope); ``best-classical-msssim``
  is the same envelope taken on MS-SSIM.

Classical results do not depend on our model, so every classical encode is cached in a JSON file keyed by
image content, codec, scale and quality (file size, and PSNR / MS-SSIM / times for the qualities that were
chosen). A budget search first brackets the quality with the cached sizes, so re-running after the model
changed (our file sizes move a little) costs only a few new encodes. The cache is discarded when the
Pillow / plugin versions or the codec settings change.

BD-rates are computed on the MEAN curves (mean bpp, mean PSNR over the images, per target) over the targets
in ``BD_RANGE`` at which both methods have a result on every image. Speed and peak memory are measured in a
fresh subprocess per method on one 768x512 image (a Kodak crop upscaled by 1.5, its middle 768x512), in
the same run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python bench/kodak.py): the repository root holds `bench`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.classical import ClassicalCache, classical_job, derive_classical, image_key
from bench.common import (
    ABLATION,
    BD_RANGE,
    EFFORT_VARIANTS,
    ENVELOPE,
    GRID_BPP,
    GRID_IMAGES,
    OURS,
    QUICK_IMAGES,
    QUICK_TARGETS,
    SCALES,
    SPEED_BPP,
    SPEED_EXTRA_BPP,
    SPEED_UPSCALE,
    TARGETS,
    TOLERANCE,
    log,
    nan_to_none,
    write_json,
)
from bench.ours import run_ablation, run_ours
from bench.report import (
    GOAL_CODECS,
    bd_rates,
    goal_check,
    landing,
    mean_curves,
    method_order,
    plot_rd,
    write_grid,
    write_summary,
)
from bench.speed import run_speed, speed_worker


def run(args: argparse.Namespace) -> dict:
    from assr_eic.baselines import available_codecs
    from assr_eic.model import load_model
    from assr_eic.train.data import load_eval_set
    from assr_eic.train.fetch import fetch_eval_set, fetch_mpx_set

    t_start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (fetch_mpx_set if args.set == "mpx" else fetch_eval_set)(Path(args.data))
    all_images = load_eval_set(Path(args.data), args.set)
    if args.images:
        names = args.images.split(",")
        unknown = [n for n in names if n not in all_images]
        if unknown:
            raise SystemExit(f"unknown images {unknown}; the evaluation set has {sorted(all_images)}")
    else:
        names = sorted(all_images)[: QUICK_IMAGES if args.quick else None]
    images = {n: all_images[n] for n in names}
    targets = (
        [float(t) for t in args.targets.split(",")] if args.targets else list(QUICK_TARGETS if args.quick else TARGETS)
    )
    scales = [float(s) for s in args.scales.split(",")] if args.scales else list(SCALES)
    avail = available_codecs()
    codecs = args.codecs.split(",") if args.codecs else avail
    missing = [c for c in codecs if c not in avail]
    if missing:
        log(f"skipping unavailable codecs: {', '.join(missing)}")
        codecs = [c for c in codecs if c in avail]
    our_codecs = args.ours.split(",")
    grid_bpp = min(targets, key=lambda t: abs(math.log(t / GRID_BPP)))
    grid_images = names[:GRID_IMAGES]
    import torch

    # torch's intra-op threads spin badly when the cores are shared (our classical workers, other jobs): the
    # quality runs use --threads (default 1); the speed section measures the default thread count too
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    cache = ClassicalCache(None if args.cache == "none" else Path(args.cache))
    config = {
        "set": args.set,
        "images": names,
        "targets": targets,
        "scales": scales,
        "codecs": codecs,
        "ours": our_codecs,
        "model": model.source,
        "model_fingerprint": model.fingerprint.hex(),
        "tolerance": TOLERANCE,
        "bd_range": list(BD_RANGE),
        "grid_bpp": grid_bpp,
        "speed_bpp": args.speed_bpp,
        "cpus": os.cpu_count(),
        "jobs": args.jobs,
        "threads": args.threads,
        "loadavg_start": list(os.getloadavg()),
        "python": sys.version.split()[0],
        "codec_versions": {k: v for k, v in cache.env.items() if k in ("pillow", "pillow_heif", "pillow_jxl")},
    }
    log(
        f"benchmark: {len(names)} images x {len(targets)} targets; ours: {', '.join(our_codecs)}; classical: "
        f"{', '.join(codecs)} at scales {', '.join(f'{s:g}' for s in scales)}; model {model.source} "
        f"({model.fingerprint.hex()})"
    )
    rows: list[dict] = []
    grid: dict[str, list] = {n: [] for n in grid_images}
    pool = None
    if args.jobs > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: a forked child of a process that already ran torch's thread pool can hang
        pool = ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"))
    pending, done_jobs = [], []

    def collect(block: bool) -> None:
        for f in [f for f in pending if block or f.done()]:
            pending.remove(f)
            job = f.result()
            done_jobs.append(job)
            cache.entries.update(job["entries"])
            cache.hits += job["hits"]
            cache.misses += job["misses"]
            log(
                f"  {job['image']} {job['codec']}: {len(targets)} targets x {len(scales)} scales in "
                f"{job['seconds']:.1f} s ({job['misses']} new encodes, {job['hits']} cached)"
            )
        cache.save()

    try:
        for name, img in images.items():
            H, W = img.shape[:2]
            budgets = {}
            for t in targets:
                t0 = time.perf_counter()
                decs = {}
                for spec in our_codecs:
                    row, dec = run_ours(model, img, name, t, spec)
                    rows.append(row)
                    decs[spec] = dec
                    if t == grid_bpp and name in grid and dec is not None and row["method"] not in EFFORT_VARIANTS:
                        grid[name].append((row["method"], row, dec.rgb))
                budget, budget_from = math.floor(t * H * W / 8), "target"
                if "av1" in our_codecs:
                    av1 = rows[-len(our_codecs) + our_codecs.index("av1")]
                    abl = run_ablation(model, img, name, t, av1, decs["av1"])
                    rows.append(abl)
                    if t == grid_bpp and name in grid and decs["av1"] is not None:
                        grid[name].append((ABLATION, abl, decs["av1"].bicubic_rgb))
                    if av1["status"] == "ok":
                        budget, budget_from = av1["bytes"], "ours-av1"
                budgets[t] = (budget, budget_from)
                log(_progress_line(name, t, rows, (), budget, time.perf_counter() - t0))
            key = image_key(img)
            keep = (grid_bpp,) if name in grid else ()
            for codec in codecs:  # classical work for this image goes to the pool while ours goes on
                entries = cache.subset(key, codec)
                job = (img, name, codec, scales, budgets, entries, keep)
                if pool is None:
                    done_jobs.append(classical_job(*job))
                    cache.entries.update(done_jobs[-1]["entries"])
                    cache.hits += done_jobs[-1]["hits"]
                    cache.misses += done_jobs[-1]["misses"]
                else:
                    pending.append(pool.submit(classical_job, *job, threads=1))
            collect(block=False)
        if pending:
            log(f"waiting for {len(pending)} classical jobs")
        collect(block=True)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    log(f"classical cache: {cache.hits} cached encodes used, {cache.misses} new encodes ({cache.path})")
    crops = {}
    for job in done_jobs:
        rows += job["rows"]
        crops.update({(job["image"], *k): v for k, v in job["images"].items()})
    for name, img in images.items():
        for t in targets:
            mine = [r for r in rows if r["image"] == name and r["target_bpp"] == t and r.get("budget_bytes")]
            if not mine:
                continue
            derived = derive_classical(mine, codecs, name, t, img.shape[:2])
            rows += derived
            log(_progress_line(name, t, rows, codecs, mine[0]["budget_bytes"], None))
            if t == grid_bpp and name in grid:
                for m in ("avif@1", *(f"{c}@best" for c in codecs), ENVELOPE):
                    r = next((r for r in mine + derived if r["method"] == m and r["status"] == "ok"), None)
                    if r is not None:
                        grid[name].append((m, r, crops[(name, t, r.get("source", m))]))
    order = {m: i for i, m in enumerate(method_order(rows, codecs))}
    rows.sort(key=lambda r: (names.index(r["image"]), targets.index(r["target_bpp"]), order[r["method"]]))

    curves = mean_curves(rows, names, targets)
    anchors_m = [a for a in ("avif@1", "avif@best", ENVELOPE) if a in curves]
    ours_m = [m for m in (*OURS, ABLATION) if m in curves]
    summary = {
        "mean": curves,
        "bd": bd_rates(curves, targets, ours_m, anchors_m),
        # the same over every target (0.005-0.3): full-size AVIF only reaches the upper end of the range
        "bd_all_targets": bd_rates(curves, targets, ours_m, anchors_m, (min(targets), max(targets))),
        "landing": landing(rows),
        "goal": goal_check(rows, targets),
        "goal_named_codecs": goal_check(rows, targets, codecs=GOAL_CODECS),
        "goal_efforts_named_codecs": {
            m: goal_check(rows, targets, method=m, codecs=GOAL_CODECS) for m in EFFORT_VARIANTS if m in curves
        },
        "methods": method_order(rows, codecs),
    }
    speed = []
    if not args.no_speed:
        methods = (
            args.speed_methods.split(",")
            if args.speed_methods
            else [m for c in our_codecs for m in ((f"ours-{c}", f"ours-{c}/1t") if "-" not in c else (f"ours-{c}",))]
            + codecs
            # rate control's choices, hence the time, depend on the rate: ours-av1 across the range too
            + [f"ours-{c}={b:g}" for c in ("av1", "av1-fast", "av1-best") if c in our_codecs for b in SPEED_EXTRA_BPP]
        )
        log(f"speed and memory: {len(methods)} fresh processes, {SPEED_UPSCALE:g}x {names[0]}, {args.speed_bpp:g} bpp")
        speed = run_speed(images[names[0]], methods, args.speed_bpp, args.model)
    config["loadavg_end"] = list(os.getloadavg())
    config["wall_s"] = time.perf_counter() - t_start
    result = {"config": config, "rows": rows, "summary": summary, "speed": speed}
    write_json(out / "results.json", result)
    plot_rd(curves, targets, codecs, "psnr", out / "rd_psnr.png", len(names))
    plot_rd(curves, targets, codecs, "ms_ssim", out / "rd_msssim.png", len(names))
    if any(grid.values()):
        write_grid(out / f"grid_{grid_bpp:g}.png", images, grid)
    write_summary(out / "summary.md", result, ".")  # figures sit next to the summary
    log(
        f"wrote {out}/results.json ({len(rows)} rows), rd_psnr.png, rd_msssim.png, grid_{grid_bpp:g}.png, summary.md "
        f"in {config['wall_s']:.0f} s"
    )
    return result


def _progress_line(name: str, t: float, rows: list[dict], codecs, budget: int, dt: float) -> str:
    def get(m):
        return next((r for r in rows if r["method"] == m and r["image"] == name and r["target_bpp"] == t), None)

    parts = []
    methods = (*OURS, ABLATION) if not codecs else (*(f"{c}@best" for c in codecs), ENVELOPE)
    for m in methods:
        r = get(m)
        if r is None:
            continue
        if r["status"] != "ok":
            parts.append(f"{m} {r['status']}")
        elif m in OURS:
            parts.append(f"{m} {r['bytes']}B {r['bpp']:.4f}bpp s={r['scale']:.2f} {r['psnr']:.2f}dB")
        elif m == ENVELOPE:
            parts.append(f"envelope {r['source']} {r['psnr']:.2f}dB")
        else:
            parts.append(f"{m.split('@')[0]} {r['psnr']:.2f}")
    when = "" if dt is None else f" ({dt:.1f} s)"
    return f"{name} {t:<6g} budget {budget}B{when}: " + " | ".join(parts)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="assr-eic bench", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench/results", help="output folder (default: bench/results)")
    p.add_argument("--model", help="model file (default: the shipped model)")
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke test: {QUICK_IMAGES} images, targets {', '.join(f'{t:g}' for t in QUICK_TARGETS)}",
    )
    p.add_argument("--set", choices=("kodak", "mpx"), default="kodak",
                   help="evaluation set: the five 512x384 Kodak crops, or the eight 1024x1024 held-out pictures")
    p.add_argument("--data", default=".cache/data", help="where the evaluation sets are cached (fetched if missing)")
    p.add_argument("--images", help="comma-separated image names (default: the whole set, or two with --quick)")
    p.add_argument("--targets", help="comma-separated target bpp values (default: 0.005 ... 0.3)")
    p.add_argument("--codecs", help="comma-separated classical codecs (default: every available one)")
    p.add_argument("--scales", help="comma-separated classical downscale factors (default: 1,1.5,2,3,4,6)")
    p.add_argument(
        "--ours",
        default="av1,av1-fast,av1-best,learned",
        help="our base codecs to run, with -fast or -best for rate control's other efforts "
        "(default: av1,av1-fast,av1-best,learned)",
    )
    p.add_argument("--cache", default=".cache/bench/classical.json", help="classical-codec cache ('none': off)")
    p.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="worker processes for the classical codecs (1: inline)"
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads for the quality runs (default: 1)")
    p.add_argument("--speed-bpp", type=float, default=SPEED_BPP, help="target bpp of the speed/memory runs")
    p.add_argument(
        "--speed-methods",
        help="comma-separated methods for the speed runs; ours-X/1t limits torch to 1 thread, METHOD=BPP runs it "
        "at another target (default: ours-av1, ours-av1/1t, ours-av1-fast, ours-av1-best, ours-learned, "
        "ours-learned/1t, every classical codec, then the three ours-av1 efforts at 0.02, 0.1 and 0.2 bpp)",
    )
    p.add_argument("--no-speed", action="store_true", help="skip the speed and memory subprocesses")
    p.add_argument("--speed-worker", help=argparse.SUPPRESS)
    p.add_argument("--image", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.speed_worker:
        print(json.dumps(nan_to_none(speed_worker(args.speed_worker, args.image, args.speed_bpp, args.model))))
        return 0
    import torch

    threads = torch.get_num_threads()
    try:
        run(args)
    finally:  # run() limits torch's threads; give the caller (a test session, say) its setting back
        torch.set_num_threads(threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

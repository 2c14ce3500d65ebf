"""Coverage-guided fuzzing of the ``.assr`` parser and decoders with atheris (libFuzzer), for a set time.

    python bench/fuzz_bitstream.py --seconds 600 --out bench/results/fuzz

The property: any byte string either decodes (with the shipped model) or raises the one documented
error, :class:`assr_eic.bitstream.BitstreamError`. Any other exception is a crash (saved with its
traceback); an input that runs longer than ``--input-timeout`` seconds is a hang, caught by libFuzzer's
own timer (a C signal handler, so it also fires on a deadlock inside native code, where a Python alarm
never runs) and saved as ``libfuzzer-timeout-*``; native crashes and out-of-memory are saved likewise.

The corpus is seeded with real ``.assr`` files of both base codecs (with and without a prompt) and the
hostile regression corpus (``tests/data/hostile/``, valid-CRC files from ``bench/hostile.py``). The
first byte of every fuzz input is a mode: bit 0 recomputes the CRC-32 and bit 1 writes the loaded
model's fingerprint before parsing, so mutations reach the deeper layers (payload parsing, AV1
decoding with dav1d, the checked rANS decoder, the learned codec's synthesis, the SR decoder) instead
of stopping at the CRC check. Fuzzing runs in child processes (restarted if libFuzzer stops on a
finding); the parent writes ``fuzz.json``: inputs tried, crashes, hangs, peak RSS, coverage.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import resource
import subprocess
import sys
import time
import traceback
import zlib
from pathlib import Path

MODE_FIX_CRC, MODE_FINGERPRINT = 1, 2


def prepare(data: bytes, fingerprint: bytes) -> bytes:
    """Fuzz input (mode byte + file) -> the bytes handed to the parser."""
    if not data:
        return b""
    mode, body = data[0], bytearray(data[1:])
    if mode & MODE_FINGERPRINT and len(body) >= 6:
        body[3:6] = fingerprint
    if mode & MODE_FIX_CRC and len(body) >= 4:
        body[-4:] = zlib.crc32(bytes(body[:-4])).to_bytes(4, "little")
    return bytes(body)


def make_seeds(corpus: Path) -> list[Path]:
    """Real .assr files of both codecs, each with every mode byte."""
    import numpy as np
    import torch
    from PIL import Image

    from assr_eic.bitstream import quantize_quality, quantize_scale
    from assr_eic.model import load_model
    from assr_eic.pipeline import encode_at, to_tensor

    kodak = Path(__file__).resolve().parents[1] / ".cache" / "data" / "kodak"
    if (kodak / "kodim03.png").is_file():
        img = np.asarray(Image.open(kodak / "kodim03.png").convert("RGB"))[:256, :320]
    else:  # a smooth synthetic image
        yy, xx = np.mgrid[0:256, 0:320]
        img = np.stack([(xx % 256), (yy % 256), ((xx + yy) // 3) % 256], -1).astype(np.uint8)
    model = load_model()
    x = to_tensor(img)
    files = []
    for codec, s, q, prompt in [
        ("av1", 4.0, 0.3, None),
        ("av1", 2.5, 0.6, "a lighthouse"),
        ("av1", 8.0, 0.0, None),
        ("learned", 4.0, 0.5, None),
        ("learned", 2.0, 0.8, "ü" * 30),
        ("learned", 8.0, 0.1, None),
    ]:
        with torch.inference_mode():
            sc, qc = quantize_scale(s), quantize_quality(q)
            data = encode_at(model, x, codec, sc, qc, prompt, reconstruct_lowres=False).data
        for mode in (0, MODE_FIX_CRC | MODE_FINGERPRINT):
            p = corpus / f"seed-{codec}-{s:g}-{q:g}-{mode}.bin"
            p.write_bytes(bytes([mode]) + data)
            files.append(p)
    # and the hostile regression corpus (tests/data/hostile/, bench/hostile.py): valid-CRC files that reach
    # every decoder, the CRC fixed again after each mutation
    for f in sorted((Path(__file__).resolve().parent.parent / "tests" / "data" / "hostile").rglob("*.assr")):
        p = corpus / f"hostile-{f.stem}.bin"
        p.write_bytes(bytes([MODE_FIX_CRC]) + f.read_bytes())
        files.append(p)
    return files


def child(args: argparse.Namespace, libfuzzer_argv: list[str]) -> None:
    """Runs inside the libFuzzer process: instrument the library, then fuzz TestOneInput."""
    import atheris

    with atheris.instrument_imports(include=["assr_eic"]):
        import assr_eic.codec.av1
        import assr_eic.codec.learned
        import assr_eic.codec.rans
        import assr_eic.sr  # noqa: F401 - instrumented here, used through decode()
        from assr_eic.bitstream import BitstreamError, parse
        from assr_eic.model import load_model
        from assr_eic.pipeline import decode

    import torch

    torch.set_num_threads(1)
    model = load_model()
    fp = model.fingerprint
    model.learned_net  # noqa: B018 - build it now, not inside the first timed input
    out = Path(args.out)
    stats = {"inputs": 0, "parsed": 0, "decoded": 0, "crashes": [], "slowest_s": 0.0}
    stats_file = out / f"child-{os.getpid()}.json"
    last_write = [0.0]

    def save_stats(force: bool = False) -> None:
        now = time.monotonic()
        if force or now - last_write[0] > 2:
            stats["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            tmp = stats_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(stats))
            os.replace(tmp, stats_file)
            last_write[0] = now

    def record(kind: str, data: bytes, text: str) -> None:
        digest = hashlib.sha1(data).hexdigest()[:16]
        path = out / f"{kind}-{digest}.bin"
        path.write_bytes(data)
        path.with_suffix(".txt").write_text(text)
        stats["crashes"].append(path.name)
        save_stats(force=True)

    def test_one_input(data: bytes) -> None:
        stats["inputs"] += 1
        t = time.monotonic()
        try:
            bs = parse(prepare(data, fp))
            stats["parsed"] += 1
            d = decode(bs, model=model)
            if tuple(d.image.shape[-2:]) != (bs.height, bs.width) or not torch.isfinite(d.image).all():
                raise AssertionError(f"decoded {tuple(d.image.shape)} for a {bs.width}x{bs.height} file")
            stats["decoded"] += 1
        except BitstreamError:
            pass
        except Exception:  # the point: anything but BitstreamError is a finding
            record("crash", data, traceback.format_exc())
        stats["slowest_s"] = max(stats["slowest_s"], time.monotonic() - t)
        save_stats()

    atheris.Setup([sys.argv[0], *libfuzzer_argv], test_one_input)
    try:
        atheris.Fuzz()
    finally:
        save_stats(force=True)


def parent(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    corpus = out / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for old in out.glob("child-*.json"):
        old.unlink()
    seeds = make_seeds(corpus)
    t0 = time.monotonic()
    runs, exits, cov, ft, executed, lf_rss = 0, [], None, None, 0, 0
    log = open(out / "libfuzzer.log", "w")
    while (left := args.seconds - (time.monotonic() - t0)) > 5:
        cmd = [
            sys.executable, __file__, "--child", "--out", str(out), "--input-timeout", str(args.input_timeout), "--",
            str(corpus), f"-max_total_time={int(left)}", f"-timeout={int(args.input_timeout)}",
            f"-rss_limit_mb={args.rss_limit_mb}", "-max_len=8192", f"-artifact_prefix={out}/libfuzzer-",
            "-print_final_stats=1",
        ]  # fmt: skip
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
        log.write(proc.stdout)
        log.flush()
        exits.append(proc.returncode)
        for m in re.finditer(r"#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+)", proc.stdout):
            cov, ft = int(m.group(2)), int(m.group(3))
        executed += sum(int(v) for v in re.findall(r"stat::number_of_executed_units:\s+(\d+)", proc.stdout))
        lf_rss = max([lf_rss, *(int(v) for v in re.findall(r"stat::peak_rss_mb:\s+(\d+)", proc.stdout))])
        runs += 1
        if proc.returncode == 0:
            break
    elapsed = time.monotonic() - t0
    children = [json.loads(p.read_text()) for p in out.glob("child-*.json")]
    artifacts = sorted(p.name for p in out.glob("libfuzzer-*"))
    timeouts = [a for a in artifacts if a.startswith("libfuzzer-timeout-")]
    result = {
        "seconds": round(elapsed, 1),
        "inputs_tried": max(executed, sum(c["inputs"] for c in children)),  # libFuzzer's count of executed units
        # counted by the harness, flushed every 2 s (the last seconds of each process are not included):
        "inputs_counted": sum(c["inputs"] for c in children),
        "inputs_parsed": sum(c["parsed"] for c in children),
        "inputs_decoded": sum(c["decoded"] for c in children),
        "crashes": [n for c in children for n in c["crashes"]],
        "hangs": timeouts,
        "libfuzzer_artifacts": artifacts,  # timeout- (hangs), oom-, crash- (native signals) from libFuzzer itself
        "slowest_input_s": round(max((c["slowest_s"] for c in children), default=0.0), 3),
        "peak_rss_mb": round(
            max(
                [lf_rss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024]
                + [c.get("peak_rss_mb", 0.0) for c in children]
            ),
            1,
        ),
        "coverage_edges": cov,
        "coverage_features": ft,
        "corpus_files": len(list(corpus.iterdir())),
        "seed_files": len(seeds),
        "fuzzer_processes": runs,
        "exit_codes": exits,
        "input_timeout_s": args.input_timeout,
        "command": " ".join(["python", "bench/fuzz_bitstream.py", *sys.argv[1:]]),
    }
    (out / "fuzz.json").write_text(json.dumps(result, indent=1))
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=600, help="total fuzzing time")
    p.add_argument("--out", default="bench/results/fuzz", help="output folder (fuzz.json, reproducers, corpus)")
    p.add_argument("--input-timeout", type=float, default=20.0, help="seconds after which one input is a hang")
    p.add_argument("--rss-limit-mb", type=int, default=4096, help="libFuzzer's memory limit per process")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.child:
        child(args, extra)
        return 0
    print(json.dumps(parent(args), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

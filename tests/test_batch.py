"""Folder mode (``assr_eic.batch``): real photos, the real encoder, the CLI in subprocesses."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from assr_eic.image import load_image
from assr_eic.pipeline import compress, decompress

CLI = [sys.executable, "-m", "assr_eic.cli"]
BPP = "0.05"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600)


def _photos() -> list[tuple[str, np.ndarray]]:
    """Crops of scikit-image's photographs, small so that a folder takes seconds."""
    from skimage import data

    return [
        ("astronaut.png", data.astronaut()[40:232, 100:356]),
        ("sub/coffee.png", data.coffee()[100:292, 200:456]),
        ("sub/deeper/chelsea.jpg", data.chelsea()[50:242, 100:356]),
        ("rocket.png", data.rocket()[150:342, 150:406]),
        ("sub/cat2.png", data.chelsea()[0:192, 150:406]),
        ("horse_like.png", data.astronaut()[300:492, 200:456]),
    ]


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d.name))
    return out


def make_folder(root: Path, photos=None) -> Path:
    for rel, img in photos or _photos():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(img)).save(p, quality=95)
    (root / "sub" / "notes.txt").write_text("not an image")
    return root


def summary(out: Path) -> dict[str, dict]:
    rows = json.loads((out / "summary.json").read_text())["files"]
    with open(out / "summary.csv", newline="") as f:
        csv_rows = list(csv.DictReader(f))
    assert [r["input"] for r in csv_rows] == [r["input"] for r in rows]
    for c, j in zip(csv_rows, rows, strict=True):  # the two files say the same
        assert c["status"] == j["status"] and c["bytes"] == ("" if j["bytes"] is None else str(j["bytes"]))
    return {r["input"]: r for r in rows}


@pytest.fixture(scope="module")
def photos_dir(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def reference(photos_dir, model_path) -> dict[str, bytes]:
    """What single-file compress writes for each image: {output path relative to OUT: bytes}."""
    out = {}
    for rel, _ in _photos():
        out[str(Path(rel).with_suffix(".assr"))] = compress(
            load_image(photos_dir / rel), target_bpp=float(BPP), model=model_path
        )
    return out


def outputs(out: Path, ext: str) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob(f"*{ext}"))}


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory, photos_dir, model_path) -> Path:
    out = tmp_path_factory.mktemp("run") / "out"  # does not exist yet: created
    r = cli("compress", str(photos_dir), "-o", str(out), "--bpp", BPP, "--model", model_path, "--workers", "2",
            "--psnr")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "6 of 6 files done" in r.stdout
    return out


def test_folder_equals_single_file_compress(folder_run, reference, photos_dir):
    """Every output byte-identical to single-file compress, the tree mirrored, non-images left out."""
    assert outputs(folder_run, ".assr") == reference
    rows = summary(folder_run)
    assert sorted(rows) == sorted(rel for rel, _ in _photos())
    for rel, row in rows.items():
        f = folder_run / Path(rel).with_suffix(".assr")
        assert row["status"] == "ok" and row["error"] == "" and row["output"] == str(f.resolve())
        assert row["bytes"] == f.stat().st_size
        h, w = load_image(photos_dir / rel).shape[:2]
        assert (row["width"], row["height"]) == (w, h)
        assert row["bpp"] == f.stat().st_size * 8 / (w * h)
        assert row["seconds"] > 0
        dec = decompress(f.read_bytes(), model=summary_model(folder_run))
        ref = load_image(photos_dir / rel).astype(float)
        assert row["psnr"] == pytest.approx(10 * np.log10(255**2 / np.mean((dec - ref) ** 2)), abs=1e-9)
        assert 15 < row["psnr"] < 60
    assert not list(folder_run.rglob("*.tmp")) and not list(folder_run.rglob("*.txt"))


def summary_model(out: Path) -> str:
    return json.loads((out / "summary.json").read_text())["options"]["model"]


def test_folder_decompress_with_originals(tmp_path, folder_run, photos_dir, model_path):
    out = tmp_path / "dec"
    r = cli("decompress", str(folder_run), "-o", str(out), "--model", model_path, "--originals", str(photos_dir))
    assert r.returncode == 0, r.stderr
    rows = summary(out)
    assert len(rows) == 6
    for rel, row in rows.items():
        assert rel.endswith(".assr") and row["status"] == "ok"
        data = (folder_run / rel).read_bytes()
        png = out / Path(rel).with_suffix(".png")
        img = np.asarray(Image.open(png))
        assert np.array_equal(img, decompress(data, model=model_path))
        assert row["bytes"] == len(data) and row["bpp"] == len(data) * 8 / (img.shape[0] * img.shape[1])
        stem = Path(rel).with_suffix("")
        orig = next(p for p in photos_dir.rglob("*") if p.with_suffix("") == photos_dir / stem)
        ref = load_image(orig).astype(float)
        assert row["psnr"] == pytest.approx(10 * np.log10(255**2 / np.mean((img - ref) ** 2)), abs=1e-9)


def test_a_corrupt_image_is_an_error_row_and_exit_2(tmp_path, model_path):
    src = make_folder(tmp_path / "in", _photos()[:2])
    good = (src / "astronaut.png").read_bytes()
    (src / "sub" / "broken.png").write_bytes(good[: len(good) // 3])  # a truncated PNG
    out = tmp_path / "out"
    r = cli("compress", str(src), "-o", str(out), "--bpp", BPP, "--model", model_path)
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("assr-eic compress: error: 1 of 3 files failed (first: sub/broken.png:")
    assert "Traceback" not in r.stderr
    rows = summary(out)
    assert rows["sub/broken.png"]["status"] == "error" and "broken.png" in rows["sub/broken.png"]["error"]
    assert rows["sub/broken.png"]["bytes"] is None and not (out / "sub" / "broken.assr").exists()
    for rel in ("astronaut.png", "sub/coffee.png"):
        assert rows[rel]["status"] == "ok"
        assert rows[rel]["bytes"] == (out / Path(rel).with_suffix(".assr")).stat().st_size


def test_interrupted_run_resumes_losing_and_repeating_nothing(tmp_path, photos_dir, reference, model_path):
    out = tmp_path / "out"
    args = [*CLI, "compress", str(photos_dir), "-o", str(out), "--bpp", BPP, "--model", model_path, "--workers", "1"]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list(out.rglob("*.assr")) and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.05)
    workers = children(p.pid)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "interrupted" in err
    gone = time.monotonic() + 10  # no worker outlives the run (allowing init a moment to reap them)
    while [w for w in workers if Path(f"/proc/{w}").exists()] and time.monotonic() < gone:
        time.sleep(0.1)
    assert workers and not [w for w in workers if Path(f"/proc/{w}").exists()]
    first = {f: (out / f).stat().st_mtime_ns for f in outputs(out, ".assr")}
    assert 1 <= len(first) < 6, "the run was stopped mid-way"
    for f in first:  # whatever exists is complete
        assert (out / f).read_bytes() == reference[f]
    assert not list(out.rglob("*.tmp"))  # no temporary file left by the killed run
    # a stale temporary file, as a hard kill (SIGKILL) in the middle of a write leaves, is removed
    stale = out / "sub" / ".coffee.assr.k1ll3d.tmp"
    stale.parent.mkdir(exist_ok=True)
    stale.write_bytes(b"half a file")
    time.sleep(0.01)
    r = cli("compress", str(photos_dir), "-o", str(out), "--bpp", BPP, "--model", model_path, "--workers", "2")
    assert r.returncode == 0, r.stderr
    assert outputs(out, ".assr") == reference  # none missing, all byte-identical to an uninterrupted run
    assert not stale.exists() and not list(out.rglob("*.tmp"))
    rows = summary(out)
    for f, mtime in first.items():  # the finished files were not recomputed
        assert (out / f).stat().st_mtime_ns == mtime
    done_first = {str(Path(f).with_suffix("")) for f in first}
    for rel, row in rows.items():
        assert row["status"] == ("skipped" if str(Path(rel).with_suffix("")) in done_first else "ok"), rel
        assert row["bytes"] == (out / Path(rel).with_suffix(".assr")).stat().st_size
    # a third run has nothing left to do
    r = cli("compress", str(photos_dir), "-o", str(out), "--bpp", BPP, "--model", model_path)
    assert r.returncode == 0 and "(6 finished earlier)" in r.stdout
    assert all(row["status"] == "skipped" for row in summary(out).values())


def test_same_stem_images_keep_apart(tmp_path, model_path):
    src = tmp_path / "in"
    src.mkdir()
    img = _photos()[0][1]
    Image.fromarray(img).save(src / "a.png")
    Image.fromarray(img[:, ::-1]).save(src / "a.bmp")
    r = cli("compress", str(src), "-o", str(tmp_path / "out"), "--scale", "2", "--quality", "0.5", "--model",
            model_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("*.assr")) == ["a.bmp.assr", "a.png.assr"]


def test_dask_local_cluster_writes_the_same_files(tmp_path, folder_run, photos_dir, model_path):
    """The same per-file function on a Dask LocalCluster of 2 worker processes: byte-identical outputs."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc:
        out = tmp_path / "dask"
        r = cli("compress", str(photos_dir), "-o", str(out), "--bpp", BPP, "--model", model_path, "--psnr",
                "--scheduler", lc.scheduler_address)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert outputs(out, ".assr") == outputs(folder_run, ".assr")
    rows, local = summary(out), summary(folder_run)
    assert {k: (v["bytes"], v["psnr"]) for k, v in rows.items()} == {
        k: (v["bytes"], v["psnr"]) for k, v in local.items()
    }

"""The command line, end to end in subprocesses, including its error exits."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import mounts
import numpy as np
import pytest
from PIL import Image

CLI = [sys.executable, "-m", "assr_eic.cli"]


def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)
    if ok:
        assert p.returncode == 0, p.stderr
    return p


@pytest.fixture(scope="module")
def png(tmp_path_factory, photo) -> Path:
    p = tmp_path_factory.mktemp("cli") / "photo.png"
    Image.fromarray(photo).save(p)
    return p


def test_compress_info_decompress(tmp_path, png, model_path, photo):
    out = tmp_path / "a.assr"
    r = run("compress", str(png), "-o", str(out), "--bpp", "0.05", "--model", model_path, "--prompt", "astronaut")
    assert "bpp" in r.stdout
    info = json.loads(run("info", str(out), "--json").stdout)
    assert info["width"] == 512 and info["height"] == 384 and info["prompt"] == "astronaut"
    assert info["bytes"] == out.stat().st_size and abs(info["bpp"] - 0.05) <= 0.005
    assert info["bpp"] == out.stat().st_size * 8 / (512 * 384)
    text = run("info", str(out)).stdout
    assert "512x384" in text and info["model_fingerprint"] in text
    # the random test model's decoder loses to bicubic, which the file records and info reports
    assert info["upsampling"].startswith("bicubic") and "upsample  bicubic" in text
    dec = tmp_path / "a.png"
    run("decompress", str(out), "-o", str(dec), "--model", model_path)
    img = np.asarray(Image.open(dec))
    assert img.shape == photo.shape
    mse = np.mean((img.astype(float) - photo) ** 2)
    assert 10 * np.log10(255**2 / mse) > 18
    big = tmp_path / "b.png"
    run("decompress", str(out), "-o", str(big), "--size", "1000x700", "--model", model_path)
    assert Image.open(big).size == (1000, 700)


def test_fast_effort(tmp_path, png, model_path):
    """--effort fast reaches the rate control of compress(effort="fast"): the same file, within 10%."""
    from assr_eic.pipeline import compress

    out = tmp_path / "f.assr"
    run("compress", str(png), "-o", str(out), "--bpp", "0.1", "--effort", "fast", "--model", model_path)
    data = out.read_bytes()
    assert abs(len(data) * 8 / (512 * 384) / 0.1 - 1) <= 0.1
    img = np.asarray(Image.open(png).convert("RGB"))
    assert data == compress(img, target_bpp=0.1, model=model_path, effort="fast")


def test_effort_choices_are_rate_controls():
    """The CLI spells the efforts out (so that --help needs no torch); they must be rate control's."""
    from assr_eic.cli import build_parser
    from assr_eic.ratecontrol import EFFORTS

    compress = build_parser()._subparsers._group_actions[0].choices["compress"]
    effort = next(a for a in compress._actions if a.dest == "effort")
    assert tuple(effort.choices) == EFFORTS and effort.default == EFFORTS[0]


def test_scale_quality_mode(tmp_path, png, model_path):
    out = tmp_path / "b.assr"
    run("compress", str(png), "-o", str(out), "--scale", "3", "--quality", "0.5", "--model", model_path)
    info = json.loads(run("info", str(out), "--json").stdout)
    assert info["scale"] == 3.0 and abs(info["quality"] - 0.5) < 0.003


@pytest.fixture(scope="module")
def files(tmp_path_factory, png, model_path) -> dict[str, str]:
    d = tmp_path_factory.mktemp("files")
    junk = d / "junk.bin"
    junk.write_bytes(os.urandom(300))
    good = d / "good.assr"
    run("compress", str(png), "-o", str(good), "--scale", "4", "--quality", "0.2", "--model", model_path)
    corrupt = d / "corrupt.assr"
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0x10
    corrupt.write_bytes(bytes(data))
    return {"junk": str(junk), "good": str(good), "corrupt": str(corrupt)}


@pytest.mark.parametrize(
    "args,message",
    [
        (["compress", "{png}", "-o", "{tmp}/x.assr"], "give --bpp"),
        (["compress", "{png}", "-o", "{tmp}/x.assr", "--scale", "9", "--quality", "0.5"], "scale must be in"),
        (["compress", "{png}", "-o", "{tmp}/x.assr", "--bpp", "0.00001"], "below what"),
        (
            ["compress", "{png}", "-o", "{tmp}/x.assr", "--scale", "2", "--quality", "0.5", "--effort", "fast"],
            "needs --bpp",
        ),  # fmt: skip
        (["compress", "{tmp}/missing.png", "-o", "{tmp}/x.assr", "--bpp", "0.1"], "image not found"),
        (["compress", "{junk}", "-o", "{tmp}/x.assr", "--bpp", "0.1"], "cannot read"),
        (["compress", "{png}", "-o", "{tmp}/x.assr", "--bpp", "0.1", "--model", "{junk}"], "not a readable"),
        (["compress", "{png}", "-o", "{tmp}/nodir/x.assr", "--bpp", "0.1"], "does not exist"),
        (["info", "{junk}"], "not an .assr file"),
        (["info", "{tmp}/missing.assr"], "file not found"),
        (["decompress", "{junk}", "-o", "{tmp}/y.png"], "not an .assr file"),
        (["decompress", "{corrupt}", "-o", "{tmp}/y.png"], "CRC"),
        (["decompress", "{good}", "-o", "{tmp}/y.png"], "written with model"),
        (["decompress", "{good}", "-o", "{tmp}/y.png", "--size", "0x5", "--model", "{model}"], "at least 1x1"),
        (["decompress", "{good}", "-o", "{tmp}/y.png", "--size", "99999x99999", "--model", "{model}"], "at most"),
    ],
)
def test_user_errors_exit_2_with_one_line(tmp_path, png, model_path, files, args, message):
    subs = {"png": str(png), "tmp": str(tmp_path), "model": model_path, **files}
    r = run(*[a.format(**subs) for a in args], ok=False)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert not (tmp_path / "x.assr").exists() and not (tmp_path / "y.png").exists()


def test_existing_output_is_kept_unless_overwrite(tmp_path, png, model_path, files):
    out = tmp_path / "x.assr"
    out.write_bytes(b"precious")
    args = ["compress", str(png), "-o", str(out), "--scale", "4", "--quality", "0.2", "--model", model_path]
    r = run(*args, ok=False)
    assert r.returncode == 2 and r.stderr.strip().endswith(
        "exists; refusing to overwrite it (pass --overwrite to replace it)"
    )
    assert out.read_bytes() == b"precious"
    run(*args, "--overwrite")
    assert out.read_bytes() == Path(files["good"]).read_bytes()  # same image, model and settings
    png_out = tmp_path / "y.png"
    png_out.write_bytes(b"precious")
    r = run("decompress", files["good"], "-o", str(png_out), "--model", model_path, ok=False)
    assert r.returncode == 2 and "refusing to overwrite" in r.stderr and png_out.read_bytes() == b"precious"
    run("decompress", files["good"], "-o", str(png_out), "--model", model_path, "--overwrite")
    assert Image.open(png_out).size == (512, 384)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.assr", "y.png"], "no temporary file left"


@pytest.mark.parametrize("name,message", [("bad\nname.assr", "not allowed"), ("CON.assr", "reserved device name")])
def test_output_names_are_checked_before_any_work(tmp_path, png, name, message):
    r = run("compress", str(png), "-o", str(tmp_path / name), "--bpp", "0.05", ok=False)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []


def _in_mounts(setup: list[str], folder: Path, *args: str) -> tuple[int, str, list[str]]:
    """Run the CLI with ``setup``'s mounts; returns its exit code, its stderr and what the folder holds after."""
    script = 'python -m assr_eic.cli "$@" 2>err; echo "rc=$?"; cat err >&2; ls -A "$FOLDER"'
    env = dict(os.environ, FOLDER=str(folder), PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    r = mounts.run(setup, ["sh", "-c", script, "sh", *args], env=env, cwd=folder.parent)
    rc_line, *listing = r.stdout.splitlines()
    return int(rc_line.removeprefix("rc=")), r.stderr, [x for x in listing if x != ".filler"]


needs_mount = pytest.mark.skipif(not mounts.can_mount(), reason="needs root and mount namespaces (unshare -m)")


@needs_mount
def test_full_disk_is_one_line_and_leaves_nothing(tmp_path, files, model_path):
    folder = tmp_path / "disk"
    rc, err, listing = _in_mounts(
        [mounts.full_disk(folder, 16)], folder, "decompress", files["good"], "-o", str(folder / "y.png"),
        "--model", model_path,
    )  # fmt: skip
    assert rc == 2 and err.strip().count("\n") == 0 and "no space left on the device; nothing was written" in err
    assert listing == []


@needs_mount
def test_read_only_folder_is_one_line_and_keeps_the_old_file(tmp_path, files, model_path):
    folder = tmp_path / "ro"
    rc, err, listing = _in_mounts(
        [mounts.read_only(folder, {"y.png": b"old"})], folder, "decompress", files["good"], "-o", str(folder / "y.png"),
        "--model", model_path, "--overwrite",
    )  # fmt: skip
    assert rc == 2 and err.strip().count("\n") == 0 and "read-only file system; nothing was written" in err
    assert listing == ["y.png"]


def test_file_size_limit_is_one_line_and_leaves_nothing(tmp_path, files, model_path):
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    out = tmp_path / "y.png"
    r = subprocess.run(
        [*CLI, "decompress", files["good"], "-o", str(out), "--model", model_path],
        capture_output=True, text=True, timeout=300, preexec_fn=limit,
    )  # fmt: skip
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "file-size limit" in r.stderr and list(tmp_path.iterdir()) == []


def test_info_text_is_the_file_as_one_line():
    """``info --text`` prints what ComfyUI's ASSR Embedded Bitstream holds: it decodes back to the exact bytes."""
    from assr_eic.bitstream import from_text

    sample = Path(__file__).resolve().parents[1] / "samples" / "chelsea.assr"
    out = run("info", str(sample), "--text").stdout
    assert out.count("\n") == 1 and from_text(out) == sample.read_bytes()


# --- hostile files: refused quietly, and from the headers before torch where the format allows -------


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, png, model_path) -> dict[str, str]:
    """Valid-CRC hostile files of both codecs, written with the test model.

    ``*-header``: refused from the file and codec headers; ``*-payload``: headers fine, the payload
    decoders (dav1d, the checked rANS decoder) refuse them."""
    from assr_eic.bitstream import pack, parse, varint

    d = tmp_path_factory.mktemp("hostile")
    seeds = {}
    for codec in ("av1", "learned"):
        p = d / f"{codec}.assr"
        run("compress", str(png), "-o", str(p), "--codec", codec, "--scale", "4", "--quality", "0.3",
            "--model", model_path)  # fmt: skip
        seeds[codec] = parse(p.read_bytes())
    av1, learned = seeds["av1"], seeds["learned"]
    from assr_eic.codec.obu import padded_size, sequence_header

    ph, pw = padded_size(*av1.lowres_size)
    header = sequence_header(16384, 16384, 0, 0, 8)  # a full payload declaring a 16384 x 16384 frame
    big = b"\x0a" + varint(len(header)) + header + b"\x32" + varint(len(av1.streams[0])) + av1.streams[0][1:]
    files = {
        "av1-header": replace(av1, streams=(big,)),
        "av1-payload": replace(av1, streams=(av1.streams[0][:4],)),
        "learned-header": replace(learned, streams=(learned.streams[0], learned.streams[1][:-1])),
        "learned-payload": replace(learned, streams=(learned.streams[0], b"\x00" * 8)),  # rANS state 0: runs dry
    }
    out = {}
    for name, bs in files.items():
        p = d / f"{name}.assr"
        p.write_bytes(pack(bs))
        out[name] = str(p)
    assert (ph, pw) == (96, 128)
    return out


def replace(bs, **kw):
    import dataclasses

    return dataclasses.replace(bs, **kw)


@pytest.mark.parametrize("name", ["av1-header", "av1-payload", "learned-header", "learned-payload"])
def test_a_hostile_file_is_one_line_on_stderr_and_no_warning(tmp_path, hostile, model_path, name):
    out = tmp_path / "y.png"
    r = run("decompress", hostile[name], "-o", str(out), "--model", model_path, ok=False)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("assr-eic decompress: error: invalid file"), r.stderr
    assert "Warning" not in r.stderr and not out.exists()


@pytest.mark.parametrize("name", ["av1-header", "learned-header"])
def test_header_refusals_never_import_torch(hostile, model_path, name):
    code = (
        "import sys; from assr_eic.cli import main; "
        f"rc = main(['decompress', {hostile[name]!r}, '-o', '/nonexistent-dir-assr/y.png', "
        f"'--model', {model_path!r}]); "
        "print(rc, 'torch' in sys.modules, 'PIL' in sys.modules)"
    )
    # the output folder is checked first: point it at one that exists
    code = code.replace("/nonexistent-dir-assr", str(Path(hostile[name]).parent))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["2", "False", "False"], (r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and "invalid file" in r.stderr


# --- files: special inputs and outputs, and '-' as standard output -------------------------------------


def test_special_inputs_are_named_and_never_read(tmp_path):
    fifo = tmp_path / "pipe.assr"
    os.mkfifo(fifo)
    cases = [
        (str(fifo), "is a FIFO (named pipe), not a regular file"),  # reading it would wait for a writer
        (str(tmp_path), "is a folder, not a regular file"),  # decompress: a folder run, with nothing to do
        ("/dev/zero", "is a character device, not a regular file"),
        ("/proc/self/pagemap", "is a /proc file"),
    ]
    for path, message in cases:
        for cmd in (["info", path], ["decompress", path, "-o", str(tmp_path / "y.png")]):
            r = subprocess.run([*CLI, *cmd], capture_output=True, text=True, timeout=60)
            if cmd[0] == "decompress" and path == str(tmp_path):
                message = "is a folder with no .assr files in its tree: nothing to decompress"
            assert r.returncode == 2 and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe.assr"]


def test_overwrite_never_replaces_a_special_file(tmp_path, files, model_path, png):
    fifo = tmp_path / "out.png"
    os.mkfifo(fifo)
    folder = tmp_path / "dir.png"
    folder.mkdir()
    for target, kind in (("/dev/null", "a character device"), (str(fifo), "a FIFO"), (str(folder), "a folder")):
        r = run("decompress", files["good"], "-o", target, "--model", model_path, "--overwrite", ok=False)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert f"{target} is {kind}" in r.stderr and "refusing to replace it" in r.stderr
    target = tmp_path / "null.assr"
    r = run("compress", str(png), "-o", "/dev/null", "--scale", "4", "--quality", "0.2", "--model", model_path,
            "--overwrite", ok=False)  # fmt: skip
    assert r.returncode == 2 and "/dev/null is a character device" in r.stderr
    import stat

    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)  # still the device
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and folder.is_dir() and not target.exists()


def test_dash_writes_to_standard_output(tmp_path, files, png, model_path):
    args = ["compress", str(png), "--scale", "4", "--quality", "0.2", "--model", model_path]
    r = subprocess.run([*CLI, *args, "-o", "-"], capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout == Path(files["good"]).read_bytes()  # the file's bytes and nothing else
    assert b"bpp" in r.stderr and not (Path.cwd() / "-").exists()
    r = subprocess.run([*CLI, "decompress", files["good"], "-o", "-", "--model", model_path],
                       capture_output=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    (tmp_path / "y.png").write_bytes(r.stdout)
    ref = tmp_path / "ref.png"
    run("decompress", files["good"], "-o", str(ref), "--model", model_path)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "y.png")), np.asarray(Image.open(ref)))


def test_dash_is_refused_when_standard_output_is_a_terminal(files, model_path):
    main, sub = os.openpty()
    try:
        r = subprocess.run([*CLI, "decompress", files["good"], "-o", "-", "--model", model_path],
                           stdout=sub, stderr=subprocess.PIPE, text=True, timeout=120)  # fmt: skip
    finally:
        os.close(sub)
        os.close(main)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "refusing to write binary data to a terminal" in r.stderr

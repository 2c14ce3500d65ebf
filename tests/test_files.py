"""assr_eic.files: atomic, never-overwriting writes, sanitised names and confined loads, on real file
systems (a full tmpfs, a read-only tmpfs and a file-size limit, in child processes; nothing faked)."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import resource
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import mounts
import pytest

from assr_eic.files import (
    MAX_NAME_BYTES,
    FileError,
    OutputExistsError,
    atomic_write_bytes,
    confined_path,
    is_inside,
    read_limited,
    sanitize_name,
    split_prefix,
    unique_path,
    write_new,
)

needs_mount = pytest.mark.skipif(not mounts.can_mount(), reason="needs root and mount namespaces (unshare -m)")


class TestNames:
    @pytest.mark.parametrize("name,clean", [("photo", "photo"), ("  café 1.assr ", "café 1.assr"), ("a_b-c", "a_b-c")])
    def test_ordinary_names_pass(self, name, clean):
        assert sanitize_name(name) == clean

    def test_nfc_normalised(self):
        assert sanitize_name("cafe\u0301") == "caf\u00e9"

    @pytest.mark.parametrize(
        "name,message",
        [
            ("", "is empty"),
            ("   ", "is empty"),
            (".", "is not a name"),
            ("..", "is not a name"),
            ("a/b", "path separator"),
            ("a\\b", "path separator"),
            ("a\x00b", "not allowed"),
            ("line\nbreak", "not allowed"),
            ("esc\x1b[31m", "not allowed"),
            ("evil\u202egnp.exe", "not allowed"),  # right-to-left override hides the real extension
            ("a:b", "not allowed"),
            ("what?", "not allowed"),
            ("dots.", "ends with a dot"),
            ("CON", "reserved device name"),
            ("nul.txt", "reserved device name"),
            ("Com1.assr", "reserved device name"),
            ("lpt9", "reserved device name"),
            ("x" * (MAX_NAME_BYTES + 1), f"at most {MAX_NAME_BYTES}"),
            ("é" * (MAX_NAME_BYTES // 2 + 1), f"at most {MAX_NAME_BYTES}"),  # bytes, not characters
        ],
    )
    def test_bad_names_are_refused(self, name, message):
        with pytest.raises(FileError, match=message):
            sanitize_name(name)

    def test_longest_allowed_name(self):
        assert sanitize_name("x" * MAX_NAME_BYTES) == "x" * MAX_NAME_BYTES

    @pytest.mark.parametrize(
        "prefix,parts",
        [("ASSR", ([], "ASSR")), ("assr/photo", (["assr"], "photo")), ("a//b/./c", (["a", "b"], "c"))],
    )
    def test_prefix_split(self, prefix, parts):
        assert split_prefix(prefix) == parts

    @pytest.mark.parametrize("prefix", ["../x", "/tmp/x", "a/../../x", "C:/x", "a\\..\\..\\x", "a/ .. /x"])
    def test_prefix_leading_out(self, prefix):
        with pytest.raises(FileError, match="points outside the output folder"):
            split_prefix(prefix)

    @pytest.mark.parametrize("prefix,message", [("", "empty"), ("a/CON", "reserved"), ("a/b\x07", "not allowed")])
    def test_prefix_bad_parts(self, prefix, message):
        with pytest.raises(FileError, match=message):
            split_prefix(prefix)


@pytest.fixture
def tree(tmp_path) -> dict[str, Path]:
    """root/ with a file, a subfolder, an inside symlink, and symlinks (file and folder) leading out."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "a.assr").write_bytes(b"inside")
    (root / "sub" / "b.assr").write_bytes(b"inside sub")
    (outside / "secret.assr").write_bytes(b"outside")
    (root / "link-in.assr").symlink_to(root / "sub" / "b.assr")
    (root / "link-out.assr").symlink_to(outside / "secret.assr")
    (root / "dir-out").symlink_to(outside, target_is_directory=True)
    (root / "sub" / "rel-out.assr").symlink_to("../../outside/secret.assr")
    return {"root": root, "outside": outside}


class TestConfined:
    @pytest.mark.parametrize(
        "name,content", [("a.assr", b"inside"), ("sub/b.assr", b"inside sub"), ("link-in.assr", b"inside sub")]
    )
    def test_inside(self, tree, name, content):
        p = confined_path(tree["root"], name, "the test folder")
        assert p.read_bytes() == content and is_inside(p, tree["root"])

    @pytest.mark.parametrize(
        "name", ["../outside/secret.assr", "link-out.assr", "dir-out/secret.assr", "sub/rel-out.assr", "sub/../../x"]
    )
    def test_escapes_are_refused(self, tree, name):
        with pytest.raises(FileError, match="resolves to a place outside the test folder"):
            confined_path(tree["root"], name, "the test folder")

    @pytest.mark.parametrize("name,message", [("missing.assr", "not a file"), ("sub", "not a file"), ("", "no file")])
    def test_missing_and_folders(self, tree, name, message):
        with pytest.raises(FileError, match=message):
            confined_path(tree["root"], name, "the test folder")

    def test_absolute_is_refused_even_inside(self, tree):
        with pytest.raises(FileError, match="absolute path"):
            confined_path(tree["root"], str(tree["root"] / "a.assr"), "the test folder")

    def test_several_roots(self, tree, tmp_path):
        other = tmp_path / "other"
        other.mkdir()
        (other / "c.safetensors").write_bytes(b"c")
        assert confined_path([tree["root"], other], "c.safetensors").read_bytes() == b"c"

    def test_root_itself_a_symlink(self, tree, tmp_path):
        alias = tmp_path / "alias"
        alias.symlink_to(tree["root"], target_is_directory=True)
        assert confined_path(alias, "a.assr").read_bytes() == b"inside"
        with pytest.raises(FileError, match="outside"):
            confined_path(alias, "link-out.assr")

    def test_read_limited(self, tree):
        assert read_limited(tree["root"] / "a.assr", 6) == b"inside"
        with pytest.raises(FileError, match=r"is 10 bytes, too large .* \(at most 9\)"):
            read_limited(tree["root"] / "sub" / "b.assr", 9)
        with pytest.raises(FileError, match="file not found"):
            read_limited(tree["root"] / "nope", 10)


def leftovers(folder: Path) -> list[str]:
    return sorted(p for p in os.listdir(folder) if p.endswith(".tmp"))


class TestAtomicWrite:
    def test_writes_exact_bytes_readable_by_others(self, tmp_path):
        data = os.urandom(100_000)
        p = atomic_write_bytes(tmp_path / "x.bin", data)
        assert p.read_bytes() == data and stat.S_IMODE(p.stat().st_mode) == 0o644
        assert leftovers(tmp_path) == []

    def test_never_overwrites_unless_asked(self, tmp_path):
        p = tmp_path / "x.bin"
        p.write_bytes(b"old")
        with pytest.raises(OutputExistsError, match="exists; refusing to overwrite"):
            atomic_write_bytes(p, b"new")
        assert p.read_bytes() == b"old"
        atomic_write_bytes(p, b"new", overwrite=True)
        assert p.read_bytes() == b"new" and leftovers(tmp_path) == []

    def test_overwrite_replaces_a_symlink_not_its_target(self, tmp_path):
        target = tmp_path / "target.bin"
        target.write_bytes(b"keep me")
        link = tmp_path / "out.bin"
        link.symlink_to(target)
        with pytest.raises(OutputExistsError):
            atomic_write_bytes(link, b"x")
        atomic_write_bytes(link, b"new", overwrite=True)
        assert not link.is_symlink() and link.read_bytes() == b"new" and target.read_bytes() == b"keep me"

    def test_dangling_symlink_counts_as_existing(self, tmp_path):
        (tmp_path / "out.bin").symlink_to(tmp_path / "nowhere")
        with pytest.raises(OutputExistsError):
            atomic_write_bytes(tmp_path / "out.bin", b"x")
        assert not (tmp_path / "nowhere").exists()

    @pytest.mark.parametrize("name,message", [("a\nb.png", "not allowed"), ("nul.png", "reserved")])
    def test_bad_names(self, tmp_path, name, message):
        with pytest.raises(FileError, match=message):
            atomic_write_bytes(tmp_path / name, b"x")
        assert os.listdir(tmp_path) == []

    def test_missing_folder(self, tmp_path):
        with pytest.raises(FileError, match="output folder does not exist"):
            atomic_write_bytes(tmp_path / "no" / "x.bin", b"x")


def _writer(folder: str, tag: int, n: int) -> None:
    for i in range(n):
        write_new(folder, "race", ".assr", f"{tag}:{i}".encode())


class TestNumbered:
    def test_counter_like_save_image(self, tmp_path):
        (tmp_path / "shot_00007_.assr").write_bytes(b"someone else's")
        (tmp_path / "other_00042_.assr").write_bytes(b"another stem")
        assert unique_path(tmp_path, "shot", ".assr").name == "shot_00008_.assr"
        names = [write_new(tmp_path, "shot", ".assr", bytes([i])).name for i in range(3)]
        assert names == ["shot_00008_.assr", "shot_00009_.assr", "shot_00010_.assr"]
        assert (tmp_path / "shot_00007_.assr").read_bytes() == b"someone else's"
        assert [(tmp_path / n).read_bytes() for n in names] == [b"\0", b"\1", b"\2"]
        assert leftovers(tmp_path) == []

    def test_racing_processes_never_overwrite(self, tmp_path):
        ctx = multiprocessing.get_context("fork")
        procs = [ctx.Process(target=_writer, args=(str(tmp_path), t, 15)) for t in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert all(p.exitcode == 0 for p in procs)
        contents = sorted(p.read_bytes().decode() for p in tmp_path.glob("race_*_.assr"))
        assert contents == sorted(f"{t}:{i}" for t in range(4) for i in range(15)), "every write kept, none lost"
        assert leftovers(tmp_path) == []

    @pytest.mark.parametrize("stem,ext", [("../x", ".assr"), ("ok", "assr"), ("ok", ".a/b")])
    def test_bad_stem_or_extension(self, tmp_path, stem, ext):
        with pytest.raises(FileError):
            write_new(tmp_path, stem, ext, b"x")


# --- real failing file systems, in child processes ------------------------------------------------

CHILD = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    from assr_eic.files import FileError, atomic_write_bytes, write_new
    folder, mode, size = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    old = folder / "old.bin"
    try:
        if mode == "new":
            write_new(folder, "shot", ".assr", b"n" * size)
        else:
            dest = old if mode == "overwrite" else folder / "fresh.bin"
            atomic_write_bytes(dest, b"n" * size, overwrite=mode == "overwrite")
        error = None
    except FileError as e:
        error = str(e)
    listing = sorted(os.listdir(folder))
    print(json.dumps({"error": error, "listing": listing,
                      "old": old.read_bytes().decode() if old.exists() else None}))
    """
)


def child(argv_prefix: list[str], setup: list[str], folder: Path, mode: str, size: int, **kw) -> dict:
    cmd = [sys.executable, "-c", CHILD, str(folder), mode, str(size)]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    if setup:
        r = mounts.run(setup, cmd, env=env)
    else:
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, **kw)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@needs_mount
class TestFullDisk:
    @pytest.mark.parametrize("mode", ["new", "fresh"])
    def test_full_disk_is_one_clear_error_and_leaves_nothing(self, tmp_path, mode):
        folder = tmp_path / "disk"
        out = child([], [mounts.full_disk(folder, 16, fill=False)], folder, mode, 64 * 1024)
        assert "no space left on the device; nothing was written" in out["error"]
        assert out["listing"] == []

    def test_failed_overwrite_keeps_the_old_file(self, tmp_path):
        folder = tmp_path / "disk"
        setup = [mounts.full_disk(folder, 64, fill=False), f"head -c 40000 /dev/zero | tr '\\0' o > {folder}/old.bin"]
        out = child([], setup, folder, "overwrite", 40000)  # old + new do not fit together
        assert "no space left" in out["error"]
        assert out["listing"] == ["old.bin"] and out["old"] == "o" * 40000

    def test_a_small_write_on_a_roomy_tmpfs_works(self, tmp_path):  # the same setup succeeds when it fits
        folder = tmp_path / "disk"
        out = child([], [mounts.full_disk(folder, 64, fill=False)], folder, "new", 1000)
        assert out["error"] is None and out["listing"] == ["shot_00001_.assr"]


@needs_mount
class TestReadOnly:
    @pytest.mark.parametrize("mode", ["new", "fresh", "overwrite"])
    def test_read_only_folder(self, tmp_path, mode):
        folder = tmp_path / "ro"
        out = child([], [mounts.read_only(folder, {"old.bin": b"old"})], folder, mode, 10)
        assert "read-only file system; nothing was written" in out["error"]
        assert out["listing"] == ["old.bin"] and out["old"] == "old"


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))


class TestFileSizeLimit:
    @pytest.mark.parametrize("mode", ["new", "fresh", "overwrite"])
    def test_efbig_is_one_clear_error(self, tmp_path, mode):
        (tmp_path / "old.bin").write_bytes(b"old")
        out = child([], [], tmp_path, mode, 10_000, preexec_fn=_limit_file_size)
        assert "larger than this file system or the process's file-size limit allows" in out["error"]
        assert out["listing"] == ["old.bin"] and out["old"] == "old"


class TestSpecialFiles:
    """Reads are bounded before they start; special files are named, never read, never replaced."""

    def test_special_inputs_are_named_and_never_read(self, tmp_path):
        fifo = tmp_path / "pipe.assr"
        os.mkfifo(fifo)  # opening it for reading would wait for a writer: the test would hang
        for path, kind in [(fifo, "a FIFO (named pipe)"), (tmp_path, "a folder"), ("/dev/zero", "a character device")]:
            with pytest.raises(FileError, match=re.escape(f"is {kind}, not a regular file; refusing to read it")):
                read_limited(path, 1 << 20)

    @pytest.mark.parametrize("path", ["/proc/self/pagemap", "/proc/self/status", "/proc/self/mem"])
    def test_proc_files_are_refused_at_once(self, path):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with pytest.raises(FileError, match="refusing to read it|cannot read"):
            read_limited(path, 1 << 30)
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 16 << 10  # KiB: nothing read
        with pytest.raises(FileError, match="/proc file"):
            read_limited("/proc/self/status", 1 << 30)

    def test_empty_and_exact_files(self, tmp_path):
        (tmp_path / "e").write_bytes(b"")
        (tmp_path / "x").write_bytes(b"12345")
        assert read_limited(tmp_path / "e", 10) == b"" and read_limited(tmp_path / "x", 5) == b"12345"

    def test_a_special_folder_entry_is_named_by_confined_path(self, tmp_path):
        os.mkfifo(tmp_path / "pipe.assr")
        with pytest.raises(FileError, match="'pipe.assr' is not a file in the folder: it is a FIFO"):
            confined_path(tmp_path, "pipe.assr", "the folder")
        other = tmp_path / "other"
        other.mkdir()
        (other / "pipe.assr").write_bytes(b"real")  # a later root's regular file wins
        assert confined_path([tmp_path, other], "pipe.assr").read_bytes() == b"real"

    def test_overwrite_never_replaces_a_special_file(self, tmp_path):
        fifo = tmp_path / "out.bin"
        os.mkfifo(fifo)
        (tmp_path / "dir.bin").mkdir()
        for path, kind in [(fifo, "a FIFO"), (tmp_path / "dir.bin", "a folder"), (Path("/dev/null"), "a character")]:
            with pytest.raises(FileError, match=f"is {kind}.*refusing to replace it"):
                atomic_write_bytes(path, b"data", overwrite=True)
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and (tmp_path / "dir.bin").is_dir()
        assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)
        assert leftovers(tmp_path) == [] and not [p for p in os.listdir("/dev") if p.startswith(".null.")]
        atomic_write_bytes(tmp_path / "plain.bin", b"old")
        atomic_write_bytes(tmp_path / "plain.bin", b"new", overwrite=True)  # a regular file still is replaced
        assert (tmp_path / "plain.bin").read_bytes() == b"new"

"""Real full and read-only file systems for tests, without touching the machine's own mounts.

A command runs in a private mount namespace (``unshare -m``) in which small tmpfs folders are mounted
over given paths: a full disk is a tmpfs of a few KiB filled to the brim, a read-only folder a tmpfs
remounted read-only. Needs root and util-linux; tests skip when that is not available. Other
processes, the test runner included, keep seeing the ordinary folders (they can look inside through
``/proc/<pid>/root`` while the process lives).
"""

from __future__ import annotations

import functools
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path


@functools.cache
def can_mount() -> bool:
    """Whether ``unshare -m`` + ``mount -t tmpfs`` work here (tried once, on a scratch folder)."""
    if not shutil.which("unshare") or not shutil.which("mount"):
        return False
    with tempfile.TemporaryDirectory() as d:
        r = subprocess.run(
            ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=16k tmpfs {shlex.quote(d)}"],
            capture_output=True,
            timeout=30,
        )
    return r.returncode == 0


def full_disk(path: str | Path, size_kb: int = 16, fill: bool = True) -> str:
    """Shell lines: a tmpfs of ``size_kb`` KiB over ``path``, then (``fill``) a file that uses all of it."""
    p = shlex.quote(str(path))
    lines = f"mkdir -p {p} && mount -t tmpfs -o size={size_kb}k,mode=0755 tmpfs {p}"
    if fill:
        lines += f" && (dd if=/dev/zero of={p}/.filler bs=1k count={size_kb * 2} 2>/dev/null; true)"
    return lines


def read_only(path: str | Path, files: dict[str, bytes] | None = None) -> str:
    """Shell lines: a tmpfs over ``path`` holding ``files`` (name -> bytes), then remounted read-only."""
    p = shlex.quote(str(path))
    lines = f"mkdir -p {p} && mount -t tmpfs -o size=64k,mode=0755 tmpfs {p}"
    for name, data in (files or {}).items():
        lines += f" && printf %s {shlex.quote(data.decode('latin-1'))} > {p}/{shlex.quote(name)}"
    return lines + f" && mount -o remount,ro {p}"


def wrap(setup: list[str], argv: list[str]) -> list[str]:
    """``argv`` run (exec'd, so its PID is the one returned by Popen) after ``setup`` shell lines in a
    private mount namespace."""
    script = " && ".join([*setup, 'exec "$@"'])
    return ["unshare", "-m", "sh", "-c", script, "sh", *argv]


def run(setup: list[str], argv: list[str], **kw) -> subprocess.CompletedProcess:
    """Run ``argv`` with the mounts of ``setup`` in place; text output captured."""
    return subprocess.run(wrap(setup, argv), capture_output=True, text=True, timeout=kw.pop("timeout", 300), **kw)

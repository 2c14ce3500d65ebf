"""Safe files: atomic writes that never replace what is there, sanitised names, confined loads.

Every file the project writes (the CLI's outputs, the ComfyUI pack's saved bitstreams, model files)
goes through :func:`atomic_write_bytes` or :func:`write_new`: the bytes go to a temporary file in the
destination folder, are flushed and fsync'ed, and only then get their name (a hard link, which fails if
the name is taken, or a rename when replacing is asked for). A reader never sees half a file; a full
disk, a read-only folder or a file-size limit ends in one :class:`FileError` sentence and leaves
neither a partial file nor the temporary file behind.

Every file the project reads from a user-named place inside an allowed folder goes through
:func:`confined_path`: the path is resolved (symlinks followed) before the containment check, so a
symlink or ``..`` that leads outside the folder is refused.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import tempfile
import unicodedata
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "FileError",
    "OutputExistsError",
    "MAX_NAME_BYTES",
    "atomic_write_bytes",
    "confined_path",
    "is_inside",
    "read_limited",
    "sanitize_name",
    "special_kind",
    "split_prefix",
    "unique_path",
    "write_new",
]

MAX_NAME_BYTES = 200  # one path component, UTF-8; leaves room for a counter and an extension under 255
FORBIDDEN_CHARS = '<>:"|?*'  # refused everywhere so a name means the same file on Linux, macOS and Windows
_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)), *(f"LPT{i}" for i in range(10))}
_COUNTED = re.compile(r"^(?P<stem>.*)_(?P<n>\d{5,})_(?P<ext>\.[^.]+)$")


class FileError(ValueError):
    """A file could not be named, read or written as asked; the message is one sentence that says why."""


class OutputExistsError(FileError):
    """The destination exists and replacing it was not asked for."""


# --- names ----------------------------------------------------------------------------------------


def sanitize_name(name: str, what: str = "file name") -> str:
    """Check one path component and return it NFC-normalised and stripped of surrounding spaces.

    Refused (``FileError``): empty names, ``.``/``..``, path separators, control characters, the
    characters ``<>:"|?*``, trailing dots, Windows device names (``CON``, ``nul.txt``, ``COM1`` ...)
    and names longer than :data:`MAX_NAME_BYTES` bytes of UTF-8.
    """
    if not isinstance(name, str):
        raise FileError(f"the {what} must be text, got {type(name).__name__}")
    clean = unicodedata.normalize("NFC", name).strip()
    if not clean:
        raise FileError(f"the {what} is empty")
    if clean in (".", ".."):
        raise FileError(f"the {what} {name!r} is not a name ('.' and '..' are folders)")
    if "/" in clean or "\\" in clean:
        raise FileError(f"the {what} {name!r} contains a path separator ('/' or '\\')")
    bad = sorted({c for c in clean if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") or c in FORBIDDEN_CHARS})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise FileError(f"the {what} {name!r} contains characters that are not allowed in file names: {shown}")
    if clean.endswith("."):
        raise FileError(f"the {what} {name!r} ends with a dot, which some systems drop")
    if clean.split(".")[0].strip().upper() in _RESERVED:
        raise FileError(f"the {what} {name!r} is a reserved device name on Windows")
    if len(clean.encode("utf-8")) > MAX_NAME_BYTES:
        raise FileError(f"the {what} is {len(clean.encode('utf-8'))} bytes long; at most {MAX_NAME_BYTES} are allowed")
    return clean


def split_prefix(prefix: str, what: str = "filename prefix") -> tuple[list[str], str]:
    """``'assr/photo'`` -> (``['assr']``, ``'photo'``): a relative, '/'-separated prefix split into
    sanitised subfolder names and a sanitised stem. Absolute paths and ``..`` raise ``FileError``
    saying the prefix points outside its folder."""
    if not isinstance(prefix, str) or not prefix.strip():
        raise FileError(f"the {what} is empty; give a name such as ASSR or assr/photo")
    text = prefix.strip().replace("\\", "/")
    parts = [p for p in text.split("/") if p.strip() not in ("", ".")]
    if text.startswith("/") or re.match(r"^[A-Za-z]:", text) or ".." in (p.strip() for p in parts):
        raise FileError(f"the {what} {prefix!r} points outside the output folder; use a plain name or a subfolder")
    if not parts:
        raise FileError(f"the {what} {prefix!r} has no file name part")
    clean = [sanitize_name(p, what) for p in parts]
    return clean[:-1], clean[-1]


# --- confined loads -------------------------------------------------------------------------------


def _inside(path: Path, root: Path) -> bool:
    try:
        return os.path.commonpath([path, root]) == str(root)
    except ValueError:  # different drives on Windows
        return False


def is_inside(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """Whether ``path`` lies in folder ``root`` once both are resolved (symlinks followed; the path
    need not exist yet)."""
    return _inside(Path(path).resolve(), Path(root).resolve())


def confined_path(
    roots: str | os.PathLike | Iterable[str | os.PathLike], name: str, label: str = "the allowed folder"
) -> Path:
    """The real path of existing regular file ``name`` (relative, '/'-separated) inside one of ``roots``.

    The candidate is resolved, symlinks included, and must lie inside the resolved root it was joined
    to; otherwise, or if it is not an existing regular file, one ``FileError`` sentence says so.
    """
    if isinstance(roots, (str, os.PathLike)):
        roots = [roots]
    roots = [Path(r) for r in roots]
    if not isinstance(name, str) or not name.strip():
        raise FileError(f"no file name given; choose a file in {label}")
    if "\x00" in name:
        raise FileError(f"the file name {name!r} contains a NUL character")
    rel = name.replace("\\", "/")
    if rel.startswith("/") or re.match(r"^[A-Za-z]:", rel) or os.path.isabs(name):
        raise FileError(f"{name!r} is an absolute path; only files inside {label} can be loaded")
    escaped, special = False, None
    for root in roots:
        real_root = root.resolve()
        real = (root / rel).resolve()  # follows every symlink on the way, and '..'
        if not _inside(real, real_root):
            escaped = True
            continue
        if real.is_file():
            return real
        if special is None and os.path.lexists(real):  # a folder, FIFO, device or socket: named, never opened
            special = special_kind(os.stat(real).st_mode)
    if special is not None:
        raise FileError(f"{name!r} is not a file in {label}: it is {special}; only regular files can be loaded")
    if escaped:
        raise FileError(
            f"{name!r} resolves to a place outside {label}; only files inside it can be loaded "
            "(symlinks and '..' that lead outside are refused)"
        )
    raise FileError(f"{name!r} is not a file in {label} (was it moved or deleted?)")


_SPECIAL = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def special_kind(mode: int) -> str | None:
    """What a ``st_mode`` is when it is not a regular file ("a folder", "a FIFO (named pipe)", ...), else None."""
    for test, kind in _SPECIAL:
        if test(mode):
            return kind
    return None if stat.S_ISREG(mode) else "not a regular file"


def _virtual_kind(path: Path) -> str:
    real = str(path.resolve())
    for root in ("/proc", "/sys"):
        if real == root or real.startswith(root + "/"):
            return f"a {root} file (the kernel makes its content up as it is read)"
    return "a file whose content is longer than its stated size (a virtual file)"


def read_limited(path: str | os.PathLike, limit: int, what: str = "this kind of file") -> bytes:
    """Read a whole regular file, refusing one larger than ``limit`` bytes before reading it.

    Bounded before the first read: the path is stat'ed first and anything but a regular file (folder,
    FIFO, device, socket) is refused, never opened for reading; the open file is checked again (a swap
    after the check cannot slip another file in) and at most its stated size plus one byte is read, so a
    /proc file that states 0 bytes is refused after one byte."""
    path = Path(path)
    try:
        kind = special_kind(os.stat(path).st_mode)
        if kind is not None:
            raise FileError(f"{path} is {kind}, not a regular file; refusing to read it")
        # O_NONBLOCK: if a FIFO took the file's place after the stat, opening it must not wait for a writer
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            kind = special_kind(st.st_mode)
            if kind is not None:
                raise FileError(f"{path} is {kind}, not a regular file; refusing to read it")
            if st.st_size > limit:
                raise FileError(f"{path} is {st.st_size} bytes, too large to be {what} (at most {limit})")
            data = f.read(st.st_size + 1)
    except FileNotFoundError:
        raise FileError(f"file not found: {path}") from None
    except NotADirectoryError:
        raise FileError(f"file not found: {path} (a part of the path is not a folder)") from None
    except OSError as e:
        raise FileError(f"cannot read {path}: {e.strerror or e}") from None
    if len(data) > st.st_size:
        if st.st_size == 0 or len(data) > limit:
            raise FileError(f"{path} is {_virtual_kind(path)}, not a regular file; refusing to read it")
        raise FileError(f"{path} grew while it was read; refusing a file that changes under us")
    return data


# --- atomic writes --------------------------------------------------------------------------------

_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EROFS: "the folder is on a read-only file system",
    errno.EFBIG: "the file is larger than this file system or the process's file-size limit allows",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "the folder does not exist",
    errno.ENOTDIR: "a part of the path is not a folder",
}


def _write_error(path: Path, e: OSError) -> FileError:
    reason = _REASONS.get(e.errno, e.strerror or str(e))
    return FileError(f"cannot write {path}: {reason}; nothing was written")


def _fsync_dir(folder: Path) -> None:
    """Make the new name durable; some systems cannot open folders, which is not an error."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_with(folder: Path, name: str, data: bytes) -> Path:
    """Write ``data`` to a fresh temporary file in ``folder``, flushed and fsync'ed; removes it on error."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name[:60]}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            view = memoryview(data)
            while view:
                view = view[f.write(view) :]
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes owner-only files; ours are ordinary documents
    except BaseException:
        os.unlink(tmp)
        raise
    return Path(tmp)


def _link_new(tmp: Path, dest: Path) -> None:
    """Give ``tmp``'s content the name ``dest`` without ever replacing a file already there."""
    try:
        os.link(tmp, dest)  # atomic and exclusive: FileExistsError if dest exists, even against a racing writer
    except FileExistsError:
        raise
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.EXDEV, errno.ENOSYS):
            raise
        if os.path.lexists(dest):  # a file system without hard links: check, then rename (best effort)
            raise FileExistsError(errno.EEXIST, "File exists", str(dest)) from None
        os.rename(tmp, dest)


def _checked_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise FileError(f"output folder does not exist: {folder}")


def _check_replaceable(path: Path) -> None:
    """Only a regular file (or a symlink, which is replaced itself) may be overwritten: replacing a device,
    FIFO, socket or folder would turn, say, /dev/null into a regular file."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    kind = None if stat.S_ISLNK(mode) else special_kind(mode)
    if kind is not None:
        raise FileError(f"{path} is {kind}, not a regular file; refusing to replace it")


def atomic_write_bytes(path: str | os.PathLike, data: bytes, overwrite: bool = False) -> Path:
    """Write ``data`` as file ``path`` atomically: temporary file in the same folder, flush, fsync, then
    the final name. An existing file is refused (``FileError``) unless ``overwrite``, and is then
    replaced in one step, but only if it is a regular file (never a device, FIFO, socket or folder).
    On any failure nothing is left: no partial file and no temporary file."""
    path = Path(path)
    sanitize_name(path.name)
    folder = path.parent
    _checked_folder(folder)
    if not overwrite and os.path.lexists(path):
        raise OutputExistsError(f"{path} exists; refusing to overwrite it")
    tmp = None
    try:
        tmp = _temp_with(folder, path.name, data)
        if overwrite:
            _check_replaceable(path)  # as late as it can be: just before the rename
            os.replace(tmp, path)
        else:
            _link_new(tmp, path)
    except FileExistsError:
        raise OutputExistsError(f"{path} exists; refusing to overwrite it") from None
    except OSError as e:
        raise _write_error(path, e) from None
    finally:
        if tmp is not None and os.path.lexists(tmp):
            os.unlink(tmp)
    _fsync_dir(folder)
    return path


def _counted_name(stem: str, counter: int, ext: str) -> str:
    return f"{stem}_{counter:05}_{ext}"


def unique_path(folder: str | os.PathLike, stem: str, ext: str) -> Path:
    """The next numbered name ``<stem>_<NNNNN>_<ext>`` in ``folder``, like ComfyUI's SaveImage: one past
    the highest counter already used for this stem. Only a candidate: :func:`write_new` claims it
    atomically and moves on if another writer took it first."""
    folder = Path(folder)
    used = [0]
    if folder.is_dir():
        for f in os.listdir(folder):
            m = _COUNTED.match(f)
            if m and m["stem"] == stem and m["ext"].lower() == ext.lower():
                used.append(int(m["n"]))
    return folder / _counted_name(stem, max(used) + 1, ext)


def write_new(folder: str | os.PathLike, stem: str, ext: str, data: bytes) -> Path:
    """Write ``data`` under a fresh numbered name (:func:`unique_path`) in ``folder``, atomically and
    without ever replacing a file; returns the path written. Errors as :func:`atomic_write_bytes`."""
    folder = Path(folder)
    stem = sanitize_name(stem, "file name stem")
    if not re.fullmatch(r"\.[A-Za-z0-9]{1,10}", ext):
        raise FileError(f"bad file extension {ext!r}")
    _checked_folder(folder)
    dest = unique_path(folder, stem, ext)
    tmp = None
    try:
        tmp = _temp_with(folder, stem, data)
        for _ in range(10000):
            try:
                _link_new(tmp, dest)
                break
            except FileExistsError:
                taken = int(_COUNTED.match(dest.name)["n"])
                fresh = int(_COUNTED.match(unique_path(folder, stem, ext).name)["n"])
                dest = folder / _counted_name(stem, max(fresh, taken + 1), ext)
        else:
            raise FileError(f"could not find a free file name for {stem!r} in {folder}")
    except OSError as e:
        raise _write_error(dest, e) from None
    finally:
        if tmp is not None and os.path.lexists(tmp):
            os.unlink(tmp)
    _fsync_dir(folder)
    return dest


def read_safetensors(
    path: str | os.PathLike, error: type[Exception], what: str, label: str | None = None
) -> tuple[dict, dict]:
    """(tensors, metadata) of a safetensors file; a missing or unreadable file raises ``error`` with one
    sentence naming ``what`` it is (safetensors itself raises several exception types for a bad header).
    Messages name the file as ``label`` (default: its path; a server passes the name the user chose)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    label = str(path) if label is None else label
    if not path.is_file():
        raise error(f"{what} not found: {label}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        return load_file(str(path)), meta
    except Exception as e:
        raise error(f"{label} is not a readable safetensors file ({e})") from None

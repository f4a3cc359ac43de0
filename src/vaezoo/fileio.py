"""Atomic file writes: a crash, a kill or a full disk mid-write never leaves a half-written file in place.

Every file vaezoo writes goes through :func:`atomic_path`: the bytes go to a temporary file beside the
target, which is synced and renamed over the target only once complete. A write that fails for lack
of space (ENOSPC, EDQUOT, EFBIG) raises :class:`DiskFullError`, which says so, names the file, the
space left on its file system and what was kept.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# What each "no room" errno means, in the words of the error message.
NO_ROOM = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "the file is larger than the file system allows",
}
# torch's and numpy's C writers report a short write without an errno; when the file system has less
# than this left at that moment, the write failed for lack of space.
LOW_SPACE_BYTES = 1 << 20


class DiskFullError(OSError):
    """A write that failed for lack of space; the file it was replacing, if any, is untouched.

    An OSError (``errno`` ENOSPC, EDQUOT or EFBIG, ``filename`` the target), so code that handles
    failed writes keeps handling it; its message says what was kept and how to go on.
    """

    def __init__(self, code: int, path: str | Path, free: int | None, kept: str) -> None:
        super().__init__(code, os.strerror(code), str(path))
        self.path, self.free, self.kept = Path(path), free, kept

    def __reduce__(self) -> tuple:  # OSError pickles its (errno, strerror, filename) args otherwise
        return type(self), (self.errno, self.path, self.free, self.kept)

    def __str__(self) -> str:
        free = "unknown space" if self.free is None else format_bytes(self.free)
        where = mount_point(self.path.parent)
        reason = NO_ROOM.get(self.errno or errno.ENOSPC, self.strerror)
        return f"{reason}: cannot write {self.path} ({free} free on the file system at {where}); {self.kept}"


def format_bytes(count: int) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    size, unit = float(count), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            break
        size /= 1024
    return f"{count} B" if unit == "B" else f"{size:.1f} {unit}"


def free_bytes(directory: Path) -> int | None:
    """Space an unprivileged user may still write on ``directory``'s file system (None if unknown)."""
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


def mount_point(path: Path) -> Path:
    """The mount point of the file system holding ``path`` (its nearest existing ancestor)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def no_room_errno(err: BaseException, directory: Path) -> int | None:
    """The errno if ``err`` (or an exception it arose from) is a write that found no room, else None.

    An error without such an errno (torch's zip writer, numpy's ``tofile``, safetensors) counts as
    ENOSPC when ``directory``'s file system has under :data:`LOW_SPACE_BYTES` left."""
    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno in NO_ROOM:
            return cause.errno
        for code in NO_ROOM:  # an error from Rust or C that only says it in its message
            if os.strerror(code) in str(cause):
                return code
        cause = cause.__cause__ or cause.__context__
    free = free_bytes(directory)
    if isinstance(err, (OSError, RuntimeError)) and free is not None and free < LOW_SPACE_BYTES:
        return errno.ENOSPC
    return None


def default_kept(path: Path) -> str:
    if path.exists():
        return f"the previous {path.name} is intact and no partial file is left"
    return "no partial file is left"


@contextmanager
def atomic_path(path: str | Path, kept: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; on success it is synced to disk and
    renamed over ``path`` (an atomic replace), on any failure it is removed and ``path`` is untouched.

    A failure for lack of space raises :class:`DiskFullError`, whose message ends with ``kept``
    (what the user still has; by default that the previous file, if any, is intact)."""
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except DiskFullError:  # from an inner write: it already says what was kept
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise
    except Exception as err:
        code = no_room_errno(err, path.parent)  # before the temporary file gives its space back
        free = free_bytes(path.parent) if code is not None else None
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        if code is not None:
            raise DiskFullError(code, path, free, kept or default_kept(path)) from err
        raise
    except BaseException:  # KeyboardInterrupt, SystemExit: clean up and go on stopping
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str, kept: str | None = None) -> None:
    """Write ``text`` to ``path`` through :func:`atomic_path`."""
    with atomic_path(path, kept) as tmp:
        tmp.write_text(text)


def cache_root(override: str | None = None) -> Path:
    """Where vaezoo keeps its caches: ``override``, else ``$VAEZOO_CACHE``, else ``~/.cache/vaezoo``."""
    return Path(override or os.environ.get("VAEZOO_CACHE") or "~/.cache/vaezoo").expanduser()


def crc32_of_file(path: Path, offset: int = 0, block: int = 1 << 22) -> int:
    """CRC-32 of ``path``'s bytes from ``offset`` on (a checksum for caches read back later)."""
    crc = 0
    with open(path, "rb") as file:
        file.seek(offset)
        for chunk in iter(lambda: file.read(block), b""):
            crc = zlib.crc32(chunk, crc)
    return crc

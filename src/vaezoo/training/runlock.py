"""One writer per run folder: an exclusive ``flock`` on ``RUN_DIR/.vaezoo.lock``, held for the whole run.

A second ``vaezoo train`` (``--resume``, or a new run that chose the same folder) on a folder that a
live process is writing is refused with a :class:`RunLockedError` naming the folder and that process.
The kernel drops a ``flock`` when the last file descriptor of the lock goes, so a process that dies,
even by ``kill -9``, leaves no lock behind: the file it leaves is overwritten by the next holder.
The file's text (pid, host, start time, command) is only for the message; correctness rests on the
``flock`` alone, so garbage in the file changes nothing.

Distributed runs: exactly one process takes the lock, the one that is global rank 0 before any
worker exists (:func:`takes_run_lock`). Lightning's ``ddp`` launcher runs the ``vaezoo`` command again
for ranks 1..N-1 with ``VAEZOO_RUN_DIR`` set, and those workers must not lock, or they would refuse
the folder their own launcher holds; other nodes' launchers (``NODE_RANK`` > 0) and processes started
by SLURM or torchrun with a non-zero rank skip it too. Worker processes are started with
``close_fds``, so they do not hold the launcher's lock; DataLoader workers forked from the holder do
share it, and since they end within seconds of their parent, so does the lock.

Limits: ``flock`` is per machine on most network file systems (NFS emulates it with POSIX locks on
Linux; some FUSE mounts ignore it). Where the file system does not support it, the run goes ahead
with a warning that nothing stops a second writer.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import sys
import warnings
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType

from vaezoo.config import ConfigError

LOCK_NAME = ".vaezoo.lock"
RUN_DIR_ENV = "VAEZOO_RUN_DIR"  # set for the worker processes Lightning launches, so all share one folder
# Environment variables that give a process's rank under Lightning, torchrun, SLURM and LSF.
RANK_ENVS = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")
RECORD_LIMIT = 4096  # bytes of the lock file read for the message; the rest is ignored
UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL}


class RunLockedError(ConfigError):
    """The run folder is being written by another live process."""


def takes_run_lock(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this process is the one of its run that locks the run folder: global rank 0, before launch.

    Call it before the run sets ``VAEZOO_RUN_DIR`` for its own workers.
    """
    if environ.get(RUN_DIR_ENV):  # a worker its launcher started: the launcher holds the lock
        return False
    return all(environ.get(name, "0").strip() in ("", "0") for name in RANK_ENVS)


def holder_record() -> str:
    """What the lock file says about its holder: pid, host, start time and command, one per line."""
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:500]  # e.g. "vaezoo train --resume ..."
    return f"pid: {os.getpid()}\nhost: {socket.gethostname()}\nstarted: {started}\ncommand: {command}\n"


def describe_holder(text: str) -> str:
    """``pid 123 on host h, started T, running `C` `` from a lock file's text; it is untrusted, so
    only printable characters of known fields are used, and unknown text says so."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        clean = "".join(c for c in value.strip() if c.isprintable())[:200]
        if sep and key in ("pid", "host", "started", "command") and clean:
            fields.setdefault(key, clean)
    if not fields.get("pid", "").isdigit():
        return "a process whose details the lock file does not give"
    where = f" on host {fields['host']}" if "host" in fields else ""
    since = f", started {fields['started']}" if "started" in fields else ""
    running = f", running `{fields['command']}`" if "command" in fields else ""
    return f"pid {fields['pid']}{where}{since}{running}"


class RunLock:
    """``with RunLock(run_dir):`` holds the run folder's lock for the block, or raises RunLockedError.

    The folder must exist. The lock file is removed on release (while still locked, so a waiting
    process that opened the old file sees that it is gone and opens the new one).
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this RunLock")
        while self._fd is None:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = describe_holder(os.pread(fd, RECORD_LIMIT, 0).decode("utf-8", "replace"))
                os.close(fd)
                raise RunLockedError(self._refusal(holder)) from None
            except OSError as err:
                os.close(fd)
                if err.errno not in UNSUPPORTED:
                    raise ConfigError(f"cannot lock {self.path}: {err.strerror}") from None
                warnings.warn(
                    f"{self.run_dir}: the file system does not support locks ({err.strerror}); nothing "
                    "stops a second process from writing this run folder at the same time",
                    stacklevel=2,
                )
                return self
            if self._is_current(fd):
                self._fd = fd
            else:  # its holder removed the file between our open and our lock: take the new one
                os.close(fd)
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, holder_record().encode(), 0)
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.release()

    def _open(self) -> int:
        if not self.run_dir.is_dir():
            raise ConfigError(f"cannot lock {self.run_dir}: it is not a folder")
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise ConfigError(f"cannot lock {self.run_dir}: {err.strerror} ({self.path})") from None

    def _is_current(self, fd: int) -> bool:
        """Whether ``fd`` is still the file at ``self.path`` (not one a releasing holder removed)."""
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            return False
        opened = os.fstat(fd)
        return (on_disk.st_dev, on_disk.st_ino) == (opened.st_dev, opened.st_ino)

    def _refusal(self, holder: str) -> str:
        return (
            f"{self.run_dir} is being written by another vaezoo process ({holder}); two runs in one folder "
            "would overwrite each other's checkpoints. Wait for it to finish or stop it, then run this "
            "again; to train beside it, start a new run (it gets a folder of its own)"
        )

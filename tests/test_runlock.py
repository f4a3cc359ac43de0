"""One writer per run folder: a live holder refuses a second one; a dead one leaves no lock behind."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from vaezoo.config import ConfigError
from vaezoo.training.runlock import LOCK_NAME, RunLock, RunLockedError, takes_run_lock

REPO = Path(__file__).resolve().parents[1]
# Another process that takes the lock, says so, and holds it until it is killed.
HOLDER = (
    "import sys, time; from vaezoo.training.runlock import RunLock; "
    "lock = RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(600)"
)


@pytest.fixture
def holder(tmp_path):
    """A second Python process holding the lock of ``tmp_path / 'run'``; killed (SIGKILL) at the end."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "held"
        yield run_dir, process
    finally:
        process.kill()
        process.wait(timeout=30)


def test_a_live_holder_refuses_a_second_writer_and_a_killed_one_leaves_no_lock(holder):
    run_dir, process = holder
    with pytest.raises(RunLockedError) as refused:
        RunLock(run_dir).acquire()
    message = str(refused.value)
    assert str(run_dir) in message
    assert f"pid {process.pid} on host {socket.gethostname()}, started 20" in message
    assert "Wait for it to finish or stop it" in message
    assert isinstance(refused.value, ConfigError)  # the CLI prints it as a one-line user error

    process.send_signal(signal.SIGKILL)  # no chance to clean up: the file stays, naming the dead pid
    process.wait(timeout=30)
    assert f"pid: {process.pid}" in (run_dir / LOCK_NAME).read_text()
    with RunLock(run_dir) as lock:
        assert lock.held
        record = (run_dir / LOCK_NAME).read_text()
        assert f"pid: {os.getpid()}\n" in record and f"pid: {process.pid}" not in record
    assert not (run_dir / LOCK_NAME).exists()  # a clean release removes the file


def test_the_lock_file_content_is_never_trusted(holder, tmp_path):
    run_dir, _ = holder
    (run_dir / LOCK_NAME).write_bytes(b"\x00\xffpid: x\x1b[2J\n" * 50)  # garbage over a live holder's record
    with pytest.raises(RunLockedError, match="a process whose details the lock file does not give"):
        RunLock(run_dir).acquire()

    free = tmp_path / "free"
    free.mkdir()
    (free / LOCK_NAME).write_text(
        f"pid: {os.getppid()}\nhost: {socket.gethostname()}\n"
    )  # a live pid, no lock
    with RunLock(free) as lock:
        assert lock.held


def test_one_process_cannot_hold_a_folder_twice_and_release_frees_it(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
            RunLock(tmp_path).acquire()
    with pytest.raises(ValueError, match="boom"):
        with RunLock(tmp_path):
            raise ValueError("boom")  # an error inside the run still releases the folder
    with RunLock(tmp_path) as again:
        assert again.held
    with pytest.raises(ConfigError, match="cannot lock .*missing: it is not a folder"):
        RunLock(tmp_path / "missing").acquire()


def test_a_file_system_without_locks_warns_and_goes_on(tmp_path, monkeypatch):
    import errno
    import fcntl

    def unsupported(fd: int, operation: int) -> None:
        raise OSError(
            errno.ENOLCK, "No locks available"
        )  # ENOLCK, as an NFS mount without a lock daemon gives

    monkeypatch.setattr(fcntl, "flock", unsupported)
    with pytest.warns(UserWarning, match="does not support locks .*nothing stops a second process"):
        lock = RunLock(tmp_path).acquire()
    assert not lock.held


@pytest.mark.parametrize(
    ("environ", "locks"),
    [
        ({}, True),  # a single process, or the launcher before it starts its workers
        ({"SLURM_PROCID": "0", "LOCAL_RANK": "0"}, True),
        ({"VAEZOO_RUN_DIR": "/runs/x/version_0"}, False),  # a worker Lightning's launcher started
        ({"LOCAL_RANK": "1"}, False),
        ({"NODE_RANK": "1"}, False),  # the launcher of a second machine
        ({"RANK": "3"}, False),  # torchrun
        ({"SLURM_PROCID": "2"}, False),
    ],
)
def test_only_global_rank_zero_takes_the_lock(environ, locks):
    assert takes_run_lock(environ) is locks

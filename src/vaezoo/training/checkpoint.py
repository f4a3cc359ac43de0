"""Atomic checkpoint writes (Lightning's checkpoint IO) and the check of a checkpoint to resume from;
safe reads are in :mod:`vaezoo.io`."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from vaezoo.fileio import atomic_path
from vaezoo.io import CheckpointError, CodeRefused, load_checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary file in the target folder, fsync, then rename over the target.

    A kill mid-write leaves the previous checkpoint whole; at worst a stray ``.tmp`` file remains.
    A full disk raises :class:`vaezoo.fileio.DiskFullError` naming the checkpoint, the space left
    and the checkpoint ``--resume`` continues from.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        path = Path(path)
        # a file object, not a name: torch's own C++ writer reports a full disk without an errno
        with atomic_path(path, kept=kept_checkpoint(path)) as tmp, open(tmp, "wb") as file:
            torch.save(checkpoint, file)


def run_dir_of(checkpoint: Path) -> Path:
    """The run folder of ``RUN_DIR/checkpoints/x.ckpt`` (the parent folder of a loose file)."""
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent


def kept_checkpoint(path: Path) -> str:
    """What a failed write of ``path`` leaves to resume from, for the error message."""
    last = path.parent / "last.ckpt"
    if last.is_file():
        return (
            f"the previous checkpoint {last} is intact; `vaezoo train --resume {run_dir_of(path)}` "
            "continues from it once there is space"
        )
    return "no checkpoint of this run was written before it, so there is nothing to resume from"


def checksum_failure(path: Path) -> str | None:
    """Why ``path``'s zip records fail their CRC-32 (bytes changed after the save), or None.

    ``torch.load`` does not check them: a flipped bit in a tensor loads as a wrong weight."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        return f"its zip archive cannot be read ({err})"
    return None if bad is None else f"its record {bad} fails its CRC-32 checksum (bytes changed on disk?)"


def intact_checkpoint_error(path: Path) -> str | None:
    """Why ``path`` cannot be trusted (torn or damaged), or None if it is whole; a file whose pickle
    names code is refused outright (:class:`vaezoo.io.CodeRefused`), not described."""
    try:
        load_checkpoint(path, mmap=True)  # tensors mapped, not read: the CRC pass reads them once
    except CodeRefused:
        raise
    except CheckpointError as err:
        return str(err)
    failure = checksum_failure(path)
    return None if failure is None else f"{path} is a damaged checkpoint: {failure}"


def is_intact(path: Path) -> bool:
    """A whole, safe checkpoint to suggest in place of a damaged one."""
    try:
        return intact_checkpoint_error(path) is None
    except CodeRefused:
        return False


def step_of(name: str) -> int:
    found = re.search(r"step(\d+)", name)
    return int(found.group(1)) if found else -1


def check_resume_checkpoint(path: str | Path) -> None:
    """Raise a :class:`CheckpointError` if the checkpoint ``--resume`` would load is torn or damaged.

    The message names the file and the newest intact ``best-*.ckpt`` beside it, with the command that
    puts it in place. Lightning would otherwise fail inside ``fit`` with a zip-reader traceback (a torn
    file) or resume from flipped bytes (a damaged one)."""
    path = Path(path)
    problem = intact_checkpoint_error(path)
    if problem is None:
        return
    candidates = sorted(path.parent.glob("best-*.ckpt"), key=lambda p: step_of(p.name), reverse=True)
    intact = next((p for p in candidates if p != path and is_intact(p)), None)
    if intact is None:
        advice = "no intact best-*.ckpt is beside it either; start a new run"
    else:
        advice = (
            f"the best checkpoint {intact} is intact: `cp {intact} {path}`, then run "
            f"`vaezoo train --resume {run_dir_of(path)}` again to continue from it"
        )
    raise CheckpointError(f"cannot resume from {path}: {problem}; {advice}")

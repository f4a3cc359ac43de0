"""Atomic checkpoint writes and safe checkpoint reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from vaezoo.fileio import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary file in the target folder, fsync, then rename over the target.

    A kill mid-write leaves the previous checkpoint whole; at worst a stray ``.tmp`` file remains.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


class CheckpointError(ValueError):
    """A file that is not a readable vaezoo checkpoint."""


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``: tensors and plain data, never pickled code."""
    path = Path(path)
    if path.is_dir():  # a run folder: take its last checkpoint
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path} is not a readable checkpoint: {err}") from None
    if not isinstance(checkpoint, dict) or "vaezoo" not in checkpoint or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a vaezoo checkpoint (no 'vaezoo' metadata or 'state_dict')")
    return checkpoint

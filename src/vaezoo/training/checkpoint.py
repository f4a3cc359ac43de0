"""Atomic checkpoint writes (Lightning's checkpoint IO); safe reads are in :mod:`vaezoo.io`."""

from __future__ import annotations

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

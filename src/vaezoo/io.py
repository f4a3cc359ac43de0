"""Loading trained models back from checkpoints, safely (``weights_only=True``).

Nothing here imports Lightning: a model loads for inference with torch and vaezoo's models alone.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vaezoo.registry import create_model

if TYPE_CHECKING:
    from vaezoo.models.base import BaseVAE


class CheckpointError(ValueError):
    """A file that is not a readable vaezoo checkpoint."""


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``: tensors and plain data, never pickled code."""
    path = Path(path)
    if path.is_dir():  # a run folder: take its last checkpoint
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):  # torch.save has written zip archives since torch 1.6
        with path.open("rb") as file:
            start = file.read(16)
        if start.startswith(b"PK"):
            raise CheckpointError(
                f"{path} is a damaged checkpoint: its zip archive is incomplete ({path.stat().st_size} bytes; "
                "a copy or a save cut short?)"
            )
        raise CheckpointError(
            f"{path} is not a checkpoint: a torch checkpoint is a zip archive, this file starts with {start!r}"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        what = f": it names {found.group(1)}" if found else ""
        raise CheckpointError(
            f"{path} holds more than tensors and plain data{what}; loading it could run code, so it is refused"
        ) from None
    except Exception as err:
        raise CheckpointError(f"{path} is not a readable checkpoint: {type(err).__name__}: {err}") from None
    if not isinstance(checkpoint, dict) or "vaezoo" not in checkpoint or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a vaezoo checkpoint (no 'vaezoo' metadata or 'state_dict')")
    return checkpoint


def version_note(meta: dict[str, Any]) -> str:
    """' (saved by vaezoo X; this is vaezoo Y)' when the checkpoint comes from another version."""
    from vaezoo import __version__

    saved = meta.get("version")
    return f" (saved by vaezoo {saved}; this is vaezoo {__version__})" if saved != __version__ else ""


@dataclass
class LoadedRun:
    """A model rebuilt from a checkpoint, with what evaluation needs to know about its run."""

    model: BaseVAE  # in eval mode
    config: dict[str, Any]  # the run's saved, resolved config
    checkpoint: Path
    run_dir: Path  # the run folder the checkpoint belongs to (its parent for a loose file)
    global_step: int


def checkpoint_file(path: str | Path) -> Path:
    """A checkpoint file itself, or a run folder's ``checkpoints/last.ckpt``."""
    path = Path(path)
    return path / "checkpoints" / "last.ckpt" if path.is_dir() else path


def load_run(path: str | Path) -> LoadedRun:
    """Rebuild the model saved in a checkpoint (or a run folder's last one), in eval mode."""
    file = checkpoint_file(path)
    checkpoint = load_checkpoint(file)
    meta = checkpoint["vaezoo"]
    saved_by = version_note(meta)
    try:
        model = create_model(meta["model_name"], **meta["model_config"])
    except (KeyError, TypeError, ValueError) as err:  # an unknown model, or arguments it no longer takes
        raise CheckpointError(f"{path}: cannot rebuild its model: {err}{saved_by}") from None
    prefix = "model."
    state = {k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # tensors of other shapes
        first = str(err).strip().splitlines()[-1].strip()
        raise CheckpointError(f"{path}: weights do not fit {meta['model_name']}: {first}{saved_by}") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not fit {meta['model_name']}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}{saved_by}"
        )
    run_dir = file.parent.parent if file.parent.name == "checkpoints" else file.parent
    batches = checkpoint["state_dict"].get("train_batches")  # training batches, even with two optimizers
    step = int(batches) if batches is not None else int(checkpoint.get("global_step", 0))
    return LoadedRun(model.eval(), meta.get("config", {}), file, run_dir, step)


def model_from_checkpoint(path: str | Path) -> tuple[BaseVAE, dict[str, Any]]:
    """The model of a checkpoint (or a run folder's last one) in eval mode, and the run config stored with it."""
    run = load_run(path)
    return run.model, run.config

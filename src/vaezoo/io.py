"""Loading trained models back from checkpoints, safely (``weights_only=True``).

Nothing here imports Lightning: a model loads for inference with torch and vaezoo's models alone.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vaezoo.registry import create_model

if TYPE_CHECKING:
    from vaezoo.models.base import BaseVAE


class CheckpointError(ValueError):
    """A file that is not a readable vaezoo checkpoint."""


class CodeRefused(CheckpointError):
    """A file whose pickle names code (a function or class beyond tensors and plain data): refused."""


def code_refusal(path: str | Path, err: pickle.UnpicklingError) -> CodeRefused:
    """The error for a file that ``torch.load(weights_only=True)`` refused, naming the global it met.

    torch refuses at the first global the pickle names that is not on its allow-list, before
    anything is called, so nothing in the file has run.
    """
    # torch words it "Unsupported global: GLOBAL x.y ..." or, for modules it blocks outright (os,
    # subprocess, ...), "Trying to load unsupported GLOBAL x.y whose module x is blocked"
    found = re.search(r"unsupported global(?:: GLOBAL)? (\S+)", str(err), re.IGNORECASE)
    what = f": it names {found.group(1)}" if found else ""
    return CodeRefused(
        f"{path} holds more than tensors and plain data{what}; loading it could run code, so it is "
        "refused (nothing in it was run)"
    )


@contextmanager
def refusing_code(path: str | Path) -> Iterator[None]:
    """Within the block, a ``weights_only=True`` refusal of ``path`` is a CheckpointError naming it:
    for loaders that are not vaezoo's, e.g. Lightning's ``trainer.fit(ckpt_path=..., weights_only=True)``."""
    try:
        yield
    except pickle.UnpicklingError as err:
        raise code_refusal(path, err) from None


def read_torch_file(path: str | Path, mmap: bool = False) -> Any:
    """What ``torch.save`` wrote to ``path``, read with ``weights_only=True`` (tensors and plain data,
    never pickled code); every failure is a CheckpointError that names the file and says why.

    ``mmap``: map the tensors from the file instead of reading them (to vet a file cheaply).
    """
    path = Path(path)
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
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        raise code_refusal(path, err) from None
    except Exception as err:
        raise CheckpointError(f"{path} is not a readable checkpoint: {type(err).__name__}: {err}") from None


def load_checkpoint(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """Read a vaezoo checkpoint (a file, or a run folder's last one) with :func:`read_torch_file`."""
    path = Path(path)
    if path.is_dir():  # a run folder: take its last checkpoint
        path = path / "checkpoints" / "last.ckpt"
    checkpoint = read_torch_file(path, mmap=mmap)
    if not isinstance(checkpoint, dict) or "vaezoo" not in checkpoint or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a vaezoo checkpoint (no 'vaezoo' metadata or 'state_dict')")
    for key in ("vaezoo", "state_dict"):  # found by tests/test_fuzz.py: other types crashed load_run
        if not isinstance(checkpoint[key], dict):
            raise CheckpointError(
                f"{path} is not a vaezoo checkpoint: its '{key}' is a {type(checkpoint[key]).__name__}, "
                "not a mapping"
            )
    return checkpoint


def check_checkpoint(path: str | Path) -> Path:
    """``path`` if it is a vaezoo checkpoint that ``weights_only=True`` reads whole; else a CheckpointError.

    For a reader that is not vaezoo's, such as Lightning's resume: called first, a file that holds
    code is refused with vaezoo's message before anything is written. Tensors are memory-mapped, not
    read, so a large checkpoint costs little more than its pickle.
    """
    load_checkpoint(path, mmap=True)
    return Path(path)


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
    exported: bool = False  # read from an exported folder (vaezoo.pretrained), not a run's checkpoint


def checkpoint_file(path: str | Path) -> Path:
    """A checkpoint file itself, or a run folder's ``checkpoints/last.ckpt``."""
    path = Path(path)
    return path / "checkpoints" / "last.ckpt" if path.is_dir() else path


def load_run(path: str | Path) -> LoadedRun:
    """Rebuild the model saved in a checkpoint, a run folder's last one, or an exported folder
    (``vaezoo export``), in eval mode."""
    from vaezoo.pretrained import is_pretrained_folder, load_pretrained_run

    if is_pretrained_folder(path):
        return load_pretrained_run(path)
    file = checkpoint_file(path)
    checkpoint = load_checkpoint(file)
    meta = checkpoint["vaezoo"]
    saved_by = version_note(meta)
    try:
        model = create_model(meta["model_name"], **meta["model_config"])
    except (KeyError, TypeError, ValueError) as err:  # an unknown model, or arguments it no longer takes
        raise CheckpointError(f"{path}: cannot rebuild its model: {err}{saved_by}") from None
    saved = checkpoint["state_dict"]
    # the weights' moving average when the run kept one (train.ema_decay), else the trained weights
    prefix = "ema.module." if any(key.startswith("ema.module.") for key in saved) else "model."
    state = {k[len(prefix) :]: v for k, v in saved.items() if k.startswith(prefix)}
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
    try:
        step = int(batches) if batches is not None else int(checkpoint.get("global_step", 0))
    except (TypeError, ValueError, RuntimeError):  # found by tests/test_fuzz.py
        raise CheckpointError(f"{path}: its step count is not a number{saved_by}") from None
    return LoadedRun(model.eval(), meta.get("config", {}), file, run_dir, step)


def model_from_checkpoint(path: str | Path) -> tuple[BaseVAE, dict[str, Any]]:
    """The model of a checkpoint (a run folder's last one, an exported folder) in eval mode, and the
    run config stored with it."""
    run = load_run(path)
    return run.model, run.config

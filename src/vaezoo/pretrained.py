"""Exported model folders, read back: ``vaezoo.from_pretrained(DIR)``.

An exported folder (written by ``vaezoo export``, :mod:`vaezoo.export`) is laid out as a Hugging Face
Hub model repository::

    model.safetensors    the weights (the moving average when the run kept one)
    config.json          model name and constructor arguments, data facts, training facts, versions
    README.md            the model card
    samples.png, reconstructions.png

Nothing in it is a pickle: the weights are safetensors, everything else JSON, Markdown or PNG, so
loading a folder from anyone never runs code from it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vaezoo.io import CheckpointError, LoadedRun, version_note
from vaezoo.registry import UnknownModelError, create_model

if TYPE_CHECKING:
    from vaezoo.models.base import BaseVAE

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
FORMAT = "vaezoo-pretrained"  # config.json's "format"
FORMAT_VERSION = 1


class PretrainedError(CheckpointError):
    """A folder that is not a readable exported vaezoo model; the message names the file and why."""


def is_pretrained_folder(path: str | Path) -> bool:
    """True for a folder holding an exported model (its config.json and weights)."""
    path = Path(path)
    return path.is_dir() and (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def saved_by(config: dict[str, Any]) -> str:
    """' (saved by vaezoo X; this is vaezoo Y)' for a folder exported by another version."""
    return version_note({"version": config.get("vaezoo_version")})


def read_config(folder: Path) -> dict[str, Any]:
    """config.json of an exported folder, checked for what loading needs."""
    file = folder / CONFIG_FILE
    if not file.is_file():
        raise PretrainedError(
            f"{folder} is not an exported vaezoo model: it has no {CONFIG_FILE} (write one with "
            "`vaezoo export RUN_DIR -o DIR`)"
        )
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PretrainedError(f"{file} is not valid JSON: {err}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise PretrainedError(f'{file} is not a vaezoo model config: expected "format": "{FORMAT}"')
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise PretrainedError(
            f"{file} has format_version {config['format_version']}, newer than this vaezoo reads "
            f"({FORMAT_VERSION}){saved_by(config)}; upgrade vaezoo"
        )
    for key, kind in (("model_name", str), ("model_config", dict)):
        if not isinstance(config.get(key), kind):
            raise PretrainedError(f'{file}: "{key}" is missing or not a {kind.__name__}')
    return config


def build_model(config: dict[str, Any], where: Path) -> BaseVAE:
    """The model config.json describes, with fresh weights."""
    try:
        return create_model(config["model_name"], **config["model_config"])
    except (UnknownModelError, TypeError, ValueError) as err:
        raise PretrainedError(f"{where}: cannot rebuild its model: {err}{saved_by(config)}") from None


def load_weights(model: BaseVAE, file: Path, config: dict[str, Any]) -> None:
    """Fill ``model`` with the tensors of ``file``: every one of them, of the same shapes."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    if not file.is_file():
        raise PretrainedError(f"{file} does not exist: the exported folder has no weights")
    try:
        missing, unexpected = load_model(model, str(file), strict=False)
    except SafetensorError as err:
        raise PretrainedError(f"{file} is not a readable safetensors file: {err}") from None
    except RuntimeError as err:  # tensors of other shapes
        first = str(err).strip().splitlines()[-1].strip()
        raise PretrainedError(
            f"{file}: weights do not fit {config['model_name']}: {first}{saved_by(config)}"
        ) from None
    if missing or unexpected:
        raise PretrainedError(
            f"{file}: weights do not fit {config['model_name']}: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}{saved_by(config)}"
        )


def from_pretrained(folder: str | Path, device: str | torch.device = "cpu") -> BaseVAE:
    """The model of an exported folder, on ``device``, in eval mode, ready for ``sample`` /
    ``generate`` / ``encode`` / ``decode``.

    >>> model = vaezoo.from_pretrained("exports/vae-dsprites")  # doctest: +SKIP
    >>> images = model.sample(16, "cpu")  # doctest: +SKIP
    """
    return load_pretrained_run(folder).model.to(device)


def load_pretrained_run(folder: str | Path) -> LoadedRun:
    """An exported folder as a :class:`~vaezoo.io.LoadedRun`, as every command that takes a
    checkpoint reads it: the model, the run's saved config (empty when exported from a bare model)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PretrainedError(f"{folder} is not a folder: from_pretrained reads an exported model's folder")
    config = read_config(folder)
    model = build_model(config, folder / CONFIG_FILE)
    load_weights(model, folder / WEIGHTS_FILE, config)
    training = config.get("training") or {}
    step = training.get("global_step", 0)
    run_config = config.get("run_config") or {}
    return LoadedRun(
        model.eval(),
        run_config,
        folder / WEIGHTS_FILE,
        folder,
        int(step) if isinstance(step, int) else 0,
        exported=True,
    )

"""``vaezoo export``: a trained model as a folder to share, laid out as a Hugging Face Hub model.

The folder (see :mod:`vaezoo.pretrained`, which reads it back) holds ``model.safetensors``,
``config.json`` (model name and constructor arguments, data and training facts, versions), the model
card ``README.md``, a sample and a reconstruction grid, and ``metrics.json`` when the run was
evaluated. Publishing it is one call of ``huggingface_hub``'s, which vaezoo never makes itself::

    from huggingface_hub import upload_folder
    upload_folder(repo_id="you/vae-dsprites", folder_path="exports/vae-dsprites")

The folder is written beside its destination and moved into place whole: an export cut short leaves
no half folder, and with ``overwrite`` the previous export stays until the new one is complete.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vaezoo.fileio import DiskFullError, free_bytes, no_room_errno
from vaezoo.io import CheckpointError, LoadedRun, load_checkpoint, load_run
from vaezoo.pretrained import CARD_FILE, CONFIG_FILE, FORMAT, FORMAT_VERSION, WEIGHTS_FILE
from vaezoo.registry import aliases_of
from vaezoo.text import first_paragraph, first_sentence

if TYPE_CHECKING:
    from vaezoo.data.datamodule import VAEDataModule
    from vaezoo.models.base import BaseVAE

GRID_IMAGES = 64  # images in the card's sample and reconstruction grids
SAMPLES_FILE = "samples.png"
RECONSTRUCTIONS_FILE = "reconstructions.png"
TRAVERSALS_FILE = "traversals.gif"
METRICS_FILE = "metrics.json"


class ExportError(CheckpointError):
    """An export that cannot be written as asked (the destination exists, nothing to export ...)."""


@dataclass
class ExportFacts:
    """What config.json and the card say besides the weights; every part optional."""

    run_config: dict[str, Any] = field(default_factory=dict)  # the run's resolved config
    training: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] | None = None  # the latest metrics.json of `vaezoo evaluate`
    source: str | None = None  # the checkpoint exported


# --------------------------------------------------------------------------- the public calls


def export_model(
    source: str | Path | BaseVAE,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    images: bool = True,
    facts: ExportFacts | None = None,
) -> Path:
    """Write the exported folder of a run folder, a checkpoint, an exported folder or a model.

    ``images``: also write a sample and a reconstruction grid for the card (the reconstructions
    need the run's data; without it, the run's latest grid is copied). ``facts``: for a model given
    as an object, what config.json and the card should say of its data and training.
    """
    out_dir = Path(out_dir)
    check_destination(out_dir, overwrite)
    if isinstance(source, (str, Path)):
        run = load_run(source)
        check_not_the_run(out_dir, run)
        facts = facts or facts_of_run(run)
        model = run.model
    else:
        run, model, facts = None, source, facts or ExportFacts()
    with staging_folder(out_dir) as folder:
        write_weights(model, folder / WEIGHTS_FILE)
        grids = write_grids(model, facts, run, folder) if images else {}
        if facts.evaluation is not None:
            write_json(folder / METRICS_FILE, facts.evaluation)
        write_json(folder / CONFIG_FILE, config_json(model, facts))
        (folder / CARD_FILE).write_text(model_card(model, facts, grids), encoding="utf-8")
    return out_dir


# --------------------------------------------------------------------------- the destination


def check_destination(out_dir: Path, overwrite: bool) -> None:
    """Refuse to replace a non-empty folder (or any file) without ``overwrite``, before any work."""
    if out_dir.is_file() or out_dir.is_symlink() and not out_dir.is_dir():
        raise ExportError(f"{out_dir} is a file; export writes a folder: choose another -o")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise ExportError(f"{out_dir} exists and is not empty; pass --overwrite to replace it")


def check_not_the_run(out_dir: Path, run: LoadedRun) -> None:
    """Refuse a destination that holds the checkpoint being exported: replacing it would delete the
    run (an exported folder may be exported over itself: it is read whole first)."""
    if not run.exported and run.checkpoint.resolve().is_relative_to(out_dir.resolve()):
        raise ExportError(
            f"{out_dir} holds the checkpoint being exported ({run.checkpoint}); export to a folder "
            "outside the run, e.g. -o exports/NAME"
        )


@contextmanager
def staging_folder(out_dir: Path) -> Iterator[Path]:
    """A fresh folder beside ``out_dir`` to write into, moved to ``out_dir`` when the block ends
    without error (replacing the old one only then); removed if it fails."""
    parent = out_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        replaced = parent / f".{out_dir.name}.old-{os.getpid()}"
        if out_dir.exists():
            out_dir.rename(replaced)
        try:
            staging.rename(out_dir)
        except OSError:
            if replaced.exists():
                replaced.rename(out_dir)  # the previous export back in its place
            raise
        shutil.rmtree(replaced, ignore_errors=True)
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        code = None if isinstance(err, DiskFullError) else no_room_errno(err, parent)
        if code is None:
            raise
        kept = f"nothing was exported; {out_dir} is as it was"
        raise DiskFullError(code, err.filename or staging, free_bytes(parent), kept) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


# --------------------------------------------------------------------------- the files


def write_weights(model: BaseVAE, file: Path) -> None:
    """The model's state as safetensors (tensors shared between modules are stored once)."""
    from safetensors.torch import save_model

    save_model(model, str(file), metadata={"format": "pt", "vaezoo_version": vaezoo_version()})


def write_json(file: Path, payload: Any) -> None:
    file.write_text(json.dumps(plain(payload), indent=2, allow_nan=False) + "\n", encoding="utf-8")


def plain(value: Any) -> Any:
    """``value`` as strict JSON can hold it: tuples as lists, NaN and infinities as null, tensors
    and numpy scalars as numbers, paths as strings."""
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # torch / numpy
        return plain(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def config_json(model: BaseVAE, facts: ExportFacts) -> dict[str, Any]:
    """config.json: what :func:`vaezoo.from_pretrained` needs, then what a reader wants to know."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_name": type(model).__name__,
        "model_config": {**model.config, **type(model).training_only_arguments},
        "vaezoo_version": vaezoo_version(),
        "torch_version": torch.__version__.split("+")[0],
        "parameters": sum(p.numel() for p in model.parameters()),
        "data": facts.data,
        "training": facts.training,
        "evaluation": summary_of_evaluation(facts.evaluation),
        "source": facts.source,
        "run_config": facts.run_config,
    }


# --------------------------------------------------------------------------- what a run says of itself


def facts_of_run(run: LoadedRun) -> ExportFacts:
    """Data, training and evaluation facts of a loaded run, from its config, checkpoint and folder."""
    if run.exported:  # re-exporting an export: its config.json has it all
        saved = json.loads((run.run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
        evaluation = run.run_dir / METRICS_FILE
        return ExportFacts(
            run_config=run.config,
            training=saved.get("training") or {},
            data=saved.get("data") or {},
            # a `vaezoo evaluate` of the export itself, else the evaluation exported with it
            evaluation=latest_evaluation(run)
            or (json.loads(evaluation.read_text()) if evaluation.is_file() else None),
            source=saved.get("source"),
        )
    return ExportFacts(
        run_config=run.config,
        training=training_facts(run),
        data=data_facts(run.config, run.model),
        evaluation=latest_evaluation(run),
        source=f"{run.run_dir.name}/{run.checkpoint.relative_to(run.run_dir).as_posix()}"
        if run.checkpoint.is_relative_to(run.run_dir)
        else run.checkpoint.name,
    )


def training_facts(run: LoadedRun) -> dict[str, Any]:
    """Budget, time, settings and final validation losses of the run."""
    train = run.config.get("train", {})
    checkpoint = load_checkpoint(run.checkpoint, mmap=True)
    clock = checkpoint.get("callbacks", {}).get("TrainingClock", {})
    state = checkpoint["state_dict"]
    facts: dict[str, Any] = {
        "global_step": run.global_step,
        "epoch_at_save": checkpoint.get("epoch"),  # 0-based: the epoch the checkpoint was written in
        "train_seconds": clock.get("train_seconds"),  # up to the checkpoint
        "weights": "ema" if any(key.startswith("ema.module.") for key in state) else "trained",
    }
    for key in (
        "optimizer",
        "lr",
        "batch_size",
        "kl_weight",
        "kl_schedule",
        "ema_decay",
        "precision",
        "seed",
    ):
        if key in train:
            facts[key] = train[key]
    summary = run.run_dir / "summary.json"
    if summary.is_file():
        try:
            figures = json.loads(summary.read_text())
        except json.JSONDecodeError:
            figures = {}
        if figures.get("global_step") == checkpoint.get("global_step"):  # the run ended with these weights
            for key in ("epochs", "train_seconds", "val_metrics", "val_recon_mse_per_pixel"):
                if figures.get(key) is not None:
                    facts[key] = figures[key]
    return facts


def data_facts(run_config: dict[str, Any], model: BaseVAE) -> dict[str, Any]:
    """The data the model was trained on, as far as it matters for using it: images of which shape
    and value range. The data's path is left out (it is the trainer's machine's)."""
    data = run_config.get("data", {})
    facts = {key: data[key] for key in ("name", "normalize", "subset") if key in data}
    if takes_vectors(model):
        return {**facts, "kind": "vectors", "features": model.config.get("in_channels")}
    facts["channels"] = model.config.get("in_channels")
    facts["image_size"] = model.config.get("image_size", data.get("image_size"))
    facts["value_range"] = [-1.0, 1.0] if data.get("normalize") == "symmetric" else [0.0, 1.0]
    return facts


def takes_vectors(model: BaseVAE) -> bool:
    """True for a model built on vectors (B, D) (``architecture: mlp``), which has no pictures."""
    shape = getattr(model, "input_shape", None)  # ConvAutoencoder's (C, H, W) or (D,)
    return shape is not None and len(shape) == 1


def latest_evaluation(run: LoadedRun) -> dict[str, Any] | None:
    """The newest metrics.json under the run's evaluation/ folder (``vaezoo evaluate``'s default), if any."""
    found = []
    for file in (run.run_dir / "evaluation").glob("*/metrics.json"):
        try:
            report = json.loads(file.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(report, dict) and isinstance(report.get("metrics"), dict):
            found.append((str(report.get("info", {}).get("date", "")), file.stat().st_mtime, report))
    return max(found, key=lambda item: item[:2])[2] if found else None


def summary_of_evaluation(report: dict[str, Any] | None) -> dict[str, Any] | None:
    """``group/metric`` -> value of an evaluation report, with what it measured."""
    if report is None:
        return None
    info = report.get("info", {})
    metrics = {
        f"{group}/{name}": value
        for group, values in report["metrics"].items()
        if isinstance(values, dict)
        for name, value in values.items()
        if isinstance(value, (int, float))
    }
    return {"global_step": info.get("global_step"), "date": info.get("date"), "metrics": metrics}


# --------------------------------------------------------------------------- the card's pictures


def write_grids(model: BaseVAE, facts: ExportFacts, run: LoadedRun | None, folder: Path) -> dict[str, str]:
    """samples.png and reconstructions.png where they can be made; file name -> what it shows."""
    from vaezoo.images import interleave_rows, make_grid, save_image

    if takes_vectors(model):
        return {}
    value_range = tuple(facts.data.get("value_range", (0.0, 1.0)))
    datamodule = run_data(facts.run_config)
    written: dict[str, str] = {}
    nrow = int(GRID_IMAGES**0.5)
    images = labels = None
    if datamodule is not None:
        images, labels = datamodule.fixed_batch(GRID_IMAGES, split="val")
    torch.manual_seed(0)
    with torch.no_grad():
        if not model.is_conditional or labels is not None:
            try:
                samples = model.sample(GRID_IMAGES, "cpu", labels=labels)
            except NotImplementedError:
                samples = None
            if samples is not None:
                save_image(samples, folder / SAMPLES_FILE, nrow=nrow, value_range=value_range)
                written[SAMPLES_FILE] = "samples from the prior (seed 0)"
        if images is not None:
            recons = model.generate(images, labels=labels)
            grid = make_grid(interleave_rows(images, recons, nrow), nrow=nrow, value_range=value_range)
            save_image(grid, folder / RECONSTRUCTIONS_FILE, padding=0)
            written[RECONSTRUCTIONS_FILE] = "validation images (odd rows) above their reconstructions"
    if RECONSTRUCTIONS_FILE not in written and run is not None:  # no data here: the run's own latest grid
        grids = sorted((run.run_dir / "images").glob("reconstructions_epoch*.png"))
        if grids:
            shutil.copyfile(grids[-1], folder / RECONSTRUCTIONS_FILE)
            written[RECONSTRUCTIONS_FILE] = (
                f"the run's own grid {grids[-1].name} (its data is not on this machine)"
            )
    animations = sorted((run.run_dir / "images").glob("traversals_epoch*.gif")) if run is not None else []
    if animations:  # logging.traversal_gif: the run's last one
        shutil.copyfile(animations[-1], folder / TRAVERSALS_FILE)
        written[TRAVERSALS_FILE] = (
            f"latent traversals of validation images, from the run ({animations[-1].name})"
        )
    return written


def run_data(run_config: dict[str, Any]) -> VAEDataModule | None:
    """The run's data when it can be read here, else None (the card says what it shows instead)."""
    from vaezoo.config import ConfigError
    from vaezoo.data import DataError
    from vaezoo.data.datamodule import datamodule_from_config

    if not run_config.get("data"):
        return None
    try:
        return datamodule_from_config(run_config, "the run's saved config")
    except (DataError, ConfigError, OSError) as err:
        print(f"export: no reconstructions from the run's data ({err})", file=sys.stderr)
        return None


# --------------------------------------------------------------------------- the card


def model_card(model: BaseVAE, facts: ExportFacts, grids: dict[str, str]) -> str:
    """README.md: Hub metadata, then model and paper, use, data, training, evaluation, pictures."""
    name = type(model).__name__
    data, training = facts.data, facts.training
    dataset = data.get("name", "unknown data")
    tags = ["vaezoo", "variational-autoencoder", "pytorch", name.lower()]
    lines = [
        "---",
        "library_name: vaezoo",
        "tags:",
        *(f"- {tag}" for tag in tags),
        "pipeline_tag: unconditional-image-generation",
        "---",
        "",
        f"# {name} on {dataset}",
        "",
        first_sentence(type(model).__doc__ or ""),
        "",
        f"Paper: {paper_of(model)}",
        "",
        "## Use",
        "",
        "```python",
        "import vaezoo",
        "",
        'model = vaezoo.from_pretrained("path/to/this/folder")  # eval mode, on the CPU',
        'images = model.sample(16, "cpu")'
        + ("  # pass labels= (a conditional model)" if model.is_conditional else ""),
        "```",
        "",
        "or `vaezoo sample|reconstruct|evaluate FOLDER` on the command line. The weights are safetensors "
        "and the rest JSON: loading runs no code from this folder.",
        "",
        "## Model",
        "",
        "| | |",
        "|---|---|",
        f"| model | `{name}`" + (f" (also {', '.join(aliases_of(name))})" if aliases_of(name) else "") + " |",
        f"| parameters | {sum(p.numel() for p in model.parameters()):,} |",
        f"| latent dimensions | {getattr(model, 'latent_dim', 'n/a')} |",
        f"| arguments | `{json.dumps(plain(model.config), separators=(', ', ': '))}` |",
        "",
        "## Data",
        "",
        table(
            {
                "dataset": dataset,
                "images": None
                if data.get("kind") == "vectors" or "channels" not in data
                else f"{data.get('channels')} x {data.get('image_size')} x {data.get('image_size')}",
                "vectors": f"{data['features']} features" if data.get("kind") == "vectors" else None,
                "pixel range": data.get("value_range"),
                "subset": data.get("subset"),
            }
        ),
        "## Training",
        "",
        table(
            {
                "batches": training.get("global_step"),
                "epochs": training.get("epochs"),
                "stopped in epoch": None if "epochs" in training else training.get("epoch_at_save"),
                "time": format_seconds(training.get("train_seconds")),
                "weights": {"ema": f"moving average (decay {training.get('ema_decay')})"}.get(
                    training.get("weights", ""), training.get("weights")
                ),
                **{
                    key: training.get(key)
                    for key in ("batch_size", "optimizer", "lr", "kl_weight", "kl_schedule")
                },
                "precision": training.get("precision"),
                "seed": training.get("seed"),
                **{f"final {key}": value for key, value in (training.get("val_metrics") or {}).items()},
                "checkpoint": facts.source,
            }
        ),
        *evaluation_section(facts.evaluation),
        *pictures_section(grids),
        f"Exported with vaezoo {vaezoo_version()}.",
        "",
    ]
    return "\n".join(lines)


def paper_of(model: BaseVAE) -> str:
    """The first paragraph of the model's module docstring: where vaezoo names the paper."""
    module = sys.modules.get(type(model).__module__)
    text = first_paragraph((getattr(module, "__doc__", None) or "").splitlines())
    return text or "see the model's docstring"


def table(rows: dict[str, Any]) -> str:
    """A two-column Markdown table of the rows that have a value, and the blank line after it."""
    body = [f"| {key} | {value} |" for key, value in rows.items() if value not in (None, "", [])]
    return "\n".join(["| | |", "|---|---|", *body, ""])


def format_seconds(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def evaluation_section(report: dict[str, Any] | None) -> list[str]:
    from vaezoo.evaluation.evaluate import format_value

    summary = summary_of_evaluation(report)
    if summary is None:
        return [
            "## Evaluation",
            "",
            "Not evaluated yet (`vaezoo evaluate RUN` before exporting adds it here).",
            "",
        ]
    rows = [f"| {key} | {format_value(float(value))} |" for key, value in summary["metrics"].items()]
    return [
        "## Evaluation",
        "",
        f"`vaezoo evaluate` at batch {summary['global_step']} ({summary['date']}); all figures in metrics.json.",
        "",
        "| metric | value |",
        "|---|---|",
        *rows,
        "",
    ]


def pictures_section(grids: dict[str, str]) -> list[str]:
    if not grids:
        return []
    lines = ["## Pictures", ""]
    for file, what in grids.items():
        lines += [f"![{file}]({file})", "", f"{file}: {what}.", ""]
    return lines


def vaezoo_version() -> str:
    from vaezoo import __version__  # here, not at the top: the package imports this module

    return __version__

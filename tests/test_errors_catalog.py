"""The catalogue of docs/errors.md, case by case: each case builds its fault in a temporary folder
and runs the real entry point (the ``vaezoo`` CLI, in process), and the doc lists exactly these cases.

A case is a row of ``CASES``: an id, the section of docs/errors.md it belongs to, a function that
builds the fault under ``tmp_path`` and returns the command line, verbatim fragments of the message
vaezoo gives (one, or several in the order they appear), and what is left behind (``leaves``).
``test_case`` runs each one and checks:

- the exit code (2 for errors, 0 for a warning) and, for errors, that the last line of stderr is
  ``vaezoo <command>: error: ...`` holding the fragments -- never a traceback;
- that the command writes nothing it should not: with ``NOTHING`` no new file at all outside the
  cache folder (a complete image cache may stay there for the next run; nothing partial), with
  ``RUN_FOLDER`` new files only in the run folder under ``runs/``.

``test_the_doc_lists_exactly_these_cases`` parses the tables of docs/errors.md: every case id is a
row in its section, with its fragments in the message column (each in backticks, joined by " ... ")
and the phrase of its ``leaves`` at the start of the "kept" column, and no row names an id that is
not here.

Adding a case: write its fault function (return the argv), add a ``Case`` to ``CASES`` and a row to
docs/errors.md. A fault that needs a process of its own (a kill, a signal) passes ``run=`` a runner
with the signature of ``run_cli`` returning an ``Outcome`` (``run_subprocess`` starts ``vaezoo`` in
a child process).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import re
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from test_data_cifar import make_cifar10, make_cifar100
from test_data_ground_truth_sets import (
    norb_matrix,
    shapes_values,
    write_cars3d,
    write_mpi3d,
    write_shapes3d,
    write_smallnorb,
)
from test_data_idx import make_idx, write_idx

from vaezoo.cli import main
from vaezoo.config import DataConfig
from vaezoo.data.common import split_indices

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "errors.md"
VAE_YAML = str(REPO / "configs" / "vae.yaml")

BAD_INPUT = "Bad input"
RUN_FAULTS = "Faults during a run"  # the lead's section: kills, preemption, NaN, locks, full disks
SECTIONS = (BAD_INPUT, RUN_FAULTS)

# What a case leaves behind, and the phrase the doc's "kept" column starts with for it.
NOTHING = "nothing"
RUN_FOLDER = "run folder"
KEPT = {NOTHING: "Nothing written", RUN_FOLDER: "The run folder"}


@dataclass(frozen=True)
class Outcome:
    code: int
    stderr: str
    warnings: str = ""  # the warnings raised in process (a child's are in its stderr), one a line


def run_cli(argv: list[str], tmp: Path) -> Outcome:
    """``vaezoo ARGV`` in this process, its stderr and warnings captured."""
    capture = tmp / ".stderr"
    with warnings.catch_warnings(record=True) as caught, open(capture, "w+") as err:
        warnings.simplefilter("always")
        previous, sys.stderr = sys.stderr, err
        try:
            code = main(argv)
        finally:
            sys.stderr = previous
        err.seek(0)
        text = err.read()
    capture.unlink()
    return Outcome(code, text, "".join(f"{w.category.__name__}: {w.message}\n" for w in caught))


def run_subprocess(argv: list[str], tmp: Path) -> Outcome:
    """``vaezoo ARGV`` as a child process (for faults that kill or signal it)."""
    done = subprocess.run(
        [sys.executable, "-m", "vaezoo.cli", *argv], capture_output=True, text=True, cwd=tmp, timeout=600
    )
    return Outcome(done.returncode, done.stderr)


def without_package(package: str, argv: list[str], tmp: Path) -> Outcome:
    """``run_cli`` as on a machine where ``package`` is not installed."""
    real = importlib.util.find_spec
    with mock.patch.object(
        importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a)
    ):
        return run_cli(argv, tmp)


@dataclass(frozen=True)
class Case:
    id: str
    section: str
    fault: Callable[[Path], list[str]]  # builds the fault under tmp, returns the vaezoo argv
    message: str | tuple[str, ...]  # verbatim fragments of what vaezoo says, in order

    @property
    def fragments(self) -> tuple[str, ...]:
        return (self.message,) if isinstance(self.message, str) else self.message

    leaves: str = NOTHING
    code: int = 2  # 2: an error; 0: a warning, and the command goes on
    run: Callable[[list[str], Path], Outcome] = run_cli
    marks: tuple = field(default=())


# --------------------------------------------------------------------------- building faults

TINY = [
    "--model.hidden_dims", "[8, 16]", "--model.latent_dim", "2",
    "--data.image_size", "16", "--train.batch_size", "4", "--train.max_epochs", "1",
    "--logging.progress_bar", "none", "--logging.num_images", "4",
]  # fmt: skip


def train(tmp: Path, *extra: str) -> list[str]:
    """``vaezoo train`` of a tiny model, writing into tmp/runs and tmp/cache."""
    return [
        "train", "-c", VAE_YAML, *TINY,
        "--logging.save_dir", str(tmp / "runs"), "--data.cache_dir", str(tmp / "cache"), *extra,
    ]  # fmt: skip


def noise_png(path: Path, seed: int, size: int = 24) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def image_folder(tmp: Path, n: int = 10) -> Path:
    for i in range(n):
        noise_png(tmp / "images" / f"{i:02d}.png", seed=i)
    return tmp / "images"


def on_folder(folder: Path, *extra: str) -> list[str]:
    return ["--data.name", "image_folder", "--data.path", str(folder), "--data.subset", "null", *extra]


def on_vectors(path: Path, *extra: str) -> list[str]:
    return ["--data.name", "vectors", "--data.path", str(path), "--data.subset", "null", *extra]


def vectors_csv(tmp: Path, bad_cell: str | None = None) -> Path:
    """A CSV of 12 rows of two features under a header; with ``bad_cell`` as row 3's second value."""
    rows = [f"{i / 12:.3f},{1 - i / 12:.3f}" for i in range(12)]
    if bad_cell is not None:
        rows[1] = f"0.5,{bad_cell}"
    (tmp / "points.csv").write_text("\n".join(["a,b", *rows]) + "\n")
    return tmp / "points.csv"


def vectors_with_nan(tmp: Path) -> Path:
    values = np.random.default_rng(0).uniform(size=(12, 3))
    values[4, 2] = np.nan
    np.save(tmp / "points.npy", values)
    return tmp / "points.npy"


def cut(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def not_an_image(tmp: Path) -> list[str]:
    folder = image_folder(tmp)
    (folder / "broken.png").write_bytes(b"definitely not a png")
    return train(tmp, *on_folder(folder))


def truncated_image(tmp: Path) -> list[str]:
    folder = image_folder(tmp)
    cut(noise_png(folder / "cut.png", seed=99, size=200), keep=2000)  # the header survives
    return train(tmp, *on_folder(folder))


def image_bad_mid_epoch(tmp: Path) -> list[str]:
    """A file that passes the start-up header check but cannot be decoded, met by a DataLoader
    worker mid-epoch: the cache folder cannot be written, so images are decoded as they are read."""
    folder = image_folder(tmp, n=11)
    (tmp / "a_file").write_text("")
    names = sorted(p.name for p in folder.iterdir())
    config = DataConfig(val_fraction=0.2)
    for seed in range(100):  # a split with 05.png in training but not first or last (read at start-up)
        config.split_seed = seed
        train_rows, _ = split_indices(config, len(names), "")
        if names.index("05.png") in train_rows[1:-1]:
            break
    cut(noise_png(folder / "05.png", seed=5, size=200), keep=2000)
    return train(
        tmp,
        *on_folder(folder, "--data.val_fraction", "0.2", "--data.split_seed", str(config.split_seed)),
        "--data.num_workers", "2", "--data.cache_dir", str(tmp / "a_file" / "cache"),
    )  # fmt: skip


def image_skipped(tmp: Path) -> list[str]:
    folder = image_folder(tmp)
    (folder / "broken.png").write_bytes(b"definitely not a png")
    return train(tmp, *on_folder(folder), "--data.bad_files", "skip")


def folder_missing(tmp: Path) -> list[str]:
    return train(tmp, *on_folder(tmp / "nowhere"))


def folder_empty(tmp: Path) -> list[str]:
    (tmp / "empty").mkdir()
    (tmp / "empty" / "notes.txt").write_text("no images here")
    return train(tmp, *on_folder(tmp / "empty"))


def idx_folder(tmp: Path, n_train: int = 12, n_test: int = 5) -> Path:
    """A folder of the four MNIST IDX files (test_data_idx's writer), raw."""
    folder = tmp / "mnist"
    make_idx(folder, gz=False, n_train=n_train, n_test=n_test)
    return folder


def on_idx(folder: Path) -> list[str]:
    return ["--data.name", "mnist", "--data.path", str(folder), "--data.subset", "null"]


def empty_training_split(tmp: Path) -> list[str]:
    return train(tmp, *on_idx(idx_folder(tmp, n_train=0)))


def empty_validation_split(tmp: Path) -> list[str]:
    return train(tmp, *on_folder(image_folder(tmp)), "--data.val_fraction", "0")


def idx_bad_magic(tmp: Path) -> list[str]:
    folder = idx_folder(tmp)
    labels = folder / "t10k-labels-idx1-ubyte"
    write_idx(labels, np.zeros((5, 2), np.uint8), gz=False)  # 2 dimensions: magic 0x00000802
    return train(tmp, *on_idx(folder))


def idx_truncated(tmp: Path) -> list[str]:
    folder = idx_folder(tmp)
    cut(folder / "train-images-idx3-ubyte", keep=-10)
    return train(tmp, *on_idx(folder))


def idx_bad_gzip(tmp: Path) -> list[str]:
    folder = idx_folder(tmp)
    images = folder / "t10k-images-idx3-ubyte"
    images.with_name(images.name + ".gz").write_bytes(gzip.compress(images.read_bytes())[:50])
    images.unlink()
    return train(tmp, *on_idx(folder))


def npz_without(tmp: Path) -> list[str]:
    npz = tmp / "dsprites.npz"
    np.savez(npz, latents_values=np.zeros((4, 6)), latents_classes=np.zeros((4, 6), np.int64))
    return train(tmp, "--data.path", str(npz))


def npz_garbage(tmp: Path) -> list[str]:
    npz = tmp / "dsprites.npz"
    npz.write_bytes(b"PK\x03\x04 not really a zip archive")
    return train(tmp, "--data.path", str(npz))


def yaml_file(tmp: Path, text: str) -> list[str]:
    (tmp / "config.yaml").write_text(text)
    return ["train", "-c", str(tmp / "config.yaml"), "--logging.save_dir", str(tmp / "runs")]


def alias_bomb(tmp: Path) -> list[str]:
    """Nine levels of nine aliases: 387 million strings when expanded, a few hundred bytes on disk."""
    lines = ["train:", "  devices:", "  - &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"  - &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    return yaml_file(tmp, "\n".join(lines) + "\n")


def run_folder_of_pytorch_vae(tmp: Path) -> Path:
    """What PyTorch-VAE's run.py leaves: version_0/hparams.yaml and a Lightning checkpoint."""
    run = tmp / "logs" / "VanillaVAE" / "version_0"
    (run / "checkpoints").mkdir(parents=True)
    hparams = {"model_params": {"name": "VanillaVAE", "in_channels": 3, "latent_dim": 128}}
    (run / "hparams.yaml").write_text(yaml.safe_dump(hparams))
    lightning = {
        "epoch": 3,
        "global_step": 100,
        "pytorch-lightning_version": "1.5.6",
        "state_dict": {"model.fc_mu.weight": torch.zeros(2, 2)},
        "hyper_parameters": {"params": {"LR": 0.005}},
    }
    torch.save(lightning, run / "checkpoints" / "last.ckpt")
    return run


def random_folder(tmp: Path) -> Path:
    folder = tmp / "downloads"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    (folder / "weights.bin").write_bytes(bytes(range(256)))
    return folder


def vaezoo_checkpoint(tmp: Path, name: str, **meta: object) -> Path:
    """A checkpoint vaezoo could have written, with ``meta`` over its metadata."""
    from vaezoo.registry import create_model

    model = create_model("VanillaVAE", in_channels=1, latent_dim=3, hidden_dims=[8, 16], image_size=16)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    saved = {"model_name": "VanillaVAE", "model_config": model.config, "config": {}, **meta}
    torch.save({"vaezoo": saved, "state_dict": state}, tmp / name)
    return tmp / name


def sample(path: Path, tmp: Path) -> list[str]:
    return ["sample", str(path), "-n", "4", "-o", str(tmp / "samples.png")]


def evaluate(path: Path, tmp: Path) -> list[str]:
    return ["evaluate", str(path), "-o", str(tmp / "report"), "--no-progress"]


def truncated_checkpoint(tmp: Path) -> list[str]:
    path = vaezoo_checkpoint(tmp, "whole.ckpt")
    cut(path, keep=2000)
    return sample(path, tmp)


def exported_folder(tmp: Path, **config_changes) -> Path:
    """An exported VanillaVAE folder (vaezoo export), its config.json edited by ``config_changes``."""
    from vaezoo.export import export_model
    from vaezoo.io import model_from_checkpoint

    model, _ = model_from_checkpoint(vaezoo_checkpoint(tmp, "exported.ckpt"))
    folder = export_model(model, tmp / "exported", images=False)
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text())
    for key, value in config_changes.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) else value
    config_file.write_text(json.dumps(config))
    return folder


def export_into_taken_folder(tmp: Path) -> list[str]:
    taken = tmp / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    return ["export", str(vaezoo_checkpoint(tmp, "run.ckpt")), "-o", str(taken)]


def damaged_export(tmp: Path) -> list[str]:
    folder = exported_folder(tmp)
    cut(folder / "model.safetensors", keep=100)
    return sample(folder, tmp)


def on_data(name: str, path: Path) -> list[str]:
    return ["--data.name", name, "--data.path", str(path), "--data.subset", "null"]


def arrays_file(tmp: Path, name: str = "mine.npz", **arrays: np.ndarray) -> list[str]:
    np.savez(tmp / name, **arrays)
    return train(tmp, *on_data("arrays", tmp / name))


def arrays_pickle(tmp: Path) -> list[str]:
    import pickle

    (tmp / "mine.npy").write_bytes(pickle.dumps({"images": [1, 2, 3]}))
    return train(tmp, *on_data("arrays", tmp / "mine.npy"))


def cifar_folder(tmp: Path) -> Path:
    make_cifar10(tmp / "cifar-10-batches-bin")
    return tmp / "cifar-10-batches-bin"


def cifar_python_version(tmp: Path) -> list[str]:
    folder = tmp / "cifar-10-batches-py"
    folder.mkdir()
    for name in ("data_batch_1", "test_batch", "batches.meta"):
        (folder / name).write_bytes(b"\x80\x04 a pickle")
    return train(tmp, *on_data("cifar10", folder))


def cifar_truncated(tmp: Path) -> list[str]:
    folder = cifar_folder(tmp)
    cut(folder / "data_batch_3.bin", keep=-100)
    return train(tmp, *on_data("cifar10", folder))


def cifar_file_missing(tmp: Path) -> list[str]:
    folder = cifar_folder(tmp)
    (folder / "data_batch_3.bin").unlink()
    return train(tmp, *on_data("cifar10", folder))


def cifar_other_release(tmp: Path) -> list[str]:
    make_cifar100(tmp / "cifar-100-binary")
    return train(tmp, *on_data("cifar10", tmp / "cifar-100-binary"))


def cifar_archive(tmp: Path) -> list[str]:
    (tmp / "cifar-10-binary.tar.gz").write_bytes(b"\x1f\x8b")
    return train(tmp, *on_data("cifar10", tmp / "cifar-10-binary.tar.gz"))


def shapes3d_without_labels(tmp: Path) -> list[str]:
    return train(tmp, *on_data("shapes3d", write_shapes3d(tmp / "3dshapes.h5", labels=None)))


def run_without_h5py(argv: list[str], tmp: Path) -> Outcome:
    """``run_cli`` as if h5py were not installed (an import of it fails)."""
    from unittest import mock

    with mock.patch.dict(sys.modules, {"h5py": None}):
        return run_cli(argv, tmp)


def shapes3d_truncated(tmp: Path) -> list[str]:
    path = write_shapes3d(tmp / "3dshapes.h5")
    cut(path, keep=4000)
    return train(tmp, *on_data("shapes3d", path))


def shapes3d_not_a_grid(tmp: Path) -> list[str]:
    from test_data_ground_truth_sets import SHAPES_SIZES, grid

    labels = shapes_values(grid(SHAPES_SIZES))
    labels[[0, 1]] = labels[[1, 0]]
    return train(tmp, *on_data("shapes3d", write_shapes3d(tmp / "3dshapes.h5", labels=labels)))


def mpi3d_file(tmp: Path, **extra: object) -> list[str]:
    return train(tmp, *on_data("mpi3d", write_mpi3d(tmp / "mpi3d_toy.npz", **extra)))


def mpi3d_truncated(tmp: Path) -> list[str]:
    path = write_mpi3d(tmp / "mpi3d_toy.npz")
    cut(path, keep=2000)
    return train(tmp, *on_data("mpi3d", path))


def norb_folder(tmp: Path) -> Path:
    write_smallnorb(tmp / "norb")
    return tmp / "norb"


def norb_file(folder: Path, split: str, kind: str) -> Path:
    tag = "5x46789x9x18x6x2x96x96-training" if split == "training" else "5x01235x9x18x6x2x96x96-testing"
    return folder / f"smallnorb-{tag}-{kind}.mat"


def smallnorb_bad_magic(tmp: Path) -> list[str]:
    folder = norb_folder(tmp)
    cat = norb_file(folder, "training", "cat")
    cat.write_bytes(norb_matrix(np.zeros(24, np.uint8)))  # bytes where int32 categories belong
    return train(tmp, *on_data("smallnorb", folder))


def smallnorb_truncated(tmp: Path) -> list[str]:
    folder = norb_folder(tmp)
    cut(norb_file(folder, "testing", "dat"), keep=-100)
    return train(tmp, *on_data("smallnorb", folder))


def smallnorb_missing(tmp: Path) -> list[str]:
    folder = norb_folder(tmp)
    norb_file(folder, "testing", "info").unlink()
    return train(tmp, *on_data("smallnorb", folder))


def cars3d_folder(tmp: Path, **variables: object) -> list[str]:
    write_cars3d(tmp / "cars", count=2, **variables)
    return train(tmp, *on_data("cars3d", tmp / "cars"))


def cars3d_odd_file(tmp: Path, variables: dict) -> list[str]:
    from scipy.io import savemat

    write_cars3d(tmp / "cars", count=2)
    savemat(tmp / "cars" / "car_003_mesh.mat", variables)
    return train(tmp, *on_data("cars3d", tmp / "cars"))


def cars3d_truncated(tmp: Path) -> list[str]:
    write_cars3d(tmp / "cars", count=2)
    cut(tmp / "cars" / "car_002_mesh.mat", keep=300)
    return train(tmp, *on_data("cars3d", tmp / "cars"))


# --------------------------------------------------------------------------- the cases

CASES: list[Case] = [
    Case(
        "image-not-an-image",
        BAD_INPUT,
        not_an_image,
        (
            "broken.png: not a readable image (UnidentifiedImageError",
            "; set data.bad_files: skip to leave unreadable files out, or replace the file",
        ),
    ),
    Case(
        "image-truncated",
        BAD_INPUT,
        truncated_image,
        "cut.png: cannot decode the image (OSError: image file is truncated",
    ),
    Case(
        "image-bad-mid-epoch",
        BAD_INPUT,
        image_bad_mid_epoch,
        "05.png: cannot decode the image (OSError: image file is truncated",
        leaves=RUN_FOLDER,
    ),
    Case(
        "image-skipped",
        BAD_INPUT,
        image_skipped,
        ("broken.png: not a readable image", "left out (data.bad_files: skip)"),
        leaves=RUN_FOLDER,
        code=0,
    ),
    Case(
        "data-path-missing", BAD_INPUT, folder_missing, "nowhere' does not exist; expected a folder of images"
    ),
    Case("data-folder-empty", BAD_INPUT, folder_empty, "no image files found (looked recursively for .png"),
    Case("split-empty-train", BAD_INPUT, empty_training_split, "the training split is empty"),
    Case(
        "split-empty-val",
        BAD_INPUT,
        empty_validation_split,
        "the validation split is empty",
    ),
    Case("npz-missing-array", BAD_INPUT, npz_without, "dsprites.npz: has no array 'imgs'"),
    Case("npz-not-a-zip", BAD_INPUT, npz_garbage, "dsprites.npz: not a readable .npz file (BadZipFile"),
    Case("idx-bad-magic", BAD_INPUT, idx_bad_magic, "bad IDX magic number 0x00000802; expected 0x00000801"),
    Case(
        "idx-truncated",
        BAD_INPUT,
        idx_truncated,
        "holds 9398 bytes of values; its header (12, 28, 28) needs 9408",
    ),
    Case(
        "idx-bad-gzip", BAD_INPUT, idx_bad_gzip, "t10k-images-idx3-ubyte.gz: cannot read the file (EOFError"
    ),
    Case(
        "yaml-syntax",
        BAD_INPUT,
        lambda tmp: yaml_file(tmp, "model:\n  name: VAE: x\n"),
        "YAML syntax error at line 2, column 12: mapping values are not allowed here",
    ),
    Case(
        "yaml-wrong-type",
        BAD_INPUT,
        lambda tmp: yaml_file(tmp, "train: {batch_size: eight}\n"),
        "train.batch_size = 'eight' has the wrong type: expected int",
    ),
    Case(
        "yaml-negative-size",
        BAD_INPUT,
        lambda tmp: yaml_file(tmp, "data: {image_size: -8}\n"),
        "data.image_size = -8 must be a positive integer",
    ),
    Case(
        "yaml-unknown-key",
        BAD_INPUT,
        lambda tmp: yaml_file(tmp, "train: {lerning_rate: 0.1}\n"),
        "train: unknown key 'lerning_rate'",
    ),
    Case(
        "yaml-unknown-section",
        BAD_INPUT,
        lambda tmp: yaml_file(tmp, "trian: {lr: 0.1}\n"),
        "unknown section 'trian' (did you mean 'train'?)",
    ),
    Case(
        "yaml-alias-bomb",
        BAD_INPUT,
        alias_bomb,
        "train.devices = [['x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', ...]",
    ),
    Case(
        "yaml-too-deep",
        BAD_INPUT,
        lambda tmp: yaml_file(tmp, "[" * 5000 + "]" * 5000),
        "YAML nested too deeply to read",
    ),
    Case(
        "override-unknown-key",
        BAD_INPUT,
        lambda tmp: train(tmp, "--train.max_step", "3"),
        "override --train.max_step: 'train' has no key 'max_step' (did you mean 'max_steps'?)",
    ),
    Case(
        "eval-group-unknown",
        BAD_INPUT,
        lambda tmp: train(tmp, "--logging.eval_groups", "[active_units, migg]"),
        "logging.eval_groups = ['active_units', 'migg']: unknown group 'migg' (did you mean 'mig'?)",
    ),
    Case(
        "eval-needs-factors",
        BAD_INPUT,
        lambda tmp: train(
            tmp,
            *on_folder(image_folder(tmp)),
            "--logging.eval_every_n_steps",
            "5",
            "--logging.eval_groups",
            "[mig]",
        ),
        "mig needs ground-truth factors, and data.name = 'image_folder' has none",
    ),
    Case(
        "override-wrong-type",
        BAD_INPUT,
        lambda tmp: train(tmp, "--train.lr", "fast"),
        "override --train.lr = 'fast' has the wrong type: expected float",
    ),
    Case(
        "logger-unknown",
        BAD_INPUT,
        lambda tmp: train(tmp, "--logging.logger", "[csv, neptune]"),
        "override --logging.logger = ['csv', 'neptune'] has the wrong type: expected one of 'tensorboard', "
        "'csv', 'mlflow', 'wandb' or a list of",
    ),
    Case(
        "logger-extra-missing",
        BAD_INPUT,
        lambda tmp: train(tmp, "--logging.logger", "[tensorboard, wandb]"),
        "logging.logger 'wandb' needs the wandb package, which is not installed: pip install 'vaezoo[wandb]'",
        run=lambda argv, tmp: without_package("wandb", argv, tmp),
    ),
    Case(
        "dataset-unknown",
        BAD_INPUT,
        lambda tmp: train(tmp, "--data.name", "cleba"),
        "data.name = 'cleba' is not a dataset (did you mean 'celeba'?)",
    ),
    Case(
        "model-size-zero",
        BAD_INPUT,
        lambda tmp: train(tmp, *on_folder(image_folder(tmp)), "--model.latent_dim", "0"),
        "latent_dim = 0 must be a positive integer",
    ),
    Case(
        "model-size-negative",
        BAD_INPUT,
        lambda tmp: train(tmp, *on_folder(image_folder(tmp)), "--model.hidden_dims", "[8, -3]"),
        "hidden_dims = [8, -3] must be a non-empty list of positive integers",
    ),
    Case(
        "model-data-mismatch",
        BAD_INPUT,
        lambda tmp: train(tmp, *on_folder(image_folder(tmp)), "--model.in_channels", "1"),
        "model.in_channels = 1 but the data (image_folder) gives 3",
    ),
    Case(
        "resume-foreign-run",
        BAD_INPUT,
        lambda tmp: ["train", "--resume", str(run_folder_of_pytorch_vae(tmp))],
        "no config.yaml there (is it a vaezoo run folder?)",
    ),
    Case(
        "resume-random-folder",
        BAD_INPUT,
        lambda tmp: ["train", "--resume", str(random_folder(tmp))],
        "no config.yaml there (is it a vaezoo run folder?)",
    ),
    Case(
        "sample-foreign-run",
        BAD_INPUT,
        lambda tmp: sample(run_folder_of_pytorch_vae(tmp), tmp),
        "is not a vaezoo checkpoint (no 'vaezoo' metadata or 'state_dict')",
    ),
    Case(
        "evaluate-foreign-run",
        BAD_INPUT,
        lambda tmp: evaluate(run_folder_of_pytorch_vae(tmp), tmp),
        "is not a vaezoo checkpoint (no 'vaezoo' metadata or 'state_dict')",
    ),
    Case(
        "sample-random-folder",
        BAD_INPUT,
        lambda tmp: sample(random_folder(tmp), tmp),
        ("checkpoint not found: ", "/checkpoints/last.ckpt"),
    ),
    Case(
        "evaluate-not-a-checkpoint",
        BAD_INPUT,
        lambda tmp: evaluate(random_folder(tmp) / "notes.txt", tmp),
        "is not a checkpoint: a torch checkpoint is a zip archive, this file starts with b'hello'",
    ),
    Case(
        "checkpoint-truncated",
        BAD_INPUT,
        truncated_checkpoint,
        "is a damaged checkpoint: its zip archive is incomplete",
    ),
    Case(
        "checkpoint-other-model",
        BAD_INPUT,
        lambda tmp: sample(
            vaezoo_checkpoint(
                tmp,
                "wider.ckpt",
                model_config={"in_channels": 1, "latent_dim": 5, "hidden_dims": [8, 16], "image_size": 16},
                version="0.0.1",
            ),
            tmp,
        ),  # fmt: skip
        ("weights do not fit VanillaVAE", "(saved by vaezoo 0.0.1; this is vaezoo 0.1.0)"),
    ),
    Case(
        "checkpoint-unknown-model",
        BAD_INPUT,
        lambda tmp: sample(
            vaezoo_checkpoint(tmp, "gone.ckpt", model_name="RetiredVAE", version="0.0.1"), tmp
        ),
        "cannot rebuild its model: unknown model 'RetiredVAE'",
    ),
    Case(
        "export-folder-taken",
        BAD_INPUT,
        export_into_taken_folder,
        "taken exists and is not empty; pass --overwrite to replace it",
    ),
    Case(
        "export-weights-damaged",
        BAD_INPUT,
        damaged_export,
        "exported/model.safetensors is not a readable safetensors file",
    ),
    Case(
        "export-other-model",
        BAD_INPUT,
        lambda tmp: sample(exported_folder(tmp, model_config={"latent_dim": 5}, vaezoo_version="0.0.1"), tmp),
        (
            "exported/model.safetensors: weights do not fit VanillaVAE",
            "(saved by vaezoo 0.0.1; this is vaezoo 0.1.0)",
        ),
    ),
    Case(
        "vectors-bad-cell",
        BAD_INPUT,
        lambda tmp: train(tmp, *on_vectors(vectors_csv(tmp, bad_cell="n/a"))),
        "points.csv: row 3, column 2 ('b') is 'n/a', not a number",
    ),
    Case(
        "vectors-nan",
        BAD_INPUT,
        lambda tmp: train(tmp, *on_vectors(vectors_with_nan(tmp))),
        "points.npy: the value at [4, 2] (0-based) is nan (1 are NaN or infinite); expected finite numbers",
    ),
    Case(
        "vectors-image-only-model",
        BAD_INPUT,
        lambda tmp: train(tmp, *on_vectors(vectors_csv(tmp)), "--model.name", "VQVAE"),
        "model VQVAE does not train on vectors (data.name 'vectors'): it works on images only",
    ),
    Case(
        "arrays-pickle",
        BAD_INPUT,
        arrays_pickle,
        "mine.npy: is a Python pickle, not a .npy or .npz file; vaezoo loads arrays with allow_pickle=False",
    ),
    Case(
        "arrays-no-images",
        BAD_INPUT,
        lambda tmp: arrays_file(tmp, a=np.zeros(3), b=np.zeros(3)),
        "mine.npz: has no array 'images' (found 'a', 'b')",
    ),
    Case(
        "arrays-not-images",
        BAD_INPUT,
        lambda tmp: arrays_file(tmp, images=np.zeros((10, 5), np.uint8)),
        "mine.npz: images shaped (10, 5); expected (N, H, W), (N, H, W, C) or (N, C, H, W) with C in 1, 3, 4",
    ),
    Case(
        "arrays-float-range",
        BAD_INPUT,
        lambda tmp: arrays_file(tmp, images=np.linspace(-1, 1, 10 * 64).reshape(10, 8, 8)),
        "float images hold values in [-1, 1]; expected [0, 1] or [0, 255]; for data in [-1, 1] save (images + 1) / 2",
    ),
    Case(
        "arrays-factors-without-sizes",
        BAD_INPUT,
        lambda tmp: arrays_file(
            tmp, images=np.zeros((4, 8, 8), np.uint8), factors=np.zeros((4, 2), np.int64)
        ),
        "mine.npz: has 'factors' but no 'factor_sizes'; expected 'factor_sizes' (2,) ints",
    ),
    Case(
        "cifar-python-version",
        BAD_INPUT,
        cifar_python_version,
        (
            'this is the CIFAR-10 "python version" (pickled batches); vaezoo does not read it',
            "cifar-10-binary.tar.gz",
        ),
    ),
    Case(
        "cifar-truncated",
        BAD_INPUT,
        cifar_truncated,
        "data_batch_3.bin: 18338 bytes is not a whole number of CIFAR-10 records of 3073 bytes",
    ),
    Case(
        "cifar-file-missing",
        BAD_INPUT,
        cifar_file_missing,
        "data_batch_3.bin: file is missing; expected the CIFAR-10 binary version",
    ),
    Case(
        "cifar-other-release",
        BAD_INPUT,
        cifar_other_release,
        "cifar-100-binary: holds CIFAR-100 (train.bin), not CIFAR-10; use data.name cifar100",
    ),
    Case(
        "cifar-archive",
        BAD_INPUT,
        cifar_archive,
        "cifar-10-binary.tar.gz' is a file; extract it first (tar xzf cifar-10-binary.tar.gz)",
    ),
    Case(
        "shapes3d-missing-dataset",
        BAD_INPUT,
        shapes3d_without_labels,
        "3dshapes.h5: has no dataset 'labels' (found 'images'); expected 3dshapes.h5, an HDF5 file with datasets",
    ),
    Case(
        "shapes3d-no-h5py",
        BAD_INPUT,
        lambda tmp: train(tmp, *on_data("shapes3d", write_shapes3d(tmp / "3dshapes.h5"))),
        "reads the HDF5 file 3dshapes.h5 with h5py, which is not installed: pip install 'vaezoo[shapes3d]'",
        run=run_without_h5py,
    ),
    Case(
        "shapes3d-truncated",
        BAD_INPUT,
        shapes3d_truncated,
        ("3dshapes.h5: not a readable HDF5 file (", "truncated file: eof = 4000"),
    ),
    Case(
        "shapes3d-not-a-grid",
        BAD_INPUT,
        shapes3d_not_a_grid,
        "3dshapes.h5: labels are not in row-major grid order",
    ),
    Case(
        "mpi3d-missing-array",
        BAD_INPUT,
        lambda tmp: mpi3d_file(tmp, images=None, imgs=np.zeros((4, 8, 8, 3), np.uint8)),
        "mpi3d_toy.npz: has no array 'images' (found 'factor_sizes', 'imgs')",
    ),
    Case(
        "mpi3d-wrong-count",
        BAD_INPUT,
        lambda tmp: mpi3d_file(tmp, factor_sizes=None),
        "mpi3d_toy.npz: array 'images' holds 192 images, but the factor grid 6 x 6 x 2 x 3 x 3 x 40 x 40 has 1036800",
    ),
    Case(
        "mpi3d-truncated",
        BAD_INPUT,
        mpi3d_truncated,
        "mpi3d_toy.npz: not a readable .npz file (BadZipFile",
    ),
    Case(
        "smallnorb-wrong-type",
        BAD_INPUT,
        smallnorb_bad_magic,
        "training-cat.mat: holds uint8 (24,); expected int32 (N,) categories",
    ),
    Case(
        "smallnorb-truncated",
        BAD_INPUT,
        smallnorb_truncated,
        "testing-dat.mat: truncated: image pairs 0..23 needs 3072 bytes, the file has 2972 left",
    ),
    Case(
        "smallnorb-file-missing",
        BAD_INPUT,
        smallnorb_missing,
        "testing-info.mat: file is missing (also looked for .gz)",
    ),
    Case(
        "cars3d-no-files",
        BAD_INPUT,
        lambda tmp: train(tmp, *on_data("cars3d", random_folder(tmp))),
        "downloads: no car_*_mesh.mat files found; expected a folder of the Cars3D files",
    ),
    Case(
        "cars3d-missing-variable",
        BAD_INPUT,
        lambda tmp: cars3d_odd_file(tmp, {"images": np.zeros((2, 2), np.uint8)}),
        "car_003_mesh.mat: has no variable 'im' (found 'images')",
    ),
    Case(
        "cars3d-wrong-shape",
        BAD_INPUT,
        lambda tmp: cars3d_odd_file(tmp, {"im": np.zeros((8, 8, 3, 24, 2), np.uint8)}),
        "car_003_mesh.mat: variable 'im' is uint8 (8, 8, 3, 24, 2); expected",
    ),
    Case(
        "cars3d-truncated",
        BAD_INPUT,
        cars3d_truncated,
        "car_002_mesh.mat: not a readable MATLAB file (",
    ),
]


def files_under(folder: Path) -> set[Path]:
    return {p.relative_to(folder) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", [pytest.param(case, id=case.id, marks=case.marks) for case in CASES])
def test_case(case: Case, tmp_path: Path):
    argv = case.fault(tmp_path)
    before = files_under(tmp_path)
    outcome = case.run(argv, tmp_path)
    assert "Traceback" not in outcome.stderr, outcome.stderr
    assert outcome.code == case.code, outcome.stderr
    if case.code == 2:  # the last line: the error, as one line
        last = outcome.stderr.strip().splitlines()[-1]
        assert last.startswith(f"vaezoo {argv[0]}: error: "), outcome.stderr
        said = last
    else:  # a warning, and the command went on
        said = next(
            (line for line in (outcome.stderr + outcome.warnings).splitlines() if case.fragments[0] in line),
            "",
        )
    assert re.search(".*".join(map(re.escape, case.fragments)), said), (case.fragments, said or outcome)
    new = files_under(tmp_path) - before
    in_cache = {p for p in new if p.parts[0] == "cache"}
    assert not [p for p in in_cache if p.name.endswith(".tmp")], in_cache  # nothing partial
    if case.leaves == NOTHING:
        assert new - in_cache == set(), sorted(map(str, new))
    else:  # the run folder, and only it
        assert {p.parts[:3] for p in new - in_cache} <= {("runs", "VanillaVAE", "version_0")}, new
        assert (tmp_path / "runs" / "VanillaVAE" / "version_0" / "config.yaml").is_file()


# --------------------------------------------------------------------------- doc and cases agree

ROW = re.compile(r"^\|\s*`(?P<id>[a-z0-9-]+)`\s*\|(?P<cells>.*)\|\s*$")


def doc_rows() -> dict[str, tuple[str, list[str]]]:
    """{case id: (section, [cells after the id])} of every table row of docs/errors.md."""
    rows: dict[str, tuple[str, list[str]]] = {}
    section = None
    for line in DOC.read_text().splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        found = ROW.match(line)
        if found:
            assert found["id"] not in rows, f"{found['id']} is listed twice"
            rows[found["id"]] = (section, [cell.strip() for cell in found["cells"].split(" | ")])
    return rows


def test_the_doc_lists_exactly_these_cases():
    text = DOC.read_text()
    headings = [line[3:].strip() for line in text.splitlines() if line.startswith("## ")]
    assert all(section in headings for section in SECTIONS), headings
    rows = doc_rows()
    assert sorted(rows) == sorted(case.id for case in CASES)  # every case, and nothing else
    for case in CASES:
        section, cells = rows[case.id]
        assert section == case.section, case.id
        _, message, kept = cells  # input | message | kept
        assert " ... ".join(f"`{fragment}`" for fragment in case.fragments) in message, (case.id, message)
        assert kept.startswith(KEPT[case.leaves]), (case.id, kept)

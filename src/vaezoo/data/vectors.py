"""Vectors the user brings: ``vectors`` (``data.path`` = a ``.npy`` or a ``.csv`` of N rows of D
numbers), for models built with ``architecture: mlp``.

A ``.npy`` holds one (N, D) array of bools, integers or floats (read with ``allow_pickle=False``:
object arrays and pickles are refused). A ``.csv`` (RFC 4180, comma-separated) holds one row per
example; its first row is a header when none of its cells is a number, and every other cell must
be a number (Python's ``float`` syntax). Every row has as many cells as the first. NaN, infinite and
empty values are errors that name the file, the row and the column (of the file, counted from 1;
in a ``.npy``, the 0-based index).

Labels: ``data.label_column`` takes one column out of the features: a 0-based index (negative
counts from the end) or, for a CSV with a header, the column's name. Whole numbers are class
indices (int64; negative ones are refused); text cells (CSV only) are class names, numbered in
sorted order; any other number makes the labels float32 vectors (N, 1). Without a label column
every row has class 0.

Values are kept as they are (float32), unless ``data.standardize``: then each feature has the
training split's mean subtracted and is divided by its standard deviation (a constant feature is
only centred). The decoder's output activation follows the values: ``sigmoid`` when every training
value lies in [0, 1] (binary data: ``likelihood: bernoulli``), otherwise ``none``. The image keys
(``image_size``, ``channels``, ``normalize``, ``crop``, ``flip``) do not apply; ``channels``, ``crop``
and ``flip`` are refused when set. The train/val split is ``split_indices``'s (``data.subset``,
``data.val_fraction``, ``data.split_seed``); test = val.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vaezoo.config import DataConfig
from vaezoo.data.arrays import NPY_MAGIC, ZIP_MAGIC, file_head, file_kind, map_npy
from vaezoo.data.common import Batch, DataSplits, SplitDataset, require_path, split_indices
from vaezoo.data.errors import DataError

EXPECTED = "a .npy of an (N, D) numeric array, or a .csv of N rows of D numbers (an optional header row)"


@dataclass
class VectorTable:
    """The numbers of a file, (N, D) float64, the raw label cells (None: no label column) and the
    feature names (from a CSV header, else ``column_k``)."""

    values: np.ndarray
    labels: np.ndarray | list[str] | None
    names: list[str]


# --------------------------------------------------------------------------- reading


def is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def label_index(
    label_column: int | str | None, names: list[str] | None, width: int, where: str
) -> int | None:
    """The 0-based index of ``data.label_column`` among ``width`` columns (``names``: a CSV header)."""
    if label_column is None:
        return None
    if isinstance(label_column, str):
        if names is None:
            raise DataError(
                f"{where}: data.label_column = {label_column!r} names a column, but the file has no header "
                f"row; give the column's 0-based index instead (0..{width - 1})"
            )
        if label_column not in names:
            raise DataError(
                f"{where}: data.label_column = {label_column!r} is not a column; columns: {names}"
            )
        return names.index(label_column)
    if not -width <= label_column < width:
        raise DataError(
            f"{where}: data.label_column = {label_column} is outside the {width} columns (0..{width - 1}, "
            "or negative from the end)"
        )
    if width < 2:
        raise DataError(f"{where}: data.label_column leaves no feature column (the file has 1 column)")
    return label_column % width


def read_csv(path: Path, label_column: int | str | None) -> VectorTable:
    """The numbers of a CSV file; every bad cell names its row (1-based, as an editor counts
    lines of a file without quoted line breaks) and column."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [
                (n, row)
                for n, row in enumerate(csv.reader(f), start=1)
                if row and any(c.strip() for c in row)
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: cannot read the CSV file ({type(err).__name__}: {err})") from None
    if not rows:
        raise DataError(f"{path}: the CSV file has no rows; expected {EXPECTED}")
    header = None
    if not any(is_number(cell) for cell in rows[0][1]):
        header = [cell.strip() for cell in rows[0][1]]
        rows = rows[1:]
        if not rows:
            raise DataError(f"{path}: the CSV file has a header row but no data rows")
    width = len(header) if header is not None else len(rows[0][1])
    names = header or [f"column_{k}" for k in range(width)]
    label = label_index(label_column, header, width, str(path))
    features = [k for k in range(width) if k != label]
    for line, row in rows:
        if len(row) != width:
            raise DataError(f"{path}: row {line} has {len(row)} cells, expected {width} (as the first row)")
    try:  # numpy parses the whole table at once; the first bad cell is then found one by one
        values = np.array([[row[k] for k in features] for _, row in rows], dtype=np.float64)
        usable = bool(np.isfinite(values).all())
    except ValueError:
        usable = False
    if not usable:
        for line, row in rows:
            for k in features:
                parse_cell(row[k], path, line, names[k], k)
        raise DataError(f"{path}: the feature cells are not all numbers; expected {EXPECTED}")
    labels = None
    if label is not None:
        labels = [row[label].strip() for _, row in rows]
        if "" in labels:
            line = rows[labels.index("")][0]
            raise DataError(
                f"{path}: row {line}, column {label + 1} ({names[label]!r}, data.label_column) is empty; "
                "every row needs a label"
            )
    return VectorTable(values, labels, [names[k] for k in features])


def parse_cell(cell: str, path: Path, line: int, name: str, column: int) -> float:
    """One CSV cell as a finite number; anything else names the file, row and column."""
    where = f"{path}: row {line}, column {column + 1} ({name!r})"
    text = cell.strip()
    try:
        value = float(text)
    except ValueError:
        what = "is empty (a missing value)" if not text else f"is {cell!r}, not a number"
        if ";" in text or "\t" in text:
            what += " (cells must be separated by commas)"
        raise DataError(f"{where} {what}; every feature cell must be a number") from None
    if not math.isfinite(value):
        raise DataError(f"{where} is {cell!r}; expected a finite number (remove or fill in the value)")
    return value


def read_npy(path: Path, label_column: int | str | None) -> VectorTable:
    """The (N, D) array of a ``.npy`` file, checked: numeric, two dimensions, finite."""
    array = map_npy(path)
    if array.dtype.kind not in "biuf":
        raise DataError(f"{path}: the array is {array.dtype}; expected bool, integer or float numbers")
    if array.ndim != 2:
        hint = " (one feature: reshape it to (N, 1))" if array.ndim == 1 else ""
        raise DataError(
            f"{path}: the array has shape {array.shape}; expected (N, D) vectors, 2 dimensions{hint}"
        )
    if isinstance(label_column, str):
        raise DataError(
            f"{path}: data.label_column = {label_column!r} is a name, but a .npy has no column names; "
            f"give a 0-based index (0..{array.shape[1] - 1})"
        )
    values = np.asarray(array, dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        row, column = (int(i[0]) for i in np.nonzero(bad))
        raise DataError(
            f"{path}: the value at [{row}, {column}] (0-based) is {values[row, column]} ({int(bad.sum())} are NaN or "
            "infinite); expected finite numbers"
        )
    label = label_index(label_column, None, array.shape[1], str(path))
    names = [f"column_{k}" for k in range(array.shape[1])]
    if label is None:
        return VectorTable(values, None, names)
    keep = [k for k in range(array.shape[1]) if k != label]
    return VectorTable(values[:, keep], values[:, label], [names[k] for k in keep])


def read_table(path: Path, label_column: int | str | None) -> VectorTable:
    """A ``.npy`` (by its magic bytes) or else a CSV file."""
    head = file_head(path)
    if head == NPY_MAGIC:
        return read_npy(path, label_column)
    if head.startswith(ZIP_MAGIC):
        raise DataError(
            f"{path}: is a .npz (or a zip); expected {EXPECTED} (data.name arrays reads images from a .npz)"
        )
    if head[:1] == b"\x80":
        file_kind(path)  # refuses the pickle, saying why
    return read_csv(path, label_column)


def read_vector_labels(
    raw: np.ndarray | list[str], where: str
) -> tuple[torch.Tensor, tuple[int, ...], int | None]:
    """(labels, label_shape, num_classes): class indices from whole numbers or names, else floats."""
    if isinstance(raw, list) and not all(is_number(cell) for cell in raw):
        names = sorted(set(raw))
        index = {name: k for k, name in enumerate(names)}
        return torch.tensor([index[cell] for cell in raw], dtype=torch.int64), (), len(names)
    numbers = np.array([float(c) for c in raw] if isinstance(raw, list) else raw, dtype=np.float64)
    if not np.isfinite(numbers).all():
        row = int(np.flatnonzero(~np.isfinite(numbers))[0])
        raise DataError(f"{where}: label {row} is {numbers[row]}; expected a finite number or a class name")
    if (numbers == np.round(numbers)).all():
        if (numbers < 0).any():
            row = int(np.flatnonzero(numbers < 0)[0])
            raise DataError(f"{where}: label {row} is {numbers[row]:g}; class indices must be >= 0")
        classes = numbers.astype(np.int64)
        return torch.from_numpy(classes), (), int(classes.max()) + 1 if len(classes) else 1
    return torch.from_numpy(numbers.astype(np.float32)).unsqueeze(1), (1,), None


# --------------------------------------------------------------------------- the dataset


class VectorDataset(SplitDataset):
    """Rows of an (N, D) float32 tensor and their labels, a whole batch at a time."""

    def __init__(self, values: torch.Tensor, labels: torch.Tensor) -> None:
        self.values = values
        self.labels = labels

    def __len__(self) -> int:
        return len(self.values)

    def __getitems__(self, positions: Sequence[int]) -> Batch:
        index = torch.as_tensor(positions, dtype=torch.int64)
        return Batch(self.values[index], self.labels[index])  # (N, D), (N, ...)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.values[position], self.labels[position]

    def without_augmentation(self) -> VectorDataset:
        return self  # vectors are never augmented


def check_vector_config(config: DataConfig) -> None:
    """The image keys that cannot apply to vectors are refused when set."""
    for key in ("channels", "crop", "flip"):
        if getattr(config, key) is not None:
            raise DataError(
                f"data.{key} = {getattr(config, key)!r} does not apply to data.name 'vectors' (it is for "
                "images); remove it"
            )


def build_vectors(config: DataConfig) -> DataSplits:
    """Train/val splits of the rows of a ``.npy`` / ``.csv``; test = val."""
    check_vector_config(config)
    path = require_path(config, EXPECTED)
    if path.is_dir():
        raise DataError(f"data.path = '{path}' is a folder; expected {EXPECTED}")
    table = read_table(path, config.label_column)
    labels = read_vector_labels(table.labels, str(path)) if table.labels is not None else None
    return vector_splits(config, table.values, labels, str(path))


def vector_splits(
    config: DataConfig,
    values: np.ndarray,
    labels: tuple[torch.Tensor, tuple[int, ...], int | None] | None,
    where: str,
) -> DataSplits:
    """Train/val splits (test = val) of (N, D) finite ``values`` and their ``(labels, label_shape,
    num_classes)`` (None: class 0 for every row), standardised with ``data.standardize``."""
    count, dim = values.shape
    if count == 0 or dim == 0:
        raise DataError(f"{where}: {count} rows of {dim} features; expected at least one row and one feature")
    label_tensor, label_shape, num_classes = (
        labels if labels is not None else (torch.zeros(count, dtype=torch.int64), (), 1)
    )
    train, val = split_indices(config, count, where)
    if config.standardize:
        mean, std = values[train].mean(axis=0), values[train].std(axis=0)
        values = (values - mean) / np.where(std > 0, std, 1.0)
    values_t = torch.from_numpy(values.astype(np.float32))
    train_t, val_t = torch.from_numpy(train), torch.from_numpy(val)
    low, high = float(values_t[train_t].min()), float(values_t[train_t].max())
    val_set = VectorDataset(values_t[val_t], label_tensor[val_t])
    return DataSplits(
        VectorDataset(values_t[train_t], label_tensor[train_t]),
        val_set,
        val_set,
        dim,
        label_shape,
        num_classes=num_classes,
        kind="vectors",
        value_range=(low, high),
        output_activation="sigmoid" if 0.0 <= low and high <= 1.0 else "none",
    )


# --------------------------------------------------------------------------- writing


VECTOR_OUTPUTS = (".csv", ".npy")


def check_vector_output(path: str | Path, model_name: str) -> None:
    """A vector model's output file must be a .csv or .npy (a PNG grid needs images)."""
    if Path(path).suffix.lower() not in VECTOR_OUTPUTS:
        raise DataError(
            f"{model_name} was trained on vectors (architecture mlp), so its output is a table, not a picture: "
            f"-o {path} must end in .csv or .npy"
        )


def write_vectors(path: str | Path, values: torch.Tensor, names: Sequence[str]) -> Path:
    """(N, D) ``values`` as a ``.npy`` (float32) or as a CSV with the header ``names``."""
    path = Path(path)
    array = values.detach().cpu().float().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".npy":
        np.save(path, array, allow_pickle=False)
    else:
        np.savetxt(path, array, delimiter=",", header=",".join(names), comments="", fmt="%.7g")
    return path

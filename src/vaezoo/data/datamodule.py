"""``VAEDataModule``: the LightningDataModule of every dataset, chosen by ``data.name``."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

import lightning as L
import numpy as np
import torch

from vaezoo.config import DataConfig
from vaezoo.data.arrays import build_arrays
from vaezoo.data.cars3d import build_cars3d
from vaezoo.data.celeba import build_celeba
from vaezoo.data.cifar import build_cifar
from vaezoo.data.common import BAD_FILES, DataSplits, SplitDataset, collate, count_skipped
from vaezoo.data.dsprites import build_dsprites
from vaezoo.data.errors import DataError
from vaezoo.data.idx import build_idx
from vaezoo.data.image_folder import build_image_folder
from vaezoo.data.in_memory import build_in_memory
from vaezoo.data.mpi3d import build_mpi3d
from vaezoo.data.pairs import PairedSplit
from vaezoo.data.sampler import EpochSampler, ResumableLoader
from vaezoo.data.shapes3d import build_shapes3d
from vaezoo.data.smallnorb import build_smallnorb
from vaezoo.data.transforms import check_normalize, value_range
from vaezoo.data.vectors import build_vectors
from vaezoo.evaluation.disentanglement.ground_truth import DATASETS_WITH_FACTORS

Builder = Callable[[DataConfig], DataSplits]

BUILDERS: dict[str, Builder] = {
    "dsprites": build_dsprites,
    "celeba": build_celeba,
    "image_folder": build_image_folder,
    "mnist": build_idx,
    "fashion_mnist": build_idx,
    "arrays": build_arrays,
    "cifar10": build_cifar,
    "cifar100": build_cifar,
    "in_memory": build_in_memory,  # images given to vaezoo.fit (VAEDataModule's ``splits``)
    "vectors": build_vectors,
    "shapes3d": build_shapes3d,
    "mpi3d": build_mpi3d,
    "smallnorb": build_smallnorb,
    "cars3d": build_cars3d,
}
DATASETS: tuple[str, ...] = tuple(BUILDERS)


def get_builder(name: str) -> Builder:
    """The builder of dataset ``name``; an unknown name lists the valid ones and the closest."""
    if name not in BUILDERS:
        close = difflib.get_close_matches(str(name), DATASETS, n=1, cutoff=0.4)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise DataError(f"data.name = {name!r} is not a dataset{hint}; valid names: {', '.join(DATASETS)}")
    return BUILDERS[name]


def check_config(config: DataConfig) -> None:
    """The settings every dataset relies on (a config loaded from YAML is already checked)."""
    get_builder(config.name)
    check_normalize(config.normalize)
    size = config.image_size
    rules = [
        (isinstance(size, int) and size > 0, "data.image_size", size, "a positive integer"),
        (config.channels in (None, 1, 3), "data.channels", config.channels, "1, 3 or null"),
        (config.crop is None or config.crop > 0, "data.crop", config.crop, "a positive integer or null"),
        (config.num_workers >= 0, "data.num_workers", config.num_workers, "an integer >= 0"),
        (config.bad_files in BAD_FILES, "data.bad_files", config.bad_files, f"one of {list(BAD_FILES)}"),
        *(
            (
                config.name in names or getattr(config, key) == default,
                f"data.{key}",
                getattr(config, key),
                f"{default!r}: it applies to data.name {' or '.join(map(repr, names))} only",
            )
            for key, default, names in (
                ("label_column", None, ("vectors",)),
                ("standardize", False, ("vectors", "in_memory")),  # vaezoo.fit on vectors
            )
        ),
    ]
    for ok, key, value, expected in rules:
        if not ok:
            raise DataError(f"{key} = {value!r} must be {expected}")
    if config.pairs_k is not None and config.name not in DATASETS_WITH_FACTORS:
        raise DataError(
            f"data.pairs_k = {config.pairs_k!r} needs a dataset with ground-truth factors, but data.name = "
            f"{config.name!r} has none (datasets with factors: {', '.join(DATASETS_WITH_FACTORS)})"
        )


class VAEDataModule(L.LightningDataModule):
    """Train/val/test loaders of the dataset named by ``config.name``.

    After ``setup()``: ``kind``, ``channels``, ``image_size``, ``value_range``, ``num_train``, ``num_val``,
    ``label_shape``, ``ground_truth`` (the factor interface, or None) and ``fixed_batch()``.
    """

    def __init__(
        self,
        config: DataConfig,
        batch_size: int = 64,
        val_batch_size: int | None = None,
        seed: int = 0,
        splits: DataSplits | None = None,
    ) -> None:
        """``splits``: data already built (``vaezoo.fit``'s images), used instead of ``config.name``'s."""
        super().__init__()
        check_config(config)
        if batch_size <= 0 or (val_batch_size is not None and val_batch_size <= 0):
            raise DataError(
                f"batch sizes must be positive, got batch_size={batch_size}, val_batch_size={val_batch_size}"
            )
        self.config = config
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.seed = seed  # of the training order: epoch e is a permutation drawn from (seed, e)
        self._splits: DataSplits | None = splits

    # ----------------------------------------------------------------- Lightning hooks

    def prepare_data(self) -> None:
        """Build the splits, and with them the image caches (dSprites, CelebA, image folders).

        Lightning runs this once per node, before ``setup`` on every process; the splits are kept, so
        ``setup`` (and a second ``prepare_data``) in this process build nothing again. Nothing is
        ever downloaded."""
        self.setup()

    def setup(self, stage: str | None = None) -> None:
        """Build all splits once (later calls do nothing); bad paths raise a DataError here."""
        if self._splits is None:
            splits = get_builder(self.config.name)(self.config)
            if len(splits.train) == 0:
                raise DataError(
                    f"data.name = {self.config.name!r}, data.path = {self.config.path!r}: the training "
                    "split is empty; expected at least one training image"
                )
            self._splits = splits

    def train_dataloader(self) -> ResumableLoader:
        """Shuffled batches, each process its shard; resumable part-way through an epoch."""
        train = self.paired(self.splits.train)
        sampler = EpochSampler(len(train), seed=self.seed, shuffle=True, even=True)
        return self._loader(train, self.batch_size, sampler, drop_last=len(train) > self.batch_size)

    def val_dataloader(self) -> ResumableLoader:
        val = self.paired(self.splits.val)
        return self._loader(val, self.val_batch_size, self._in_order(val))

    def paired(self, split: SplitDataset) -> SplitDataset:
        """With ``data.pairs_k``: as many batches of pairs from the ground truth as ``split`` has
        images (batches of B pairs hold 2B images); else ``split`` itself."""
        if self.config.pairs_k is None:
            return split
        try:
            return PairedSplit(
                self.ground_truth, len(split), self.config.pairs_k, self.seed, self.config.name
            )
        except ValueError as err:
            raise DataError(f"data.name = {self.config.name!r}: {err}") from None

    def test_dataloader(self) -> ResumableLoader:
        return self._loader(self.splits.test, self.val_batch_size, self._in_order(self.splits.test))

    @staticmethod
    def _in_order(dataset: SplitDataset) -> EpochSampler:
        """The dataset in order, each process its shard (every image is evaluated once)."""
        return EpochSampler(len(dataset), shuffle=False, even=False)

    def _loader(
        self, dataset: SplitDataset, batch_size: int, sampler: EpochSampler, drop_last: bool = False
    ) -> ResumableLoader:
        workers = self.config.num_workers
        return ResumableLoader(
            dataset,
            sampler,
            batch_size,
            drop_last=drop_last,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
            collate_fn=collate,  # datasets build whole batches (``__getitems__``): passed through
        )

    # ----------------------------------------------------------------- after setup

    @property
    def splits(self) -> DataSplits:
        if self._splits is None:
            raise RuntimeError("VAEDataModule: call setup() before using the data")
        return self._splits

    @property
    def channels(self) -> int:
        return self.splits.channels

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def kind(self) -> str:
        """ "images" (batches (N, C, H, W)) or "vectors" (batches (N, D), ``channels`` = D)."""
        return self.splits.kind

    @property
    def value_range(self) -> tuple[float, float]:
        """The images' range from ``data.normalize``; for vectors the training values' (min, max)."""
        return self.splits.value_range or value_range(self.config.normalize)

    @property
    def output_activation(self) -> str | None:
        """The decoder activation the data calls for when ``data.normalize`` does not decide it
        (vectors: ``sigmoid`` for values in [0, 1], else ``none``); None for images."""
        return self.splits.output_activation

    @property
    def num_train(self) -> int:
        return len(self.splits.train)

    @property
    def num_val(self) -> int:
        return len(self.splits.val)

    @property
    def label_shape(self) -> tuple[int, ...]:
        """(5,) dSprites factor values, (40,) CelebA attributes, () class indices."""
        return self.splits.label_shape

    @property
    def label_dim(self) -> int:
        """Length of a label as a conditioning vector: the vector's length, or the number of classes
        for class-index labels (one-hot)."""
        shape = self.splits.label_shape
        return int(np.prod(shape)) if shape else int(self.splits.num_classes or 1)

    @property
    def ground_truth(self) -> Any:
        """dSprites: ``factor_names``, ``factor_sizes``, ``factor_classes``, ``sample_factors``,
        ``images_from_factors`` (indices are flat grid indices); None for other datasets."""
        return self.splits.ground_truth

    @property
    def skipped_files(self) -> int:
        """How many distinct image files of the train and val splits were left out as unreadable
        (``data.bad_files: skip``) so far: found at start-up or met since, by this process or by
        any of its DataLoader workers (the count lives in shared memory). 0 before ``setup`` and
        for datasets that are not image files (dSprites, IDX). Per process: under DDP each rank
        counts the files its own loaders met."""
        if self._splits is None:
            return 0
        return count_skipped([self._splits.train, self._splits.val])

    def check_fit(self, validate: bool = True) -> None:
        """Refuse splits training cannot use, before anything is written: an empty training split
        (also refused by ``setup``), and with ``validate`` an empty validation split (validation
        picks the best checkpoint and writes the summary; with none, a run would train to the end
        and have nothing to show)."""
        if self.num_train == 0:
            raise DataError(f"data.name = {self.config.name!r}: the training split is empty")
        if validate and self.num_val == 0:
            raise DataError(
                f"data.name = {self.config.name!r}: the validation split is empty "
                f"(data.val_fraction = {self.config.val_fraction!r}, {self.num_train} training images); "
                "training validates every epoch: set data.val_fraction > 0 (e.g. 0.05), or "
                "train.limit_val_batches: 0 to train without validation"
            )

    def fixed_batch(self, n: int, split: str = "val") -> list[torch.Tensor]:
        """``[images, labels]``: ``n`` images (fewer if the split is smaller) and their labels, evenly
        spaced over a split, unflipped.

        The same images on every call, for image grids. An empty split falls back to ``train``.
        """
        datasets = {"train": self.splits.train, "val": self.splits.val, "test": self.splits.test}
        if split not in datasets:
            raise DataError(f"fixed_batch: split {split!r} must be one of {list(datasets)}")
        dataset = datasets[split] if len(datasets[split]) else self.splits.train
        dataset = dataset.without_augmentation()
        if n <= 0 or len(dataset) == 0:
            raise DataError(f"fixed_batch: cannot take n={n} images from a split of {len(dataset)}")
        positions = np.linspace(0, len(dataset) - 1, num=min(n, len(dataset))).round().astype(np.int64)
        return collate(dataset.__getitems__(positions.tolist()))


def datamodule_from_config(raw: dict[str, Any], source: str = "saved config") -> VAEDataModule:
    """The data of a run's saved config (a plain dict, as checkpoints and exports keep it), set up."""
    from vaezoo.config import from_dict

    config = from_dict(raw, source=source)
    datamodule = VAEDataModule(config.data, batch_size=config.train.batch_size)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule

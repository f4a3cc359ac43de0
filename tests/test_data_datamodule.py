"""VAEDataModule: dataset choice, config errors, loaders, fixed batches and subsets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vaezoo.config import DataConfig
from vaezoo.data import DATASETS, DataError, VAEDataModule
from vaezoo.data.transforms import center_crop, pad_or_resize, to_tensor


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(20):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(root / f"{i:02d}.png")
    return root


def make_module(path: Path, batch_size: int = 4, **overrides) -> VAEDataModule:
    module = VAEDataModule(
        DataConfig(name="image_folder", path=str(path), **overrides), batch_size=batch_size
    )
    module.setup()
    return module


def test_dataset_names():
    assert set(DATASETS) == {
        "dsprites",
        "celeba",
        "image_folder",
        "mnist",
        "fashion_mnist",
        "arrays",
        "cifar10",
        "cifar100",
        "vectors",
        "in_memory",  # vaezoo.fit
        "shapes3d",
        "mpi3d",
        "smallnorb",
        "cars3d",
    }


def test_unknown_name_suggests_the_closest():
    with pytest.raises(
        DataError,
        match=r"data.name = 'cleba' is not a dataset \(did you mean 'celeba'\?\); valid names: dsprites, celeba",
    ):
        VAEDataModule(DataConfig(name="cleba"))
    with pytest.raises(DataError, match="did you mean 'image_folder'"):
        VAEDataModule(DataConfig(name="imagefolder"))


@pytest.mark.parametrize("name", ["celeba", "image_folder", "mnist"])
def test_missing_path_names_the_key(name: str):
    module = VAEDataModule(DataConfig(name=name))
    with pytest.raises(
        DataError, match=rf"data\.path is not set: the {name} dataset needs data\.path pointing at"
    ):
        module.setup()


def test_bad_settings_are_refused():
    with pytest.raises(DataError, match="data.normalize = 'minmax'"):
        VAEDataModule(DataConfig(normalize="minmax"))
    with pytest.raises(DataError, match="data.channels = 2"):
        VAEDataModule(DataConfig(channels=2))
    with pytest.raises(DataError, match="batch sizes must be positive"):
        VAEDataModule(DataConfig(), batch_size=0)


def test_properties_need_setup(folder: Path):
    module = VAEDataModule(DataConfig(name="image_folder", path=str(folder)))
    with pytest.raises(RuntimeError, match="setup"):
        module.num_train  # noqa: B018


def test_setup_is_idempotent_and_describes_the_data(folder: Path):
    module = make_module(folder, image_size=16, normalize="symmetric")
    splits = module.splits
    module.setup("fit")
    module.setup("validate")
    assert module.splits is splits
    assert (module.channels, module.image_size, module.value_range, module.label_shape) == (
        3,
        16,
        (-1.0, 1.0),
        (),
    )
    assert module.ground_truth is None
    assert (module.num_train, module.num_val) == (19, 1)


def test_loaders(folder: Path):
    module = make_module(folder, batch_size=4, image_size=16)
    train = module.train_dataloader()
    assert train.drop_last and not train.persistent_workers and train.batch_size == 4
    assert sum(len(b[0]) for b in train) == 16  # 19 images, whole batches of 4
    val = module.val_dataloader()
    assert not val.drop_last and next(iter(val))[0].shape == (1, 3, 16, 16)
    assert len(module.test_dataloader().dataset) == 1
    small = make_module(folder, batch_size=64)
    assert not small.train_dataloader().drop_last  # 19 images: keep the only (partial) batch
    assert VAEDataModule(DataConfig(), batch_size=8, val_batch_size=3).val_batch_size == 3


def test_fixed_batch_is_deterministic(folder: Path):
    module = make_module(folder, val_fraction=0.5, flip=True)
    images, labels = module.fixed_batch(4)
    again, _ = module.fixed_batch(4, "val")
    assert images.shape == (4, 3, 64, 64) and labels.shape == (4,)
    assert torch.equal(images, again)
    torch.manual_seed(1)
    train_a, _ = module.fixed_batch(6, "train")
    torch.manual_seed(2)
    train_b, _ = module.fixed_batch(6, "train")
    assert torch.equal(train_a, train_b)  # no random flip in fixed batches
    assert len(module.fixed_batch(100)[0]) == module.num_val == 10
    with pytest.raises(DataError, match="split 'holdout'"):
        module.fixed_batch(4, "holdout")


def test_empty_val_split_falls_back_to_train(folder: Path):
    module = make_module(folder, val_fraction=0.0)
    assert module.num_val == 0
    assert module.fixed_batch(3)[0].shape == (3, 3, 64, 64)


def test_subset_size_is_respected(folder: Path):
    module = make_module(folder, subset=10, val_fraction=0.2)
    assert (module.num_train, module.num_val) == (8, 2)
    with pytest.warns(UserWarning, match="data.subset = 50 exceeds the 20 images"):
        assert make_module(folder, subset=50).num_train + 1 == 20


def test_transform_helpers():
    image = Image.new("RGB", (30, 10))
    assert center_crop(image).size == (10, 10)
    with pytest.raises(DataError, match="crop size 12 does not fit an image of 30x10"):
        center_crop(image, 12)
    tensor = to_tensor(np.full((2, 3), 255, np.uint8), "symmetric")
    assert tensor.shape == (1, 2, 3) and (tensor == 1).all()
    assert to_tensor(np.zeros((2, 3, 3), np.uint8)).shape == (3, 2, 3)
    batch = torch.ones(2, 1, 28, 28)
    assert pad_or_resize(batch, 32).sum() == 2 * 28 * 28
    assert pad_or_resize(batch, 29).shape == (2, 1, 29, 29)  # odd margin: resized


@pytest.mark.filterwarnings("ignore:.*LeafSpec")
def test_lightning_trainer_runs_the_module(folder: Path, tmp_path: Path):
    import lightning as L

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(3 * 8 * 8, 1)

        def training_step(self, batch, batch_idx):
            images, _ = batch
            return self.layer(images.flatten(1)).pow(2).mean()

        def validation_step(self, batch, batch_idx):
            self.log("val", self.layer(batch[0].flatten(1)).mean())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = VAEDataModule(DataConfig(name="image_folder", path=str(folder), image_size=8, val_fraction=0.2), 4)
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(Tiny(), datamodule=data)
    assert trainer.global_step == 4 and data.num_train == 16


def test_label_dim_for_conditioning(folder: Path, tmp_path: Path):
    assert make_module(folder).label_dim == 1  # a flat folder is one class
    classes = tmp_path / "classes"
    for name in ("cats", "dogs", "owls"):
        (classes / name).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(classes / name / "a.png")
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(classes / name / "b.png")
    assert make_module(classes).label_dim == 3
    dsprites = VAEDataModule(DataConfig(subset=100), batch_size=4)
    dsprites.setup()
    assert dsprites.label_dim == 5


def test_a_single_image_trains_and_an_empty_training_split_is_refused(folder: Path, tmp_path: Path):
    single = tmp_path / "single"
    single.mkdir()
    (folder / "00.png").rename(single / "only.png")
    module = make_module(single, val_fraction=0.5)  # one image: it trains, validation is empty
    assert (module.num_train, module.num_val) == (1, 0)
    with pytest.raises(
        DataError, match=r"the validation split is empty \(data.val_fraction = 0.5, 1 training"
    ):
        module.check_fit()
    module.check_fit(validate=False)  # train.limit_val_batches: 0 trains without validation

    from vaezoo.data.idx import IDXDataset

    module.splits.train = IDXDataset(np.zeros((0, 28, 28), np.uint8), np.zeros(0), 28)
    with pytest.raises(DataError, match="the training split is empty"):
        module.check_fit(validate=False)


def test_bad_files_setting_is_checked():
    with pytest.raises(DataError, match=r"data.bad_files = 'ignore' must be one of \['fail', 'skip'\]"):
        VAEDataModule(DataConfig(bad_files="ignore"))  # type: ignore[arg-type]
    assert VAEDataModule(DataConfig()).skipped_files == 0  # before setup: nothing met yet

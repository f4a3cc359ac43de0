"""`vaezoo.fit`: training from Python on a tensor, an array, a Dataset or a DataLoader, image-only
or labelled, with the CLI's run folder."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

import vaezoo
from vaezoo.cli import main
from vaezoo.config import ConfigError
from vaezoo.data import DataError


def squares(n: int = 96, size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, size, size) images of a bright square at one of 4 places, and that place (0..3)."""
    rng = np.random.default_rng(seed)
    places = rng.integers(0, 4, n)
    images = np.zeros((n, size, size), dtype=np.uint8)
    half = size // 2
    for i, place in enumerate(places):
        top, left = divmod(int(place), 2)
        images[i, top * half : (top + 1) * half, left * half : (left + 1) * half] = 255
    return images, places


def settings(tmp_path: Path, **more) -> dict:
    return {
        "model.hidden_dims": [8, 16],
        "model.latent_dim": 3,
        "data.image_size": 16,
        "train.batch_size": 16,
        "train.max_epochs": 1,
        "logging.save_dir": str(tmp_path / "runs"),
        "logging.progress_bar": "none",
        "logging.num_images": 16,
        **more,
    }


@pytest.mark.slow
def test_a_tensor_of_images_trains_into_a_full_run_folder_with_falling_loss(tmp_path):
    images, _ = squares()
    x = torch.from_numpy(images).float().div(255).unsqueeze(1)  # (N, 1, H, W) in [0, 1], no labels
    more = {"train.max_epochs": 4, "logging.logger": "csv", "logging.log_every_n_steps": 1, "train.lr": 0.01}
    result = vaezoo.fit("VanillaVAE", x, settings=settings(tmp_path, **more))
    run = result.run_dir
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "summary.json").is_file()
    assert sorted(p.name for p in (run / "images").glob("reconstructions_epoch*.png"))[-1].endswith("003.png")
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["name"] == "in_memory" and saved["model"]["latent_dim"] == 3
    assert saved["data"]["subset"] is None  # the shipped vae.yaml's dSprites subset is not these images'
    with open(run / "metrics.csv") as file:
        losses = [float(row["train/loss_step"]) for row in csv.DictReader(file) if row.get("train/loss_step")]
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    assert result.summary["val_metrics"]["val/loss"] > 0 and not result.model.training
    assert result.model.sample(2, "cpu").shape == (2, 1, 16, 16)


class ImagesOnly(Dataset):
    """A Dataset whose items are images alone (what pythae's users asked for)."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(self.images[index][None].astype(np.float32) / 255)


@pytest.mark.parametrize(
    "make",
    [
        lambda images, labels: ImagesOnly(images),
        lambda images, labels: TensorDataset(torch.from_numpy(images), torch.from_numpy(labels)),
        lambda images, labels: DataLoader(torch.from_numpy(images), batch_size=10),
        lambda images, labels: DataLoader(TensorDataset(torch.from_numpy(images)), batch_size=7),
    ],
    ids=["dataset-image-only", "dataset-labelled", "loader-image-only", "loader-1-tuples"],
)
def test_datasets_and_loaders_image_only_or_labelled(make, tmp_path):
    images, labels = squares(48)
    result = vaezoo.fit(
        "VanillaVAE", make(images, labels), settings=settings(tmp_path, **{"data.val_fraction": 0.25})
    )
    assert (result.run_dir / "images" / "samples_epoch000.png").is_file()
    assert result.summary["global_step"] == 2  # 36 training images in batches of 16, the last part dropped


def test_labels_of_an_array_condition_a_conditional_model(tmp_path):
    images, places = squares(64)
    nhwc = np.repeat(images[..., None], 3, axis=-1)  # (N, H, W, 3) uint8
    result = vaezoo.fit("ConditionalVAE", nhwc, labels=places, settings=settings(tmp_path))
    model = result.model
    assert model.config["num_classes"] == 4 and model.config["in_channels"] == 3
    assert model.sample(4, "cpu", labels=torch.arange(4)).shape == (4, 3, 16, 16)


def test_a_model_object_is_trained_in_place(tmp_path):
    model = vaezoo.create_model("BetaVAE", 1, 3, [8, 16], image_size=16, beta=2.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images, _ = squares(48)
    more = {k: v for k, v in settings(tmp_path).items() if not k.startswith("model.")}
    result = vaezoo.fit(model, images, settings=more)
    assert type(result.model).__name__ == "BetaVAE" and result.model.config["beta"] == 2.0
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert "BetaVAE" in str(result.run_dir)


@pytest.mark.slow
def test_resume_continues_the_run_given_the_same_data(tmp_path):
    images, _ = squares(48)
    first = vaezoo.fit("VanillaVAE", images, settings=settings(tmp_path))
    resumed = vaezoo.fit("VanillaVAE", images, settings={"train.max_epochs": 2}, resume=first.run_dir)
    assert (
        resumed.run_dir == first.run_dir
        and resumed.summary["global_step"] == 2 * first.summary["global_step"]
    )


@pytest.mark.slow
def test_commands_on_the_run_say_the_data_must_be_named_again(tmp_path, capsys):
    images, _ = squares(48)
    run = vaezoo.fit("VanillaVAE", images, settings=settings(tmp_path)).run_dir
    assert main(["reconstruct", str(run), "-o", str(tmp_path / "r.png")]) == 2
    err = capsys.readouterr().err
    assert "trained on images given to vaezoo.fit" in err and "--data DIR" in err
    out = tmp_path / "export"
    assert main(["export", str(run), "-o", str(out)]) == 0  # the run's own reconstruction grid instead
    assert "the run's own grid" in (out / "README.md").read_text()


class Stream(IterableDataset):
    def __iter__(self):
        yield from torch.zeros(4, 1, 8, 8)


@pytest.mark.parametrize(
    ("data", "kwargs", "error", "message"),
    [
        ({"a": 1}, {}, DataError, "a dict; expected a tensor or numpy array of images"),
        (Stream(), {}, DataError, "an IterableDataset has no length or index; pass it in a DataLoader"),
        (
            [np.zeros((8, 8)), np.zeros((9, 9))],
            {},
            DataError,
            "expected a tensor or numpy array",
        ),
        (
            TensorDataset(torch.zeros(4, 1, 8, 8)),
            {"labels": np.zeros(4)},
            DataError,
            "a Dataset's items carry their own",
        ),
        (np.full((6, 8, 8), 2.0, np.float32) * -1, {}, DataError, "expected \\[0, 1\\] or \\[0, 255\\]"),
        (
            np.zeros((6, 8, 8), np.uint8),
            {"labels": np.zeros(5, np.int64)},
            DataError,
            "5 labels for 6 images",
        ),
        (np.zeros((6, 8, 8), np.uint8), {"settings": {"train_max_epochs": 1}}, ConfigError, "'section.key'"),
        (np.zeros((6, 8, 8), np.uint8), {"settings": {"train.max_epoch": 1}}, ConfigError, "max_epochs"),
    ],
    ids=["dict", "iterable", "list", "labels-twice", "negative", "label-count", "flat-key", "typo"],
)
def test_bad_data_and_settings_are_named(tmp_path, data, kwargs, error, message):
    kwargs = {"settings": settings(tmp_path), **kwargs}
    with pytest.raises(error, match=message):
        vaezoo.fit("VanillaVAE", data, **kwargs)
    assert not (tmp_path / "runs").exists()  # nothing was written


def test_a_dataset_of_mixed_shapes_names_the_item(tmp_path):
    class Mixed(Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return torch.zeros(1, 8, 8 + (i == 2))

    with pytest.raises(DataError, match="item 2: an image of shape"):
        vaezoo.fit("VanillaVAE", Mixed(), settings=settings(tmp_path))


def test_an_array_of_vectors_trains_a_model_on_vectors(tmp_path):
    rng = np.random.default_rng(0)
    t = rng.uniform(0, 2 * np.pi, 128)
    points = np.stack([np.cos(t), np.sin(t), 0.1 * t], axis=1)  # a helix in 3-D
    more = {"model.hidden_dims": [32, 16], "data.standardize": True, "train.max_epochs": 2}
    result = vaezoo.fit("VanillaVAE", points, settings={**settings(tmp_path), **more})
    model = result.model
    assert model.config["architecture"] == "mlp" and model.config["in_channels"] == 3
    assert model.sample(5, "cpu").shape == (5, 3)
    assert not (result.run_dir / "images").exists() or not list((result.run_dir / "images").glob("*.png"))
    with pytest.raises(DataError, match=r"the value at \[2, 1\] is nan"):
        bad = points.copy()
        bad[2, 1] = np.nan
        vaezoo.fit("VanillaVAE", bad, settings=settings(tmp_path / "bad"))


def test_channels_last_leaves_vector_batches_as_they_are(tmp_path):
    points = np.random.default_rng(1).normal(size=(64, 4))
    more = {"model.hidden_dims": [16, 8], "train.channels_last": True}
    result = vaezoo.fit("VanillaVAE", points, settings={**settings(tmp_path), **more})
    assert result.summary["global_step"] > 0 and result.model.config["architecture"] == "mlp"

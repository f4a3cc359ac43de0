"""``data.name: cifar10`` / ``cifar100``: the binary batches, written small by each test."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_RUN

from vaezoo.config import DataConfig
from vaezoo.data import DataError, VAEDataModule

REPO = Path(__file__).resolve().parents[1]
CIFAR10 = [f"data_batch_{i}.bin" for i in range(1, 6)]


def records(n: int, label_columns: list[np.ndarray], seed: int) -> tuple[bytes, np.ndarray]:
    """``n`` records (label bytes, then 3072 pixel bytes) and their pixels (n, 3, 32, 32)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    labels = np.stack(label_columns, axis=1).astype(np.uint8)
    return np.concatenate([labels, pixels.reshape(n, -1)], axis=1).tobytes(), pixels


def make_cifar10(
    folder: Path, per_batch: int = 6, n_test: int = 5
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A cifar-10-batches-bin folder; {file: (pixels, labels)}."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for seed, (name, n) in enumerate([*((b, per_batch) for b in CIFAR10), ("test_batch.bin", n_test)]):
        labels = (np.arange(n) + seed) % 10
        data, pixels = records(n, [labels], seed)
        (folder / name).write_bytes(data)
        out[name] = (pixels, labels)
    (folder / "batches.meta.txt").write_text("\n".join(f"class{i}" for i in range(10)))
    return out


def make_cifar100(
    folder: Path, n_train: int = 20, n_test: int = 6
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for seed, (name, n) in enumerate([("train.bin", n_train), ("test.bin", n_test)]):
        fine = (np.arange(n) * 7 + 50 + seed) % 100
        data, pixels = records(n, [fine // 5, fine], seed)  # coarse, fine
        (folder / name).write_bytes(data)
        out[name] = (pixels, fine)
    return out


def module(path: Path, name: str = "cifar10", **overrides) -> VAEDataModule:
    datamodule = VAEDataModule(
        DataConfig(name=name, path=str(path), **{"image_size": 32, **overrides}), batch_size=4
    )
    datamodule.setup()
    return datamodule


def split(datamodule: VAEDataModule, which: str) -> tuple[torch.Tensor, torch.Tensor]:
    dataset = getattr(datamodule.splits, which).without_augmentation()
    return dataset.__getitems__(list(range(len(dataset))))


def test_cifar10_train_batches_and_test_batch(tmp_path: Path):
    files = make_cifar10(tmp_path / "cifar-10-batches-bin")
    dm = module(tmp_path / "cifar-10-batches-bin")
    assert (dm.num_train, dm.num_val, len(dm.splits.test)) == (30, 5, 5) and dm.splits.test is dm.splits.val
    assert (dm.channels, dm.label_shape, dm.label_dim) == (3, (), 10)
    images, labels = split(dm, "train")
    pixels = np.concatenate([files[name][0] for name in CIFAR10])
    assert images.shape == (30, 3, 32, 32) and labels.dtype == torch.int64
    assert torch.allclose(images, torch.from_numpy(pixels / 255.0).float())  # R, G, B planes, row by row
    assert labels.tolist() == np.concatenate([files[name][1] for name in CIFAR10]).tolist()
    images, labels = split(dm, "val")
    assert torch.allclose(images, torch.from_numpy(files["test_batch.bin"][0] / 255.0).float())
    assert labels.tolist() == files["test_batch.bin"][1].tolist()
    batch_images, batch_labels = next(iter(dm.train_dataloader()))
    assert batch_images.shape == (4, 3, 32, 32) and batch_labels.shape == (4,)


def test_cifar100_uses_the_fine_label(tmp_path: Path):
    files = make_cifar100(tmp_path / "cifar-100-binary")
    dm = module(tmp_path / "cifar-100-binary", "cifar100")
    assert (dm.num_train, dm.num_val, dm.label_dim) == (20, 6, 100)
    images, labels = split(dm, "val")
    assert labels.tolist() == files["test.bin"][1].tolist() and labels.max() >= 20  # fine, not coarse
    assert torch.allclose(images, torch.from_numpy(files["test.bin"][0] / 255.0).float())


def test_the_folder_holding_the_extracted_archive_works_too(tmp_path: Path):
    make_cifar10(tmp_path / "cifar-10-batches-bin")
    make_cifar100(tmp_path / "cifar-100-binary")
    assert module(tmp_path).num_train == 30
    assert module(tmp_path, "cifar100").num_train == 20


def test_subset_channels_resize_flip(tmp_path: Path):
    make_cifar10(tmp_path / "c", per_batch=20, n_test=20)
    dm = module(tmp_path / "c", subset=24, image_size=16, channels=1, normalize="symmetric")
    assert (dm.num_train, dm.num_val) == (20, 4)  # shrunk in proportion (100 : 20)
    images, _ = split(dm, "train")
    assert images.shape == (20, 1, 16, 16) and -1 <= images.min() < 0 < images.max() <= 1
    assert dm.splits.train.flip and not dm.splits.val.flip  # flipped in training by default
    assert not module(tmp_path / "c", flip=False).splits.train.flip
    cropped = module(tmp_path / "c", crop=24, image_size=24)
    assert split(cropped, "val")[0].shape == (20, 3, 24, 24)


def test_the_python_version_is_refused_saying_why(tmp_path: Path):
    python = tmp_path / "cifar-10-batches-py"
    python.mkdir()
    with open(python / "data_batch_1", "wb") as f:
        pickle.dump({b"data": [], b"labels": []}, f)
    why = (
        r"this is the CIFAR-10 \"python version\" \(pickled batches\); vaezoo does not read it, because "
        r"unpickling a file can run arbitrary code\. Download the binary version instead "
        r"\(cifar-10-binary\.tar\.gz, .* on https://www\.cs\.toronto\.edu/~kriz/cifar\.html\), extract it "
        r"and point data\.path at its cifar-10-batches-bin folder"
    )
    for path in (python, python / "data_batch_1", tmp_path):
        with pytest.raises(DataError, match=rf"{path}: {why}"):
            module(path)
    hundred = tmp_path / "other" / "cifar-100-python"
    hundred.mkdir(parents=True)
    (hundred / "train").write_bytes(b"\x80\x04")
    with pytest.raises(DataError, match=r"CIFAR-100 \"python version\" .*\(cifar-100-binary\.tar\.gz"):
        module(hundred, "cifar100")
    # Beside the binary folder, the pickled one is not in the way.
    make_cifar10(tmp_path / "cifar-10-batches-bin")
    assert module(tmp_path).num_train == 30


def test_truncated_and_foreign_files_are_named(tmp_path: Path):
    folder = tmp_path / "cifar-10-batches-bin"
    make_cifar10(folder)
    good = (folder / "data_batch_3.bin").read_bytes()
    (folder / "data_batch_3.bin").write_bytes(good[:-100])
    with pytest.raises(
        DataError,
        match=r"data_batch_3\.bin: 18338 bytes is not a whole number of CIFAR-10 records of 3073 bytes; "
        r"the file is truncated or not a CIFAR-10 binary batch",
    ):
        module(folder)
    (folder / "data_batch_3.bin").write_bytes(b"")
    with pytest.raises(DataError, match=r"data_batch_3\.bin: 0 bytes is not a whole number"):
        module(folder)
    (folder / "data_batch_3.bin").write_bytes(records(3, [np.zeros(3), np.zeros(3)], 0)[0])  # CIFAR-100's
    with pytest.raises(DataError, match=r"9222 bytes .* \(its size fits CIFAR-100's 3074-byte records\)"):
        module(folder)
    (folder / "data_batch_3.bin").write_bytes(records(2, [np.array([3, 12])], 0)[0])
    with pytest.raises(
        DataError, match=r"data_batch_3\.bin: record 1 has label 12; CIFAR-10 labels are 0\.\.9"
    ):
        module(folder)
    (folder / "data_batch_3.bin").unlink()
    with pytest.raises(DataError, match=r"data_batch_3\.bin: file is missing; expected the CIFAR-10 binary"):
        module(folder)


def test_wrong_paths_are_named(tmp_path: Path):
    make_cifar100(tmp_path / "cifar-100-binary")
    with pytest.raises(
        DataError,
        match=r"cifar-100-binary: holds CIFAR-100 \(train\.bin\), not CIFAR-10; use data\.name cifar100",
    ):
        module(tmp_path / "cifar-100-binary")
    (tmp_path / "cifar-10-binary.tar.gz").write_bytes(b"\x1f\x8b")
    with pytest.raises(DataError, match=r"is a file; extract it first \(tar xzf cifar-10-binary\.tar\.gz\)"):
        module(tmp_path / "cifar-10-binary.tar.gz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        DataError, match=r"empty/data_batch_1\.bin: file is missing; expected the CIFAR-10 binary"
    ):
        module(tmp_path / "empty")
    with pytest.raises(DataError, match=r"data\.path is not set: the cifar100 dataset needs data\.path"):
        VAEDataModule(DataConfig(name="cifar100")).setup()


@pytest.mark.slow
def test_train_on_cifar10(tmp_path: Path, monkeypatch):
    from vaezoo.cli import main

    monkeypatch.chdir(REPO)
    make_cifar10(tmp_path / "cifar-10-batches-bin", per_batch=80, n_test=40)
    run = tmp_path / "run"
    argv = [
        "train",
        "-c",
        "configs/vae.yaml",
        *TINY_RUN,
        "--data.name",
        "cifar10",
        "--data.path",
        str(tmp_path),
    ]
    assert main([*argv, "--run-dir", str(run)]) == 0
    saved = (run / "config.yaml").read_text()
    assert "in_channels: 3" in saved and "name: cifar10" in saved
    assert (run / "images" / "reconstructions_epoch001.png").is_file()

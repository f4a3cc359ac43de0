"""IDX (MNIST-format) files: parsing raw and gzipped files, padding/resizing, and errors."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from vaezoo.config import DataConfig
from vaezoo.data import DataError, VAEDataModule
from vaezoo.data.idx import DEFAULT_PATHS, parse_idx


def write_idx(path: Path, array: np.ndarray, gz: bool, magic_type: int = 0x08) -> Path:
    header = bytes([0, 0, magic_type, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path = path.with_name(path.name + ".gz") if gz else path
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def make_idx(folder: Path, gz: bool, n_train: int = 12, n_test: int = 5) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, array in arrays.items():
        write_idx(folder / name, array, gz)
    return arrays


def make_module(path: Path, name: str = "mnist", **overrides) -> VAEDataModule:
    module = VAEDataModule(DataConfig(name=name, path=str(path), **overrides), batch_size=4)
    module.setup()
    return module


@pytest.mark.parametrize("gz", [False, True])
def test_reads_back_images_and_labels(tmp_path: Path, gz: bool):
    arrays = make_idx(tmp_path / "mnist", gz)
    module = make_module(tmp_path / "mnist", image_size=28)
    assert (module.num_train, module.num_val, len(module.splits.test)) == (12, 5, 5)
    assert (module.channels, module.label_shape) == (1, ())
    image, label = module.splits.train[3]
    assert image.shape == (1, 28, 28) and label.dtype == torch.int64
    assert label.item() == arrays["train-labels-idx1-ubyte"][3]
    assert torch.allclose(image[0], torch.from_numpy(arrays["train-images-idx3-ubyte"][3] / 255.0).float())
    images, labels = next(iter(module.val_dataloader()))
    assert images.shape == (4, 1, 28, 28) and labels.tolist() == arrays["t10k-labels-idx1-ubyte"][:4].tolist()


def test_pads_to_32_and_resizes_to_64(tmp_path: Path):
    arrays = make_idx(tmp_path / "m", gz=False)
    padded = make_module(tmp_path / "m", image_size=32, normalize="symmetric").splits.train[0][0]
    assert padded.shape == (1, 32, 32)
    assert (padded[:, :2] == -1).all() and (padded[:, :, -2:] == -1).all()  # background
    expected = torch.from_numpy(arrays["train-images-idx3-ubyte"][0] / 255.0).float() * 2 - 1
    assert torch.allclose(padded[0, 2:30, 2:30], expected)
    resized = make_module(tmp_path / "m", image_size=64, channels=3).splits.train[0][0]
    assert resized.shape == (3, 64, 64) and resized.min() >= 0 and resized.max() <= 1


def test_bad_magic_names_the_file(tmp_path: Path):
    make_idx(tmp_path / "m", gz=True)
    bad = write_idx(tmp_path / "m" / "t10k-labels-idx1-ubyte", np.zeros((5, 2), np.uint8), gz=True)
    with pytest.raises(
        DataError, match=r"t10k-labels-idx1-ubyte\.gz: bad IDX magic number 0x00000802; expected 0x00000801"
    ):
        make_module(tmp_path / "m")
    assert bad.exists()


def test_truncated_and_mismatched_files(tmp_path: Path):
    make_idx(tmp_path / "m", gz=False)
    path = tmp_path / "m" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(
        DataError,
        match=r"train-images-idx3-ubyte: holds 9398 bytes of values; its header \(12, 28, 28\) needs 9408",
    ):
        make_module(tmp_path / "m")
    make_idx(tmp_path / "m", gz=False)
    write_idx(tmp_path / "m" / "train-labels-idx1-ubyte", np.zeros(11, np.uint8), gz=False)
    with pytest.raises(DataError, match="holds 12 images but .*train-labels-idx1-ubyte holds 11 labels"):
        make_module(tmp_path / "m")
    with pytest.raises(DataError, match="too short"):
        parse_idx(b"\x00\x00", tmp_path / "x", 0x0801)


def test_missing_file_and_corrupt_gzip(tmp_path: Path):
    make_idx(tmp_path / "m", gz=True)
    (tmp_path / "m" / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: file is missing \(also looked for \.gz\)"):
        make_module(tmp_path / "m")
    (tmp_path / "m" / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8bnot really gzip")
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz: cannot read the file"):
        make_module(tmp_path / "m")


def test_subset_keeps_train_and_val_in_proportion(tmp_path: Path):
    make_idx(tmp_path / "m", gz=False, n_train=60, n_test=10)
    module = make_module(tmp_path / "m", subset=14)
    assert (module.num_train, module.num_val) == (12, 2)


def test_fashion_mnist_default_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    assert DEFAULT_PATHS["fashion_mnist"] == "/usr/share/datasets/fashion-mnist"  # Debian's package
    monkeypatch.setitem(DEFAULT_PATHS, "fashion_mnist", str(tmp_path / "not-installed"))
    with pytest.raises(DataError, match="not-installed' does not exist"):
        VAEDataModule(DataConfig(name="fashion_mnist")).setup()
    make_idx(tmp_path / "f", gz=True)
    assert make_module(tmp_path / "f", name="fashion_mnist").num_train == 12

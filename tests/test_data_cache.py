"""The uint8 image cache of file datasets: built once, rebuilt when stale, atomic, and equal to PIL."""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vaezoo.config import DataConfig
from vaezoo.data import DataError, VAEDataModule, cache, common
from vaezoo.data.cache import RowReader


def save_image(path: Path, seed: int, size: tuple[int, int] = (40, 30)) -> Path:
    """A random RGB image (width, height) = ``size``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for i in range(10):
        save_image(tmp_path / "images" / f"{'ab'[i % 2]}/{i:02d}.png", seed=i)
    return tmp_path / "images"


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The files decoded (through ``common.load_image``) since the test began."""
    seen: list[Path] = []
    original = common.load_image

    def counting(path: Path) -> Image.Image:
        seen.append(Path(path))
        return original(path)

    monkeypatch.setattr(common, "load_image", counting)
    return seen


def make_module(path: Path, cache_dir: Path, **overrides) -> VAEDataModule:
    config = DataConfig(name="image_folder", path=str(path), cache_dir=str(cache_dir), val_fraction=0.2)
    module = VAEDataModule(DataConfig(**{**vars(config), **overrides}), batch_size=4)
    module.prepare_data()
    module.setup()
    return module


def reference(path: Path, size: int = 64, channels: int = 3, crop: int | None = None) -> torch.Tensor:
    """The direct PIL pipeline: convert, centre crop, bilinear resize, to float in [0, 1]."""
    with Image.open(path) as image:
        image = image.convert("RGB" if channels == 3 else "L")
    side = crop or min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    pixels = np.asarray(image)
    pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    return torch.from_numpy(pixels.copy()).float() / 255.0


def all_images(module: VAEDataModule) -> tuple[torch.Tensor, list[Path]]:
    """Every unflipped train + val image of an image-folder module, and their files."""
    train, val = module.splits.train.without_augmentation(), module.splits.val
    images = torch.cat([train.batch(range(len(train)))[0], val.batch(range(len(val)))[0]])
    return images, train.files + val.files


def assert_matches_pil(module: VAEDataModule, **transform) -> None:
    images, files = all_images(module)
    for image, path in zip(images, files, strict=True):
        assert torch.equal(image, reference(path, **transform)), path


def cache_files(cache_dir: Path) -> list[str]:
    return sorted(p.name for p in cache_dir.iterdir() if p.suffix != ".lock")


# --------------------------------------------------------------------------- built once, equal to PIL


def test_built_once_then_reused(folder: Path, tmp_path: Path, decodes: list[Path]):
    module = make_module(folder, tmp_path / "cache")
    assert sorted(decodes) == sorted(module.splits.train.files + module.splits.val.files)  # each file once
    (npy,) = (tmp_path / "cache").glob("image_folder-*-u8.npy")
    stamp = npy.stat().st_mtime_ns
    decodes.clear()
    again = make_module(folder, tmp_path / "cache")
    next(iter(again.train_dataloader()))
    assert decodes == [] and npy.stat().st_mtime_ns == stamp
    assert np.load(npy, mmap_mode="r").shape == (10, 3, 64, 64)


@pytest.mark.parametrize("transform", [{}, {"size": 16, "crop": 20}, {"size": 32, "channels": 1}])
def test_cached_pixels_equal_the_pil_pipeline(folder: Path, tmp_path: Path, transform: dict):
    overrides = {"image_size": transform.get("size", 64), "crop": transform.get("crop")}
    module = make_module(folder, tmp_path / "cache", channels=transform.get("channels"), **overrides)
    assert_matches_pil(module, **transform)


def test_one_cache_serves_every_split_and_seed(folder: Path, tmp_path: Path, decodes: list[Path]):
    make_module(folder, tmp_path / "cache", split_seed=1)
    decodes.clear()
    module = make_module(folder, tmp_path / "cache", split_seed=2, val_fraction=0.5)
    assert decodes == [] and len(list((tmp_path / "cache").glob("*.npy"))) == 1
    assert_matches_pil(module)


# --------------------------------------------------------------------------- staleness


def rewrite(path: Path) -> None:
    """New pixels and a new time (file times are coarse: a quick rewrite could keep the old one)."""
    before = path.stat().st_mtime_ns
    save_image(path, seed=99)
    os.utime(path, ns=(before + 10**9, before + 10**9))


CHANGES: dict[str, Callable[[Path], None]] = {
    "content": lambda root: rewrite(root / "a/00.png"),
    "mtime": lambda root: os.utime(root / "b/01.png", ns=(1, 10**18)),
    "size": lambda root: save_image(root / "a/02.png", seed=2, size=(44, 30)),
    "added": lambda root: save_image(root / "b/99.png", seed=7),
    "removed": lambda root: (root / "a/04.png").unlink(),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_changed_file_list_rebuilds(folder: Path, tmp_path: Path, decodes: list[Path], change: str):
    make_module(folder, tmp_path / "cache")
    CHANGES[change](folder)
    decodes.clear()
    module = make_module(folder, tmp_path / "cache")
    assert len(decodes) == module.num_train + module.num_val  # decoded again, every file
    assert_matches_pil(module)


@pytest.mark.parametrize(
    "setting, transform",
    [({"image_size": 32}, {"size": 32}), ({"crop": 20}, {"crop": 20}), ({"channels": 1}, {"channels": 1})],
)
def test_a_changed_transform_rebuilds(folder: Path, tmp_path: Path, setting: dict, transform: dict):
    make_module(folder, tmp_path / "cache")
    module = make_module(folder, tmp_path / "cache", **setting)
    assert_matches_pil(module, **transform)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2  # each transform keeps its own cache


def test_flip_and_range_are_not_part_of_the_key(folder: Path, tmp_path: Path, decodes: list[Path]):
    make_module(folder, tmp_path / "cache")
    decodes.clear()
    make_module(folder, tmp_path / "cache", flip=False, normalize="symmetric")
    assert decodes == []


# --------------------------------------------------------------------------- atomicity


def test_a_crash_mid_build_leaves_nothing_trusted(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    calls = []
    original = common.load_image

    def crash_on_the_fifth(path: Path) -> Image.Image:
        calls.append(path)
        if len(calls) == 5:
            raise KeyboardInterrupt("killed mid-build")
        return original(path)

    monkeypatch.setattr(common, "load_image", crash_on_the_fifth)
    with pytest.raises(KeyboardInterrupt):
        make_module(folder, tmp_path / "cache")
    assert cache_files(tmp_path / "cache") == []  # no pixels, no sidecar, no temporary file
    monkeypatch.setattr(common, "load_image", original)
    assert_matches_pil(make_module(folder, tmp_path / "cache"))


def test_leftovers_of_a_killed_build_are_not_trusted(folder: Path, tmp_path: Path, decodes: list[Path]):
    make_module(folder, tmp_path / "cache")
    (npy,) = (tmp_path / "cache").glob("*.npy")
    # A kill after the pixels were renamed into place but before the sidecar was written ...
    npy.with_suffix(".json").unlink()
    np.save(npy, np.zeros((10, 3, 64, 64), dtype=np.uint8))  # right shape, wrong pixels
    # ... and one during a later build, which left its temporary file behind.
    (tmp_path / "cache" / f".{npy.name}.abc123.tmp").write_bytes(b"half")
    decodes.clear()
    module = make_module(folder, tmp_path / "cache")
    assert len(decodes) == 10
    assert_matches_pil(module)
    assert cache_files(tmp_path / "cache") == sorted([npy.name, npy.with_suffix(".json").name])


def test_a_sidecar_with_another_key_is_not_trusted(folder: Path, tmp_path: Path, decodes: list[Path]):
    make_module(folder, tmp_path / "cache")
    (sidecar,) = (tmp_path / "cache").glob("*.json")
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "key": "0" * 64}))
    decodes.clear()
    make_module(folder, tmp_path / "cache")
    assert len(decodes) == 10


def cut_short(npy: Path) -> None:
    """A copy or a write torn 100 bytes before the end (the header is intact)."""
    npy.write_bytes(npy.read_bytes()[:-100])


def flip_a_pixel_bit(npy: Path) -> None:
    """One bit of the pixels flipped in place, the file's time kept (as bit rot would)."""
    stat = npy.stat()
    _, _, offset = cache.read_npy_header(npy)
    with open(npy, "r+b") as file:
        file.seek(offset + (stat.st_size - offset) // 2)
        byte = file.read(1)[0]
        file.seek(-1, os.SEEK_CUR)
        file.write(bytes([byte ^ 0x10]))
    os.utime(npy, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def tear_the_sidecar(npy: Path) -> None:
    sidecar = npy.with_suffix(".json")
    sidecar.write_bytes(sidecar.read_bytes()[: len(sidecar.read_bytes()) // 2])


def flip_the_recorded_checksum(npy: Path) -> None:
    sidecar = npy.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**meta, "crc32": meta["crc32"] ^ 1}))


DAMAGE: dict[str, Callable[[Path], None]] = {
    "pixels cut short": cut_short,
    "a flipped pixel bit": flip_a_pixel_bit,
    "a torn sidecar": tear_the_sidecar,
    "a flipped bit in the recorded checksum": flip_the_recorded_checksum,
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_cache_is_rebuilt_not_trusted(
    folder: Path, tmp_path: Path, decodes: list[Path], damage: str
):
    make_module(folder, tmp_path / "cache")
    (npy,) = (tmp_path / "cache").glob("*.npy")
    whole = npy.read_bytes()
    DAMAGE[damage](npy)
    decodes.clear()
    module = make_module(folder, tmp_path / "cache")
    assert len(decodes) == 10  # every file decoded again
    assert npy.read_bytes() == whole
    assert_matches_pil(module)


# --------------------------------------------------------------------------- without a writable cache


def test_unwritable_cache_folder_warns_and_decodes_on_the_fly(folder: Path, tmp_path: Path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    unwritable = blocker / "cache"  # root can write anywhere, but not below a file
    with pytest.warns(UserWarning, match=rf"{unwritable}: cannot write the image cache there"):
        module = make_module(folder, unwritable)
    assert isinstance(module.splits.train.source, common.DecodedImages)
    assert_matches_pil(module)
    images, labels = next(iter(module.train_dataloader()))
    assert images.shape == (4, 3, 64, 64) and labels.dtype == torch.int64


def test_decoding_on_the_fly_still_names_a_broken_file(tmp_path: Path):
    root = tmp_path / "trunc"
    root.mkdir()
    noise = np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "big.png")
    (root / "big.png").write_bytes((root / "big.png").read_bytes()[:2000])  # header intact, pixels not
    save_image(root / "ok.png", seed=0)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.warns(UserWarning, match="cannot write the image cache"):
        module = make_module(root, blocker / "cache", val_fraction=0.0)
    position = [p.name for p in module.splits.train.files].index("big.png")
    with pytest.raises(DataError, match=r"big\.png: cannot decode the image"):
        module.splits.train[position]


def test_a_read_only_valid_cache_is_used(folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    make_module(folder, tmp_path / "cache")

    def no_build(*args: object) -> None:
        raise AssertionError("a valid cache must not be rebuilt")

    monkeypatch.setattr(cache, "build_cache", no_build)
    assert isinstance(make_module(folder, tmp_path / "cache").splits.train.source, RowReader)


# --------------------------------------------------------------------------- reading rows


def test_row_reader_gathers_like_fancy_indexing(tmp_path: Path):
    array = np.random.default_rng(0).integers(0, 256, (50, 3, 4, 5), dtype=np.uint8)
    np.save(tmp_path / "a.npy", array)
    reader = RowReader(tmp_path / "a.npy")
    rows = np.array([7, 0, 49, 7, 3])
    assert np.array_equal(reader.read(rows), array[rows])
    copy = pickle.loads(pickle.dumps(reader))  # a worker's copy opens its own descriptor
    assert copy._fd is None and np.array_equal(copy.read(rows), array[rows])
    with pytest.raises(DataError, match=r"a\.npy: row 0\.\.50 outside 0\.\.49"):
        reader.read([0, 50])


def test_row_reader_names_a_truncated_or_foreign_file(tmp_path: Path):
    np.save(tmp_path / "a.npy", np.zeros((10, 8), dtype=np.uint8))
    (tmp_path / "a.npy").write_bytes((tmp_path / "a.npy").read_bytes()[:-20])
    with pytest.raises(DataError, match=r"a\.npy: truncated at row 9"):
        RowReader(tmp_path / "a.npy").read([9])
    (tmp_path / "b.npy").write_text("text")
    with pytest.raises(DataError, match=r"b\.npy: not a readable \.npy file"):
        RowReader(tmp_path / "b.npy")


def test_workers_read_the_cache(folder: Path, tmp_path: Path):
    module = make_module(folder, tmp_path / "cache", num_workers=1, flip=False)
    loader = module.val_dataloader()
    images, labels = next(iter(loader))
    expected, expected_labels = module.splits.val.batch(range(len(images)))
    assert torch.equal(images, expected) and torch.equal(labels, expected_labels)

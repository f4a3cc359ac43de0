"""dSprites: the factor grid, the renderer, the packed cache, the official npz and the loaders."""

from __future__ import annotations

import pickle
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from vaezoo.config import DataConfig
from vaezoo.data import DataError, VAEDataModule
from vaezoo.data import dsprites as ds

GRID = np.stack(np.unravel_index(np.arange(ds.NUM_IMAGES), ds.FACTOR_SIZES), axis=-1)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The procedural cache, generated once for the whole session (the time is printed with -s)."""
    directory = tmp_path_factory.mktemp("dsprites-cache")
    start = time.perf_counter()
    ds.build_procedural_cache(directory)
    seconds = time.perf_counter() - start
    print(f"\ndSprites cache generated in {seconds:.2f} s")
    assert seconds < 60
    return directory


def make_config(cache_dir: Path, **overrides) -> DataConfig:
    return DataConfig(name="dsprites", cache_dir=str(cache_dir), **overrides)


def centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    rows, cols = np.nonzero(image)
    return rows.mean(), cols.mean()


# --------------------------------------------------------------------------- the grid


def test_grid_has_every_tuple_once_in_c_order_with_posy_fastest():
    classes = ds.index_to_classes(np.arange(ds.NUM_IMAGES))
    assert ds.NUM_IMAGES == 737_280 == int(np.prod(ds.FACTOR_SIZES))
    assert len(np.unique(classes, axis=0)) == ds.NUM_IMAGES
    assert np.array_equal(np.lexsort(classes.T[::-1]), np.arange(ds.NUM_IMAGES))  # lexicographic order
    assert classes[1].tolist() == [0, 0, 0, 0, 1]  # posY varies fastest
    assert classes[32].tolist() == [0, 0, 0, 1, 0]
    assert classes[-1].tolist() == [2, 5, 39, 31, 31]
    assert np.array_equal(ds.classes_to_index(classes), np.arange(ds.NUM_IMAGES))


def test_factor_values_match_the_official_latents():
    values = ds.factor_values([[0, 0, 0, 0, 0], [2, 5, 39, 31, 31], [1, 2, 20, 3, 4]])
    assert values[0].tolist() == [1.0, 0.5, 0.0, 0.0, 0.0]
    np.testing.assert_allclose(values[1], [3.0, 1.0, 2 * np.pi, 1.0, 1.0])
    np.testing.assert_allclose(values[2], [2.0, 0.7, 20 * 2 * np.pi / 39, 3 / 31, 4 / 31])
    assert ds.FACTOR_NAMES == ("shape", "scale", "orientation", "posX", "posY")


def test_bad_classes_name_the_factor():
    with pytest.raises(DataError, match="'orientation' class 40"):
        ds.classes_to_index([[0, 0, 40, 0, 0]])
    with pytest.raises(DataError, match=r"shaped \(N, 5\)"):
        ds.render_dsprites(np.zeros((2, 4), dtype=np.int64))
    with pytest.raises(DataError, match="out of range"):
        ds.index_to_classes(ds.NUM_IMAGES)


# --------------------------------------------------------------------------- the renderer


def test_rendering_is_deterministic_and_binary():
    classes = GRID[np.random.default_rng(0).integers(0, ds.NUM_IMAGES, 500)]
    first = ds.render_dsprites(classes)
    ds.sprite_patches.cache_clear()
    second = ds.render_dsprites(classes)
    assert first.shape == (500, 64, 64) and first.dtype == np.uint8
    assert np.array_equal(first, second)
    assert set(np.unique(first)) == {0, 1}


@pytest.mark.parametrize("scale, area", [(5, 400), (0, 100)])
def test_square_area_at_orientation_zero(scale: int, area: int):
    positions = [(0, 0), (31, 31), (7, 20)]
    images = ds.render_dsprites([[0, scale, 0, x, y] for x, y in positions])
    assert images.sum(axis=(1, 2)).tolist() == [area] * len(positions)
    side = int(np.sqrt(area))
    rows, cols = np.nonzero(images[0])
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (16 - side // 2, 16 + side // 2) * 2


def test_positions_shift_by_one_pixel_right_and_down():
    for shape, scale, orientation in [(0, 5, 0), (1, 3, 7), (2, 0, 33)]:
        along_x = ds.render_dsprites([[shape, scale, orientation, x, 5] for x in range(32)])
        along_y = ds.render_dsprites([[shape, scale, orientation, 5, y] for y in range(32)])
        com_x = np.array([centre_of_mass(im) for im in along_x])
        com_y = np.array([centre_of_mass(im) for im in along_y])
        np.testing.assert_allclose(np.diff(com_x[:, 1]), 1.0)  # posX moves the centre right
        np.testing.assert_allclose(np.diff(com_x[:, 0]), 0.0)
        np.testing.assert_allclose(np.diff(com_y[:, 0]), 1.0)  # posY moves it down
        np.testing.assert_allclose(np.diff(com_y[:, 1]), 0.0)


def test_every_sprite_stays_inside_the_canvas():
    patches = ds.sprite_patches().reshape(-1, 32, 32)
    assert len(patches) == 720
    # Every sprite is drawn and its patch border is empty ...
    assert patches.sum(axis=(1, 2)).min() > 50
    for border in (patches[:, 0, :], patches[:, -1, :], patches[:, :, 0], patches[:, :, -1]):
        assert not border.any()
    # ... so at the extreme positions no white pixel reaches row/column 0 or 63 and none is clipped.
    bases = np.stack(np.unravel_index(np.arange(720), (3, 6, 40)), axis=-1)
    for x, y in [(0, 0), (31, 31), (0, 31), (31, 0)]:
        classes = np.concatenate([bases, np.tile([x, y], (720, 1))], axis=1)
        images = ds.render_dsprites(classes)
        assert not images[:, [0, 63], :].any() and not images[:, :, [0, 63]].any()
        assert np.array_equal(images.sum(axis=(1, 2)), patches.sum(axis=(1, 2)))


def test_shapes_grow_with_scale_and_are_comparable():
    areas = ds.sprite_patches()[:, :, 0].sum(axis=(-1, -2))  # (shape, scale) at orientation 0
    assert (np.diff(areas, axis=1) > 0).all()
    assert (abs(areas[:, -1] - 400) < 60).all()


def test_render_positions_matches_render_dsprites():
    patch = ds.sprite_patches()[2, 4, 11]
    block = ds.render_positions(patch)
    classes = GRID[ds.classes_to_index([[2, 4, 11, 0, 0]])[0] + np.arange(1024)]
    assert np.array_equal(block, ds.render_dsprites(classes))


# --------------------------------------------------------------------------- the cache


def test_cache_equals_direct_rendering(cache_dir: Path):
    path = ds.procedural_cache_path(cache_dir)
    assert f"r{ds.RENDER_VERSION}" in path.name
    assert path.stat().st_size == ds.NUM_IMAGES * 64 * 8 + 128  # packed bits + the .npy header
    assert not list(cache_dir.glob("*.tmp"))
    packed = ds.open_packed(path, ds.NUM_IMAGES)
    indices = np.concatenate(
        [[0, ds.NUM_IMAGES - 1], np.random.default_rng(1).integers(0, ds.NUM_IMAGES, 3000)]
    )
    assert np.array_equal(np.unpackbits(packed[indices], axis=-1), ds.render_dsprites(GRID[indices]))
    start = time.perf_counter()
    assert ds.build_procedural_cache(cache_dir) == path  # an existing valid cache is reused
    assert time.perf_counter() - start < 1


def test_failed_write_leaves_no_file(tmp_path: Path):
    target = tmp_path / "cache.npy"

    def fail(out: np.ndarray) -> None:
        out[:1] = 1
        raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        ds.write_packed(target, 4, fail)
    assert list(tmp_path.iterdir()) == []


def test_damaged_cache_is_not_trusted(tmp_path: Path):
    path = tmp_path / "bad.npy"
    np.save(path, np.zeros((10, 64, 8), dtype=np.uint8))
    with pytest.warns(UserWarning, match="rebuilding"):
        assert ds.open_packed(path, ds.NUM_IMAGES) is None
    path.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable"):
        assert ds.open_packed(path, ds.NUM_IMAGES) is None


# --------------------------------------------------------------------------- datasets and the module


@pytest.mark.parametrize("normalize, low", [("unit", 0.0), ("symmetric", -1.0)])
def test_loader_shapes_ranges_and_labels(cache_dir: Path, normalize: str, low: float):
    module = VAEDataModule(make_config(cache_dir, normalize=normalize, subset=400), batch_size=16)
    module.prepare_data()
    module.setup("fit")
    assert (module.channels, module.image_size, module.label_shape) == (1, 64, (5,))
    assert module.value_range == (low, 1.0)
    images, labels = next(iter(module.train_dataloader()))
    assert images.shape == (16, 1, 64, 64) and images.dtype == torch.float32
    assert set(images.unique().tolist()) == {low, 1.0}
    assert labels.shape == (16, 5) and labels.dtype == torch.float32
    dataset = module.splits.val
    image, label = dataset[3]
    classes = dataset.factor_classes([3])
    np.testing.assert_allclose(label.numpy(), ds.factor_values(classes)[0], rtol=1e-6)
    expected = torch.from_numpy(ds.render_dsprites(classes)[0]).float() * (1 - low) + low
    assert torch.equal(image[0], expected)


def test_getitems_is_one_batch_equal_to_getitem(cache_dir: Path):
    module = VAEDataModule(make_config(cache_dir, subset=200))
    module.setup()
    dataset = module.splits.train
    images, labels = dataset.__getitems__([5, 0, 17])
    assert images.shape == (3, 1, 64, 64) and labels.shape == (3, 5)
    for image, label, position in zip(images, labels, [5, 0, 17], strict=True):
        single_image, single_label = dataset[position]
        assert torch.equal(image, single_image) and torch.equal(label, single_label)


def test_image_size_channels_and_flip(cache_dir: Path):
    module = VAEDataModule(
        make_config(cache_dir, image_size=32, channels=3, flip=True, subset=300), batch_size=64
    )
    module.setup()
    images, _ = next(iter(module.train_dataloader()))
    assert images.shape == (64, 3, 32, 32)
    assert images.min() >= 0 and images.max() <= 1
    # Flip: the training set with flip on differs from its unflipped copy for about half the images.
    train = module.splits.train
    torch.manual_seed(0)
    flipped, _ = train.batch(range(64))
    plain, _ = train.without_augmentation().batch(range(64))
    changed = (flipped != plain).flatten(1).any(1).float().mean().item()
    assert 0.2 < changed < 0.8
    # dSprites does not flip by default.
    default = VAEDataModule(make_config(cache_dir, subset=300))
    default.setup()
    assert default.splits.train.flip is False


def test_subset_and_split_sizes(cache_dir: Path):
    module = VAEDataModule(make_config(cache_dir, subset=1000, val_fraction=0.1, split_seed=3))
    module.setup()
    assert (module.num_train, module.num_val) == (900, 100)
    assert not set(module.splits.train.indices) & set(module.splits.val.indices)
    again = VAEDataModule(make_config(cache_dir, subset=1000, val_fraction=0.1, split_seed=3))
    again.setup()
    assert np.array_equal(again.splits.val.indices, module.splits.val.indices)
    full = VAEDataModule(make_config(cache_dir))
    full.setup()
    assert full.num_train + full.num_val == ds.NUM_IMAGES
    assert full.num_val == round(ds.NUM_IMAGES * 0.05)


def test_fixed_batch_is_deterministic(cache_dir: Path):
    module = VAEDataModule(make_config(cache_dir, subset=500, flip=True))
    module.setup()
    first = module.fixed_batch(8)
    second = module.fixed_batch(8, "val")
    train_a, train_b = module.fixed_batch(8, "train"), module.fixed_batch(8, "train")
    assert first[0].shape == (8, 1, 64, 64)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert torch.equal(train_a[0], train_b[0])


def test_ground_truth_interface(cache_dir: Path):
    module = VAEDataModule(make_config(cache_dir, image_size=32, subset=100))
    module.setup()
    gt = module.ground_truth
    assert gt.factor_names == ds.FACTOR_NAMES and gt.factor_sizes == (3, 6, 40, 32, 32)
    classes = gt.sample_factors(50, np.random.default_rng(0))
    assert classes.shape == (50, 5) and (classes < np.array(ds.FACTOR_SIZES)).all() and (classes >= 0).all()
    assert np.array_equal(gt.sample_factors(10, 7), gt.sample_factors(10, 7))
    images = gt.images_from_factors(classes)
    assert images.shape == (50, 1, 32, 32)
    rendered = ds.DSpritesGroundTruth(None, image_size=32).images_from_factors(classes)
    assert torch.equal(images, rendered)
    dataset = module.splits.train
    positions = [0, 1, 2]
    assert torch.equal(
        dataset.images_from_factors(dataset.factor_classes(positions)), dataset.batch(positions)[0]
    )
    assert np.array_equal(gt.factor_classes([0, 33]), [[0, 0, 0, 0, 0], [0, 0, 0, 1, 1]])


def test_dataset_pickles_without_the_images(cache_dir: Path):
    module = VAEDataModule(make_config(cache_dir, subset=100))
    module.setup()
    dataset = module.splits.train
    dataset[0]  # opens the memmap
    restored = pickle.loads(pickle.dumps(dataset))
    assert len(pickle.dumps(dataset)) < 100_000
    assert torch.equal(restored[0][0], dataset[0][0])


def test_workers_load_batches(cache_dir: Path):
    module = VAEDataModule(make_config(cache_dir, subset=256, num_workers=2), batch_size=32)
    module.setup()
    loader = module.train_dataloader()
    assert loader.persistent_workers and loader.drop_last
    assert sum(len(images) for images, _ in loader) == 224  # 243 training images, whole batches only


# --------------------------------------------------------------------------- the official npz


def write_npz(path: Path, n: int, drop: str | None = None, shuffle: bool = False) -> dict[str, np.ndarray]:
    """A small npz shaped like the official file (the first n rows of the grid)."""
    classes = np.concatenate([np.zeros((n, 1), np.int64), GRID[:n]], axis=1)
    if shuffle:
        classes = classes[::-1].copy()
    rng = np.random.default_rng(0)
    arrays = {
        "imgs": (rng.random((n, 64, 64)) < 0.3).astype(np.uint8),  # not what our renderer draws
        "latents_values": rng.random((n, 6)),
        "latents_classes": classes,
    }
    arrays.pop(drop, None)
    np.savez_compressed(path, **arrays)
    return arrays


def test_npz_missing_imgs_names_the_file_and_array(tmp_path: Path):
    npz = tmp_path / "dsprites.npz"
    write_npz(npz, 32, drop="imgs")
    config = DataConfig(path=str(npz), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError, match=r"dsprites\.npz: has no array 'imgs'.*latents_values"):
        VAEDataModule(config).prepare_data()


def test_npz_path_errors(tmp_path: Path):
    missing = tmp_path / "nope.npz"
    with pytest.raises(DataError, match=r"data\.path = '.*nope\.npz' does not exist.*imgs"):
        VAEDataModule(DataConfig(path=str(missing), cache_dir=str(tmp_path))).setup()
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="garbage.npz: not a readable .npz"):
        VAEDataModule(DataConfig(path=str(garbage), cache_dir=str(tmp_path))).setup()
    small = tmp_path / "small.npz"
    write_npz(small, 32)
    with pytest.raises(DataError, match=r"small\.npz: imgs has shape \(32, 64, 64\)"):
        VAEDataModule(DataConfig(path=str(small), cache_dir=str(tmp_path))).setup()


def test_npz_is_converted_and_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    n = 2048
    monkeypatch.setattr(ds, "NUM_IMAGES", n)  # a small file stands in for the 737,280 images
    npz = tmp_path / "official.npz"
    arrays = write_npz(npz, n)
    config = DataConfig(path=str(npz), cache_dir=str(tmp_path / "cache"), subset=None, val_fraction=0.25)
    module = VAEDataModule(config, batch_size=8)
    module.prepare_data()
    module.setup()
    [cache] = (tmp_path / "cache").glob("dsprites-npz-official-*.npy")
    assert np.array_equal(np.unpackbits(np.load(cache), axis=-1), arrays["imgs"])
    dataset = module.splits.val
    image, label = dataset[0]
    index = dataset.indices[0]
    assert torch.equal(image[0], torch.from_numpy(arrays["imgs"][index]).float())
    np.testing.assert_allclose(label.numpy(), arrays["latents_values"][index, 1:], rtol=1e-6)
    assert np.array_equal(dataset.factor_classes([0]), arrays["latents_classes"][[index], 1:])
    assert module.num_train + module.num_val == n


def test_npz_in_the_wrong_order_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(ds, "NUM_IMAGES", 64)
    npz = tmp_path / "shuffled.npz"
    write_npz(npz, 64, shuffle=True)
    with pytest.raises(DataError, match="shuffled.npz: latents_classes are not in the dSprites grid order"):
        VAEDataModule(DataConfig(path=str(npz), cache_dir=str(tmp_path))).setup()


def test_npz_stream_reader_reads_every_row(tmp_path: Path):
    npz = tmp_path / "rows.npz"
    data = np.arange(5 * 3 * 2, dtype=np.int32).reshape(5, 3, 2)
    np.savez_compressed(npz, imgs=data)
    chunks = list(ds.iter_npz_rows(npz, "imgs", chunk=2))
    assert [len(c) for c in chunks] == [2, 2, 1]
    assert np.array_equal(np.concatenate(chunks), data)
    with zipfile.ZipFile(npz) as archive:
        assert "imgs.npy" in archive.namelist()

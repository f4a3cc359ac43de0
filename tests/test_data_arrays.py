"""``data.name: arrays``: images, labels and factors from .npz / .npy files each test writes."""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_RUN
from PIL import Image

from vaezoo.config import DataConfig
from vaezoo.data import ArrayGroundTruth, DataError, VAEDataModule
from vaezoo.evaluation.disentanglement import compute_disentanglement

REPO = Path(__file__).resolve().parents[1]
SIZES = (2, 3, 4)  # a 24-cell factor grid
NAMES = ("shape", "scale", "hue")


def grid(sizes: tuple[int, ...] = SIZES) -> np.ndarray:
    """Every combination of ``sizes``, C order (the last factor fastest), (prod, F) int64."""
    return np.stack(np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij"), -1).reshape(-1, len(sizes))


def factor_images(classes: np.ndarray, size: int = 8) -> np.ndarray:
    """Grey uint8 (N, size, size) images whose row k shows factor k (value 60 * class)."""
    images = np.zeros((len(classes), size, size), dtype=np.uint8)
    images[:, : classes.shape[1], :] = (60 * classes)[:, :, None]
    return images


def module(path: Path, **overrides) -> VAEDataModule:
    config = DataConfig(name="arrays", path=str(path), **{"image_size": 8, "val_fraction": 0.25, **overrides})
    datamodule = VAEDataModule(config, batch_size=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the float-range notes; tests that check them use pytest.warns
        datamodule.setup()
    return datamodule


def all_images(datamodule: VAEDataModule, split: str = "val") -> tuple[torch.Tensor, torch.Tensor]:
    dataset = getattr(datamodule.splits, split).without_augmentation()
    images, labels = dataset.__getitems__(list(range(len(dataset))))
    return images, labels


def source_rows(datamodule: VAEDataModule, split: str = "val") -> np.ndarray:
    return getattr(datamodule.splits, split).rows


# --------------------------------------------------------------------------- shapes and values


LAYOUTS = {
    "NHW": ((10, 8, 8), 1, lambda a: a[:, None]),
    "NHW1": ((10, 8, 8, 1), 1, lambda a: a.transpose(0, 3, 1, 2)),
    "NHWC": ((10, 8, 8, 3), 3, lambda a: a.transpose(0, 3, 1, 2)),
    "NHWC-rgba": ((10, 8, 8, 4), 3, lambda a: a.transpose(0, 3, 1, 2)[:, :3]),
    "NCHW": ((10, 3, 8, 8), 3, lambda a: a),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_reads_back_exactly(tmp_path: Path, layout: str):
    shape, channels, to_nchw = LAYOUTS[layout]
    pixels = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    np.save(tmp_path / "x.npy", pixels)
    dm = module(tmp_path / "x.npy")
    assert (dm.channels, dm.num_train, dm.num_val, dm.label_shape) == (channels, 8, 2, ())
    assert dm.splits.test is dm.splits.val
    images, labels = all_images(dm)
    expected = torch.from_numpy(to_nchw(pixels)[source_rows(dm)] / 255.0).float()
    assert images.shape == (2, channels, 8, 8) and torch.allclose(images, expected)
    assert labels.tolist() == [0, 0] and dm.label_dim == 1  # no labels: one class, as a flat folder


@pytest.mark.parametrize(
    ("scale", "assumed"), [(1.0, r"assumed to be in \[0, 1\]"), (255.0, r"assumed to be in \[0, 255\]")]
)
def test_float_range_is_detected_and_said(tmp_path: Path, scale: float, assumed: str):
    unit = np.random.default_rng(1).random((6, 8, 8, 3))
    np.save(tmp_path / "f.npy", unit * scale)  # float64
    config = DataConfig(name="arrays", path=str(tmp_path / "f.npy"), image_size=8, val_fraction=0.5)
    dm = VAEDataModule(config)
    with pytest.warns(UserWarning, match=rf"f\.npy: float images \(min .*, max .*\): {assumed}"):
        dm.setup()
    images, _ = all_images(dm)
    expected = torch.from_numpy(unit.transpose(0, 3, 1, 2)[source_rows(dm)]).float()
    assert torch.allclose(images, expected, atol=1e-6)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (np.linspace(-1, 1, 6 * 16).reshape(6, 4, 4), r"float images hold values in \[-1, 1\]; expected \[0, 1\] or \[0, 255\]; "
         r"for data in \[-1, 1\] save \(images \+ 1\) / 2"),
        (np.linspace(0, 300, 6 * 16).reshape(6, 4, 4), r"float images hold values in \[0, 300\]; expected"),
        (np.arange(6 * 16).reshape(6, 4, 4) * 3, r"int64 images hold values 0\.\.285; expected 0\.\.255"),
    ],
)  # fmt: skip
def test_values_outside_the_ranges_are_refused_naming_the_file(tmp_path: Path, values, message):
    np.save(tmp_path / "bad.npy", values)
    with pytest.raises(DataError, match=rf"bad\.npy: {message}"):
        module(tmp_path / "bad.npy")


def test_non_finite_values_name_the_image(tmp_path: Path):
    values = np.full((6, 4, 4), 0.5, dtype=np.float32)
    values[4, 1, 2] = np.nan
    np.save(tmp_path / "nan.npy", values)
    with pytest.raises(DataError, match=r"nan\.npy: image 4 holds a non-finite value \(NaN or infinity\)"):
        module(tmp_path / "nan.npy")


def test_other_integers_and_bool(tmp_path: Path):
    pixels = np.random.default_rng(2).integers(0, 256, (6, 8, 8)).astype(np.int64)
    np.save(tmp_path / "i.npy", pixels)
    dm = module(tmp_path / "i.npy")
    assert torch.allclose(all_images(dm)[0][:, 0], torch.from_numpy(pixels[source_rows(dm)] / 255).float())
    np.save(tmp_path / "b.npy", pixels > 127)
    dm = module(tmp_path / "b.npy")
    assert torch.equal(all_images(dm)[0][:, 0], torch.from_numpy(pixels[source_rows(dm)] > 127).float())


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((5, 3, 4, 4), r"images shaped \(5, 3, 4, 4\) read as channels last .* or channels first .*; save "
         r"them as \(N, H, W, C\)"),
        ((5, 6, 7, 8), r"images shaped \(5, 6, 7, 8\) have no channel axis of 1, 3 or 4"),
        ((5, 16), r"images shaped \(5, 16\); expected \(N, H, W\), \(N, H, W, C\) or \(N, C, H, W\)"),
        ((0, 8, 8), r"images shaped \(0, 8, 8\) hold no pixels"),
    ],
)  # fmt: skip
def test_shapes_that_are_not_images_are_refused(tmp_path: Path, shape, message):
    np.save(tmp_path / "s.npy", np.zeros(shape, dtype=np.uint8))
    with pytest.raises(DataError, match=rf"s\.npy: {message}"):
        module(tmp_path / "s.npy")


def test_channels_crop_resize_and_normalize(tmp_path: Path):
    rgb = np.random.default_rng(3).integers(0, 256, (4, 10, 14, 3), dtype=np.uint8)
    np.save(tmp_path / "rgb.npy", rgb)
    # Non-square: the central 10x10 square; data.channels 1 is PIL's luma.
    grey = module(tmp_path / "rgb.npy", image_size=10, channels=1)
    images, _ = all_images(grey)
    pil = np.stack([np.asarray(Image.fromarray(im).convert("L")) for im in rgb[source_rows(grey)]])
    assert images.shape == (1, 1, 10, 10)
    assert np.abs(images[:, 0].numpy() * 255 - pil[:, :, 2:12]).max() <= 1.0  # PIL rounds to integers
    # Grey to RGB repeats the channel; a resize to 16 stays in range; symmetric is [-1, 1].
    np.save(tmp_path / "grey.npy", rgb[..., 0])
    wide = module(tmp_path / "grey.npy", image_size=16, channels=3, normalize="symmetric", val_fraction=0)
    images, _ = all_images(wide, "train")
    assert images.shape == (4, 3, 16, 16) and images.min() >= -1 and images.max() <= 1 and images.min() < 0
    assert torch.equal(images[:, 0], images[:, 2])
    cropped = module(tmp_path / "rgb.npy", image_size=4, crop=4, val_fraction=0)
    expected = torch.from_numpy(rgb[:, 3:7, 5:9].transpose(0, 3, 1, 2) / 255).float()
    assert torch.allclose(all_images(cropped, "train")[0], expected)
    with pytest.raises(DataError, match=r"data\.crop = 11 does not fit the 10x14 images of .*rgb\.npy"):
        module(tmp_path / "rgb.npy", crop=11)


def test_flip_only_with_data_flip_and_only_in_training(tmp_path: Path):
    pixels = np.zeros((64, 4, 4), dtype=np.uint8)
    pixels[:, :, 0] = 255  # a white left column
    np.save(tmp_path / "edge.npy", pixels)
    plain = module(tmp_path / "edge.npy", image_size=4)
    assert (all_images(plain, "train")[0][:, 0, :, 0] == 1).all()
    flipped = module(tmp_path / "edge.npy", image_size=4, flip=True)
    train = flipped.splits.train
    images, _ = train.__getitems__(list(range(len(train))))
    assert 0 < (images[:, 0, 0, 3] == 1).sum() < len(train)  # some mirrored, some not
    assert (all_images(flipped, "val")[0][:, 0, :, 0] == 1).all()


def test_split_subset_and_loaders(tmp_path: Path):
    np.save(tmp_path / "x.npy", np.zeros((100, 8, 8), dtype=np.uint8))
    dm = module(tmp_path / "x.npy", subset=40, val_fraction=0.1)
    assert (dm.num_train, dm.num_val) == (36, 4)
    assert not set(source_rows(dm, "train")) & set(source_rows(dm, "val"))
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 1, 8, 8) and labels.dtype == torch.int64


# --------------------------------------------------------------------------- the .npy memory map


def test_npy_is_memory_mapped_and_workers_map_it_again(tmp_path: Path):
    pixels = np.random.default_rng(4).integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    np.save(tmp_path / "big.npy", pixels)
    dm = module(tmp_path / "big.npy")
    source = dm.splits.val.source
    assert isinstance(source.array, np.memmap)
    pickled = pickle.dumps(dm.splits.val)
    assert len(pickled) < pixels.nbytes // 4  # the pixels are not in the pickle: a worker maps the file
    copy = pickle.loads(pickled)
    assert torch.equal(copy.__getitems__([0, 1, 2]).images, dm.splits.val.__getitems__([0, 1, 2]).images)
    with_workers = module(tmp_path / "big.npy", num_workers=2)
    in_process = torch.cat([b[0] for b in dm.val_dataloader()])
    assert torch.equal(torch.cat([b[0] for b in with_workers.val_dataloader()]), in_process)
    fresh = pickle.loads(pickled)
    (tmp_path / "big.npy").unlink()
    np.save(tmp_path / "big.npy", pixels[:20])  # replaced before a worker maps it: named, not misread
    with pytest.raises(
        DataError, match=r"big\.npy: now holds uint8 \(20, 8, 8, 3\), but uint8 \(40, 8, 8, 3\)"
    ):
        fresh.__getitems__([0])


# --------------------------------------------------------------------------- the .npz keys


def test_npz_only_array_is_the_images_and_unknown_keys_are_named(tmp_path: Path):
    pixels = np.random.default_rng(5).integers(0, 256, (8, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "one.npz", pixels)  # arr_0
    dm = module(tmp_path / "one.npz")
    assert torch.allclose(all_images(dm)[0][:, 0], torch.from_numpy(pixels[source_rows(dm)] / 255).float())
    np.savez(tmp_path / "two.npz", pixels, pixels)
    with pytest.raises(DataError, match=r"two\.npz: has no array 'images' \(found 'arr_0', 'arr_1'\)"):
        module(tmp_path / "two.npz")
    np.savez(tmp_path / "typo.npz", images=pixels, label=np.zeros(8, np.int64))
    with pytest.warns(
        UserWarning, match=r"typo\.npz: ignoring array\(s\) 'label'; the arrays read are 'images'"
    ):
        VAEDataModule(DataConfig(name="arrays", path=str(tmp_path / "typo.npz"), image_size=8)).setup()


def test_pickles_and_object_arrays_are_refused(tmp_path: Path):
    objects = np.array([np.zeros((4, 4)), "x"], dtype=object)
    np.save(tmp_path / "objects.npy", objects, allow_pickle=True)
    np.savez(tmp_path / "objects.npz", images=np.zeros((4, 4, 4), np.uint8), labels=objects)
    with open(tmp_path / "pickle.npy", "wb") as f:
        pickle.dump({"images": [1, 2]}, f)
    refused = r"vaezoo loads arrays with allow_pickle=False, because unpickling a file can run arbitrary code"
    with pytest.raises(DataError, match=rf"objects\.npy holds Python objects .*; {refused}"):
        module(tmp_path / "objects.npy")
    with pytest.raises(DataError, match=rf"objects\.npz: array 'labels' holds Python objects .*; {refused}"):
        module(tmp_path / "objects.npz")
    with pytest.raises(
        DataError, match=rf"pickle\.npy: is a Python pickle, not a \.npy or \.npz file; {refused}"
    ):
        module(tmp_path / "pickle.npy")


def test_paths_that_are_not_array_files(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("images")
    with pytest.raises(DataError, match=r"notes\.txt: not a \.npy or \.npz file; expected a \.npy of images"):
        module(tmp_path / "notes.txt")
    with pytest.raises(DataError, match=r"is not a file; expected a \.npy of images"):
        module(tmp_path)
    with pytest.raises(DataError, match=r"nowhere\.npz' does not exist; expected a \.npy of images"):
        module(tmp_path / "nowhere.npz")
    with pytest.raises(DataError, match=r"data\.path is not set: the arrays dataset needs data\.path"):
        VAEDataModule(DataConfig(name="arrays")).setup()
    (tmp_path / "cut.npz").write_bytes(b"PK\x03\x04" + b"\x00" * 20)
    with pytest.raises(DataError, match=r"cut\.npz: not a readable \.npz file"):
        module(tmp_path / "cut.npz")


# --------------------------------------------------------------------------- labels


def test_labels_class_indices_and_vectors(tmp_path: Path):
    pixels = np.zeros((12, 8, 8), dtype=np.uint8)
    classes = np.arange(12) % 5
    np.savez(tmp_path / "c.npz", images=pixels, labels=classes.astype(np.uint8))
    dm = module(tmp_path / "c.npz")
    _, labels = all_images(dm)
    assert labels.dtype == torch.int64 and labels.tolist() == classes[source_rows(dm)].tolist()
    assert (dm.label_shape, dm.label_dim) == ((), 5)
    vectors = np.random.default_rng(6).random((12, 3))
    np.savez(tmp_path / "v.npz", images=pixels, labels=vectors)
    dm = module(tmp_path / "v.npz")
    _, labels = all_images(dm)
    assert labels.dtype == torch.float32 and (dm.label_shape, dm.label_dim) == ((3,), 3)
    assert torch.allclose(labels, torch.from_numpy(vectors[source_rows(dm)]).float())


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.zeros(12), r"is float \(12,\); expected int class indices \(N,\) or float vectors \(N, K\): save "
         r"labels\.astype\(int\) for class indices, or labels\[:, None\]"),
        (np.zeros(11, np.int64), r"holds 11 labels for 12 images; expected one per image"),
        (np.full(12, -1), r"holds class index -1; expected indices 0, 1, 2"),
        (np.array(["cat"] * 12), r"is <U3 \(12,\); expected int class indices"),
        (np.full((12, 2), np.inf), r"is float64 \(12, 2\): empty or not finite"),
    ],
)  # fmt: skip
def test_bad_labels_are_named(tmp_path: Path, labels, message):
    np.savez(tmp_path / "l.npz", images=np.zeros((12, 8, 8), np.uint8), labels=labels)
    with pytest.raises(DataError, match=rf"l\.npz: array 'labels' {message}"):
        module(tmp_path / "l.npz")


# --------------------------------------------------------------------------- factors and ground truth


def write_factors(path: Path, classes: np.ndarray, **extra) -> Path:
    arrays = {"images": factor_images(classes), "factors": classes, "factor_sizes": np.array(SIZES)}
    arrays.update(factor_names=np.array(NAMES))
    arrays.update(extra)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def test_complete_grid_gives_the_ground_truth_interface(tmp_path: Path):
    rng = np.random.default_rng(7)
    order = rng.permutation(24)
    classes = np.concatenate([grid()[order], grid()[:5]])  # any order, some combinations twice
    dm = module(write_factors(tmp_path / "g.npz", classes))
    gt = dm.ground_truth
    assert isinstance(gt, ArrayGroundTruth)
    assert gt.factor_names == NAMES and gt.factor_sizes == SIZES
    assert np.array_equal(gt.factor_classes([0, 3, 25]), classes[[0, 3, 25]])
    sampled = gt.sample_factors(500, np.random.default_rng(0))
    assert sampled.shape == (500, 3) and sampled.dtype == np.int64
    assert (sampled.min(axis=0) == 0).all() and (sampled.max(axis=0) == np.array(SIZES) - 1).all()
    # The round trip: the images of sampled factors show those factors, as the dataset gives them.
    images = gt.images_from_factors(sampled)
    assert images.shape == (500, 1, 8, 8)
    assert np.array_equal((images[:, 0, :3, 0].numpy() * 255 / 60).round().astype(np.int64), sampled)
    rows = source_rows(dm)
    assert torch.equal(gt.images_from_factors(gt.factor_classes(rows)), all_images(dm)[0])
    # Without labels, the factors are the labels (float vectors, as dSprites' factor values).
    assert dm.label_shape == (3,) and torch.equal(all_images(dm)[1], torch.from_numpy(classes[rows]).float())
    with pytest.raises(DataError, match=r"factor 'hue' class 4 is outside 0\.\.3"):
        gt.images_from_factors(np.array([[0, 0, 4]]))
    with pytest.raises(DataError, match=r"shaped \(N, 3\) over \('shape', 'scale', 'hue'\)"):
        gt.images_from_factors(np.array([[0.0, 1.0, 1.0]]))


def test_the_disentanglement_metrics_apply(tmp_path: Path):
    dm = module(write_factors(tmp_path / "g.npz", grid()))

    def factors_read_back(images: torch.Tensor) -> np.ndarray:  # a perfectly disentangled code
        return images[:, 0, :3, 0].double().numpy() + np.random.default_rng(0).normal(
            0, 1e-3, (len(images), 3)
        )

    scores = compute_disentanglement(
        dm.ground_truth,
        factors_read_back,
        ["mig", "beta_vae"],
        num_train=300,
        num_eval=100,
        data_name="arrays",
    )
    assert scores["mig"] > 0.9 and scores["beta_vae_score"] > 0.9, scores


def test_incomplete_grid_says_what_is_missing(tmp_path: Path):
    path = write_factors(tmp_path / "holes.npz", grid()[1:])
    config = DataConfig(name="arrays", path=str(path), image_size=8)
    dm = VAEDataModule(config)
    with pytest.warns(
        UserWarning,
        match=r"holes\.npz: the 23 images cover 23 of the 24 combinations of the 2 x 3 x 4 grid of factor_sizes "
        r"\[2, 3, 4\]: 1 have no image, e\.g\. \{'shape': 0, 'scale': 0, 'hue': 0\}; the disentanglement "
        r"metrics need an image of every combination, so this data has no ground truth",
    ):
        dm.setup()
    assert dm.ground_truth is None and dm.label_shape == (3,)
    write_factors(tmp_path / "few.npz", grid()[:6], factor_sizes=np.array([50, 50, 50]))
    few = r"the 6 images cover 6 of the 125000 combinations .*: 124994 have no image, e\.g\. \{'shape': 0, 'scale': 0, 'hue': 4\}"
    with pytest.warns(UserWarning, match=few):
        VAEDataModule(DataConfig(name="arrays", path=str(tmp_path / "few.npz"), image_size=8)).setup()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"factor_sizes": None}, r"has 'factors' but no 'factor_sizes'; expected 'factor_sizes' \(3,\) ints, "
         r"the number of classes of each factor \(here at least \[2, 3, 4\]\)"),
        ({"factors": None}, r"has 'factor_sizes' and 'factor_names' but no 'factors'"),
        ({"factor_sizes": np.array([2, 3])}, r"array 'factor_sizes' is int64 \(2,\) \[2, 3\]; expected \(3,\) "
         r"positive ints"),
        ({"factor_sizes": np.array([2, 3, 3])}, r"factor 'hue' \(column 2\) is 3 at image 3; expected 0\.\.2 "
         r"\(factor_sizes\[2\] = 3\)"),
        ({"factors": grid().astype(float)}, r"array 'factors' is float64 \(24, 3\); expected \(N, F\) int"),
        ({"factors": grid()[:20]}, r"array 'factors' has 20 rows for 24 images"),
        ({"factor_names": np.array(["a", "b"])}, r"array 'factor_names' is <U1 \(2,\); expected \(3,\) strings"),
        ({"factor_names": np.array(["a", "a", "b"])}, r"array 'factor_names' \['a', 'a', 'b'\] repeats a name"),
    ],
)  # fmt: skip
def test_bad_factors_are_named(tmp_path: Path, extra, message):
    path = write_factors(tmp_path / "f.npz", grid(), **extra)
    with pytest.raises(DataError, match=rf"f\.npz: {message}"):
        module(path)


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_train_and_evaluate_on_an_npz_with_factors(tmp_path: Path, monkeypatch):
    from vaezoo.cli import main

    monkeypatch.chdir(REPO)
    sizes = (4, 5, 5, 4)  # 400 images: TINY_RUN's data.subset
    classes = grid(sizes)
    pixels = np.zeros((len(classes), 32, 32, 3), dtype=np.float32)
    for k in range(len(sizes)):  # factor k: the brightness of its own quarter of the image
        pixels[:, 8 * k : 8 * k + 8] = (classes[:, k] / (sizes[k] - 1))[:, None, None, None]
    data = tmp_path / "mine.npz"
    np.savez(data, images=pixels, factors=classes, factor_sizes=np.array(sizes))
    run = tmp_path / "run"
    argv = ["train", "-c", "configs/vae.yaml", *TINY_RUN, "--data.name", "arrays", "--data.path", str(data)]
    assert main([*argv, "--run-dir", str(run)]) == 0
    assert "in_channels: 3" in (run / "config.yaml").read_text()
    report = tmp_path / "report"
    evaluate = ["evaluate", str(run), "-o", str(report), "--metrics", "disentanglement", "--no-progress"]
    options = ["--disentanglement-metrics", "mig", "--disentanglement-points", "200"]
    assert main([*evaluate, *options]) == 0
    metrics = json.loads((report / "metrics.json").read_text())
    assert 0 <= metrics["metrics"]["disentanglement"]["mig"] <= 1 and not metrics["not_applicable"], metrics

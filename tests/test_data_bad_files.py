"""Bad image files: data.bad_files fail | skip, at start-up and mid-epoch inside DataLoader workers.

Every test writes a real image folder and really damages files in it: before start-up (the cache
build finds them), or after (training, or the loaders, are already running). Files turn bad after
start-up only where vaezoo still reads them: the images decoded on the fly (a cache folder that
cannot be written) and the pixel cache itself.
"""

from __future__ import annotations

import re
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from vaezoo.config import DataConfig, load_config
from vaezoo.data import DataError, VAEDataModule, common
from vaezoo.data.cache import CachedImages
from vaezoo.data.errors import SkippedFileWarning, worker_message

SIZE = 16


def noise_image(path: Path, seed: int, size: tuple[int, int] = (24, 20), mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)
    return path


def image_folder(root: Path, n: int = 11) -> Path:
    """``n`` noise images; the default 11 split 8 train (two whole batches of 4: every training
    file is read in every epoch) and 3 val."""
    for i in range(n):
        noise_image(root / f"{i:02d}.png", seed=i)
    return root


def truncate(path: Path, keep: int = 60) -> None:
    """Cut ``path`` short: its PNG header survives (a header check passes), its pixels do not."""
    path.write_bytes(path.read_bytes()[:keep])


def unwritable(tmp_path: Path) -> Path:
    """A cache folder that cannot be created (below a file): images are decoded on the fly."""
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    return blocker / "cache"


def make_module(root: Path, cache: Path, batch_size: int = 4, **data: object) -> VAEDataModule:
    settings = {"image_size": SIZE, "cache_dir": str(cache), "val_fraction": 0.25, **data}
    config = DataConfig(name="image_folder", path=str(root), **settings)
    module = VAEDataModule(config, batch_size=batch_size)
    with pytest.warns(UserWarning) if cache.parent.is_file() else _nothing():
        module.prepare_data()
    module.setup()
    return module


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None


def epoch(loader) -> list[torch.Tensor]:
    """The image batches of one pass over ``loader``.

    After an error the workers are shut down here: the exception torch re-raises holds the loader's
    iterator in a reference cycle, and a worker pool freed by the cycle collector takes 5 s per
    worker to stop (a process that exits does not wait for it: the CLI ends at once).
    """
    try:
        return [images for images, _ in loader]
    except BaseException:
        workers = getattr(loader, "_iterator", None)  # the persistent workers' iterator
        if workers is not None:
            workers._shutdown_workers()
        raise


def assert_one_line(message: str, *fragments: str) -> None:
    """A message a user can read: names what it must, and holds no worker traceback."""
    for fragment in fragments:
        assert fragment in message, message
    assert "Traceback" not in message and "worker process" not in message, message


# --------------------------------------------------------------------------- worker errors


def test_worker_traceback_is_reduced_to_the_original_message():
    wrapped = (
        "Caught BadImageFile in DataLoader worker process 3.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n    raise BadImageFile(msg)\n    ^^^^^\n'
        "vaezoo.data.errors.BadImageFile: /d/a.png: cannot decode\nsecond line\n"
    )
    assert worker_message(wrapped) == "/d/a.png: cannot decode\nsecond line"
    assert str(DataError(wrapped)) == "/d/a.png: cannot decode\nsecond line"
    assert str(DataError("plain message")) == "plain message"


# --------------------------------------------------------------------------- mid-epoch, in workers


@pytest.mark.parametrize("workers", [0, 2])
def test_a_file_damaged_mid_epoch_fails_naming_it(tmp_path: Path, workers: int):
    root = image_folder(tmp_path / "images")
    module = make_module(root, unwritable(tmp_path), num_workers=workers)
    loader = module.train_dataloader()
    assert len(epoch(loader)) == 2  # a clean first epoch
    victim = module.splits.train.files[4]
    truncate(victim)
    with pytest.raises(DataError) as caught:
        epoch(loader)  # the second epoch reads every training file again
    assert_one_line(str(caught.value), f"{victim}: cannot decode the image", "data.bad_files: skip")


@pytest.mark.parametrize("workers", [0, 2])
def test_a_file_damaged_mid_epoch_is_skipped_warned_once_and_counted(
    tmp_path: Path, workers: int, capfd: pytest.CaptureFixture
):
    root = image_folder(tmp_path / "images")
    module = make_module(root, unwritable(tmp_path), num_workers=workers, bad_files="skip")
    loader, val = module.train_dataloader(), module.val_dataloader()
    epoch(loader)
    train_files, val_file = module.splits.train.files, module.splits.val.files[0]
    first, second = train_files[2], train_files[6]
    truncate(first)
    (second).write_bytes(b"no longer an image")
    val_file.write_bytes(b"\x89PNG\r\n\x1a\n garbage after a PNG signature")
    with pytest.warns(SkippedFileWarning) if workers == 0 else _nothing() as record:
        for _ in range(2):  # the skipped files are not read again in the next epoch
            batches = epoch(loader) + epoch(val)
            assert [len(b) for b in batches] == [4, 4, 3]  # every batch keeps its size
    warned = (
        [str(w.message) for w in record]
        if workers == 0
        else re.findall(r"SkippedFileWarning: (.*)", capfd.readouterr().err)
    )
    assert len(warned) == 1, warned  # once, across workers and epochs
    assert "left out (data.bad_files: skip)" in warned[0]
    assert any(str(path) in warned[0] for path in (first, second, val_file)), warned
    assert module.skipped_files == 3  # train + val, counted in the workers, read in the main process
    assert module.splits.train.skipped_files == 2 and module.splits.val.skipped_files == 1


def test_training_stops_with_the_file_named_when_one_turns_bad(tmp_path: Path, capfd: pytest.CaptureFixture):
    """The real training path: vaezoo's train() with two workers; a file is cut short after the
    first batch. The error is vaezoo's, one message naming the file, not a worker traceback."""
    from vaezoo.training.run import train

    root = image_folder(tmp_path / "images", n=16)
    config = load_config(
        Path(__file__).resolve().parents[1] / "configs" / "vae.yaml",
        [
            "--model.hidden_dims", "[8, 16]", "--model.latent_dim", "2",
            "--data.name", "image_folder", "--data.path", str(root), "--data.image_size", str(SIZE),
            "--data.subset", "null", "--data.val_fraction", "0.25", "--data.num_workers", "2",
            "--data.cache_dir", str(unwritable(tmp_path)),
            "--train.batch_size", "4", "--train.max_epochs", "3",
            "--logging.progress_bar", "none", "--logging.save_dir", str(tmp_path / "runs"),
        ],
    )  # fmt: skip
    damaged: list[Path] = []

    class Damage(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if not damaged:
                damaged.append(trainer.datamodule.splits.train.files[5])
                truncate(damaged[0])

    with pytest.warns(UserWarning, match="cannot write the image cache"):
        with pytest.raises(DataError) as caught:
            train(config, extra_callbacks=[Damage()])
    assert_one_line(str(caught.value), f"{damaged[0]}: cannot decode the image", "data.bad_files: skip")


def test_a_cache_cut_short_mid_run_is_named_and_rebuilt_at_the_next_start(tmp_path: Path):
    root = image_folder(tmp_path / "images")
    module = make_module(root, tmp_path / "cache", num_workers=2)
    loader = module.train_dataloader()
    epoch(loader)
    (npy,) = (tmp_path / "cache").glob("*.npy")
    npy.write_bytes(npy.read_bytes()[:300])  # the header and part of the first row survive
    with pytest.raises(DataError) as caught:
        epoch(loader)
    assert_one_line(str(caught.value), f"{npy}: truncated at row", "rebuilt at the next start")
    again = make_module(root, tmp_path / "cache")  # not trusted: built again, complete
    assert len(epoch(again.train_dataloader())) == 2


# --------------------------------------------------------------------------- at start-up, with the cache


def test_unreadable_files_at_start_up_are_skipped_from_the_cache(tmp_path: Path):
    root = image_folder(tmp_path / "images")
    truncate(root / "03.png")
    (root / "07.png").write_bytes(b"not a png at all")
    with pytest.warns(SkippedFileWarning, match=r"03\.png: cannot decode the image .* left out") as record:
        module = make_module(root, tmp_path / "cache", bad_files="skip")
    assert len([w for w in record if w.category is SkippedFileWarning]) == 1
    assert module.skipped_files == 2
    assert isinstance(module.splits.train.source, CachedImages)
    good = {p.name: common.decode_file(p, module.splits.val.pipeline) for p in root.iterdir()
            if p.name not in ("03.png", "07.png")}  # fmt: skip
    for split in (module.splits.train.without_augmentation(), module.splits.val):
        images = split.batch(range(len(split)))[0]
        for image in images:  # every image served is one of the readable files, none is blank
            pixels = (image * 255).round().to(torch.uint8).numpy()
            assert any(np.array_equal(pixels, g) for g in good.values())
    # the cache remembers what it left out: a second start warns again and counts the same, while
    # "fail" on the same cache names the file
    with pytest.warns(SkippedFileWarning, match=r"03\.png"):
        assert make_module(root, tmp_path / "cache", bad_files="skip").skipped_files == 2
    with pytest.raises(DataError, match=r"03\.png: cannot decode the image .*data\.bad_files: skip"):
        make_module(root, tmp_path / "cache")


def test_skip_with_every_file_unreadable_says_so(tmp_path: Path):
    root = tmp_path / "images"
    root.mkdir()
    for i in range(4):
        (root / f"{i}.png").write_bytes(b"junk")
    with pytest.warns(SkippedFileWarning):
        module = make_module(root, tmp_path / "cache", bad_files="skip")
    with pytest.raises(DataError, match="every one of the 3 image files of this split is unreadable"):
        next(iter(module.train_dataloader()))


def test_fail_names_the_first_unreadable_file_at_start_up(tmp_path: Path):
    root = image_folder(tmp_path / "images")
    (root / "05.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DataError, match=r"05\.png: not a readable image .*set data\.bad_files: skip"):
        make_module(root, tmp_path / "cache")
    assert sorted(p.suffix for p in (tmp_path / "cache").iterdir()) == [".lock"]  # nothing partial


# --------------------------------------------------------------------------- mixed sizes and modes


def save_mode(path: Path, mode: str, size: tuple[int, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        Image.fromarray(np.full(size[::-1], 128 * 257, dtype=np.uint16)).save(path)  # 16-bit mid-grey
        return
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    if mode == "P":
        image = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        image.info["transparency"] = 0
    elif mode == "RGBA":
        image = image.convert("RGBA")
        image.putalpha(Image.fromarray(rng.integers(0, 256, (size[1], size[0]), dtype=np.uint8)))
    else:
        image = image.convert(mode)
    image.save(path)


MODES = {
    "rgb.png": ("RGB", (40, 30)),
    "grey.png": ("L", (17, 23)),
    "grey_alpha.png": ("LA", (31, 31)),
    "rgba.png": ("RGBA", (64, 20)),
    "palette.png": ("P", (25, 50)),
    "bilevel.bmp": ("1", (19, 19)),
    "sixteen.png": ("I;16", (30, 24)),
    "cmyk.jpg": ("CMYK", (28, 36)),
    "small.webp": ("RGB", (5, 7)),
}


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("cached", [True, False])
def test_mixed_sizes_and_modes_load_converted(tmp_path: Path, channels: int, cached: bool):
    root = tmp_path / "mixed"
    root.mkdir()
    for i, (name, (mode, size)) in enumerate(MODES.items()):
        save_mode(root / name, mode, size, seed=i)
    modes = {p.name: Image.open(p).mode for p in root.iterdir()}
    assert modes["sixteen.png"].startswith("I") and modes["palette.png"] == "P"  # really those modes
    cache = tmp_path / "cache" if cached else unwritable(tmp_path)
    module = make_module(root, cache, channels=channels, val_fraction=0.0, flip=False)
    dataset = module.splits.train
    images = dataset.batch(range(len(dataset)))[0]
    assert images.shape == (len(MODES), channels, SIZE, SIZE) and images.dtype == torch.float32
    assert 0 <= images.min() and images.max() <= 1
    sixteen = images[[p.name for p in dataset.files].index("sixteen.png")]
    assert torch.allclose(sixteen, torch.full_like(sixteen, 128 / 255))  # scaled, not clipped to white
    assert len(epoch(module.train_dataloader())) == 2


@pytest.mark.slow
def test_a_training_run_logs_how_many_files_it_skipped(tmp_path: Path):
    import csv

    from vaezoo.training.run import train

    root = image_folder(tmp_path / "images", n=16)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # a PNG signature, no image
    config = load_config(
        Path(__file__).resolve().parents[1] / "configs" / "vae.yaml",
        [
            "--model.hidden_dims",
            "[8, 16]",
            "--model.latent_dim",
            "2",
            "--data.name",
            "image_folder",
            "--data.path",
            str(root),
            "--data.image_size",
            str(SIZE),
            "--data.subset",
            "null",
            "--data.val_fraction",
            "0.25",
            "--data.bad_files",
            "skip",
            "--data.cache_dir",
            str(tmp_path / "cache"),
            "--train.batch_size",
            "4",
            "--train.max_epochs",
            "1",
            "--logging.save_dir",
            str(tmp_path / "runs"),
            "--logging.logger",
            "csv",
            "--logging.progress_bar",
            "none",
            "--logging.num_images",
            "4",
        ],  # fmt: skip
    )
    with pytest.warns(SkippedFileWarning, match="broken.png"):
        run = train(config)
    with open(run / "metrics.csv") as file:
        logged = [
            float(row["data/skipped_files"]) for row in csv.DictReader(file) if row.get("data/skipped_files")
        ]
    assert logged == [1.0]

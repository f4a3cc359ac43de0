"""A disk that really fills: every write vaezoo makes says so and keeps what it had.

Each test mounts a small tmpfs (as root with ``mount``; otherwise inside ``unshare -rm``, reached
through ``/proc/PID/root``), fills it with a filler file and lets vaezoo write there: the error is a
DiskFullError naming the file and the free space, the previous file is byte-identical, and no
partial file is left that a later run would trust.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from helpers import TINY_RUN
from PIL import Image

from vaezoo.cli import main
from vaezoo.config import DataConfig, load_config
from vaezoo.data import VAEDataModule
from vaezoo.fileio import DiskFullError, atomic_write_text
from vaezoo.images import save_image

REPO = Path(__file__).resolve().parents[1]

HOW_TO_ENABLE = (
    "a small tmpfs cannot be mounted here: run the tests as root (mount -t tmpfs), or allow "
    "unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1 / "
    "user.max_user_namespaces > 0) so that `unshare -rm` works"
)


def mount_as_root(where: Path, size: str) -> bool:
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=False)
    return done.returncode == 0


def mount_in_namespace(where: Path, size: str) -> subprocess.Popen | None:
    """A process holding a user and mount namespace in which a tmpfs is mounted at ``where``."""
    if shutil.which("unshare") is None:
        return None
    script = f"mount -t tmpfs -o size={size} tmpfs '{where}' && echo mounted && exec sleep 3600"
    holder = subprocess.Popen(["unshare", "-rm", "sh", "-c", script], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    if holder.stdout.readline().strip() == "mounted":
        return holder
    holder.kill()
    holder.wait()
    return None


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An empty 4 MiB file system, unmounted after the test."""
    where = tmp_path / "disk"
    where.mkdir()
    if mount_as_root(where, "4m"):
        try:
            yield where
        finally:
            subprocess.run(["umount", "--lazy", str(where)], check=True)
        return
    holder = mount_in_namespace(where, "4m")
    if holder is None:
        if os.environ.get("CI") == "true":
            pytest.fail(HOW_TO_ENABLE)
        pytest.skip(HOW_TO_ENABLE)
    try:
        yield Path(f"/proc/{holder.pid}/root{where}")  # the namespace's view, where the tmpfs is
    finally:
        holder.kill()  # the last process of the namespace: the tmpfs goes with it
        holder.wait()


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill ``disk`` with one file until about ``leave`` bytes are free; returns the filler."""
    filler = disk / "filler"
    with open(filler, "ab") as file:
        try:
            file.write(b"\0" * max(0, shutil.disk_usage(disk).free - leave))
            file.flush()
        except OSError:  # leave = 0: the last page did not fit, which is the point
            pass
    assert shutil.disk_usage(disk).free <= leave + 4096
    return filler


def leftovers(folder: Path) -> list[str]:
    """Temporary files of writes that failed (none may stay)."""
    return sorted(p.name for p in folder.rglob("*.tmp"))


# --------------------------------------------------------------------------- training checkpoints


@pytest.mark.slow
def test_a_checkpoint_write_that_fills_the_disk_keeps_the_last_checkpoint(
    small_disk: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    cache = ["--data.cache_dir", str(tmp_path / "cache")]  # the dSprites cache stays off the small disk
    run_args = ["train", "-c", "configs/vae.yaml", *TINY_RUN, *cache]
    assert main([*run_args, "--logging.save_dir", str(small_disk / "runs")]) == 0
    (run,) = (small_disk / "runs").glob("*/version_*")
    last = run / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    filler = fill(small_disk, leave=len(before) // 2)  # room for logs and grids, not a checkpoint
    capsys.readouterr()

    assert main(["train", "--resume", str(run), "--train.max_epochs", "3"]) == 2
    error = capsys.readouterr().err
    checkpoints = re.escape(str(run / "checkpoints"))
    assert re.search(
        rf"^vaezoo train: error: the disk is full: cannot write {checkpoints}/\S+\.ckpt "
        rf"\(\d+(\.\d)? (B|KiB) free on the file system at {re.escape(str(small_disk))}\); "
        rf"the previous checkpoint {re.escape(str(last))} is intact; "
        rf"`vaezoo train --resume {re.escape(str(run))}` continues from it",
        error,
        re.MULTILINE,
    ), error
    assert "Traceback" not in error
    assert last.read_bytes() == before  # byte-identical
    assert leftovers(run) == []

    filler.unlink()  # with room again, --resume continues from that checkpoint
    assert main(["train", "--resume", str(run), "--train.max_epochs", "3"]) == 0
    assert torch.load(last, weights_only=True)["global_step"] == 9  # 6 saved + one more epoch of 3


# --------------------------------------------------------------------------- the data cache


def image_folder(root: Path, count: int = 12) -> Path:
    for i in range(count):
        pixels = np.random.default_rng(i).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        (root / f"{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / f"{i % 2}/{i:02d}.png")
    return root


def cached_module(images: Path, cache_dir: Path) -> VAEDataModule:
    config = DataConfig(name="image_folder", path=str(images), cache_dir=str(cache_dir), val_fraction=0.25)
    module = VAEDataModule(config, batch_size=4)
    module.prepare_data()
    module.setup()
    return module


def test_a_cache_build_on_a_full_disk_errors_and_leaves_nothing_trusted(small_disk: Path, tmp_path: Path):
    images = image_folder(tmp_path / "images")  # 12 x 3 x 64 x 64 = 144 KiB of pixels
    cache_dir = small_disk / "cache"
    cache_dir.mkdir()
    filler = fill(small_disk, leave=64 * 1024)
    with pytest.raises(DiskFullError) as caught:
        cached_module(images, cache_dir)
    message = str(caught.value)
    assert re.search(
        rf"the disk is full: cannot write {re.escape(str(cache_dir))}/image_folder-\S+\.npy", message
    )
    assert "no partial cache is left" in message and "data.cache_dir" in message
    assert sorted(p.suffix for p in cache_dir.iterdir()) == [".lock"]  # no pixels, no sidecar, no temp file

    filler.unlink()  # a later run builds the whole cache and trusts it
    module = cached_module(images, cache_dir)
    (npy,) = cache_dir.glob("*.npy")
    assert npy.stat().st_size > 12 * 3 * 64 * 64
    assert module.num_train + module.num_val == 12


def test_a_torn_cache_from_a_full_disk_is_rebuilt(small_disk: Path, tmp_path: Path):
    """Pixels cut short where a disk filled (written by a tool without atomic writes) are not trusted."""
    images = image_folder(tmp_path / "images")
    cache_dir = small_disk / "cache"
    cached_module(images, cache_dir)
    (npy,) = cache_dir.glob("*.npy")
    whole = npy.read_bytes()
    npy.unlink()
    fill(small_disk, leave=len(whole) // 2)
    with open(npy, "wb") as file, pytest.raises(OSError):  # a plain write, torn by the full disk
        file.write(whole)
        file.flush()
    assert 0 < npy.stat().st_size < len(whole)
    (small_disk / "filler").unlink()
    cached_module(images, cache_dir)
    assert npy.read_bytes() == whole  # rebuilt, the same pixels


# --------------------------------------------------------------------------- images, summary, evaluation


def test_an_image_on_a_full_disk_keeps_the_previous_one(small_disk: Path):
    noise = torch.rand(16, 3, 64, 64, generator=torch.Generator().manual_seed(0))  # ~200 KB as PNG
    path = save_image(noise[:1], small_disk / "images" / "samples.png")
    before = path.read_bytes()
    fill(small_disk)
    with pytest.raises(DiskFullError, match=rf"the disk is full: cannot write {re.escape(str(path))} "):
        save_image(noise, path)
    assert path.read_bytes() == before and leftovers(small_disk) == []


def test_summary_and_evaluation_files_on_a_full_disk_keep_the_previous_ones(small_disk: Path):
    from vaezoo.evaluation.evaluate import EvaluationReport, write_report

    summary = small_disk / "run" / "summary.json"
    atomic_write_text(summary, '{"global_step": 6}\n')
    report_dir = small_disk / "report"
    write_report(EvaluationReport(info={"model": "VanillaVAE"}), report_dir)
    before = {p: p.read_bytes() for p in (summary, report_dir / "metrics.json", report_dir / "report.md")}
    fill(small_disk)
    with pytest.raises(
        DiskFullError, match=r"cannot write .*summary\.json .*the previous summary\.json is intact"
    ):
        atomic_write_text(summary, '{"global_step": 9, "pad": "' + "x" * 100_000 + '"}\n')
    big = EvaluationReport(info={"model": "VanillaVAE", "notes": "x" * 100_000})
    with pytest.raises(
        DiskFullError, match=r"cannot write .*metrics\.json .*previous metrics\.json is intact"
    ):
        write_report(big, report_dir)
    assert {p: p.read_bytes() for p in before} == before and leftovers(small_disk) == []


def test_a_benchmark_plot_on_a_full_disk_keeps_the_previous_one(small_disk: Path):
    from vaezoo.evaluation.benchmark import plot_results

    rows = [{"label": f"model {i}", "metrics": {"reconstruction/mse": float(i)}} for i in range(3)]
    path = small_disk / "results.png"
    plot_results(rows, path)
    before = path.read_bytes()
    fill(small_disk)
    with pytest.raises(DiskFullError, match=rf"cannot write {re.escape(str(path))} "):
        plot_results(rows, path)
    assert path.read_bytes() == before and leftovers(small_disk) == []


def test_the_feature_cache_on_a_full_disk_is_skipped_with_a_warning(small_disk: Path):
    from vaezoo.evaluation.inception import InceptionFeatures, cached_features

    extractor = InceptionFeatures(torch.nn.Conv2d(3, 4, 3), weights_id="test-weights")
    images = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    cache_dir = small_disk / "features"
    cache_dir.mkdir()
    fill(small_disk)
    with pytest.warns(UserWarning, match=r"feature cache is not kept: the disk is full: cannot write"):
        features = cached_features(images, extractor, progress=False, cache_dir=cache_dir)
    assert features.shape == (8, 4)
    assert list(cache_dir.iterdir()) == []  # nothing half-written to trust later


class CountingConv(torch.nn.Conv2d):
    """A stand-in feature network that counts the images it sees."""

    seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        CountingConv.seen += len(x)
        return super().forward(x)


@pytest.mark.parametrize("damage", ["torn", "flipped"])
def test_a_damaged_feature_file_is_extracted_again(tmp_path: Path, damage: str):
    """A feature file torn (by a disk that filled under a copy) or with a flipped bit is not trusted."""
    from vaezoo.evaluation.inception import InceptionFeatures, cached_features

    extractor = InceptionFeatures(CountingConv(3, 4, 3), weights_id="test-weights")
    images = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    first = cached_features(images, extractor, progress=False, cache_dir=tmp_path)
    (npy,) = tmp_path.glob("*.npy")
    data = bytearray(npy.read_bytes())
    if damage == "torn":
        data = data[: len(data) - 40]  # the last rows cut short, the header intact
    else:
        data[-3] ^= 0x20  # a bit of the last feature: np.load reads it without complaint
    npy.write_bytes(bytes(data))
    CountingConv.seen = 0
    again = cached_features(images, extractor, progress=False, cache_dir=tmp_path)
    assert CountingConv.seen == 8 and np.array_equal(again, first)  # extracted again, not read back


def test_the_dsprites_cache_on_a_full_disk_is_an_error_not_a_crash(small_disk: Path):
    # 737,280 packed images need ~360 MiB: the memory map's blocks are reserved first, so the full
    # disk is an ENOSPC (a DiskFullError) rather than a SIGBUS when the map reaches the first page
    # the disk cannot hold
    from vaezoo.data.dsprites import build_procedural_cache

    with pytest.raises(DiskFullError, match="the disk is full: cannot write"):
        build_procedural_cache(small_disk)
    assert leftovers(small_disk) == [] and not list(small_disk.glob("*.npy"))


class LoggerWriteFails(L.Callback):
    """What TensorBoard's event writer raises when its file system is full: a plain ENOSPC."""

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        if trainer.global_step == 3:
            events = Path(trainer.log_dir or ".") / "events.out.tfevents.x"
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(events))


@pytest.mark.slow
def test_a_full_disk_met_by_a_writer_that_is_not_vaezoos_is_named_too(tmp_path: Path, monkeypatch):
    # Lightning's and TensorBoard's own files are not written through vaezoo's atomic writes: their
    # ENOSPC becomes the same DiskFullError, naming the file and the checkpoint that is kept
    from vaezoo.training.run import train

    monkeypatch.chdir(REPO)
    config = load_config(
        "configs/vae.yaml",
        [*TINY_RUN, "--logging.checkpoint_every_n_steps", "2", "--logging.save_dir", str(tmp_path)],
    )
    with pytest.raises(DiskFullError) as caught:
        train(config, extra_callbacks=[LoggerWriteFails()])
    message = str(caught.value)
    assert "the disk is full: cannot write" in message and "events.out.tfevents.x" in message
    assert "last.ckpt is intact" in message and "vaezoo train --resume" in message

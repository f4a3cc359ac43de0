"""Checkpoints are written atomically, read without running pickled code, and checked before a resume."""

import errno
import os
import pickle
import re
import shutil
import struct
import zipfile
from pathlib import Path

import pytest
import torch

from vaezoo.fileio import DiskFullError, atomic_path, atomic_write_text
from vaezoo.io import CheckpointError, load_checkpoint
from vaezoo.training.checkpoint import AtomicCheckpointIO, check_resume_checkpoint


def test_atomic_save_keeps_the_previous_checkpoint_when_a_write_dies(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.ones(3)}, path)
    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):
        real_save({"partial": torch.zeros(1000)}, f)  # some bytes reach the disk ...
        raise KeyboardInterrupt("killed mid-write")  # ... then the process is killed

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.setattr(torch, "save", real_save)
    survivor = torch.load(path, weights_only=True)
    assert survivor["step"] == 1 and torch.equal(survivor["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temp file left behind


def test_load_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found: .*missing.ckpt"):
        load_checkpoint(tmp_path / "missing.ckpt")
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(
        CheckpointError, match=r"garbage.ckpt is not a checkpoint: .* starts with b'not a checkpoint'"
    ):
        load_checkpoint(garbage)
    whole = tmp_path / "whole.ckpt"
    torch.save({"vaezoo": {}, "state_dict": {"w": torch.ones(1000)}}, whole)
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(whole.read_bytes()[:2000])  # a copy cut short
    with pytest.raises(
        CheckpointError, match=r"cut.ckpt is a damaged checkpoint: its zip archive is incomplete"
    ):
        load_checkpoint(cut)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="foreign.ckpt is not a vaezoo checkpoint"):
        load_checkpoint(foreign)


def test_pickled_code_is_refused_and_never_runs(tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil.ckpt"
    torch.save({"vaezoo": {}, "state_dict": {}, "payload": Evil()}, path)
    with pytest.raises(
        CheckpointError, match="evil.ckpt holds more than tensors and plain data: it names print"
    ):
        load_checkpoint(path)
    assert "this must never run" not in capsys.readouterr().out


def test_a_model_loads_for_inference_without_importing_lightning(tmp_path):
    import subprocess
    import sys

    from vaezoo.registry import create_model

    model = create_model("VanillaVAE", in_channels=1, latent_dim=3, hidden_dims=[8, 16], image_size=16)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    meta = {"model_name": "VanillaVAE", "model_config": model.config, "config": {}}
    torch.save({"vaezoo": meta, "state_dict": state}, tmp_path / "last.ckpt")
    script = (
        "import sys, torch; from vaezoo.io import load_run; "
        f"run = load_run({str(tmp_path / 'last.ckpt')!r}); "
        "assert run.model.decode(torch.zeros(2, 3)).shape == (2, 1, 16, 16); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_a_checkpoint_of_another_model_or_version_says_which(tmp_path):
    from vaezoo.io import load_run
    from vaezoo.registry import create_model

    model = create_model("VanillaVAE", in_channels=1, latent_dim=3, hidden_dims=[8, 16], image_size=16)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}

    def saved(meta: dict, name: str) -> str:
        path = tmp_path / name
        torch.save({"vaezoo": {"config": {}, **meta}, "state_dict": state}, path)
        return str(path)

    wider = {
        "model_name": "VanillaVAE",
        "model_config": {**model.config, "latent_dim": 5},
        "version": "0.0.1",
    }
    with pytest.raises(
        CheckpointError, match=r"weights do not fit VanillaVAE: .*size mismatch.*saved by vaezoo 0.0.1"
    ):
        load_run(saved(wider, "wider.ckpt"))
    gone = {"model_name": "RetiredVAE", "model_config": {}, "version": "0.0.1"}
    with pytest.raises(
        CheckpointError, match=r"cannot rebuild its model: unknown model 'RetiredVAE'.*saved by vaezoo"
    ):
        load_run(saved(gone, "gone.ckpt"))
    renamed = {"model_name": "VanillaVAE", "model_config": {**model.config, "old_argument": 1}}
    with pytest.raises(
        CheckpointError, match=r"cannot rebuild its model: .*unexpected keyword argument 'old_argument'"
    ):
        load_run(saved(renamed, "renamed.ckpt"))


# --------------------------------------------------------------------------- what --resume may load


def saved_run(tmp_path: Path, steps: tuple[int, ...] = (3, 6)) -> Path:
    """A run folder's checkpoints/: a best-*.ckpt per step and last.ckpt (the last step's)."""
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    for epoch, step in enumerate(steps):
        state = {"vaezoo": {}, "state_dict": {"w": torch.full((5000,), float(step))}, "global_step": step}
        torch.save(state, folder / f"best-epoch{epoch:03d}-step{step}.ckpt")
    shutil.copy(folder / f"best-epoch{len(steps) - 1:03d}-step{steps[-1]}.ckpt", folder / "last.ckpt")
    return folder


def tear(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_a_weight_bit(path: Path) -> None:
    """One bit of a tensor's bytes flipped: torch.load still reads it, as a wrong weight."""
    with zipfile.ZipFile(path) as archive:
        record = next(info for info in archive.infolist() if info.filename.endswith("/data/0"))
    with open(path, "r+b") as file:
        file.seek(record.header_offset + 26)
        name_length, extra_length = struct.unpack("<HH", file.read(4))
        file.seek(record.header_offset + 30 + name_length + extra_length + 100)
        byte = file.read(1)[0]
        file.seek(-1, os.SEEK_CUR)
        file.write(bytes([byte ^ 0x01]))


def test_an_intact_checkpoint_passes_the_resume_check(tmp_path):
    check_resume_checkpoint(saved_run(tmp_path) / "last.ckpt")  # no error


def test_a_torn_last_checkpoint_is_refused_and_the_newest_intact_best_is_named(tmp_path):
    folder = saved_run(tmp_path)
    last, newest, older = (
        folder / "last.ckpt",
        folder / "best-epoch001-step6.ckpt",
        folder / "best-epoch000-step3.ckpt",
    )
    tear(last)
    with pytest.raises(
        CheckpointError,
        match=rf"^cannot resume from {re.escape(str(last))}: {re.escape(str(last))} is a damaged checkpoint: "
        rf"its zip archive is incomplete .*; the best checkpoint {re.escape(str(newest))} is intact: "
        rf"`cp {re.escape(str(newest))} {re.escape(str(last))}`, then run "
        rf"`vaezoo train --resume {re.escape(str(folder.parent))}` again",
    ):
        check_resume_checkpoint(last)
    tear(newest)  # the newest best is torn too: the older one is offered
    with pytest.raises(CheckpointError, match=rf"the best checkpoint {re.escape(str(older))} is intact"):
        check_resume_checkpoint(last)
    tear(older)
    with pytest.raises(CheckpointError, match="no intact best-\\*.ckpt is beside it either; start a new run"):
        check_resume_checkpoint(last)


def test_a_flipped_bit_in_the_last_checkpoint_fails_its_checksum(tmp_path):
    folder = saved_run(tmp_path)
    last = folder / "last.ckpt"
    flip_a_weight_bit(last)
    assert not torch.equal(torch.load(last, weights_only=True)["state_dict"]["w"], torch.full((5000,), 6.0))
    with pytest.raises(
        CheckpointError,
        match=r"last\.ckpt is a damaged checkpoint: its record \S+/data/0 fails its CRC-32 checksum.*"
        r"best-epoch001-step6\.ckpt is intact",
    ):
        check_resume_checkpoint(last)


def test_a_write_that_finds_no_room_is_a_disk_full_error(tmp_path):
    """EDQUOT and EFBIG cannot be provoked on a tmpfs; an OSError carrying them stands in (ENOSPC is
    the real full disk of tests/test_disk_full.py)."""
    path = tmp_path / "summary.json"
    atomic_write_text(path, "old\n")
    for code, reason in [(errno.EDQUOT, "the disk quota is used up"), (errno.EFBIG, "larger than the file")]:
        with pytest.raises(
            DiskFullError, match=rf"{reason}.*: cannot write {re.escape(str(path))} \("
        ) as caught:
            with atomic_path(path) as tmp:
                tmp.write_text("new, half")
                raise OSError(code, os.strerror(code))
        assert caught.value.errno == code and caught.value.filename == str(path)
        assert path.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]
        copy = pickle.loads(pickle.dumps(caught.value))  # crosses process boundaries whole (DDP, workers)
        assert str(copy) == str(caught.value) and isinstance(copy, OSError)
    with pytest.raises(ValueError, match="not about space"):  # any other failure stays what it was
        with atomic_path(path):
            raise ValueError("not about space")

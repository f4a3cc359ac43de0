"""Checkpoints are written atomically and read without running pickled code."""

import pytest
import torch

from vaezoo.io import CheckpointError, load_checkpoint
from vaezoo.training.checkpoint import AtomicCheckpointIO


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

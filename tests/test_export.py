"""`vaezoo export` and `vaezoo.from_pretrained`: the folder, its card, the round trip of every model,
every command reading the folder, and the errors."""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import require_package
from PIL import Image
from test_eval_cli import TINY  # the tiny dSprites run evaluate's tests train
from test_zoo_contract import MODELS, build, dsprites_batch

import vaezoo
from vaezoo.cli import main
from vaezoo.export import ExportError, ExportFacts, export_model, plain
from vaezoo.io import load_checkpoint
from vaezoo.pretrained import PretrainedError, from_pretrained

REPO = Path(__file__).resolve().parents[1]


def outputs(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
    """What a user gets from a model at fixed seeds: reconstructions, forward's output, samples."""
    with torch.no_grad():
        torch.manual_seed(0)
        results = [model.generate(x, labels=labels)]
        torch.manual_seed(0)
        results += [t for t in model(x, labels=labels) if isinstance(t, torch.Tensor)]
        try:
            torch.manual_seed(1)
            results.append(model.sample(3, "cpu", labels=labels[:3]))
        except NotImplementedError:
            pass
    return results


@pytest.mark.parametrize("name", MODELS)
def test_every_model_round_trips_with_identical_outputs(name, tmp_path):
    model = build(name).eval()
    x, labels = dsprites_batch(3, 1, 32)
    export_model(model, tmp_path / "export", images=False)
    loaded = from_pretrained(tmp_path / "export")
    assert type(loaded) is type(model) and not loaded.training
    assert loaded.config == json.loads(json.dumps(plain(model.config)))
    before, after = model.state_dict(), loaded.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[key], after[key]) for key in before), name
    expected, found = outputs(model, x, labels), outputs(loaded, x, labels)
    assert len(expected) == len(found) >= 2
    for a, b in zip(expected, found):
        assert torch.equal(a, b), f"{name}: max |diff| {(a - b).abs().max().item()}"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A few steps of a VanillaVAE with an EMA of its weights, on 32x32 dSprites."""
    tmp = tmp_path_factory.mktemp("export")
    args = ["train", "-c", str(REPO / "configs/vae.yaml"), *TINY, "--train.ema_decay", "0.9"]
    assert main([*args, "--logging.save_dir", str(tmp / "runs")]) == 0
    (run,) = sorted((tmp / "runs").glob("*/version_*"))
    return run


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("exported") / "vae-dsprites"
    assert main(["export", str(run_dir), "-o", str(out)]) == 0
    return out


def test_export_writes_a_hub_model_folder_without_pickles(exported):
    assert {p.name for p in exported.iterdir()} == {
        "model.safetensors",
        "config.json",
        "README.md",
        "samples.png",
        "reconstructions.png",
        "traversals.gif",  # the run's last traversal animation (logging.traversal_gif)
    }
    for file in exported.iterdir():  # no pickle (protocol 2+ starts with 0x80) and no zip (torch.save)
        start = file.read_bytes()[:4]
        assert not start.startswith(b"\x80") and not start.startswith(b"PK"), file.name
    header_size = struct.unpack("<Q", (exported / "model.safetensors").read_bytes()[:8])[0]
    header = json.loads((exported / "model.safetensors").read_bytes()[8 : 8 + header_size])
    assert header["__metadata__"]["vaezoo_version"] == vaezoo.__version__
    for name in ("samples.png", "reconstructions.png"):
        assert np.asarray(Image.open(exported / name)).std() > 0, name


def test_config_json_holds_model_data_training_and_versions(exported, run_dir):
    config = json.loads((exported / "config.json").read_text())
    assert config["model_name"] == "VanillaVAE"
    assert config["model_config"]["latent_dim"] == 4 and config["model_config"]["hidden_dims"] == [8, 16, 32]
    assert config["data"] == {
        "name": "dsprites",
        "normalize": "unit",
        "subset": 600,
        "channels": 1,
        "image_size": 32,
        "value_range": [0.0, 1.0],
    }
    training = config["training"]
    assert training["global_step"] == 4 and training["epochs"] == 1 and training["weights"] == "ema"
    assert training["train_seconds"] > 0 and training["ema_decay"] == 0.9
    assert training["val_metrics"]["val/loss"] > 0
    assert config["vaezoo_version"] == vaezoo.__version__ and config["torch_version"]
    assert config["run_config"]["train"]["batch_size"] == 16
    assert config["parameters"] == sum(p.numel() for p in from_pretrained(exported).parameters())


def test_the_card_tells_model_paper_data_training_and_shows_the_grids(exported):
    card = (exported / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: vaezoo\n")
    assert "# VanillaVAE on dsprites" in card and "Kingma & Welling" in card
    assert 'vaezoo.from_pretrained("path/to/this/folder")' in card
    assert "| images | 1 x 32 x 32 |" in card and "| batches | 4 |" in card
    assert "moving average (decay 0.9)" in card and "| final val/loss |" in card
    assert "![samples.png](samples.png)" in card and "![reconstructions.png](reconstructions.png)" in card
    assert "![traversals.gif](traversals.gif)" in card
    assert "Not evaluated yet" in card


def test_the_exported_weights_are_the_moving_average(exported, run_dir):
    state = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["state_dict"]
    loaded = from_pretrained(exported).state_dict()
    for key, value in loaded.items():
        assert torch.equal(value, state[f"ema.module.{key}"]), key
    assert any(not torch.equal(loaded[k], state[f"model.{k}"]) for k in loaded)  # not the trained weights


@pytest.mark.slow
def test_every_command_that_takes_a_checkpoint_takes_the_folder(exported, tmp_path):
    assert main(["sample", str(exported), "-n", "4", "-o", str(tmp_path / "s.png")]) == 0
    assert main(["reconstruct", str(exported), "-n", "4", "-o", str(tmp_path / "r.png")]) == 0
    report = tmp_path / "report"
    quick = ["--num-examples", "32", "--no-progress"]
    assert main(["evaluate", str(exported), "--metrics", "reconstruction", "-o", str(report), *quick]) == 0
    assert not list(exported.glob("events.out.tfevents*"))  # evaluate writes no TensorBoard file into it
    again = tmp_path / "again"
    assert main(["export", str(exported), "-o", str(again), "--no-images"]) == 0
    first, second = (json.loads((d / "config.json").read_text()) for d in (exported, again))
    assert first["training"] == second["training"] and first["model_config"] == second["model_config"]
    a, b = from_pretrained(again).state_dict(), from_pretrained(exported).state_dict()
    assert all(torch.equal(a[key], b[key]) for key in b)


@pytest.mark.slow
def test_the_card_carries_the_latest_evaluation(run_dir, tmp_path):
    quick = ["--num-examples", "32", "--no-progress"]
    assert main(["evaluate", str(run_dir), "--metrics", "reconstruction", *quick]) == 0
    out = tmp_path / "evaluated"
    assert main(["export", str(run_dir), "-o", str(out), "--no-images"]) == 0
    card = (out / "README.md").read_text()
    assert "`vaezoo evaluate` at batch 4" in card and "| reconstruction/mse |" in card
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]["reconstruction"]
    config = json.loads((out / "config.json").read_text())
    assert config["evaluation"]["metrics"]["reconstruction/mse"] == pytest.approx(metrics["mse"])


def test_an_existing_folder_is_kept_unless_overwrite(exported, tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["export", str(exported), "-o", str(out), "--no-images"]) == 2
    assert "exists and is not empty; pass --overwrite" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert main(["export", str(exported), "-o", str(out), "--no-images", "--overwrite"]) == 0
    assert (out / "model.safetensors").is_file() and not (out / "notes.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_a_failed_export_leaves_nothing_and_keeps_the_previous_one(tmp_path, monkeypatch):
    model = build("VanillaVAE")
    out = tmp_path / "out"
    export_model(model, out, images=False)
    before = (out / "model.safetensors").read_bytes()

    def fail(*args, **kwargs):
        raise RuntimeError("cut short")

    monkeypatch.setattr("vaezoo.export.model_card", fail)
    with pytest.raises(RuntimeError, match="cut short"):
        export_model(build("BetaVAE"), out, images=False, overwrite=True)
    assert (out / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_bare_model_exports_with_the_facts_given(tmp_path):
    model = build("BetaVAE")
    facts = ExportFacts(data={"name": "my shapes", "channels": 1, "image_size": 32})
    out = export_model(model, tmp_path / "bare", facts=facts)
    card = (out / "README.md").read_text()
    assert "# BetaVAE on my shapes" in card and (out / "samples.png").is_file()
    assert not (out / "reconstructions.png").exists()  # no data to reconstruct


def broken(exported: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "broken"
    copy.mkdir()
    for file in exported.iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    return copy


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "config.json").unlink(), "is not an exported vaezoo model: it has no config.json"),
        (lambda d: (d / "config.json").write_text("{not json"), "config.json is not valid JSON"),
        (lambda d: (d / "config.json").write_text("[]"), 'expected "format": "vaezoo-pretrained"'),
        (
            lambda d: edit_config(d, model_name="NoSuchVAE"),
            "cannot rebuild its model: .*NoSuchVAE",
        ),
        (lambda d: edit_config(d, model_config="x"), '"model_config" is missing or not a dict'),
        (lambda d: edit_config(d, format_version=99), "format_version 99, newer than this vaezoo reads"),
        (
            lambda d: edit_config(d, model_config={**read_config(d)["model_config"], "latent_dim": 5}),
            "weights do not fit VanillaVAE",
        ),
        (
            lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:100]),
            "model.safetensors is not a readable safetensors file",
        ),
        (
            lambda d: (d / "model.safetensors").write_bytes(pickle.dumps({"weights": [1, 2]})),
            "model.safetensors is not a readable safetensors file",
        ),
    ],
)
def test_a_damaged_folder_is_named_with_what_is_wrong(exported, tmp_path, damage, message, capsys):
    folder = broken(exported, tmp_path)
    damage(folder)
    with pytest.raises(PretrainedError, match=message):
        from_pretrained(folder)
    if (folder / "config.json").is_file():  # a folder without config.json is read as a checkpoint path
        assert main(["sample", str(folder), "-o", str(tmp_path / "s.png")]) == 2
        assert str(folder) in capsys.readouterr().err


def read_config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def edit_config(folder: Path, **changes) -> None:
    (folder / "config.json").write_text(json.dumps({**read_config(folder), **changes}))


def test_a_file_as_destination_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="is a file; export writes a folder"):
        export_model(build("VanillaVAE"), tmp_path / "file")


def test_a_path_that_serves_only_the_loss_is_not_exported(tmp_path):
    """DFCVAE's VGG weight file lies on the training machine; inference never runs the VGG."""
    from safetensors.torch import save_file

    from vaezoo.nn.vgg import VGG19BNFeatures

    weights = tmp_path / "vgg19_bn.safetensors"
    save_file({k: v.contiguous() for k, v in VGG19BNFeatures(["relu1_1"]).state_dict().items()}, weights)
    model = build("DFCVAE", feature_weights=str(weights), feature_layers=["relu1_1"]).eval()
    out = export_model(model, tmp_path / "dfc", images=False)
    weights.unlink()  # another machine
    assert json.loads((out / "config.json").read_text())["model_config"]["feature_weights"] is None
    with pytest.warns(UserWarning, match="RANDOM weights"):  # true of its loss, should it train again
        loaded = from_pretrained(out)
    x, labels = dsprites_batch(2, 1, 32)
    assert torch.equal(outputs(loaded, x, labels)[0], outputs(model, x, labels)[0])


def test_the_card_is_a_hub_model_card(exported):
    hub = require_package("huggingface_hub", "hub")
    card = hub.ModelCard.load(exported / "README.md")
    assert card.data.library_name == "vaezoo" and "variational-autoencoder" in card.data.tags
    assert card.data.pipeline_tag == "unconditional-image-generation"
    assert "## Training" in card.text


def test_the_run_folder_itself_is_refused_as_destination(run_dir, capsys):
    before = sorted(p.name for p in run_dir.iterdir())
    assert main(["export", str(run_dir), "-o", str(run_dir), "--overwrite"]) == 2
    assert "holds the checkpoint being exported" in capsys.readouterr().err
    assert sorted(p.name for p in run_dir.iterdir()) == before


def test_a_model_on_vectors_round_trips_and_exports_without_pictures(tmp_path):
    model = vaezoo.create_model("VanillaVAE", 5, 2, [16, 8], architecture="mlp").eval()
    facts = ExportFacts(run_config={"data": {"name": "vectors"}})
    facts.data = {"name": "vectors", "kind": "vectors", "features": 5}
    out = export_model(model, tmp_path / "mlp", facts=facts)
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "config.json", "README.md"}
    assert "| vectors | 5 features |" in (out / "README.md").read_text()
    x = torch.rand(4, 5)
    loaded = from_pretrained(out)
    torch.manual_seed(0)
    expected = model.generate(x)
    torch.manual_seed(0)
    assert torch.equal(loaded.generate(x), expected)

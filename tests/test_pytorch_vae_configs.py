"""PyTorch-VAE's own config files train here unchanged, only ``data_path`` pointed at the data.

PyTorch-VAE (github.com/AntixK/PyTorch-VAE, HEAD a6896b9) ships 23 YAML files in ``configs/``. Their
key sets and values are written down below as data (22 in its current layout, ``vampvae.yaml`` in
its 2020 one); each test writes one as a YAML file with ``data_path`` set to a tiny CelebA folder in
torchvision's layout (``data_path/celeba/img_align_celeba/*.jpg`` + the two list files) and trains
it for two steps through ``vaezoo train -c``. The command line only shrinks the run (steps, batch
size, workers, logging); everything else comes from the file. Then the run folder must hold a
checkpoint and logged losses, the saved ``config.yaml`` must be in our layout carrying the
translated values, and ``source_config.yaml`` / ``translation.yaml`` must record the translation.

CUDA is mocked away in the training tests (no GPU, on any machine), so ``gpus: [1]`` always falls
back to the CPU; the device tests mock 0, 1 and 2 GPUs. The training tests are end-to-end runs,
hence ``slow``: about 30 s for all of them on two CPU cores (CategoricalVAE's 512 x 40 latent alone
takes 12 s); the rest of the file takes 5 s.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from pytorch_vae_layouts import CONFIGS

from vaezoo.arguments import Alias, merged_class_table
from vaezoo.cli import main
from vaezoo.config import Config, ConfigError, load_config
from vaezoo.pytorch_vae import CELEBA_TRAIN_IMAGES
from vaezoo.registry import get_model_class, model_parameters
from vaezoo.training import run as run_module
from vaezoo.training.run import fit_devices, fit_to_machine

# Keys of these files that PyTorch-VAE's code never reads (model keys: each model's ignored_arguments).
IGNORED = {
    "bbvae": ["logging_params.manual_seed"],
    "dip_vae": ["logging_params.manual_seed"],
    "infovae": ["logging_params.manual_seed"],
    "factorvae": ["exp_params.retain_first_backpass"],
    "hvae": ["logging_params.name"],  # its log folder is named after model_params.name, HVAE
    "wae_mmd_imq": ["logging_params.name"],
    "wae_mmd_rbf": ["logging_params.name"],
}

# --------------------------------------------------------------------------- a tiny CelebA, torchvision's layout

TRAIN_IMAGES = 4
PARTS = [0] * TRAIN_IMAGES + [1, 1, 2, 2]  # 4 train, 2 valid, 2 test


def make_celeba(data_path: Path) -> Path:
    """``data_path/celeba/``: eight 178x218 JPEGs and the partition and attribute lists."""
    root = data_path / "celeba"
    (root / "img_align_celeba").mkdir(parents=True)
    names = [f"{i:06d}.jpg" for i in range(1, len(PARTS) + 1)]
    rng = np.random.default_rng(0)
    for name in names:
        pixels = rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "img_align_celeba" / name, quality=90)
    (root / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, p in zip(names, PARTS)))
    header = " ".join(f"Attribute_{i}" for i in range(40))
    rows = [
        f"{n} " + " ".join(" 1" if (i + j) % 3 == 0 else "-1" for j in range(40)) for i, n in enumerate(names)
    ]
    (root / "list_attr_celeba.txt").write_text("\n".join([str(len(names)), header, *rows]) + "\n")
    return data_path


@pytest.fixture(scope="module")
def data_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_celeba(tmp_path_factory.mktemp("pytorch-vae") / "Data")


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CUDA GPU, whatever the machine has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(run_module, "mps_available", lambda: False)


def gpus(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(run_module, "mps_available", lambda: False)


def write_config(name: str, folder: Path, data: Path | None) -> tuple[Path, dict[str, Any]]:
    """The config as a YAML file, ``data_path`` pointed at ``data`` (None: left as it is)."""
    raw = copy.deepcopy(CONFIGS[name])
    if data is not None:
        section = "exp_params" if name == "vampvae" else "data_params"
        raw[section]["data_path"] = f"{data}/"
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path, raw


SMALL_RUN = [
    "--train.max_steps",
    "2",
    "--train.batch_size",
    "2",
    "--train.val_batch_size",
    "2",
    "--train.limit_val_batches",
    "1",
    "--data.num_workers",
    "0",
    "--logging.logger",
    "csv",
    "--logging.progress_bar",
    "none",
    "--logging.log_every_n_steps",
    "1",
    "--logging.num_images",
    "4",
]


def train_file(path: Path, save_dir: Path, *extra: str) -> tuple[Path, list[str]]:
    """``vaezoo train -c path`` (small run); the run folder and the warnings given."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(["train", "-c", str(path), *SMALL_RUN, "--logging.save_dir", str(save_dir), *extra])
    assert code == 0
    runs = sorted(save_dir.glob("*/version_*"))
    assert len(runs) == 1, runs
    return runs[0], [str(w.message) for w in caught]


def expected_model_section(model_params: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The model keys in our names (each model's own aliases applied), and those it ignores."""
    cls = get_model_class(model_params["name"])
    params = model_parameters(cls)
    aliases = merged_class_table(cls, "argument_aliases")
    ignored = merged_class_table(cls, "ignored_arguments")
    ours: dict[str, Any] = {}
    dropped = []
    for key, value in model_params.items():
        if key == "name" or key in params:
            ours[key] = value
        elif key in aliases:
            alias = aliases[key] if isinstance(aliases[key], Alias) else Alias(str(aliases[key]))
            ours[alias.target] = alias(value)
        else:
            assert key in ignored, f"{cls.__name__} neither takes nor ignores {key}"
            dropped.append(f"model_params.{key}")
    return ours, dropped


# --------------------------------------------------------------------------- all 23 train, translated


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_pytorch_vae_config_trains_unchanged(
    name: str, data_path: Path, tmp_path: Path, no_gpu: None
) -> None:
    path, raw = write_config(name, tmp_path, data_path)
    run, messages = train_file(path, tmp_path / "runs")

    # it trained: a checkpoint after two batches, losses logged
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert int(checkpoint["state_dict"]["train_batches"]) == 2
    summary = json.loads((run / "summary.json").read_text())
    assert math.isfinite(summary["val_metrics"]["val/loss"])
    with open(run / "metrics.csv") as f:
        logged = [row for row in csv.DictReader(f) if row.get("train/loss_step")]
    assert logged and all(math.isfinite(float(row["train/loss_step"])) for row in logged)

    # the saved config is ours, with PyTorch-VAE's values translated
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert set(saved) == {"model", "data", "train", "logging"}
    again = load_config(run / "config.yaml")
    assert again.translation is None and again.to_dict() == saved  # --resume and evaluate read it
    model_params = raw["model_params"]
    ours, dropped_model_keys = expected_model_section(model_params)
    for key, value in ours.items():
        assert saved["model"][key] == value, key
    assert saved["model"]["recon_reduction"] == "mean"
    data, train, log = saved["data"], saved["train"], saved["logging"]
    assert (data["name"], data["crop"], data["flip"], data["path"]) == ("celeba", 148, True, f"{data_path}/")
    assert (train["accelerator"], train["devices"]) == ("cpu", 1)  # gpus fell back: no GPU here
    assert log["name"] == (raw["logging_params"]["name"] if name == "vampvae" else model_params["name"])
    assert log["save_dir"] == str(tmp_path / "runs")  # overridden on the command line
    exp = raw["exp_params"]
    assert (train["lr"], train["weight_decay"]) == (exp["LR"], exp["weight_decay"])
    if name == "vampvae":  # the 2020 layout
        assert data["image_size"] == exp["img_size"] == 64
        assert data["normalize"] == "symmetric"  # its transforms ended in 2x - 1
        assert train["kl_weight"] == pytest.approx(144 / TRAIN_IMAGES)  # M_N = batch_size / training images
        assert train["seed"] == raw["logging_params"]["manual_seed"]
        assert train["max_epochs"] == 50
    else:
        assert data["image_size"] == raw["data_params"]["patch_size"] == 64
        assert data["normalize"] == "unit"
        assert (train["kl_weight"], train["seed"]) == (exp["kld_weight"], exp["manual_seed"])
        assert train["max_epochs"] == raw["trainer_params"]["max_epochs"]
        assert train["gradient_clip_val"] == raw["trainer_params"].get("gradient_clip_val")
    if exp["scheduler_gamma"]:
        assert (train["scheduler"], train["scheduler_gamma"]) == ("exponential", exp["scheduler_gamma"])
    else:  # vq_vae.yaml's 0.0 would zero the learning rate after one epoch
        assert train["scheduler"] == "none"
        assert any("scheduler_gamma = 0.0" in m for m in messages)
    if name == "factorvae":
        assert saved["model"]["discriminator_lr"] == exp["LR_2"]

    # the run folder records the translation; one warning names every ignored key
    assert (run / "source_config.yaml").read_text() == path.read_text()
    notes = yaml.safe_load((run / "translation.yaml").read_text())
    ignored = IGNORED.get(name, []) + dropped_model_keys
    assert sorted(item["key"] for item in notes["ignored"]) == sorted(ignored)
    warned = [m for m in messages if "never reads" in m]
    assert len(warned) == (1 if ignored else 0)
    assert all(key in warned[0] for key in ignored)
    gpus_key = f"trainer_params.gpus = {raw['trainer_params']['gpus']!r}"
    assert any(gpus_key in m and "no GPU" in m for m in notes["fallbacks"])
    assert any(gpus_key in m and "training on the CPU" in m for m in messages)
    sources = {item["from"] for item in notes["translated"]}
    assert {"exp_params.LR", "trainer_params.gpus"} <= sources
    params = model_parameters(get_model_class(model_params["name"]))
    renamed = [f"model_params.{k}" for k in model_params if k != "name" and k not in params]
    assert set(renamed) - set(dropped_model_keys) <= sources  # each renamed model key is recorded


@pytest.mark.slow
def test_resume_continues_a_translated_run(data_path: Path, tmp_path: Path, no_gpu: None) -> None:
    path, _ = write_config("vae", tmp_path, data_path)
    run, _ = train_file(path, tmp_path / "runs")
    source = (run / "source_config.yaml").read_text()
    assert main(["train", "--resume", str(run), "--train.max_steps", "4"]) == 0
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert int(checkpoint["state_dict"]["train_batches"]) == 4
    assert (run / "source_config.yaml").read_text() == source


# --------------------------------------------------------------------------- translation rules


def test_ignored_keys_give_one_warning_naming_them_all(tmp_path: Path) -> None:
    raw = copy.deepcopy(CONFIGS["hvae"])
    raw["exp_params"]["retain_first_backpass"] = True
    raw["logging_params"]["manual_seed"] = 7
    path = tmp_path / "hvae.yaml"
    path.write_text(yaml.safe_dump(raw))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = load_config(path)
    messages = [str(w.message) for w in caught if "ignore" in str(w.message)]
    assert len(messages) == 1, messages
    _, model_keys = expected_model_section(raw["model_params"])
    for key in [
        "exp_params.retain_first_backpass",
        "logging_params.manual_seed",
        "logging_params.name",
        *model_keys,
    ]:
        assert key in messages[0]
    assert config.train.seed == 1265  # exp_params.manual_seed, the one run.py reads
    assert config.logging.name == "HVAE"


def test_print_config_shows_the_translation_notes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = write_config("hvae", tmp_path, None)
    args = ["train", "-c", str(path), "--train.max_steps", "5", "--print-config"]
    with pytest.warns(UserWarning, match="never reads"):
        assert main(args) == 0
        config = load_config(path, ["--train.max_steps", "5"])
    out = capsys.readouterr().out
    assert config.translation is not None
    notes = [f"# {line}".rstrip() for line in config.translation.summary().splitlines()]
    assert out.splitlines()[: len(notes)] == notes  # what training prints at start, as comments first
    assert "#     logging_params.name  (run.py names the log folder after model_params.name" in out
    assert "#     train.max_steps: 5" in out  # the override, under the command-line overrides

    # comments only: the printed text is the translated config, in our layout, and loads as it is
    printed = tmp_path / "printed.yaml"
    printed.write_text(out)
    again = load_config(printed)
    assert again.translation is None and again.to_dict() == config.to_dict()
    assert main(["train", "-c", str(printed), "--print-config"]) == 0
    assert not capsys.readouterr().out.startswith("#")  # our own layout: nothing was translated


@pytest.mark.parametrize(
    ("section", "key", "hint"),
    [
        ("exp_params", "kld_weigth", "kld_weight"),
        ("trainer_params", "max_epoch", "max_epochs"),
        ("data_params", "patch_sise", "patch_size"),
    ],
)
def test_unknown_key_is_an_error_with_a_suggestion(
    section: str, key: str, hint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = copy.deepcopy(CONFIGS["vae"])
    raw[section][key] = 1
    path = tmp_path / "vae.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["train", "-c", str(path), "--logging.save_dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert f"{section}.{key} is not a PyTorch-VAE key (did you mean '{hint}'?)" in err
    assert not (tmp_path / "runs").exists()


def test_second_optimizer_keys(tmp_path: Path) -> None:
    raw = copy.deepcopy(CONFIGS["factorvae"])
    raw["exp_params"]["scheduler_gamma_2"] = 0.5
    path = tmp_path / "factor.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="scheduler_gamma_2 = 0.5 differs from scheduler_gamma = 0.95"):
        load_config(path)
    raw = copy.deepcopy(CONFIGS["vae"])  # FactorVAE's optimizer keys on a model without a discriminator
    raw["exp_params"].update(LR_2=0.001, submodel="discriminator", scheduler_gamma_2=0.95)
    path.write_text(yaml.safe_dump(raw))
    with pytest.warns(UserWarning, match="never reads") as record:
        config = load_config(path)
    assert all(f"exp_params.{k}" in str(record[0].message) for k in ("LR_2", "submodel", "scheduler_gamma_2"))
    assert "discriminator_lr" not in config.model


def test_missing_scheduler_and_pytorch_vae_defaults(tmp_path: Path) -> None:
    raw = copy.deepcopy(CONFIGS["vae"])
    del raw["exp_params"]["scheduler_gamma"], raw["data_params"]["train_batch_size"]
    raw["data_params"]["patch_size"] = [32, 32]
    del raw["trainer_params"]["max_epochs"]
    path = tmp_path / "vae.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path)
    assert config.train.scheduler == "none"  # configure_optimizers builds no scheduler without it
    assert config.train.batch_size == 8  # VAEDataset's default
    assert config.data.image_size == 32
    assert config.train.max_epochs == 1000  # Lightning 1.5's default


# --------------------------------------------------------------------------- the 2020 layout (vampvae.yaml)


def test_vampvae_2020_layout(tmp_path: Path, data_path: Path) -> None:
    path, _ = write_config("vampvae", tmp_path, None)  # data_path as written: not on this machine
    config = load_config(path)
    assert config.translation is not None and config.translation.layout == "pytorch-vae-2020"
    assert (config.data.name, config.data.path, config.data.image_size) == (
        "celeba",
        "../../shared/Data/",
        64,
    )
    assert (config.data.crop, config.data.normalize) == (148, "symmetric")
    assert (config.train.batch_size, config.train.val_batch_size) == (144, 144)
    assert config.train.kl_weight == pytest.approx(144 / CELEBA_TRAIN_IMAGES)  # no list file to count
    assert (config.train.max_epochs, config.train.seed, config.logging.name) == (50, 1265, "VampVAE")
    assert (config.train.accelerator, config.train.devices) == ("gpu", 1)
    path, _ = write_config("vampvae", tmp_path, data_path)
    assert load_config(path).train.kl_weight == pytest.approx(144 / TRAIN_IMAGES)  # counted there

    raw = copy.deepcopy(CONFIGS["vampvae"])
    raw["trainer_params"]["max_nb_epochs"] = 20
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="max_epochs = 50 and max_nb_epochs = 20"):
        load_config(path)
    raw = copy.deepcopy(CONFIGS["vampvae"])
    raw["exp_params"]["dataset"] = "cifar10"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="exp_params.dataset = 'cifar10'"):
        load_config(path)


# --------------------------------------------------------------------------- devices the machine has


def translated(tmp_path: Path, gpus_value: Any) -> Config:
    raw = copy.deepcopy(CONFIGS["vae"])
    raw["trainer_params"]["gpus"] = gpus_value
    path = tmp_path / "vae.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


@pytest.mark.parametrize(
    ("gpus_value", "count", "accelerator", "devices", "warns"),
    [
        ([1], 0, "cpu", 1, "trainer_params.gpus = [1] cannot be honoured: this machine has no GPU"),
        ([1], 1, "gpu", [0], "trainer_params.gpus = [1] cannot be honoured: this machine has 1 CUDA GPU"),
        ([1], 2, "gpu", [1], None),  # the second GPU, as in Lightning 1.5
        ([0, 1], 1, "gpu", [0], "no GPU 1"),
        (1, 0, "cpu", 1, "trainer_params.gpus = 1 cannot be honoured: this machine has no GPU"),
        (1, 1, "gpu", 1, None),
        (2, 1, "gpu", 1, "this machine has 1 CUDA GPU: training on 1"),
        (-1, 2, "gpu", -1, None),
        ("0,1", 2, "gpu", [0, 1], None),
        (0, 0, "cpu", 1, None),
    ],
)
def test_device_fallback(
    gpus_value: Any,
    count: int,
    accelerator: str,
    devices: Any,
    warns: str | None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = translated(tmp_path, gpus_value)
    gpus(monkeypatch, count)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fallbacks = fit_to_machine(config)
    assert (config.train.accelerator, config.train.devices) == (accelerator, devices)
    messages = [str(w.message) for w in caught]
    if warns is None:
        assert not fallbacks and not messages
    else:
        assert len(messages) == 1 and warns in messages[0], messages
        assert config.translation is not None and config.translation.fallbacks == fallbacks


def test_fit_devices_covers_our_own_layout() -> None:
    assert fit_devices("gpu", "auto", 0)[:2] == ("cpu", 1)
    assert fit_devices("cuda", [0], 0)[:2] == ("cpu", 1)
    assert fit_devices("auto", [1], 0)[:2] == ("auto", 1)  # Lightning's CPU takes a count only
    assert fit_devices("auto", [1], 1)[:2] == ("auto", [0])
    assert fit_devices("gpu", 4, 2)[:2] == ("gpu", 2)
    assert fit_devices("gpu", "1,", 2) == ("gpu", [1], None)
    assert fit_devices("cpu", 2, 0) == ("cpu", 2, None)  # two CPU processes, as asked
    assert fit_devices("auto", "auto", 0) == ("auto", "auto", None)
    assert fit_devices("gpu", [0], 0, mps=True) == ("gpu", [0], None)  # the Apple GPU


@pytest.mark.slow
def test_gpu_accelerator_in_our_layout_trains_on_a_cpu_machine(
    data_path: Path, tmp_path: Path, no_gpu: None
) -> None:
    ours = {
        "model": {"name": "VanillaVAE", "latent_dim": 4, "hidden_dims": [8, 16]},
        "data": {"name": "celeba", "path": str(data_path), "image_size": 16},
        "train": {"accelerator": "gpu", "devices": [1], "max_epochs": 1},
    }
    path = tmp_path / "ours.yaml"
    path.write_text(yaml.safe_dump(ours))
    run, messages = train_file(path, tmp_path / "runs")
    assert any("train.accelerator = 'gpu' and train.devices = [1] cannot be honoured" in m for m in messages)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert (saved["train"]["accelerator"], saved["train"]["devices"]) == ("cpu", 1)
    assert not (run / "source_config.yaml").exists()
    notes = yaml.safe_load((run / "translation.yaml").read_text())
    assert "no GPU" in notes["fallbacks"][0]

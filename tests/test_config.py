"""Config schema: validation with suggestions, overrides, YAML errors, PyTorch-VAE translation."""

from pathlib import Path

import pytest

from vaezoo.config import Config, ConfigError, load_config, parse_overrides
from vaezoo.pytorch_vae import translate_pytorch_vae

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_every_shipped_config_loads():
    configs = sorted((REPO / "configs").glob("*.yaml"))
    assert configs, "no configs shipped"
    for path in configs:
        assert isinstance(load_config(path), Config)


def test_defaults_and_overrides_have_natural_types():
    config = load_config(
        None,
        [
            "--model.latent_dim",
            "32",
            "--train.lr=1e-3",
            "--data.subset",
            "null",
            "--model.hidden_dims",
            "[8, 16]",
            "--train.max_epochs",
            "3",
        ],
    )
    assert config.model == {"name": "VanillaVAE", "latent_dim": 32, "hidden_dims": [8, 16]}
    assert config.train.lr == pytest.approx(1e-3) and isinstance(config.train.lr, float)
    assert config.train.max_epochs == 3 and config.data.subset is None


def test_overrides_win_over_the_file(tmp_path):
    path = write(tmp_path, "model: {name: VAE, latent_dim: 10}\ntrain: {batch_size: 16}\n")
    config = load_config(
        path, ["--train.batch_size", "8", "--data.name", "image_folder", "--data.path", "/x"]
    )
    assert config.train.batch_size == 8 and config.model["latent_dim"] == 10
    assert (config.data.name, config.data.path) == ("image_folder", "/x")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("train: {lerning_rate: 0.1}", "unknown key 'lerning_rate'"),
        ("train: {batchsize: 8}", "did you mean 'batch_size'"),
        ("trian: {lr: 0.1}", "did you mean 'train'"),
        ("model: {name: VAE, latnt_dim: 3}", "did you mean 'latent_dim'"),
        ("model: {name: VanilaVAE}", "Did you mean 'VanillaVAE'"),
        ("train: {scheduler: cosin}", "one of 'exponential', 'cosine', 'none'"),
        ("train: {batch_size: eight}", "train.batch_size = 'eight' has the wrong type"),
        ("model: {name: VAE, latent_dim: 2.5}", "model.latent_dim = 2.5 has the wrong type"),
        ("train: {scheduler_gamma: 0.0}", "train.scheduler_gamma = 0.0 must be in (0, 1]"),
        ("data: {channels: 2}", "data.channels = 2 must be 1, 3 or null"),
    ],
)
def test_bad_keys_and_values_are_named(tmp_path, text, expected):
    with pytest.raises(Exception, match=None) as info:
        load_config(write(tmp_path, text))
    assert expected in str(info.value)
    assert str(tmp_path / "c.yaml") in str(info.value) or "model" in str(info.value)


def test_bad_override_is_named():
    with pytest.raises(ConfigError, match="did you mean 'max_epochs'"):
        load_config(None, ["--train.max_epoch", "3"])
    with pytest.raises(ConfigError, match="has no value"):
        parse_overrides(["--train.lr"])
    with pytest.raises(ConfigError, match="overrides look like"):
        parse_overrides(["lr", "3"])


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "model:\n  name: VAE\ntrain:\n  lr: [0.1\n  batch_size: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and "line 5" in message


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_saved_config_round_trips(tmp_path):
    config = load_config(None, ["--model.latent_dim", "7", "--train.devices", "[0, 1]"])
    config.save(tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again.to_dict() == config.to_dict()


PYTORCH_VAE_YAML = """
model_params:
  name: 'VanillaVAE'
  in_channels: 3
  latent_dim: 128

data_params:
  data_path: "Data/"
  train_batch_size: 64
  val_batch_size:  64
  patch_size: 64
  num_workers: 4

exp_params:
  LR: 0.005
  weight_decay: 0.0
  scheduler_gamma: 0.95
  kld_weight: 0.00025
  manual_seed: 1265

trainer_params:
  gpus: [1]
  max_epochs: 100

logging_params:
  save_dir: "logs/"
  name: "VanillaVAE"
"""


def test_pytorch_vae_yaml_is_translated(tmp_path):
    config = load_config(write(tmp_path, PYTORCH_VAE_YAML))
    assert config.model == {
        "name": "VanillaVAE",
        "in_channels": 3,
        "latent_dim": 128,
        "recon_reduction": "mean",
    }
    assert (config.data.name, config.data.path, config.data.image_size, config.data.crop) == (
        "celeba",
        "Data/",
        64,
        148,
    )
    assert config.data.num_workers == 4
    assert (config.train.lr, config.train.kl_weight, config.train.seed) == (0.005, 0.00025, 1265)
    assert (config.train.batch_size, config.train.val_batch_size, config.train.max_epochs) == (64, 64, 100)
    assert (config.train.devices, config.train.accelerator) == ([1], "gpu")
    assert (config.logging.save_dir, config.logging.name) == ("logs/", "VanillaVAE")


def test_pytorch_vae_dead_scheduler_is_switched_off(tmp_path):
    with pytest.warns(UserWarning, match="scheduler_gamma = 0"):
        raw = translate_pytorch_vae({"exp_params": {"scheduler_gamma": 0.0}})
    assert raw["train"]["scheduler"] == "none"


def test_pytorch_vae_unknown_key_is_named():
    with pytest.raises(
        ConfigError, match="exp_params.learning_rate .*did you mean 'LR'|exp_params.learning_rate"
    ):
        translate_pytorch_vae({"exp_params": {"learning_rate": 0.1}})


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            ["--train.max_step", "3"],
            r"^override --train.max_step: 'train' has no key 'max_step' \(did you mean 'max_steps'\?\)",
        ),
        (["--train.batch_size", "0"], r"^override --train.batch_size = 0 must be a positive integer"),
        (
            ["--model.latnt_dim", "3"],
            r"^override --model.latnt_dim: VanillaVAE takes no argument 'latnt_dim' \(did you mean 'latent_dim'\?\)",
        ),
        (["--model.latent_dim", "x"], r"^override --model.latent_dim = 'x' has the wrong type: expected int"),
        (["--model.name", "Foo"], r"^override --model.name: unknown model 'Foo'"),
    ],
)
def test_an_override_error_names_the_override_not_the_file(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(REPO / "configs" / "vae.yaml", override)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"latent_dim": 0}, r"latent_dim = 0 must be a positive integer"),
        ({"latent_dim": -3}, r"latent_dim = -3 must be a positive integer"),
        ({"hidden_dims": [0, 8]}, r"hidden_dims = \[0, 8\] must be a non-empty list of positive integers"),
        ({"in_channels": 0}, r"in_channels = 0 must be a positive integer"),
    ],
)
def test_model_sizes_out_of_range_are_one_line_errors(arguments, message):
    from vaezoo.registry import create_model

    with pytest.raises(ValueError, match=message):
        create_model("VanillaVAE", **{"in_channels": 1, "latent_dim": 4, "image_size": 16, **arguments})


def test_help_config_is_a_config_of_the_defaults_that_names_every_key(capsys):
    import dataclasses

    import yaml

    from vaezoo.cli import main
    from vaezoo.config import SECTIONS, Config, from_dict

    assert main(["train", "--help-config"]) == 0
    text = capsys.readouterr().out
    assert from_dict(yaml.safe_load(text)) == Config()  # read back, it is the default config
    for section, cls in SECTIONS.items():
        for spec in dataclasses.fields(cls):
            assert f"\n  {spec.name}: " in text, f"{section}.{spec.name}"
    assert (
        "  checkpoint_every_n_steps: 0  # int; Also write last.ckpt every this many training batches" in text
    )

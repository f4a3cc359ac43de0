"""The model configs ship inside the package: ``vaezoo train -c NAME`` finds them without a clone,
``vaezoo configs`` lists them, and a path still wins over a name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vaezoo.cli import main
from vaezoo.config import ConfigError, load_config, shipped_configs

REPO = Path(__file__).resolve().parents[1]


def test_every_repository_config_is_shipped_and_found_by_name(tmp_path, monkeypatch):
    shipped = shipped_configs()
    assert sorted(shipped) == sorted(p.stem for p in (REPO / "configs").glob("*.yaml"))
    monkeypatch.chdir(tmp_path)  # no configs/ folder here, as after `pip install vaezoo`
    for name in ("betatc_vae", "betatc_vae.yaml"):
        assert load_config(name) == load_config(REPO / "configs" / "betatc_vae.yaml")


def test_a_path_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("vae").write_text("model:\n  name: BetaVAE\n")  # a file that happens to be called like one
    assert load_config("vae").model_name == "BetaVAE"
    assert load_config(REPO / "configs" / "vae.yaml").model_name == "VanillaVAE"


def test_an_unknown_name_lists_the_shipped_configs_and_the_nearest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        ConfigError, match=r"no shipped config is named 'betatcvae' \(did you mean 'betatc_vae'\?\)"
    ):
        load_config("betatcvae")
    with pytest.raises(ConfigError, match="config file not found: missing/vae.yaml$"):
        load_config("missing/vae.yaml")  # a path is never taken for a name


def test_vaezoo_configs_lists_each_with_its_whole_first_sentence(capsys):
    assert main(["configs"]) == 0
    text = capsys.readouterr().out
    out = " ".join("".join(c for c in text if not "\u2500" <= c <= "\u257f").split())  # unwrapped, no borders
    for name in shipped_configs():
        assert name in out
    assert "beta-TCVAE, Chen et al. (2018): recon + alpha * MI + beta * TC + gamma * dimension-wise KL" in out


def test_print_config_of_a_shipped_name_starts_a_config_of_ones_own(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "-c", "factorvae", "--print-config"]) == 0
    mine = tmp_path / "mine.yaml"
    mine.write_text(capsys.readouterr().out)
    assert yaml.safe_load(mine.read_text())["model"]["name"] == "FactorVAE"
    assert load_config(mine) == load_config("factorvae")


@pytest.mark.slow
def test_a_wheel_install_finds_its_configs(tmp_path):
    """Built as a wheel and installed (not editable), outside the repository."""
    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(REPO)]
    subprocess.run([*build, "-w", str(wheel_dir)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheel_dir.glob("vaezoo-*.whl")
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)]
    subprocess.run(install, check=True, capture_output=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": str(target)}  # the installed copy before the editable one
    where = subprocess.run(
        [sys.executable, "-c", "import vaezoo; print(vaezoo.__file__)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert where.stdout.strip().startswith(str(target))
    listed = subprocess.run(
        [sys.executable, "-m", "vaezoo.cli", "configs"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert listed.returncode == 0 and "betatc_vae" in listed.stdout, listed.stderr
    printed = subprocess.run(
        [sys.executable, "-m", "vaezoo.cli", "train", "-c", "vq_vae", "--print-config"],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert printed.returncode == 0, printed.stderr
    assert yaml.safe_load(printed.stdout)["model"]["name"] == "VQVAE"


@pytest.mark.parametrize(
    ("text", "sentence"),
    [
        (
            "beta-TCVAE: Chen et al. (2018), a title.\nMore text. And more.",
            "beta-TCVAE: Chen et al. (2018), a title.",
        ),
        (
            "A prior that ignores the label\n(as in PyTorch-VAE)::\n\n    code",
            "A prior that ignores the label (as in PyTorch-VAE).",
        ),
        ("Weights, e.g. Adam's. Then more.", "Weights, e.g. Adam's."),
        ("One paragraph\n\nanother", "One paragraph."),
    ],
)
def test_listings_show_a_whole_first_sentence(text, sentence):
    from vaezoo.text import first_sentence

    assert first_sentence(text) == sentence


def test_vaezoo_list_descriptions_end_at_a_sentence_end(capsys):
    from vaezoo.registry import get_model_class, list_models
    from vaezoo.text import first_sentence

    assert main(["list"]) == 0
    for name in list_models():
        assert first_sentence(get_model_class(name).__doc__ or "").endswith(".")


def test_vaezoo_list_says_which_models_take_vectors(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # one table row per model
    assert main(["list"]) == 0
    rows = {line.split("│")[1].strip(): line for line in capsys.readouterr().out.splitlines() if "│" in line}
    assert "│ yes " in rows["VanillaVAE"] and "│ no " in rows["VQVAE"]

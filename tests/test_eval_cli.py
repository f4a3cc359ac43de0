"""`vaezoo evaluate`, `vaezoo sample --sampler` and `vaezoo benchmark` end to end on tiny runs."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from vaezoo.cli import main

# All of this file on one worker (make test's --dist loadgroup): its module fixtures, which train
# runs, are built once instead of once per worker.
pytestmark = pytest.mark.xdist_group("eval_cli")


REPO = Path(__file__).resolve().parents[1]
TINY = [
    "--model.hidden_dims", "[8, 16, 32]", "--model.latent_dim", "4",
    "--data.image_size", "32", "--data.subset", "600",
    "--train.batch_size", "16", "--train.max_epochs", "1", "--train.limit_train_batches", "4",
    "--train.limit_val_batches", "1", "--logging.num_images", "16", "--logging.progress_bar", "none",
]  # fmt: skip
QUICK_EVAL = [
    "--num-examples", "64", "--likelihood-examples", "8", "-k", "16",
    "--disentanglement-points", "300", "--disentanglement-eval-points", "150", "--fid-samples", "0",
    "--no-progress",
]  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A few steps of a Bernoulli VAE on 32x32 dSprites."""
    tmp = tmp_path_factory.mktemp("evaluate")
    args = ["train", "-c", str(REPO / "configs/vae.yaml"), *TINY, "--model.likelihood", "bernoulli"]
    assert main([*args, "--logging.save_dir", str(tmp / "runs")]) == 0
    (run,) = sorted((tmp / "runs").glob("*/version_*"))
    return run


@pytest.mark.slow
def test_evaluate_writes_every_metric_group_report_and_pictures(run_dir, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["evaluate", str(run_dir), "-o", str(out), *QUICK_EVAL]) == 0
    result = json.loads((out / "metrics.json").read_text())
    metrics = result["metrics"]
    assert {"reconstruction", "latent", "likelihood", "disentanglement"} <= set(metrics)
    assert 0 <= metrics["reconstruction"]["ssim"] <= 1 and metrics["reconstruction"]["mse"] > 0
    # dSprites resized to 32 px has grey edges: the Bernoulli bound is a cross-entropy, reported as such
    likelihood = metrics["likelihood"]
    assert likelihood["iwae_bound_unnormalized"] >= likelihood["elbo_unnormalized"] - 1e-3
    assert "nll" not in likelihood and "cross-entropy" in result["not_applicable"]["likelihood/nll"]
    assert 0 <= metrics["latent"]["active_units"] <= 4
    assert 0 <= metrics["disentanglement"]["mig"] <= 1
    assert "switched off" in result["not_applicable"]["sample_quality"]
    assert len(result["details"]["kl_per_dim"]) == 4
    for name in ("reconstructions", "samples", "traversals", "interpolation_linear", "interpolation_slerp",
                 "latent_embedding", "kl_per_dim"):  # fmt: skip
        picture = np.asarray(Image.open(out / f"{name}.png"))
        assert picture.std() > 0, name
    report = (out / "report.md").read_text()
    assert "| likelihood | iwae_bound_unnormalized |" in report and "![traversals](traversals.png)" in report
    animation = Image.open(out / "traversals_animation.gif")  # the traversals as frames, forwards and back
    assert animation.n_frames == 2 * 9 - 2 and "![traversals_animation](traversals_animation.gif)" in report
    assert "sample_quality/" not in capsys.readouterr().out.split("n/a")[0]  # no FID row before the n/a ones
    # Logged into the run's TensorBoard at the checkpoint's step.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"images": 0}).Reload()
    assert "evaluate/likelihood/iwae_bound_unnormalized" in events.Tags()["scalars"]
    assert {"evaluate/traversals", "evaluate/traversals_animation"} <= set(events.Tags()["images"])
    assert events.Images("evaluate/traversals_animation")[0].encoded_image_string[:4] == b"GIF8"  # it plays


@pytest.mark.slow
def test_evaluate_default_report_folder_and_not_applicable_groups(run_dir, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray((rng.random((32, 32)) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    # Images without factors: disentanglement is listed as not applicable, the rest runs.
    assert (
        main(["evaluate", str(run_dir), "--data", str(folder), *QUICK_EVAL, "--metrics", "reconstruction"])
        == 0
    )
    assert main(["evaluate", str(run_dir), "--data", str(folder), *QUICK_EVAL[:-1]]) == 0
    result = json.loads((run_dir / "evaluation" / "last" / "metrics.json").read_text())
    assert "no ground-truth factors" in result["not_applicable"]["disentanglement"]
    assert "reconstruction" in result["metrics"]


@pytest.mark.slow
def test_evaluate_names_what_is_missing(run_dir, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(np.full((32, 32), 40 * i, np.uint8)).save(folder / f"{i}.png")
    code = main(
        ["evaluate", str(run_dir), "--data", str(folder), "--metrics", "disentanglement", *QUICK_EVAL]
    )
    assert code == 2
    assert "no ground-truth factors" in capsys.readouterr().err
    missing = tmp_path / "nowhere" / "inception.pt"
    code = main(["evaluate", str(run_dir), "--metrics", "sample_quality", "--inception", str(missing),
                 "--fid-samples", "8", "--no-progress"])  # fmt: skip
    assert code == 2
    assert str(missing) in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "no-run"), "--no-progress"]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["gmm", "two_stage"])
def test_sample_with_an_ex_post_sampler(run_dir, tmp_path, sampler):
    out = tmp_path / f"{sampler}.png"
    args = ["sample", str(run_dir), "-n", "16", "-o", str(out), "--sampler", sampler, "--fit-examples", "200"]
    options = {"gmm": ["num_components=3"], "two_stage": ["steps=50", "width=32"]}[sampler]
    assert main([*args, *(f"--sampler-option={option}" for option in options)]) == 0
    picture = np.asarray(Image.open(out))
    assert picture.std() > 0


def test_a_sampler_setting_it_does_not_take_is_refused_naming_the_ones_it_does(run_dir, tmp_path, capsys):
    out = tmp_path / "never.png"
    args = ["sample", str(run_dir), "-o", str(out), "--sampler", "two_stage", "--sampler-option", "stepz=5"]
    assert main(args) == 2
    error = capsys.readouterr().err
    assert "the 'two_stage' sampler has no option 'stepz'; it takes: width, steps, batch_size" in error
    assert main(["sample", str(run_dir), "-o", str(out), "--sampler-option", "steps"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err
    assert main(["evaluate", str(run_dir), "--sampler", "gmm", "--sampler-option", "k=3"]) == 2
    assert "the 'gmm' sampler has no option 'k'; it takes: num_components" in capsys.readouterr().err
    assert not out.exists()


def test_a_sampling_temperature_is_refused_for_a_model_without_one(run_dir, tmp_path, capsys):
    out = tmp_path / "never.png"
    assert main(["sample", str(run_dir), "--temperature", "0.7", "-o", str(out)]) == 2
    error = capsys.readouterr().err
    assert (
        "--temperature: VanillaVAE has no sampling temperature; models with one: DeepHierarchicalVAE" in error
    )
    assert not out.exists()


@pytest.mark.slow
def test_benchmark_trains_evaluates_and_resumes(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    suite = {
        "name": "tiny",
        "description": "A two-model smoke suite.",
        "output": str(tmp_path / "results"),
        "seed": 3,
        "data": {"name": "dsprites", "subset": 400, "image_size": 32},
        "train": {"max_epochs": 1, "limit_train_batches": 3, "limit_val_batches": 1, "batch_size": 16},
        "logging": {"progress_bar": "none"},
        "evaluate": {"num_examples": 48, "likelihood_examples": 4, "importance_samples": 8,
                     "disentanglement": ["mig", "dcimig"], "disentanglement_train": 200, "fid_samples": 0},
        "models": [
            {"label": "VAE", "config": "configs/vae.yaml",
             "overrides": {"model.hidden_dims": [8, 16, 32], "model.latent_dim": 3}},
            {"label": "IWAE k=2", "config": "configs/iwae.yaml",
             "overrides": {"model.hidden_dims": [8, 16, 32], "model.num_samples": 2}},
        ],
    }  # fmt: skip
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    assert main(["benchmark", "-c", str(path)]) == 0
    results = json.loads((tmp_path / "results" / "results.json").read_text())
    assert list(results["rows"]) == ["VAE", "IWAE_k_2"]
    row = results["rows"]["VAE"]
    assert row["parameters"] > 0 and row["train_images_per_second"] > 0 and row["steps"] == 3
    assert "disentanglement/mig" in row["metrics"]
    table = (tmp_path / "results" / "results.md").read_text()
    assert "| VAE |" in table and "| IWAE k=2 |" in table and "MIG" in table
    more = table[table.index("More disentanglement scores") :]  # the second table: DCIMIG, not MIG
    assert "| model | DCIMIG |" in more and "| VAE |" in more and "| MIG" not in more
    assert (tmp_path / "results" / "results.png").is_file()
    capsys.readouterr()
    assert main(["benchmark", "-c", str(path), "--only", "VAE"]) == 0  # done: reused, not retrained
    assert "already done" in capsys.readouterr().out
    assert main(["benchmark", "-c", str(path), "--only", "VAE", "--reevaluate"]) == 0  # no retraining
    assert "evaluating VAE again" in capsys.readouterr().out
    again = json.loads((tmp_path / "results" / "results.json").read_text())["rows"]
    assert list(again) == ["VAE", "IWAE_k_2"] and again["VAE"]["train_seconds"] == row["train_seconds"]
    assert again["VAE"]["metrics"] == row["metrics"]  # the same seed gives the same evaluation
    assert main(["benchmark", "-c", str(path), "--only", "GAN"]) == 2
    assert "GAN" in capsys.readouterr().err


def test_benchmark_suite_errors_name_the_key(tmp_path):
    from vaezoo.config import ConfigError
    from vaezoo.evaluation.benchmark import load_suite

    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump({"models": [{"config": "configs/vae.yaml"}], "evalute": {}}))
    with pytest.raises(ConfigError, match="evalute"):
        load_suite(path)
    path.write_text(yaml.safe_dump({"models": [{"config": "nope.yaml"}]}))
    with pytest.raises(ConfigError, match=r"models\[0\]\.config nope.yaml"):
        load_suite(path)
    path.write_text(
        yaml.safe_dump({"models": [{"config": str(REPO / "configs/vae.yaml")}], "evaluate": {"fid": 1}})
    )
    with pytest.raises(ConfigError, match="unknown evaluate key"):
        load_suite(path)


def test_shipped_suites_load():
    from vaezoo.evaluation.benchmark import entry_config, load_suite

    suites = sorted((REPO / "benchmarks").glob("*.yaml"))
    assert {p.stem for p in suites} >= {"dsprites", "fashion_mnist"}
    for path in suites:
        suite = load_suite(path)
        for entry in suite.models:
            config = entry_config(suite, entry, Path("/tmp/unused"))
            assert config.data.name == suite.data["name"]


def test_evaluate_flags_reach_the_settings(run_dir, tmp_path, monkeypatch):
    import vaezoo.evaluation.evaluate as evaluation

    seen = {}

    def record(model, datamodule, settings, report_dir, **kwargs):
        seen["settings"] = settings
        raise SystemExit(0)  # stop before any metric is computed

    monkeypatch.setattr(evaluation, "evaluate", record)
    with pytest.raises(SystemExit):
        main(
            [
                "evaluate",
                str(run_dir),
                "-o",
                str(tmp_path),
                "--no-feature-cache",
                "--fast-codes",
                "--no-progress",
            ]
        )
    assert seen["settings"].feature_cache is False and seen["settings"].fast_codes is True


@pytest.mark.slow
def test_the_sampler_fit_names_the_latents_it_really_uses(run_dir, tmp_path, capsys):
    import re

    capsys.readouterr()
    assert main(["sample", str(run_dir), "-n", "4", "-o", str(tmp_path / "g.png"), "--sampler", "gmm"]) == 0
    used = re.search(r"fitting the gmm sampler on (\d+) training latents", capsys.readouterr().out)
    assert (
        used is not None and int(used.group(1)) == 570
    )  # the run's whole training split (600 images), not 10,000


def test_the_cli_offers_every_registered_disentanglement_metric():
    from vaezoo.cli import (
        DISENTANGLEMENT_CHOICES,
    )  # a tuple: the CLI does not import scikit-learn to list them
    from vaezoo.evaluation.disentanglement import DISENTANGLEMENT_METRICS

    assert list(DISENTANGLEMENT_CHOICES) == list(DISENTANGLEMENT_METRICS)


def test_the_second_benchmark_table_shows_the_largest_downstream_size_and_fairness():
    from vaezoo.evaluation.benchmark import Suite, metric_value, render_results

    metrics = {
        "disentanglement/mig": 0.1,
        "disentanglement/downstream_logreg_100_mean_test_accuracy": 0.5,
        "disentanglement/downstream_logreg_10000_mean_test_accuracy": 0.75,
        "disentanglement/downstream_logreg_10000_min_test_accuracy": 0.25,
        "disentanglement/mean_fairness_mean_pred_mean_sens": 0.125,
    }
    assert metric_value(metrics, "disentanglement/downstream_logreg_*_mean_test_accuracy") == 0.75
    assert metric_value(metrics, "disentanglement/downstream_gbt_*_mean_test_accuracy") is None
    row = {
        "label": "VAE",
        "parameters": 1e6,
        "train_images_per_second": 10.0,
        "val_metrics": {},
        "metrics": metrics,
    }
    other = {**row, "label": "AE", "metrics": {"disentanglement/mig": 0.2}}
    suite = Suite("s", Path("s.yaml"), Path("out"), 0, {}, {}, {}, {}, [])
    more = render_results(suite, [row, other]).split("More disentanglement scores")[1]
    assert "| model | fairness | logreg acc. |" in more and "GBT" not in more
    assert "| VAE | 0.125 | 0.75 |" in more and "| AE | – | – |" in more

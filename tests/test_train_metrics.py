"""Metrics during training (logging.eval_every_n_steps): logged at their steps, in sensible ranges,
without changing what is trained (with and without them, and across a resume), and the errors
and notes of their settings."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import TINY_RUN

import vaezoo.training.evaluation as evaluation_module
from vaezoo.cli import main
from vaezoo.config import ConfigError, load_config
from vaezoo.data import VAEDataModule
from vaezoo.evaluation.training_metrics import DISENTANGLEMENT_GROUPS, EVAL_GROUPS, EvalGroup
from vaezoo.io import load_checkpoint
from vaezoo.registry import create_model
from vaezoo.training.evaluation import EvaluateEveryNSteps, check_eval_data

REPO = Path(__file__).resolve().parents[1]
VAE_YAML = str(REPO / "configs" / "vae.yaml")

# TINY_RUN (6 batches in 2 epochs of 3), deterministic, every step in metrics.csv; a Gaussian
# likelihood, so the ELBO is a normalised bound on grey-level images
RUN = [
    *TINY_RUN,
    "--train.deterministic", "true", "--logging.logger", "csv", "--logging.log_every_n_steps", "1",
    "--model.likelihood", "gaussian",
]  # fmt: skip
METRICS = [
    "--logging.eval_every_n_steps", "2", "--logging.eval_groups", "[active_units, elbo, mig]",
    "--logging.eval_subset", "64",
]  # fmt: skip


def rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as file:
        return list(csv.DictReader(file))


def column(run_dir: Path, key: str) -> dict[int, float]:
    """step -> value of ``key`` in a run's metrics.csv (a step logged twice keeps its last value)."""
    return {int(row["step"]): float(row[key]) for row in rows(run_dir) if row.get(key)}


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["state_dict"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, object]:
    """The same tiny run without and with the metrics; and with them, stopped after the first
    epoch and resumed for the second."""
    root = tmp_path_factory.mktemp("train-metrics")
    notes: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(evaluation_module, "rank_zero_info", notes.append)
        assert main(["train", "-c", VAE_YAML, *RUN, "--run-dir", str(root / "plain")]) == 0
        assert main(["train", "-c", VAE_YAML, *RUN, *METRICS, "--run-dir", str(root / "eval")]) == 0
        first = ["--run-dir", str(root / "resumed"), "--train.max_epochs", "1"]
        assert main(["train", "-c", VAE_YAML, *RUN, *METRICS, *first]) == 0
        assert main(["train", "--resume", str(root / "resumed"), "--train.max_epochs", "2"]) == 0
    return {"plain": root / "plain", "eval": root / "eval", "resumed": root / "resumed", "notes": notes}


def test_metrics_are_logged_at_their_steps_in_sensible_ranges(runs):
    run = runs["eval"]
    # after batches 2, 4 and 6, at the steps of those batches' train/ values (0-based)
    for key in ("eval/active_units", "eval/active_fraction", "eval/elbo", "eval/mig", "eval/seconds"):
        assert sorted(column(run, key)) == [1, 3, 5], key
    assert all(0 <= v <= 4 and v == int(v) for v in column(run, "eval/active_units").values())
    assert all(0 <= v <= 1 for v in column(run, "eval/mig").values())
    assert all(math.isfinite(v) for v in column(run, "eval/elbo").values())
    assert all(v > 0 for v in column(run, "eval/seconds").values())
    # the ELBO is the model's own objective on validation images: it improves as training does
    elbo = column(run, "eval/elbo")
    assert elbo[5] > elbo[1]
    assert not any(key.startswith("eval/") for key in rows(runs["plain"])[0])


def test_the_last_values_are_the_evaluation_functions_on_the_final_weights(runs):
    from vaezoo.config import from_dict
    from vaezoo.evaluation.disentanglement import mig
    from vaezoo.evaluation.latent_health import active_units
    from vaezoo.evaluation.likelihood import likelihood_report
    from vaezoo.io import model_from_checkpoint

    run = runs["eval"]
    model, saved = model_from_checkpoint(run / "checkpoints" / "last.ckpt")  # after batch 6
    datamodule = VAEDataModule(from_dict(saved).data)
    datamodule.setup()
    images, labels = datamodule.fixed_batch(64, split="val")
    with torch.no_grad():
        codes = model.embed(images)
        torch.manual_seed(0)  # the evaluation's seed: the ELBO's draws are the callback's
        elbo = likelihood_report(model, [(images, {"labels": labels})], num_samples=1, chunk_size=1)
        score = mig(
            datamodule.ground_truth, lambda x: model.embed(x).flatten(1).double().numpy(), num_train=64
        )
    assert column(run, "eval/active_units")[5] == active_units(codes)["active_units"]
    assert column(run, "eval/elbo")[5] == pytest.approx(elbo["elbo"], rel=1e-6)
    assert column(run, "eval/mig")[5] == pytest.approx(score["mig"], rel=1e-6)


def test_training_is_the_same_with_and_without_the_metrics(runs):
    plain, with_metrics = runs["plain"], runs["eval"]
    for key in ("train/loss_step", "val/loss"):
        assert column(with_metrics, key) == column(plain, key), key
    assert len(column(plain, "train/loss_step")) == 6
    a, b = weights(plain), weights(with_metrics)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_resumed_run_trains_and_evaluates_as_the_uninterrupted_one(runs):
    resumed, whole = runs["resumed"], runs["eval"]
    assert column(resumed, "train/loss_step") == column(whole, "train/loss_step")
    assert sorted(column(resumed, "eval/mig")) == [1, 3, 5]
    for key in ("eval/elbo", "eval/mig", "eval/active_units"):  # the same weights, the same draws
        assert column(resumed, key) == column(whole, key), key


def test_the_first_evaluation_and_the_end_print_groups_subset_budget_and_time(runs):
    notes = runs["notes"]
    first = next(note for note in notes if "the first evaluation" in note)
    assert "every 2 batches on rank zero: active_units, elbo, mig on 20 validation images" in first
    assert "64 ground-truth observations for mig, budget 30 s" in first
    assert "after batch 2, took" in first and "logged as eval/seconds" in first
    assert any(note.startswith("eval: 3 evaluations took") for note in notes)


# --------------------------------------------------------------------------- settings and notes


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (["--logging.eval_groups", "[active_units, migg]"], "unknown group 'migg' (did you mean 'mig'?)"),
        (["--logging.eval_groups", "[elbo, elbo]"], "names 'elbo' twice"),
        (["--logging.eval_budget_seconds", "0"], "logging.eval_budget_seconds = 0 must be a positive"),
        (["--logging.eval_every_n_steps", "-1"], "logging.eval_every_n_steps = -1 must be an integer >= 0"),
        (["--logging.eval_subset", "1"], "logging.eval_subset = 1 must be an integer >= 2"),
    ],
)
def test_bad_settings_are_named(override, expected):
    with pytest.raises(ConfigError) as error:
        load_config(VAE_YAML, override)
    assert expected in str(error.value)
    if "unknown group" in expected:
        assert "valid groups: active_units, kl, elbo, codebook, mig" in str(error.value)


def test_groups_needing_factors_are_refused_on_data_without_them():
    config = load_config(
        VAE_YAML,
        ["--data.name", "image_folder", "--logging.eval_every_n_steps", "5"]
        + ["--logging.eval_groups", "[active_units, mig, sap]"],
    )
    with pytest.raises(ConfigError) as error:
        check_eval_data(config, SimpleNamespace(ground_truth=None))
    message = str(error.value)
    assert "mig, sap need ground-truth factors, and data.name = 'image_folder' has none" in message
    config.logging.eval_groups = ["active_units", "elbo"]
    check_eval_data(config, SimpleNamespace(ground_truth=None))  # these need none


def test_disentanglement_groups_are_the_disentanglement_metrics():
    from vaezoo.evaluation.disentanglement import DISENTANGLEMENT_METRICS

    assert set(DISENTANGLEMENT_GROUPS) == set(DISENTANGLEMENT_METRICS)
    assert all(EVAL_GROUPS[name].needs_ground_truth for name in DISENTANGLEMENT_GROUPS)


def test_the_budget_skips_a_group_that_would_overrun_and_drops_one_that_alone_did():
    notes: list[str] = []
    callback = EvaluateEveryNSteps(10, ["active_units", "elbo", "mig"], budget=5.0, note=notes.append)
    assert callback.fits("active_units", spent=0.0, batches=10)  # nothing known yet: it runs
    callback.last_seconds = {"active_units": 1.0, "elbo": 3.0, "mig": 6.0}
    assert callback.fits("elbo", spent=1.5, batches=10)  # 1.5 + 3 <= 5
    assert not callback.fits("elbo", spent=2.5, batches=20)  # 2.5 + 3 > 5: not this time
    assert not callback.fits("elbo", spent=2.5, batches=30)
    assert notes == [
        "eval: elbo skipped after batch 20: 2.5 s of logging.eval_budget_seconds = 5 were spent and it took "
        "3.0 s; it runs whenever it fits (said once; raise the budget or lower logging.eval_subset)"
    ]
    assert callback.groups == ["active_units", "elbo", "mig"]
    assert not callback.fits("mig", spent=0.0, batches=30)  # 6 s alone: never again
    assert callback.groups == ["active_units", "elbo"]
    assert "mig took 6.0 s, more than logging.eval_budget_seconds = 5 on its own" in notes[-1]


@pytest.fixture(scope="module")
def tiny_data() -> VAEDataModule:
    datamodule = VAEDataModule(load_config(VAE_YAML, TINY_RUN).data)
    datamodule.setup()
    return datamodule


def test_a_group_the_model_lacks_is_left_out_with_one_note(tiny_data):
    model = create_model("VQVAE", 1, 4, num_embeddings=8, hidden_dims=[8, 16], image_size=32)
    notes: list[str] = []
    callback = EvaluateEveryNSteps(2, ["active_units", "elbo", "codebook"], subset=16, note=notes.append)
    trainer = SimpleNamespace(datamodule=tiny_data)
    for batches in (2, 4):
        values, timings = callback.evaluate(trainer, model, batches)  # type: ignore[arg-type]
        assert set(timings) == {"active_units", "codebook"}
        assert 0 < values["codebook_usage"] <= 1 and 1 <= values["codebook_perplexity"] <= 8
    assert len(notes) == 1 and notes[0].startswith("eval: elbo is left out for VQVAE: VQVAE")
    assert callback.groups == ["active_units", "codebook"]


def test_a_metric_that_fails_on_the_subset_is_left_out_and_training_goes_on(tiny_data, monkeypatch):
    def broken(ctx):
        raise ValueError("Found array with 0 feature(s)")

    monkeypatch.setitem(EVAL_GROUPS, "broken", EvalGroup(broken))
    model = create_model("VanillaVAE", 1, 4, hidden_dims=[8, 16, 32], image_size=32)
    notes: list[str] = []
    callback = EvaluateEveryNSteps(2, ["broken", "active_units"], subset=16, note=notes.append)
    values, timings = callback.evaluate(SimpleNamespace(datamodule=tiny_data), model, 2)  # type: ignore[arg-type]
    assert set(timings) == {"active_units"} and "active_units" in values
    assert callback.groups == ["active_units"]
    assert notes == [
        "eval: broken failed after batch 2 and is left out for the rest of the run (ValueError: Found array "
        "with 0 feature(s)); a larger logging.eval_subset may help"
    ]

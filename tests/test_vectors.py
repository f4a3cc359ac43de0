"""Vector data: the MLP architecture of every model that declares ``supports_vectors``, the
``vectors`` dataset (.npy / CSV) and its errors, and train + evaluate + sample end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vaezoo.cli import main
from vaezoo.config import DataConfig
from vaezoo.data import DataError, VAEDataModule
from vaezoo.data.common import split_indices
from vaezoo.registry import create_model, get_model_class, list_models

VECTOR_MODELS = [name for name in list_models() if get_model_class(name).supports_vectors]
IMAGE_ONLY = [name for name in list_models() if not get_model_class(name).supports_vectors]
# Each model's own required arguments beyond (in_channels, latent_dim).
EXTRA: dict[str, dict] = {"BetaTCVAE": {"dataset_size": 256}, "ConditionalVAE": {"num_classes": 2}}
KL_WEIGHT = 1.0  # M_N: the ELBO


def manifold(n: int = 256, dim: int = 8, seed: int = 0) -> torch.Tensor:
    """Points near a 2-D manifold in [0, 1]^dim: a smooth map of 2 uniform coordinates, plus noise."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(-1, 1, (n, 2))
    mixing = rng.normal(size=(2, dim))
    x = 0.5 + 0.4 * np.tanh(t @ mixing) + 0.02 * rng.normal(size=(n, dim))
    return torch.from_numpy(x.astype(np.float32))


def fixed_losses(model, x: torch.Tensor) -> dict[str, float]:
    """The loss terms of one eval-mode pass over ``x``, with the same noise every call."""
    model.eval()
    torch.manual_seed(1)
    with torch.no_grad():
        output = model(x)
        losses = model.loss_function(*output, M_N=KL_WEIGHT, batch_idx=0, global_step=0)
    model.train()
    return {key: value.item() for key, value in losses.items()}


def fixed_loss(model, x: torch.Tensor) -> float:
    return fixed_losses(model, x)["loss"]


def train_steps(model, x: torch.Tensor, steps: int = 60, lr: float = 1e-2) -> None:
    """Adam on the model's loss over batches of 64 (and its auxiliary loss, as VAEModule does)."""
    auxiliary = model.auxiliary_parameters()
    ids = {id(p) for p in auxiliary}
    main_opt = torch.optim.Adam([p for p in model.parameters() if id(p) not in ids], lr=lr)
    aux_opt = torch.optim.Adam(auxiliary, lr=lr) if auxiliary else None
    generator = torch.Generator().manual_seed(0)
    for step in range(steps):
        batch = x[torch.randint(0, len(x), (64,), generator=generator)]
        context = {"batch_idx": step, "global_step": step}
        output = model(batch, **context)
        loss = model.loss_function(*output, M_N=KL_WEIGHT, **context)["loss"]
        main_opt.zero_grad()
        loss.backward()
        main_opt.step()
        if aux_opt is not None:
            aux_loss = model.auxiliary_loss(output, **context)["loss"]
            aux_opt.zero_grad()
            aux_loss.backward()
            aux_opt.step()


# --------------------------------------------------------------------------- models


def test_the_image_only_models_are_the_expected_ones():
    assert set(IMAGE_ONLY) == {
        "ConditionalVAE",
        "DFCVAE",
        "MSSIMVAE",
        "VQVAE",
        "VAEGAN",
        "DeepHierarchicalVAE",
        "KLAutoencoder",
        "VQGAN",
    }
    assert "VanillaVAE" in VECTOR_MODELS and "HVAE" in VECTOR_MODELS and "VampVAE" in VECTOR_MODELS


@pytest.mark.parametrize("name", VECTOR_MODELS)
def test_every_vector_model_trains_on_vectors(name):
    """Shapes, and 60 Adam steps on points near a 2-D manifold lower the reconstruction term and,
    where the objective is fixed (no adversary trained beside it, no capacity schedule), the loss.

    A Gaussian likelihood with a small fixed sigma (the squared error for models with their own
    reconstruction term) makes encoding the manifold worth its KL, so the posterior does not collapse.
    """
    torch.manual_seed(0)
    x = manifold()
    cls = get_model_class(name)
    likelihood = {} if cls.own_reconstruction else {"likelihood": "gaussian", "likelihood_scale": "fixed"}
    model = create_model(
        name, 8, 2, hidden_dims=[32, 16], architecture="mlp", recon_reduction="sum", likelihood_std=0.05,
        **likelihood, **EXTRA.get(name, {}),
    )  # fmt: skip
    out = model(x[:5])
    assert out[0].shape == (5, 8) and out[1].shape == (5, 8)
    assert model.encoder.out_features == 16
    if model.samples_from_prior:
        assert model.sample(3, "cpu").shape == (3, 8)
    else:  # no prior (AE, RAE): it says so; its ex-post samplers decode codes of the same shape
        with pytest.raises(NotImplementedError):
            model.sample(3, "cpu")
        assert model.decode(model.embed(x[:3])).shape == (3, 8)
    before = fixed_losses(model, x)
    train_steps(model, x)
    after = fixed_losses(model, x)
    recon = "Reconstruction_Loss"
    assert after[recon] < before[recon], f"{name}: {recon} {before[recon]:.4f} -> {after[recon]:.4f}"
    moving_target = model.auxiliary_parameters() or any(k.startswith("Capacity") for k in model.loss_keys)
    if not moving_target:
        assert after["loss"] < before["loss"], f"{name}: loss {before['loss']:.4f} -> {after['loss']:.4f}"


def test_a_vae_learns_the_manifold_beyond_its_mean():
    """The known answer: predicting the mean costs the data's variance; a VAE with a 2-D code of a
    2-D manifold reconstructs far better."""
    torch.manual_seed(0)
    x = manifold()
    model = create_model(
        "VanillaVAE", 8, 2, hidden_dims=[32, 16], architecture="mlp", likelihood="gaussian",
        likelihood_scale="fixed", likelihood_std=0.05,
    )  # fmt: skip
    train_steps(model, x, steps=150)
    model.eval()
    with torch.no_grad():
        mse = (model.decode(model.embed(x)) - x).pow(2).mean().item()
    assert mse < 0.3 * x.var(0).mean().item()


@pytest.mark.parametrize("name", IMAGE_ONLY)
def test_an_image_only_model_is_refused_naming_it(name):
    with pytest.raises(ValueError, match=rf"{name} does not support architecture 'mlp'.*VanillaVAE"):
        create_model(name, in_channels=8, latent_dim=4, architecture="mlp", **EXTRA.get(name, {}))


def test_mlp_shapes_defaults_and_bad_input():
    model = create_model("VanillaVAE", 12, 3, architecture="mlp")
    assert model.hidden_dims == [256, 128]  # DEFAULT_MLP_HIDDEN_DIMS, not the conv channels
    assert [m.out_features for m in model.decoder.modules() if isinstance(m, torch.nn.Linear)] == [
        128,
        256,
        12,
    ]
    assert model.input_shape == (12,)
    assert not any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    with pytest.raises(ValueError, match=r"takes vectors of shape \(B, 12\), got \(2, 3, 8, 8\)"):
        model(torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match="architecture 'dense' is not one of"):
        create_model("VanillaVAE", 12, 3, architecture="dense")


def test_bernoulli_on_binary_vectors_is_a_normalised_likelihood():
    torch.manual_seed(0)
    prototypes = (torch.rand(4, 16) < 0.5).float()
    x = prototypes[torch.randint(0, 4, (256,))]  # binary vectors from four patterns
    x = torch.where(torch.rand_like(x) < 0.05, 1 - x, x)
    model = create_model("VanillaVAE", 16, 2, [32], architecture="mlp", likelihood="bernoulli")
    out = model(x[:4])
    assert out.recon_params.shape == (4, 16) and bool(((out.recons > 0) & (out.recons < 1)).all())
    # log p(x|z) of a Bernoulli is minus the summed binary cross-entropy of the logits
    expected = -torch.nn.functional.binary_cross_entropy_with_logits(
        out.recon_params, x[:4], reduction="none"
    )
    assert torch.allclose(model.log_likelihood(x[:4], out.recon_params), expected.sum(1))
    assert model.likelihood.unnormalized_on(x) is None
    before = fixed_loss(model, x)
    train_steps(model, x, steps=80)
    after = fixed_loss(model, x)
    assert after < 0.7 * before  # the ELBO in nats: 16 ln 2 = 11.1 for a coin per bit


def test_gaussian_likelihood_reduces_over_features():
    model = create_model(
        "VanillaVAE", 5, 2, [8], architecture="mlp", likelihood="gaussian", likelihood_std=0.5
    )
    x, mean = torch.zeros(3, 5), torch.ones(3, 5)
    # log N(0; 1, 0.25) per feature, summed over the 5 features
    per_feature = -0.5 * (1 / 0.5) ** 2 - np.log(0.5) - 0.5 * np.log(2 * np.pi)
    assert torch.allclose(model.log_likelihood(x, mean), torch.full((3,), 5 * per_feature))


# --------------------------------------------------------------------------- reading files


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def splits_of(path: Path, **data) -> VAEDataModule:
    datamodule = VAEDataModule(DataConfig(name="vectors", path=str(path), val_fraction=0.25, **data), 4)
    datamodule.setup()
    return datamodule


def test_csv_with_header_and_named_label_column(tmp_path):
    rows = "\n".join(f"{i},{i * 0.5},{'ab'[i % 2]}" for i in range(8))
    dm = splits_of(write_csv(tmp_path / "t.csv", f"x, y ,kind\n{rows}\n"), label_column="kind")
    assert dm.kind == "vectors" and dm.channels == 2 and dm.num_train + dm.num_val == 8
    values, labels = dm.fixed_batch(8, split="train")
    assert values.dtype == torch.float32 and values.shape[1] == 2
    assert torch.equal(values[:, 1], values[:, 0] * 0.5)
    assert torch.equal(labels, values[:, 0].long() % 2)  # "a" -> 0, "b" -> 1 (sorted names)
    assert dm.label_dim == 2
    assert dm.output_activation == "none"  # values beyond [0, 1]


def test_csv_without_header_index_label_and_unit_range(tmp_path):
    dm = splits_of(write_csv(tmp_path / "t.csv", "0,1,3\n1,0,1\n0.5,0.25,2\n1,1,0\n"), label_column=-1)
    values, labels = dm.fixed_batch(4, split="train")
    assert dm.channels == 2 and labels.dtype == torch.int64 and dm.label_dim == 4
    assert dm.output_activation == "sigmoid" and dm.value_range == (0.0, 1.0)


def test_npy_standardized_on_the_training_split(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.normal(loc=[5.0, -2.0, 0.0], scale=[3.0, 0.1, 1.0], size=(200, 3))
    array[:, 2] = 7.0  # a constant feature is only centred
    np.save(tmp_path / "v.npy", array)
    dm = splits_of(tmp_path / "v.npy", standardize=True)
    train = dm.splits.train.values
    assert torch.allclose(train.mean(0), torch.zeros(3), atol=1e-5)
    assert torch.allclose(train.std(0, unbiased=False), torch.tensor([1.0, 1.0, 0.0]), atol=1e-4)
    assert dm.output_activation == "none" and dm.label_shape == ()
    rows, val_rows = split_indices(DataConfig(val_fraction=0.25), 200, "v.npy")
    mean, std = array[rows].mean(0), array[rows].std(0)
    expected_val = (array[val_rows, :2] - mean[:2]) / std[:2]  # val scaled by the training statistics
    assert torch.allclose(dm.splits.val.values[:, :2], torch.from_numpy(expected_val).float(), atol=1e-5)
    raw = splits_of(tmp_path / "v.npy")
    assert torch.allclose(raw.splits.train.values, torch.from_numpy(array[rows]).float())


def test_npy_bool_values_and_integer_label_column(tmp_path):
    array = np.zeros((10, 4), dtype=np.int64)
    array[:, 0] = np.arange(10) % 3
    array[::2, 1:] = 1
    np.save(tmp_path / "b.npy", array)
    dm = splits_of(tmp_path / "b.npy", label_column=0)
    values, labels = dm.fixed_batch(10, split="train")
    assert dm.channels == 3 and dm.label_dim == 3 and dm.output_activation == "sigmoid"
    assert set(values.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize(
    ("name", "content", "data", "message"),
    [
        ("bad.csv", "a,b\n1,2\n3,x\n", {}, r"bad.csv: row 3, column 2 \('b'\) is 'x', not a number"),
        ("gap.csv", "1,2\n3,\n", {}, r"gap.csv: row 2, column 2 \('column_1'\) is empty \(a missing value\)"),
        (
            "nan.csv",
            "a,b\n1,nan\n",
            {},
            r"nan.csv: row 2, column 2 \('b'\) is 'nan'; expected a finite number",
        ),
        ("ragged.csv", "1,2,3\n4,5\n", {}, r"ragged.csv: row 2 has 2 cells, expected 3"),
        (
            "semi.csv",
            "a;b\n1;2\n",
            {},
            r"row 2, column 1 \('a;b'\) is '1;2', not a number \(cells must be sep",
        ),
        ("head.csv", "a,b\n", {}, "has a header row but no data rows"),
        ("empty.csv", "\n\n", {}, "the CSV file has no rows"),
        ("name.csv", "1,2\n3,4\n", {"label_column": "y"}, "names a column, but the file has no header row"),
        ("col.csv", "a,b\n1,2\n", {"label_column": "c"}, r"'c' is not a column; columns: \['a', 'b'\]"),
        ("far.csv", "1,2\n3,4\n", {"label_column": 5}, "is outside the 2 columns"),
        ("neg.csv", "1,-1\n3,0\n", {"label_column": 1}, "label 0 is -1; class indices must be >= 0"),
        (
            "nolabel.csv",
            "a,y\n1,u\n3,\n",
            {"label_column": "y"},
            r"row 3, column 2 \('y', data.label_column\) is empty",
        ),
    ],
)
def test_csv_errors_name_file_row_and_column(tmp_path, name, content, data, message):
    with pytest.raises(DataError, match=message):
        splits_of(write_csv(tmp_path / name, content), **data)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros(5), r"has shape \(5,\); expected \(N, D\) vectors, 2 dimensions \(one feature: reshape"),
        (np.zeros((2, 3, 4)), r"has shape \(2, 3, 4\); expected \(N, D\)"),
        (
            np.array([[1.0, np.nan], [0.0, 1.0]]),
            r"the value at \[0, 1\] \(0-based\) is nan \(1 are NaN or infinite\)",
        ),
        (np.array([["a", "b"]]), "the array is <U1; expected bool, integer or float numbers"),
    ],
)
def test_npy_errors(tmp_path, array, message):
    np.save(tmp_path / "v.npy", array)
    with pytest.raises(DataError, match=message):
        splits_of(tmp_path / "v.npy")


def test_image_keys_and_vector_keys_are_refused_where_they_do_not_apply(tmp_path):
    path = write_csv(tmp_path / "t.csv", "1,2\n3,4\n")
    with pytest.raises(DataError, match="data.channels = 3 does not apply to data.name 'vectors'"):
        splits_of(path, channels=3)
    with pytest.raises(
        DataError, match="data.standardize = True must be False: it applies to data.name 'vectors'"
    ):
        VAEDataModule(DataConfig(name="dsprites", standardize=True))
    np.savez(tmp_path / "a.npz", images=np.zeros((2, 4, 4)))
    with pytest.raises(DataError, match="is a .npz"):
        splits_of(tmp_path / "a.npz")


# --------------------------------------------------------------------------- end to end


def vector_csv(path: Path, n: int = 240) -> Path:
    x = manifold(n, dim=6).numpy()
    labels = (x[:, 0] > np.median(x[:, 0])).astype(int)
    lines = ["a,b,c,d,e,f,group", *(",".join(f"{v:.5f}" for v in row) + f",{k}" for row, k in zip(x, labels))]
    path.write_text("\n".join(lines) + "\n")
    return path


TRAIN = [
    "--model.latent_dim", "2", "--model.hidden_dims", "[32, 16]", "--model.likelihood", "gaussian",
    "--data.subset", "null", "--data.label_column", "group",
    "--train.batch_size", "32", "--train.max_epochs", "2", "--train.lr", "0.003",
    "--logging.progress_bar", "none", "--logging.log_every_n_steps", "5",
]  # fmt: skip


@pytest.mark.slow
def test_train_evaluate_sample_reconstruct_a_csv(tmp_path, capsys):
    csv_path = vector_csv(tmp_path / "points.csv")
    args = ["train", "-c", "vae", "--data.name", "vectors", "--data.path", str(csv_path), *TRAIN]
    assert main([*args, "--logging.save_dir", str(tmp_path / "runs")]) == 0
    run = tmp_path / "runs" / "VanillaVAE" / "version_0"
    saved = (run / "config.yaml").read_text()
    assert (
        "architecture: mlp" in saved and "in_channels: 6" in saved and "output_activation: sigmoid" in saved
    )
    assert (run / "checkpoints" / "last.ckpt").is_file() and not (run / "images").exists()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["recon_mse_vs_mean_image"] < 1.5

    report = tmp_path / "report"
    evaluate = [
        "evaluate",
        str(run),
        "-o",
        str(report),
        "-k",
        "8",
        "--likelihood-examples",
        "16",
        "--no-progress",
    ]
    assert main(evaluate) == 0
    metrics = json.loads((report / "metrics.json").read_text())
    assert set(metrics["metrics"]) == {"reconstruction", "latent", "likelihood"}
    assert metrics["metrics"]["likelihood"]["likelihood_normalized"] == 1.0
    assert "nll_discrete" not in metrics["metrics"]["likelihood"]
    assert {"sample_quality", "pictures/images", "reconstruction/psnr_ssim"} <= set(metrics["not_applicable"])
    assert set(metrics["pictures"]) == {"latent_embedding", "kl_per_dim"}

    assert main(["sample", str(run), "-n", "5", "-o", str(tmp_path / "s.csv")]) == 0
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert lines[0] == "x0,x1,x2,x3,x4,x5" and len(lines) == 6
    assert main(["reconstruct", str(run), "-n", "4", "-o", str(tmp_path / "r.npy")]) == 0
    assert np.load(tmp_path / "r.npy").shape == (4, 12)
    assert main(["sample", str(run), "-o", str(tmp_path / "s.png")]) == 2
    assert "-o " in capsys.readouterr().err
    np.save(tmp_path / "narrow.npy", np.zeros((8, 4)))
    narrow = ["--data.path", str(tmp_path / "narrow.npy"), "--data.label_column", "null"]
    assert main(["reconstruct", str(run), "-o", str(tmp_path / "n.csv"), *narrow]) == 2
    assert "trained on vectors of 6 features, but the data (data.name 'vectors') gives vectors of 4" in (
        capsys.readouterr().err
    )
    assert main(["evaluate", str(run), "--data", str(tmp_path), "--no-progress"]) == 2
    assert "a folder of images, but VanillaVAE was trained on vectors" in capsys.readouterr().err


def test_train_refuses_what_does_not_fit_vectors(tmp_path, capsys):
    csv_path = vector_csv(tmp_path / "points.csv", n=20)
    base = ["train", "-c", "vae", "--data.name", "vectors", "--data.path", str(csv_path), *TRAIN]
    save = ["--logging.save_dir", str(tmp_path / "runs")]
    assert main([*base, *save, "--model.name", "MSSIMVAE", "--model.likelihood", "mse"]) == 2
    assert "model MSSIMVAE does not train on vectors" in capsys.readouterr().err
    assert main([*base, *save, "--model.architecture", "conv"]) == 2
    assert "model.architecture = 'conv' but the data (vectors) gives 'mlp'" in capsys.readouterr().err
    assert main([*base, *save, "--model.in_channels", "3"]) == 2
    assert "model.in_channels = 3 but the data (vectors) gives 6" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("seed", range(12))
def test_random_bytes_raise_data_errors_only(tmp_path, seed):
    rng = np.random.default_rng(seed)
    body = rng.integers(0, 256, int(rng.integers(0, 400)), dtype=np.uint8).tobytes()
    prefix = [b"", b"\x93NUMPY", b"a,b\n1,", b"\x80\x04"][seed % 4]
    path = tmp_path / "noise.csv"
    path.write_bytes(prefix + body)
    try:
        splits_of(path)
    except DataError:
        pass  # the expected outcome; a readable table by chance is fine too

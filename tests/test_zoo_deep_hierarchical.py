"""DeepHierarchicalVAE: the group layout, KL bookkeeping and balancing, spectral regularisation,
temperature sampling and the importance-weighted bound."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vaezoo.evaluation.likelihood import importance_weighted_bounds
from vaezoo.models.deep_hierarchical_vae import DeepHierarchicalVAE, kl_balancing_coefficients
from vaezoo.nn.spectral import SpectralNorms


def small(**kwargs: object) -> DeepHierarchicalVAE:
    torch.manual_seed(0)
    options = dict(image_size=16, channels=8, groups_per_scale=[2, 3], latent_channels=2)
    return DeepHierarchicalVAE(1, **{**options, **kwargs})  # type: ignore[arg-type]


def images(batch: int = 4, size: int = 16) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randint(0, 256, (batch, 1, size, size)).float() / 255


def perturb(model: nn.Module) -> None:
    """Move the zero-initialised heads and cells off zero, so that q differs from p."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))


def test_default_has_at_least_eight_groups_and_shapes_at_every_group():
    model = DeepHierarchicalVAE(1)
    assert len(model.groups) >= 8
    assert [spec.shape for spec in model.groups] == [(4, 4, 4)] * 4 + [(4, 8, 8)] * 4
    x = images(3, 32)
    output = model(x)
    assert output.recons.shape == x.shape and output.recon_params.shape == x.shape
    for z, q, p, spec in zip(output.latents, output.posteriors, output.priors, model.groups):
        assert z.shape == q.mu.shape == p.mu.shape == (3, math.prod(spec.shape))
    assert model.latent_dim == 4 * 4 * 16 + 4 * 4 * 64 == output.mu.shape[1]
    assert model.encode(x).mu.shape == (3, model.latent_dim)
    assert model.decode(model.embed(x)).shape == x.shape
    assert model.sample(2, "cpu").shape == (2, 1, 32, 32)
    features = model.bottom_up(x)
    assert [tuple(f.shape[2:]) for f in features] == [spec.shape[1:] for spec in model.groups]


def test_bad_arguments_say_which_and_why():
    with pytest.raises(ValueError, match="image_size = 20 must be a multiple"):
        DeepHierarchicalVAE(1, image_size=20)
    with pytest.raises(ValueError, match="latent_dim = 7, but the groups hold 1280"):
        DeepHierarchicalVAE(1, 7)
    with pytest.raises(ValueError, match="groups_per_scale needs positive counts"):
        DeepHierarchicalVAE(1, groups_per_scale=[4, 0])
    with pytest.raises(ValueError, match="codes must be"):
        small().decode(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        small().sample(2, "cpu", temperature=-1.0)


def test_group_kls_sum_to_the_total_and_match_kl_per_dimension():
    model = small().eval()
    perturb(model)
    x = images()
    with torch.no_grad():
        losses = model.loss_function(*model(x), M_N=1.0)
        groups = [losses[f"KLD_group{i}"] for i in range(1, len(model.groups) + 1)]
        torch.testing.assert_close(torch.stack(groups).sum(), losses["KLD"])
        assert losses["KLD"] > 0
        # at M_N = 1 the loss is the negative ELBO: reconstruction + the unweighted KL
        torch.testing.assert_close(losses["loss"], losses["Reconstruction_Loss"] + losses["KLD"])
        per_dim = model.kl_per_dimension(x)
        assert per_dim.shape == (4, model.latent_dim) and (per_dim >= 0).all()


def test_kl_balancing_coefficients_by_hand():
    kls = torch.tensor([[1.0, 4.0, 0.0], [3.0, 8.0, 0.0]])  # (B = 2, L = 3)
    sizes = torch.tensor([1.0, 2.0, 4.0])
    # r = (mean KL + 0.01) / size = [2.01, 3.005, 0.0025]; gamma = r / mean(r)
    r = torch.tensor([2.01 / 1, 6.01 / 2, 0.01 / 4])
    expected = r / r.mean()
    gamma = kl_balancing_coefficients(kls, sizes)
    torch.testing.assert_close(gamma, expected)
    torch.testing.assert_close(gamma.mean(), torch.tensor(1.0))
    assert gamma[2] < 0.01  # an unused group is hardly penalised


def test_balancing_weights_the_loss_only_during_warm_up():
    model = small()
    perturb(model)
    output = model(images())
    kls = torch.stack([q.kl(p) for q, p in zip(output.posteriors, output.priors)], dim=1)
    recon = model.loss_function(*output, M_N=0.5)["Reconstruction_Loss"]
    gamma = kl_balancing_coefficients(kls.detach(), model.group_sizes)
    balanced = model.loss_function(*output, M_N=0.5)["loss"]
    torch.testing.assert_close(balanced, recon + 0.5 * (kls * gamma).sum(1).mean())
    plain = DeepHierarchicalVAE(**{**model.config, "kl_balance": False})
    plain.load_state_dict(model.state_dict())
    torch.testing.assert_close(plain.loss_function(*output, M_N=0.5)["loss"], recon + 0.5 * kls.sum(1).mean())


def test_spectral_norms_match_the_singular_values_of_a_conv():
    torch.manual_seed(2)
    convs = [nn.Conv2d(3, 5, 3), nn.Conv2d(5, 2, 1)]
    weights = [c.weight for c in convs]
    norms = SpectralNorms(weights)(weights, iterations=100)
    exact = torch.stack([torch.linalg.matrix_norm(w.flatten(1), ord=2) for w in weights])
    torch.testing.assert_close(norms, exact, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(exact, torch.stack([torch.linalg.svdvals(w.flatten(1))[0] for w in weights]))
    norms.sum().backward()  # differentiable in the weights
    assert convs[0].weight.grad is not None and convs[0].weight.grad.abs().sum() > 0


def test_spectral_term_enters_the_loss_with_its_coefficient():
    model = small(spectral_coefficient=0.1, power_iterations=50)
    output = model(images())
    losses = model.loss_function(*output, M_N=1.0)
    exact = sum(torch.linalg.matrix_norm(w.flatten(1), ord=2) for w in model.conv_weights())
    torch.testing.assert_close(losses["Spectral_Reg"], exact, rtol=1e-3, atol=1e-3)
    expected = losses["Reconstruction_Loss"] + losses["KLD"] + 0.1 * losses["Spectral_Reg"]
    torch.testing.assert_close(losses["loss"], expected)
    assert small().loss_function(*output, M_N=1.0)["Spectral_Reg"] == 0  # off by default


def test_temperature_zero_samples_the_prior_means_deterministically():
    model = small().eval()
    perturb(model)
    with torch.no_grad():
        torch.manual_seed(3)
        first = model.sample(3, "cpu", temperature=0.0)
        torch.manual_seed(4)
        second = model.sample(3, "cpu", temperature=0.0)
        warm = model.sample(3, "cpu", temperature=1.0)
    assert torch.equal(first, second)
    assert torch.equal(first[0], first[1])  # the mean path is the same for every sample
    assert not torch.allclose(warm[0], warm[1])


def test_loss_goes_down_in_a_few_steps():
    model = small()
    x = images(8)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(15):
        loss = model.loss_function(*model(x), M_N=1.0)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert sum(history[-3:]) / 3 < 0.99 * sum(history[:3]) / 3, history


def test_one_importance_weight_is_the_single_sample_elbo():
    """log w with k = 1 is log p(x|z) + sum_l log p(z_l|z_<l) - log q(z_l|x, z_<l) at forward's draw."""
    model = small().eval()
    perturb(model)
    x = images(3)
    with torch.no_grad():
        torch.manual_seed(5)
        output = model(x)
        torch.manual_seed(5)
        log_w = model.log_importance_weights(x, 1)
    direct = model.likelihood.log_prob(x, output.recon_params)
    for z, q, p in zip(output.latents, output.posteriors, output.priors):
        normal_p = torch.distributions.Normal(p.mu, p.std)
        normal_q = torch.distributions.Normal(q.mu, q.std)
        direct = direct + normal_p.log_prob(z).sum(1) - normal_q.log_prob(z).sum(1)
    torch.testing.assert_close(log_w[:, 0], direct, rtol=1e-5, atol=1e-3)


def test_iwae_bound_is_a_logmeanexp_above_the_elbo():
    model = small().eval()
    perturb(model)
    x = images(3)
    torch.manual_seed(6)
    bounds = importance_weighted_bounds(model, x, num_samples=64, chunk_size=16)
    torch.manual_seed(6)
    with torch.no_grad():
        log_w = torch.cat([model.log_importance_weights(x, 16) for _ in range(4)], dim=1).double()
    torch.testing.assert_close(bounds["iwae"], torch.logsumexp(log_w, 1) - math.log(64))
    torch.testing.assert_close(bounds["elbo"], log_w.mean(1))
    assert (bounds["iwae"] >= bounds["elbo"]).all()
    # the k = 1 bound is the ELBO estimate
    single = importance_weighted_bounds(model, x, num_samples=1)
    torch.testing.assert_close(single["iwae"], single["elbo"])


def test_train_max_time_is_validated_and_reaches_the_trainer(tmp_path):
    from vaezoo.config import ConfigError, load_config
    from vaezoo.training.run import build_trainer

    with pytest.raises(ConfigError, match="train.max_time.*positive number of seconds"):
        load_config(None, ["--train.max_time", "0"])
    config = load_config(None, ["--train.max_time", "90", "--logging.progress_bar", "none"])
    assert config.train.max_time == 90
    trainer = build_trainer(config, tmp_path, (0.0, 1.0))
    timers = [c for c in trainer.callbacks if type(c).__name__ == "Timer"]
    assert len(timers) == 1 and timers[0]._duration == 90
    assert not any(
        type(c).__name__ == "Timer" for c in build_trainer(load_config(None), tmp_path, (0.0, 1.0)).callbacks
    )


@pytest.mark.slow
def test_vaezoo_sample_temperature_reaches_the_model_and_is_checked(tmp_path, capsys):
    from pathlib import Path

    from vaezoo.cli import main

    repo = Path(__file__).resolve().parents[1]
    tiny = [
        "--model.channels", "8", "--model.groups_per_scale", "[1, 2]", "--model.latent_channels", "2",
        "--data.name", "dsprites", "--data.image_size", "32", "--data.subset", "200",
        "--train.batch_size", "8", "--train.max_epochs", "1", "--train.limit_train_batches", "2",
        "--train.limit_val_batches", "1", "--logging.progress_bar", "none",
        "--logging.save_dir", str(tmp_path / "runs"),
    ]  # fmt: skip
    assert main(["train", "-c", str(repo / "configs/deep_hvae.yaml"), *tiny]) == 0
    (run,) = sorted((tmp_path / "runs").glob("*/version_*"))
    grids = []
    for seed, temperature in (("1", "0"), ("2", "0"), ("1", "1")):
        out = tmp_path / f"t{temperature}_s{seed}.png"
        assert (
            main(
                ["sample", str(run), "-n", "4", "--seed", seed, "--temperature", temperature, "-o", str(out)]
            )
            == 0
        )
        grids.append(out.read_bytes())
    assert grids[0] == grids[1] and grids[0] != grids[2]  # t = 0: the prior means, whatever the seed
    capsys.readouterr()
    assert main(["sample", str(run), "--temperature", "-1", "-o", str(tmp_path / "no.png")]) == 2
    assert "--temperature must be >= 0, got -1.0" in capsys.readouterr().err
    assert (
        main(["sample", str(run), "--temperature", "0.5", "--sampler", "gmm", "-o", str(tmp_path / "no.png")])
        == 2
    )
    assert "does not apply to --sampler gmm" in capsys.readouterr().err
    assert not (tmp_path / "no.png").exists()

"""Known answers for the Hamiltonian family: the leapfrog integrators, the tempering schedule, the
RHVAE's metric, and the Hamiltonian VAE / RHVAE's ELBO where the flow is the identity."""

from __future__ import annotations

import math

import pytest
import torch

from vaezoo.models.vanilla_vae import VanillaVAE
from vaezoo.nn.distributions import DiagonalGaussian, log_standard_normal
from vaezoo.nn.hamiltonian import (
    KernelMetric,
    generalized_leapfrog,
    gradient,
    leapfrog,
    tempered_flow,
    tempering_schedule,
)
from vaezoo.registry import create_model

TINY = {"hidden_dims": [8, 16], "image_size": 16, "recon_reduction": "sum"}
STIFFNESS = 4.0  # U(z) = k |z|^2 / 2: a harmonic oscillator of angular frequency sqrt(k) = 2


def oscillator_gradient(z: torch.Tensor) -> torch.Tensor:
    return gradient(lambda q: 0.5 * STIFFNESS * (q**2).sum(-1), z, create_graph=False)


def integrate(z, rho, eps, steps, step=leapfrog):
    grad = None
    for _ in range(steps):
        z, rho, grad = step(z, rho, oscillator_gradient, eps, grad)
    return z, rho


def test_leapfrog_follows_the_harmonic_oscillator_to_second_order():
    z0, rho0, time = (
        torch.tensor([[1.0, -0.5]], dtype=torch.float64),
        torch.tensor([[0.3, 2.0]]).double(),
        1.5,
    )
    omega = math.sqrt(STIFFNESS)
    exact = z0 * math.cos(omega * time) + rho0 / omega * math.sin(omega * time)
    errors = []
    for steps in (50, 100, 200):
        z, _ = integrate(z0, rho0, time / steps, steps)
        errors.append((z - exact).abs().max().item())
    assert errors[0] < 1e-2
    for coarse, fine in zip(errors, errors[1:], strict=False):  # halving eps quarters the error: O(eps^2)
        assert 3.5 < coarse / fine < 4.5, errors


def test_leapfrog_is_time_reversible_and_preserves_volume():
    z0, rho0 = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    z, rho = integrate(z0, rho0, 0.1, 20)
    back_z, back_rho = integrate(z, -rho, 0.1, 20)  # flip the momentum, run back
    torch.testing.assert_close(back_z, z0)
    torch.testing.assert_close(-back_rho, rho0)

    def flow(state: torch.Tensor) -> torch.Tensor:
        z, rho = integrate(state[:2].view(1, 2), state[2:].view(1, 2), 0.1, 7)
        return torch.cat([z.flatten(), rho.flatten()])

    jacobian = torch.autograd.functional.jacobian(flow, torch.tensor([0.4, -1.0, 0.7, 0.2]).double())
    assert torch.linalg.det(jacobian).item() == pytest.approx(1.0, abs=1e-10)


@pytest.mark.parametrize("steps", [1, 3, 10])
def test_the_tempering_schedule_runs_from_beta_zero_to_one(steps):
    roots = torch.stack(tempering_schedule(torch.tensor(0.3), steps)) ** 2  # beta_k
    assert roots[0].item() == pytest.approx(0.3) and roots[-1].item() == pytest.approx(1.0)
    assert (roots.diff() > 0).all()
    # the flow's Jacobian is beta_0^{D/2}: with no motion (a zero step) rho_K = sqrt(beta_0) rho_0
    rho = torch.randn(5, 3)
    _, rho_k = tempered_flow(torch.zeros(5, 3), rho, lambda z, r: (z, r), torch.tensor(0.3), steps)
    torch.testing.assert_close(rho_k, rho * math.sqrt(0.3))


def test_hamiltonian_vae_without_steps_has_the_vae_elbo_at_the_same_z0():
    torch.manual_seed(0)
    model = create_model("HamVAE", 1, 3, n_lf=0, **TINY).eval()
    x = torch.rand(4, 1, 16, 16)
    with torch.no_grad():
        out = model(x)
        losses = model.loss_function(*out, M_N=1.0)
        assert torch.equal(out.z, out.z0)  # the flow is the identity on z
        recon = model.reconstruction_loss(model.decode_params(out.z0), x)
        kld = DiagonalGaussian(out.mu, out.log_var).log_prob(out.z0) - log_standard_normal(out.z0)
    torch.testing.assert_close(losses["loss"], (recon + kld).mean())
    torch.testing.assert_close(losses["KLD"], kld.mean(), atol=1e-5, rtol=0)
    # with steps, the flow moves z_0 and keeps H = U + |rho|^2/2 nearly constant (beta_0 ~ 1: no tempering)
    model = create_model("HamiltonianVAE", 1, 3, n_lf=5, eps_lf=0.01, beta_zero=1.0, **TINY).eval()
    posterior = model.encode(x)
    z0, gamma = posterior.mu.detach(), torch.randn(4, 3)
    z, rho, _ = model.flow(x, z0, gamma, posterior)
    potential = model.potential(x)
    with torch.no_grad():
        start, end = potential(z0) + 0.5 * (gamma**2).sum(-1), potential(z) + 0.5 * (rho**2).sum(-1)
    assert (z - z0).abs().max() > 1e-3 and ((end - start).abs() / start.abs()).max() < 1e-3


def test_learned_step_size_and_temperature_get_gradients_and_stay_positive():
    model = create_model("HamVAE", 1, 3, n_lf=2, eps_lf=0.01, learn_eps_lf=True, learn_beta_zero=True, **TINY)
    model.loss_function(*model(torch.rand(4, 1, 16, 16)))["loss"].backward()
    assert model.log_eps_lf.grad is not None and model.logit_beta_zero.grad is not None
    assert model.eps_lf.item() == pytest.approx(0.01) and model.beta_zero.item() == pytest.approx(0.3)


def random_metric(centroids: int = 5, dim: int = 3, seed: int = 0) -> KernelMetric:
    generator = torch.Generator().manual_seed(seed)
    factors = torch.randn(centroids, dim, dim, generator=generator, dtype=torch.float64).tril()
    return KernelMetric(
        torch.randn(centroids, dim, generator=generator).double(), factors @ factors.mT, 1.5, 0.01
    )


def test_the_metric_is_symmetric_positive_definite_and_lambda_far_from_the_centroids():
    metric = random_metric()
    z = torch.cat([torch.randn(50, 3, dtype=torch.float64) * 3, torch.full((2, 3), 100.0).double()])
    g_inv = metric.inverse(z)
    torch.testing.assert_close(g_inv, g_inv.mT)
    assert (torch.linalg.eigvalsh(g_inv) >= 0.01 - 1e-12).all()
    torch.testing.assert_close(g_inv[-2:], 0.01 * torch.eye(3, dtype=torch.float64).expand(2, 3, 3))
    empty = KernelMetric(torch.zeros(0, 3), torch.zeros(0, 3, 3), 1.5, 0.01)  # before any training step
    torch.testing.assert_close(empty.inverse(torch.randn(4, 3)), 0.01 * torch.eye(3).expand(4, 3, 3))


def test_the_kinetic_gradient_is_the_autograd_one_at_fixed_momentum():
    metric, z, rho = (
        random_metric(),
        torch.randn(6, 3, dtype=torch.float64),
        torch.randn(6, 3, dtype=torch.float64),
    )
    expected = gradient(lambda q: metric.kinetic(q, rho), z, create_graph=False)
    torch.testing.assert_close(metric.kinetic_grad(z, rho), expected)
    # and K is -log N(rho; 0, G) up to (D/2) log 2 pi
    g = torch.linalg.inv(metric.inverse(z))
    normal = torch.distributions.MultivariateNormal(torch.zeros(3, dtype=torch.float64), covariance_matrix=g)
    torch.testing.assert_close(metric.log_normal(z, rho), normal.log_prob(rho))


def test_the_generalized_leapfrog_with_a_constant_metric_is_the_plain_one():
    identity = KernelMetric(torch.zeros(0, 2), torch.zeros(0, 2, 2), 1.5, regularization=1.0)  # G = I
    z0, rho0 = torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    plain = integrate(z0, rho0, 0.05, 10)

    def step(z, rho, grad_u, eps, grad):
        return generalized_leapfrog(z, rho, grad_u, identity, eps, 2, grad)

    torch.testing.assert_close(integrate(z0, rho0, 0.05, 10, step), plain)
    # with a varying metric it stays time reversible (fixed points solved to convergence)
    metric = random_metric(dim=2)

    def riemannian(z, rho, grad_u, eps, grad):
        return generalized_leapfrog(z, rho, grad_u, metric, eps, 30, grad)

    z, rho = integrate(z0, rho0, 0.05, 5, riemannian)
    back_z, back_rho = integrate(z, -rho, 0.05, 5, riemannian)
    torch.testing.assert_close(back_z, z0, atol=1e-7, rtol=0)
    torch.testing.assert_close(-back_rho, rho0, atol=1e-7, rtol=0)


def test_a_short_rhvae_run_stays_finite_and_keeps_its_metric_through_save_and_load():
    torch.manual_seed(0)
    model = create_model("RHVAE", 1, 3, n_lf=2, eps_lf=0.01, num_centroids=12, **TINY)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(8, 1, 16, 16)
    for _ in range(4):
        losses = model.loss_function(*model(x))
        assert all(torch.isfinite(value) for value in losses.values()), losses
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
    assert int(model.centroids_seen) == 32 and model.metric_centroids()[0].shape == (12, 3)
    clone = create_model("RHVAE", **model.config)
    z = torch.randn(5, 3)
    assert not torch.allclose(clone.metric_inverse(z), model.metric_inverse(z))  # lambda I before training
    clone.load_state_dict(model.state_dict())
    torch.testing.assert_close(clone.metric_inverse(z), model.metric_inverse(z))
    with torch.no_grad():
        assert torch.isfinite(model.eval()(x).z).all()


def test_rhvae_without_steps_has_the_vae_elbo_and_a_blown_up_step_is_named():
    model = create_model("RHVAE", 1, 3, n_lf=0, **TINY)
    x = torch.rand(4, 1, 16, 16)
    model(x)  # a training forward fills the centroids: the metric is no longer lambda I
    with torch.no_grad():
        out = model.eval()(x)
    torch.testing.assert_close(out.log_momentum, torch.zeros(4), atol=1e-5, rtol=0)
    model = create_model("RHVAE", 1, 3, n_lf=2, eps_lf=1e30, **TINY)
    with pytest.raises(FloatingPointError, match="RHVAE: generalized leapfrog step 1 of 2: "):
        model(x)


def test_only_the_rhvae_declares_a_latent_metric():
    assert create_model("RHVAE", 1, 2, **TINY).latent_metric
    assert not create_model("HamVAE", 1, 2, **TINY).latent_metric and not VanillaVAE.latent_metric

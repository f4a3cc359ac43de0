"""The hyperspherical VAE (SVAE): the von Mises-Fisher distribution, its sampler and its KL.

Each check against an independent answer: closed forms on S^2, numerical integration (scipy's
quad) over the polar angle, scipy's own vMF, Monte Carlo means with their standard errors. The
shared contract is in test_zoo_contract.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats

from vaezoo.models.s_vae import SVAE
from vaezoo.nn.hyperspherical import (
    HypersphericalUniform,
    VonMisesFisher,
    householder_to,
    log_bessel_ive,
    log_sphere_area,
    mean_resultant_length,
    wood_log_noise_density,
    wood_noise,
)

KAPPAS = (0.1, 1.0, 10.0, 100.0, 1000.0)


def vmf(
    kappa: float, dim: int, n: int = 1, dtype: torch.dtype = torch.float64, seed: int = 0
) -> VonMisesFisher:
    """n copies of vMF(mu, kappa) with one random mean direction mu on S^{dim-1}."""
    generator = torch.Generator().manual_seed(seed)
    mu = torch.nn.functional.normalize(torch.randn(dim, generator=generator, dtype=dtype), dim=0)
    return VonMisesFisher(mu.expand(n, dim), torch.full((n, 1), kappa, dtype=dtype))


def quad_kl(kappa: float, dim: int) -> float:
    """KL(vMF || U(S^{m-1})) by integration over the polar angle t (w = cos t), with the density
    normalised by quad too: no Bessel function involved. dA = |S^{m-2}| sin^{m-2} t dt."""

    def weight(t: float) -> float:  # the unnormalised density over t, with e^{kappa} taken out
        return math.exp(kappa * (math.cos(t) - 1.0) + (dim - 2) * math.log(max(math.sin(t), 1e-300)))

    peak = [min(math.pi, 3.0 / math.sqrt(kappa))] if kappa > 1 else None
    z = integrate.quad(weight, 0, math.pi, points=peak, limit=200, epsabs=0)[0]  # /|S^{m-2}|

    def integrand(t: float) -> float:
        log_density = kappa * (math.cos(t) - 1.0) - math.log(z) - log_sphere_area(dim - 1)
        return weight(t) / z * (log_density + log_sphere_area(dim))

    return integrate.quad(integrand, 0, math.pi, points=peak, limit=200, epsabs=1e-12)[0]


# -- the Bessel functions -------------------------------------------------------------------------


def test_log_bessel_ive_matches_scipy_and_its_gradient_matches_finite_differences():
    kappa = torch.tensor([0.05, 0.7, 3.0, 40.0, 2500.0], dtype=torch.float64, requires_grad=True)
    for order in (0.0, 0.5, 4.0, 31.0):
        expected = np.log(special.ive(order, kappa.detach().numpy()))
        np.testing.assert_allclose(log_bessel_ive(order, kappa).detach().numpy(), expected, rtol=1e-12)
        assert torch.autograd.gradcheck(lambda k, v=order: log_bessel_ive(v, k), (kappa,))
    # where ive underflows (high order, small kappa), the series' leading term keeps it finite
    tiny = log_bessel_ive(400.0, torch.tensor([1e-3], dtype=torch.float64))
    assert torch.isfinite(tiny).all() and tiny.item() < -3000


@pytest.mark.parametrize("kappa", [1e-3, 0.5, 3.0, 50.0, 1e4])
def test_the_mean_resultant_length_on_s2_is_coth_minus_one_over_kappa(kappa):
    k = torch.tensor([kappa], dtype=torch.float64)
    expected = kappa / 3.0 if kappa < 1e-2 else 1.0 / math.tanh(kappa) - 1.0 / kappa  # series near 0
    assert mean_resultant_length(k, 3).item() == pytest.approx(expected, rel=1e-6)


def test_the_mean_resultant_length_is_finite_and_tends_to_one_for_large_kappa():
    kappa = torch.tensor([1e4, 1e5, 1e6], dtype=torch.float64)
    for dim in (2, 10, 128):
        a = mean_resultant_length(kappa, dim)
        # A_m(k) = 1 - (m-1)/(2k) + O(m^2/k^2)
        torch.testing.assert_close(1 - a, (dim - 1) / (2 * kappa), rtol=0.01, atol=0)
        a32 = mean_resultant_length(
            torch.tensor([1e2, 1e4, 1e6]), dim
        )  # float32: finite, at most 1 (rounding)
        assert torch.isfinite(a32).all() and (a32 <= 1).all()


# -- the sampler ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_samples_have_unit_norm_at_every_kappa(dtype):
    for dim in (2, 3, 10):
        for kappa in (*KAPPAS, 1e5):
            z = vmf(kappa, dim, 500, dtype).rsample()
            assert z.dtype == dtype and torch.isfinite(z).all()
            torch.testing.assert_close(z.norm(dim=-1), torch.ones(500, dtype=dtype))


@pytest.mark.parametrize("dim", [2, 3, 10, 40])
def test_the_mean_of_the_samples_is_a_m_times_mu(dim):
    """E[z] = A_m(kappa) mu: the component along mu from Wood's sampler and, by symmetry, none
    across it (the Householder reflection and the uniform tangent direction)."""
    torch.manual_seed(dim)
    n = 20_000
    for kappa in (0.5, 2.0, 10.0, 300.0):
        q = vmf(kappa, dim, n, seed=dim)
        z = q.rsample()  # (n, m)
        mean, sem = z.mean(0), z.std(0) / math.sqrt(n)
        expected = mean_resultant_length(torch.tensor([kappa], dtype=torch.float64), dim) * q.mu[0]
        assert ((mean - expected).abs() < 4.5 * sem + 1e-9).all(), (kappa, mean, expected)


def test_the_cosine_to_mu_on_s2_has_the_exponential_law():
    """On S^2, w = mu^T z has density kappa e^{kappa w} / (2 sinh kappa) on [-1, 1]: a KS test."""
    torch.manual_seed(1)
    for kappa in (0.3, 4.0, 60.0):
        q = vmf(kappa, 3, 4000)
        w = (q.rsample() * q.mu).sum(-1).numpy()

        def cdf(x: np.ndarray, k: float = kappa) -> np.ndarray:
            return (np.exp(k * (x - 1)) - np.exp(-2 * k)) / -np.expm1(-2 * k)

        assert stats.kstest(w, cdf).pvalue > 1e-3, kappa


def test_householder_maps_e1_to_mu_and_keeps_lengths():
    mu = torch.nn.functional.normalize(torch.randn(5, 6, dtype=torch.float64), dim=-1)
    e1 = torch.zeros(5, 6, dtype=torch.float64)
    e1[:, 0] = 1
    torch.testing.assert_close(householder_to(mu, e1), mu)
    x = torch.randn(5, 6, dtype=torch.float64)
    torch.testing.assert_close(householder_to(mu, x).norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(householder_to(e1, x), x)  # mu = e1: the identity, no 0/0


def test_the_sampler_stops_with_a_clear_error_when_its_rounds_run_out():
    with pytest.raises(RuntimeError, match="unaccepted after 1 rounds"):
        wood_noise(torch.full((2000, 1), 500.0), dim=3, max_rounds=1)  # acceptance ~0.7 a round
    # a diverged kappa is not an error here: its draw is NaN, for the trainer's nonfinite policy
    z = VonMisesFisher(torch.eye(3)[:2], torch.tensor([[float("nan")], [2.0]])).rsample()
    assert torch.isnan(z[0]).all() and torch.isfinite(z[1]).all()


# -- the density and the KL -------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [2, 3, 5, 10, 32])
def test_the_kl_to_the_uniform_prior_matches_numerical_integration(dim):
    q = VonMisesFisher(vmf(1.0, dim, len(KAPPAS)).mu, torch.tensor(KAPPAS, dtype=torch.float64)[:, None])
    kl = q.kl(HypersphericalUniform(dim))
    expected = torch.tensor([quad_kl(k, dim) for k in KAPPAS], dtype=torch.float64)
    torch.testing.assert_close(kl, expected, rtol=1e-6, atol=1e-9)


def test_the_kl_on_s2_has_its_closed_form_and_is_finite_in_float32():
    kappa = torch.tensor([0.01, 1.0, 7.0, 80.0, 5000.0], dtype=torch.float64)
    # KL = kappa coth kappa - 1 + log kappa - log sinh kappa, with log sinh k = k + log1p(-e^{-2k}) - log 2
    log_sinh = kappa + torch.log(-torch.expm1(-2 * kappa)) - math.log(2)
    expected = kappa / torch.tanh(kappa) - 1 + torch.log(kappa) - log_sinh
    q = VonMisesFisher(vmf(1.0, 3, 5).mu, kappa[:, None])
    torch.testing.assert_close(q.kl_uniform(), expected, rtol=1e-7, atol=1e-10)
    kl32 = VonMisesFisher(q.mu.float(), kappa[:, None].float()).kl_uniform()
    assert kl32.dtype == torch.float32 and torch.isfinite(kl32).all() and (kl32 >= 0).all()
    torch.testing.assert_close(kl32.double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dim", [3, 7])
def test_log_prob_and_entropy_match_scipys_vmf(dim):
    q = VonMisesFisher(
        vmf(1.0, dim, 4).mu, torch.tensor([[0.2], [3.0], [40.0], [900.0]], dtype=torch.float64)
    )
    z = torch.nn.functional.normalize(torch.randn(4, dim, dtype=torch.float64), dim=-1)
    for i in range(4):
        reference = stats.vonmises_fisher(q.mu[i].numpy(), q.kappa[i, 0].item())
        assert q.log_prob(z)[i].item() == pytest.approx(reference.logpdf(z[i].numpy()), rel=1e-9)
        assert q.entropy()[i].item() == pytest.approx(reference.entropy(), rel=1e-8, abs=1e-10)


def test_log_prob_integrates_to_one_on_s2():
    """4 pi E_{u ~ U(S^2)}[q(u)] = integral of q over the sphere = 1 (Monte Carlo, 4 standard errors)."""
    torch.manual_seed(2)
    u = HypersphericalUniform(3).sample(200_000).double()
    for kappa in (0.5, 2.0, 8.0):
        q = vmf(kappa, 3)
        density = torch.exp(q.log_prob(u) + log_sphere_area(3))  # q(u) / (1 / 4 pi)
        sem = density.std() / math.sqrt(len(u))
        assert abs(density.mean().item() - 1.0) < 4 * sem.item(), kappa
    torch.testing.assert_close(
        HypersphericalUniform(3).log_prob(u[:2]), torch.full((2,), -math.log(4 * math.pi)).double()
    )


# -- gradients --------------------------------------------------------------------------------------


def test_gradients_flow_to_mu_and_kappa_and_the_mu_gradient_is_unbiased():
    """d/dp E[c^T z] with mu = p / |p|: E[z] = A(kappa) mu, so the gradient is A (c - (c.mu) mu) / |p|;
    the rejection step does not involve mu, so the reparameterised mean gradient hits it."""
    torch.manual_seed(3)
    dim, kappa, n = 4, 5.0, 40_000
    p = torch.tensor([0.3, -1.2, 0.5, 0.8], dtype=torch.float64, requires_grad=True)
    k = torch.tensor([kappa], dtype=torch.float64, requires_grad=True)
    c = torch.tensor([1.0, 0.5, -2.0, 0.3], dtype=torch.float64)
    mu = torch.nn.functional.normalize(p, dim=0)
    z = VonMisesFisher(mu.expand(n, dim), k.expand(n, 1)).rsample()
    (z @ c).mean().backward()
    assert p.grad is not None and k.grad is not None
    assert torch.isfinite(p.grad).all() and torch.isfinite(k.grad).all() and k.grad.abs().item() > 0
    m = mu.detach()
    a = mean_resultant_length(torch.tensor([kappa], dtype=torch.float64), dim)
    expected = a * (c - (c @ m) * m) / p.detach().norm()
    torch.testing.assert_close(p.grad, expected, atol=0.02, rtol=0.0)


def test_the_kappa_gradient_without_the_correction_term_is_biased_low_as_documented():
    """g_rep alone, d/dk of the mean of mu^T z, against the exact A_m'(k): below it, by the
    documented amount (SVAE's docstring), and close at large kappa."""
    torch.manual_seed(4)
    for dim, kappa, low, high in ((3, 3.0, 0.6, 0.8), (3, 50.0, 0.95, 1.01), (64, 3.0, 0.97, 1.03)):
        k = torch.tensor([kappa], dtype=torch.float64, requires_grad=True)
        q = vmf(kappa, dim, 50_000)
        z = VonMisesFisher(q.mu, k.expand(50_000, 1)).rsample()
        (z * q.mu).sum(-1).mean().backward()
        exact = torch.tensor([kappa], dtype=torch.float64, requires_grad=True)
        mean_resultant_length(exact, dim).backward()
        assert k.grad is not None and exact.grad is not None
        assert low < (k.grad / exact.grad).item() < high, (dim, kappa, (k.grad / exact.grad).item())


def test_the_correction_term_makes_the_kappa_gradient_unbiased():
    """g_rep + g_cor, g_cor = E[(f - mean f) d/dk log pi(eps; k)] with the accepted eps's law pi,
    recovers the exact A_m'(k) where g_rep alone is 30-45 % low."""
    torch.manual_seed(5)
    n = 100_000
    for dim, kappa in ((2, 1.0), (3, 3.0)):
        k = torch.tensor([kappa], dtype=torch.float64, requires_grad=True)
        q = vmf(kappa, dim, n)
        q = VonMisesFisher(q.mu, k.expand(n, 1))
        f = (q.rsample() * q.mu).sum(-1)  # mu^T z, (n,)
        log_pi = wood_log_noise_density(q.noise, k.expand(n, 1), dim).squeeze(-1)
        (f.mean() + ((f.detach() - f.detach().mean()) * log_pi).mean()).backward()
        exact = torch.tensor([kappa], dtype=torch.float64, requires_grad=True)
        mean_resultant_length(exact, dim).backward()
        assert k.grad is not None and exact.grad is not None
        assert (k.grad / exact.grad).item() == pytest.approx(1.0, abs=0.03), (dim, kappa)


def test_svae_gradient_correction_keeps_the_loss_and_the_mu_gradient_and_moves_kappas():
    x = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    grads = []
    for correction in (False, True):
        torch.manual_seed(0)
        model = SVAE(1, 3, [8, 16], image_size=16, recon_reduction="sum", gradient_correction=correction)
        torch.manual_seed(1)
        losses = model.loss_function(*model(x))
        losses["loss"].backward()
        grads.append((losses["loss"].detach(), model.head.fc_mu.weight.grad, model.head.fc_kappa.weight.grad))
    (loss, mu_grad, kappa_grad), (loss_c, mu_grad_c, kappa_grad_c) = grads
    torch.testing.assert_close(loss_c, loss)  # the surrogate's value is 0
    torch.testing.assert_close(mu_grad_c, mu_grad)  # g_cor is a kappa term only
    assert not torch.allclose(kappa_grad_c, kappa_grad) and torch.isfinite(kappa_grad_c).all()


# -- the model --------------------------------------------------------------------------------------


def test_svae_codes_lie_on_the_sphere_and_its_kl_is_the_closed_form():
    torch.manual_seed(0)
    model = SVAE(1, 5, [8, 16], image_size=16, recon_reduction="sum").eval()
    x = torch.rand(4, 1, 16, 16)
    output = model(x)
    torch.testing.assert_close(output.z.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(output.mu.norm(dim=-1), torch.ones(4))
    assert (output.kappa >= 1).all()
    losses = model.loss_function(*output, M_N=0.5)
    expected_kl = VonMisesFisher(output.mu, output.kappa).kl_uniform().mean()
    torch.testing.assert_close(losses["KLD"], expected_kl)
    torch.testing.assert_close(losses["loss"], losses["Reconstruction_Loss"] + 0.5 * expected_kl)
    prior = model.sample_prior(20_000, torch.device("cpu"))
    torch.testing.assert_close(prior.norm(dim=-1), torch.ones(20_000))
    assert prior.mean(0).abs().max() < 0.03  # uniform: no preferred direction
    with pytest.raises(ValueError, match="latent_dim >= 2"):
        SVAE(1, 1, [8, 16], image_size=16)

"""Flow posteriors: planar, radial and IAF flows (nn/flows.py), FlowVAE and IAFVAE.

Each flow's log-determinant is checked against the autograd Jacobian, the invertibility constraints
and MADE's autoregressive masks against Jacobians too, and the models' KL estimates and importance
weights against independent computations. The shared contract is in test_zoo_contract.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd.functional import jacobian
from torch.distributions import MultivariateNormal, Normal

from vaezoo.models.flow_vae import FlowVAE
from vaezoo.models.iaf_vae import IAFVAE
from vaezoo.nn.distributions import DiagonalGaussian
from vaezoo.nn.flows import (
    MADE,
    FlowPosterior,
    IAFStep,
    PlanarFlow,
    RadialFlow,
    inverse_autoregressive_flow,
    planar_radial_flow,
)

DIMS = [2, 3, 5]


def randomised(flow: torch.nn.Module, seed: int, scale: float = 1.0) -> torch.nn.Module:
    """``flow`` in float64 with every parameter drawn from N(0, scale^2)."""
    torch.manual_seed(seed)
    flow = flow.double()
    with torch.no_grad():
        for param in flow.parameters():
            param.normal_(0.0, scale)
    return flow


def jacobian_log_det(flow: torch.nn.Module, z: torch.Tensor, context: torch.Tensor | None = None) -> float:
    """log|det dflow(z)/dz| from the autograd Jacobian, (D,) -> float."""
    matrix = jacobian(lambda v: flow(v, context)[0], z)  # (D, D)
    return torch.linalg.slogdet(matrix).logabsdet.item()


# -- planar and radial flows (Rezende & Mohamed 2015) ---------------------------------------------


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("context_features", [0, 3], ids=["shared", "amortized"])
@pytest.mark.parametrize("kind", [PlanarFlow, RadialFlow])
def test_flow_log_det_is_the_log_det_of_the_autograd_jacobian(kind, context_features, dim):
    generator = torch.Generator().manual_seed(dim)
    for seed in range(4):
        flow = randomised(kind(dim, context_features), seed)
        context = torch.randn(3, dtype=torch.float64, generator=generator) if context_features else None
        for z in torch.randn(3, dim, dtype=torch.float64, generator=generator):
            _, log_det = flow(z, context)
            assert log_det.item() == pytest.approx(jacobian_log_det(flow, z, context), abs=1e-9)


@pytest.mark.parametrize("kind", [PlanarFlow, RadialFlow])
def test_flows_broadcast_over_leading_dimensions_and_amortized_ones_differ_per_input(kind):
    flow = randomised(kind(3, context_features=2), 0)
    z, context = torch.randn(4, 5, 3, dtype=torch.float64), torch.randn(4, 5, 2, dtype=torch.float64)
    z_new, log_det = flow(z, context)
    assert z_new.shape == z.shape and log_det.shape == (4, 5)
    single_z, single_log_det = flow(z[2, 3], context[2, 3])
    torch.testing.assert_close(z_new[2, 3], single_z)
    torch.testing.assert_close(log_det[2, 3], single_log_det)
    assert not torch.allclose(flow(z[2, 3], context[1, 1])[0], single_z)  # the context sets the flow
    fresh = kind(3, context_features=2).double()  # the offset starts at zero: the shared flow, any context
    torch.testing.assert_close(fresh(z, context)[0], fresh(z)[0])


def planar_scalar_map(u: torch.Tensor, w: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """w^T f(z) as a function of a = w^T z (b = 0): a + w^T u tanh(a); f is invertible iff it increases."""
    return a + (w @ u) * torch.tanh(a)


def test_planar_constraint_keeps_w_u_hat_above_minus_one_and_the_flow_invertible():
    generator = torch.Generator().manual_seed(0)
    w = torch.randn(3, dtype=torch.float64, generator=generator)
    u = -3.0 * w / (w @ w)  # w^T u = -3: the unconstrained f is not invertible
    a = torch.linspace(-6, 6, 2001, dtype=torch.float64)
    assert (planar_scalar_map(u, w, a).diff() < 0).any()
    u_hat = PlanarFlow.constrained_u(u, w)
    assert w @ u_hat >= -1
    assert (planar_scalar_map(u_hat, w, a).diff() > 0).all()
    for seed in range(50):  # any parameters: w^T u_hat >= -1 (to rounding) and a finite log-det
        flow = randomised(PlanarFlow(5), seed, scale=3.0)
        p = flow.params()
        assert p["w"] @ flow.constrained_u(p["u"], p["w"]) >= -1 - 1e-12
        _, log_det = flow(torch.randn(100, 5, dtype=torch.float64))
        assert torch.isfinite(log_det).all()


def test_planar_constraint_leaves_u_alone_where_w_u_is_large():
    w = torch.randn(3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    u = 40.0 * w / (w @ w)  # w^T u = 40: softplus(40) - 1 = 39 + ~4e-18
    torch.testing.assert_close(PlanarFlow.constrained_u(u, w), u - w / (w @ w))


def test_radial_constraint_keeps_beta_at_least_minus_alpha():
    raw = 5.0 * torch.randn(2, 1000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    alpha, beta = RadialFlow.alpha_beta(raw[0], raw[1])
    assert (alpha > 0).all() and (beta >= -alpha).all()
    for seed in range(20):
        flow = randomised(RadialFlow(4), seed, scale=5.0)
        _, log_det = flow(torch.randn(100, 4, dtype=torch.float64))
        assert torch.isfinite(log_det).all()


def test_planar_log_det_near_the_constraint_is_exact_under_bf16_autocast():
    """A guard: the trainer's bf16 path must not round 1 + h' w^T u_hat ~ 1e-3 into noise."""
    flow = PlanarFlow(3)
    with torch.no_grad():  # w^T u = -7: w^T u_hat = -1 + softplus(-7) = -0.99909, log-det ~ -7 at w^T z = 0
        flow.params.shared["w"].copy_(torch.tensor([0.6, -0.3, 0.2]))
        flow.params.shared["u"].copy_(-7.0 * flow.params.shared["w"] / 0.49)
        flow.params.shared["b"].zero_()
    z = torch.tensor([[0.1, 0.2, 0.0], [1.0, 0.5, -0.3]])
    exact = flow(z)[1]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = flow(z.bfloat16())[1]
    assert exact[0].item() == pytest.approx(-7.0, abs=0.05)
    torch.testing.assert_close(mixed, exact, rtol=1e-2, atol=0.0)


def test_unknown_or_misspelled_flow_types_are_errors():
    with pytest.raises(ValueError, match="unknown flow type"):
        planar_radial_flow(["planar", "sylvester"], 3)
    with pytest.raises(ValueError, match="list of flow types"):
        planar_radial_flow("planar", 3)


# -- MADE and IAF (Germain et al. 2015; Kingma et al. 2016) ----------------------------------------


@pytest.mark.parametrize("dim", [1, *DIMS])
def test_made_output_i_depends_only_on_inputs_before_i(dim):
    made = randomised(MADE(dim, [16, 16], context_features=4), dim)
    z = torch.randn(dim, dtype=torch.float64)
    context = torch.randn(4, dtype=torch.float64)
    for output in range(2):
        matrix = jacobian(lambda v, k=output: made(v, context)[k], z)  # (D, D): d out_i / d z_j
        assert torch.equal(torch.tril(matrix, diagonal=-1), matrix)  # strictly lower triangular
        if dim > 1:
            assert (torch.tril(matrix, diagonal=-1).abs().sum(dim=1)[1:] > 0).all()  # and not empty
    assert not torch.allclose(made(z, context)[0], made(z, -context)[0])  # the context reaches it


@pytest.mark.parametrize("dim", DIMS)
def test_iaf_log_det_is_sum_log_sigma_and_the_log_det_of_the_jacobian(dim):
    step = randomised(IAFStep(dim, [16], context_features=3), dim)
    context = torch.randn(3, dtype=torch.float64)
    for z in torch.randn(3, dim, dtype=torch.float64):
        z_new, log_det = step(z, context)
        m, s = step.made(z, context)
        sigma = torch.sigmoid(s + step.gate_bias)
        torch.testing.assert_close(log_det, sigma.log().sum())
        torch.testing.assert_close(z_new, sigma * z + (1 - sigma) * m)
        matrix = jacobian(lambda v: step(v, context)[0], z)
        torch.testing.assert_close(torch.diagonal(matrix), sigma)  # triangular, diagonal sigma
        assert torch.equal(torch.tril(matrix), matrix)
        assert log_det.item() == pytest.approx(jacobian_log_det(step, z, context), abs=1e-9)


def test_iaf_gate_is_finite_for_extreme_s():
    step = IAFStep(2, [8]).double()
    with torch.no_grad():
        step.made.output.weight.zero_()
        step.made.output.bias.fill_(-200.0)  # m = -200, sigma = sigmoid(-199): log sigma not -inf
    z_new, log_det = step(torch.randn(4, 2, dtype=torch.float64))
    assert torch.isfinite(log_det).all()
    torch.testing.assert_close(log_det, torch.full((4,), 2 * -199.0, dtype=torch.float64))
    torch.testing.assert_close(z_new, torch.full((4, 2), -200.0, dtype=torch.float64))


@pytest.mark.parametrize("dim", DIMS)
def test_a_chain_of_flows_sums_its_log_dets(dim):
    chains = [
        randomised(planar_radial_flow(["planar", "radial", "planar"], dim, context_features=2), dim),
        randomised(inverse_autoregressive_flow(3, dim, [12], context_features=2), dim, scale=0.5),
    ]
    context = torch.randn(2, dtype=torch.float64)
    for chain in chains:
        z = torch.randn(dim, dtype=torch.float64)
        _, log_det = chain(z, context)
        assert log_det.item() == pytest.approx(jacobian_log_det(chain, z, context), abs=1e-8)


@pytest.mark.parametrize(
    "flow",
    [
        lambda: randomised(planar_radial_flow(["planar", "radial", "planar"], 2), 5),
        lambda: randomised(inverse_autoregressive_flow(2, 2, [8]), 5, scale=0.7),
    ],
    ids=["planar-radial", "iaf"],
)
def test_flow_posterior_density_integrates_to_one(flow):
    """E_{z ~ q_K}[r(z) / q_K(z)] = 1 for any density r: a wrong sign or a missing log-det in the
    change of variables moves the mean weight far from 1 (by a factor 34 or 5.7 for the planar-radial
    chain). r is a Gaussian narrower than q_K, so the weights are bounded (2-D, 200k draws)."""
    torch.manual_seed(0)
    shape, f64 = (200_000, 2), torch.float64
    posterior = FlowPosterior(
        DiagonalGaussian(torch.full(shape, 0.3, dtype=f64), torch.zeros(shape, dtype=f64)), flow()
    )
    with torch.no_grad():
        z0, z, log_det = posterior.sample()
        narrower = MultivariateNormal(z.mean(0), 0.5 * torch.cov(z.T))
        weights = torch.exp(narrower.log_prob(z) - posterior.log_prob_of_sample(z0, log_det))
    assert weights.mean().item() == pytest.approx(1.0, abs=0.01)  # standard error ~0.0015


# -- the models ---------------------------------------------------------------------------------------

SMALL = {"hidden_dims": [8, 16], "image_size": 16, "recon_reduction": "sum"}


def small(cls: type, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return cls(1, 3, **{**SMALL, **kwargs}).eval()


def images(n: int = 4) -> torch.Tensor:
    return torch.rand(n, 1, 16, 16, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(
    "model",
    [
        lambda: small(FlowVAE, flows=["planar", "radial"], context_features=5),
        lambda: small(IAFVAE, made_hidden_dims=[8]),
    ],
)
def test_kld_is_log_q0_minus_log_det_minus_log_prior_at_the_sample(model):
    model, x = model(), images()
    output = model(x)
    losses = model.loss_function(*output, M_N=0.5)
    log_q0 = Normal(output.mu, torch.exp(0.5 * output.log_var)).log_prob(output.z0).sum(-1)
    log_p = Normal(0.0, 1.0).log_prob(output.z).sum(-1)
    kld = (log_q0 - output.log_det - log_p).mean()
    recon = (output.recons - x).pow(2).sum(dim=(1, 2, 3)).mean()
    torch.testing.assert_close(losses["KLD"], kld)
    torch.testing.assert_close(losses["loss"], recon + 0.5 * kld)
    torch.testing.assert_close(losses["Log_Det"], output.log_det.mean())
    z, log_det = model.flow(output.z0, model.encode(x).context)  # z is the flow's image of z0
    torch.testing.assert_close(z, output.z)
    torch.testing.assert_close(log_det, output.log_det)


def test_without_flows_the_kld_is_the_gaussian_estimate_and_the_code_is_mu():
    model, x = small(FlowVAE, flows=[]), images()
    output = model(x)
    torch.testing.assert_close(output.z, output.z0)
    assert torch.equal(output.log_det, torch.zeros(4))
    torch.testing.assert_close(model.embed(x), output.mu)


def test_importance_weights_use_log_q0_minus_log_det():
    model, x = small(IAFVAE, made_hidden_dims=[8]), images(2)
    with torch.no_grad():
        torch.manual_seed(5)
        z, log_prior, log_posterior = model.sample_latents(x, 6)
        torch.manual_seed(5)  # the same base draws
        posterior = model.encode(x)
        mu, log_var = (t.unsqueeze(1).expand(2, 6, 3) for t in (posterior.base.mu, posterior.base.log_var))
        z0 = mu + torch.exp(0.5 * log_var) * torch.randn(2, 6, 3)
        z_again, log_det = model.flow(z0, posterior.context.unsqueeze(1).expand(2, 6, -1))
        log_q0 = Normal(mu, torch.exp(0.5 * log_var)).log_prob(z0).sum(-1)
        torch.testing.assert_close(z, z_again)
        torch.testing.assert_close(log_posterior, log_q0 - log_det)
        torch.testing.assert_close(log_prior, -0.5 * (z**2).sum(-1) - 1.5 * math.log(2 * math.pi))
        assert model.log_importance_weights(x, 6).shape == (2, 6)


def test_flow_models_refuse_a_per_dimension_kl_and_embed_through_the_flow():
    models = [small(FlowVAE, flows=["planar"]), small(FlowVAE, flows=["radial"], context_features=4)]
    for model in [*models, small(IAFVAE, context_features=0)]:
        x = images(2)
        with pytest.raises(NotImplementedError, match="does not factorise"):
            model.kl_per_dimension(x)
        with torch.no_grad():
            posterior = model.encode(x)
            torch.testing.assert_close(model.embed(x), model.flow(posterior.base.mu, posterior.context)[0])

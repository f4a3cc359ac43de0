"""The Poincaré VAE's geometry (nn/hyperbolic.py) and model: each check against an independent answer.

Möbius identities, the exp / log maps as inverses, closed-form distances, the Euclidean limits as
c -> 0, the wrapped normal's density against a change of variables with an autograd Jacobian and
against a numerical integral over the disk, the gyroplane layer against the distance to a plane
through the origin. The shared contract is in test_zoo_contract.py.
"""

from __future__ import annotations

import math

import pytest
import torch

from vaezoo.models.poincare_vae import PoincareVAE
from vaezoo.nn.hyperbolic import (
    GyroplaneLayer,
    WrappedNormal,
    conformal_factor,
    distance,
    expmap,
    expmap0,
    logmap,
    logmap0,
    mobius_add,
    transport0,
    transport_to0,
)

CURVATURES = (0.5, 1.0, 2.0)
f64 = torch.float64


def points(n: int, dim: int, c: float, seed: int = 0, spread: float = 0.5) -> torch.Tensor:
    """n points of B_c^dim, exp_0 of normal tangent vectors of scale ``spread`` (float64)."""
    generator = torch.Generator().manual_seed(seed)
    return expmap0(spread * torch.randn(n, dim, generator=generator, dtype=f64), c)


def tangents(n: int, dim: int, seed: int, scale: float = 0.3) -> torch.Tensor:
    return scale * torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=f64)


@pytest.mark.parametrize("c", CURVATURES)
def test_mobius_addition_identities(c):
    x, y = points(50, 4, c, seed=1), points(50, 4, c, seed=2)
    zero = torch.zeros_like(x)
    torch.testing.assert_close(mobius_add(zero, x, c), x)  # 0 ⊕ x = x
    torch.testing.assert_close(mobius_add(x, zero, c), x)
    torch.testing.assert_close(mobius_add(-x, x, c), zero)  # (-x) ⊕ x = 0
    torch.testing.assert_close(mobius_add(-x, mobius_add(x, y, c), c), y)  # left cancellation
    assert (math.sqrt(c) * mobius_add(x, y, c).norm(dim=-1) < 1).all()  # the ball is closed under ⊕


@pytest.mark.parametrize("c", CURVATURES)
def test_exp_and_log_maps_are_inverses_at_any_point_and_at_the_origin(c):
    x, y = points(50, 3, c, seed=3), points(50, 3, c, seed=4)
    u = transport0(x, tangents(50, 3, seed=5, scale=0.6), c)  # of Riemannian norm ~1 at x
    torch.testing.assert_close(logmap(x, expmap(x, u, c), c), u)  # log_x(exp_x(u)) = u
    torch.testing.assert_close(expmap(x, logmap(x, y, c), c), y)  # exp_x(log_x(y)) = y
    torch.testing.assert_close(logmap0(expmap0(u, c), c), u)
    torch.testing.assert_close(expmap0(logmap0(y, c), c), y)
    zero = torch.zeros_like(u)
    torch.testing.assert_close(expmap(zero, u, c), expmap0(u, c))  # the maps at 0 are the special case
    torch.testing.assert_close(logmap(zero, y, c), logmap0(y, c))
    torch.testing.assert_close(transport_to0(x, u, c), tangents(50, 3, seed=5, scale=0.6))


@pytest.mark.parametrize("c", CURVATURES)
def test_distance_closed_form_symmetry_and_the_conformal_norm_of_the_log_map(c):
    x, y = points(50, 5, c, seed=6), points(50, 5, c, seed=7)
    zero = torch.zeros_like(x)
    from_origin = 2 / math.sqrt(c) * torch.atanh(math.sqrt(c) * x.norm(dim=-1))
    torch.testing.assert_close(distance(zero, x, c), from_origin)  # d(0, x) = (2/sqrt c) artanh(sqrt c |x|)
    torch.testing.assert_close(distance(x, y, c), distance(y, x, c))
    conformal_norm = conformal_factor(x, c).squeeze(-1) * logmap(x, y, c).norm(dim=-1)  # |log_x y|_x
    torch.testing.assert_close(distance(x, y, c), conformal_norm)
    z = points(50, 5, c, seed=8)
    assert (distance(x, z, c) <= distance(x, y, c) + distance(y, z, c) + 1e-9).all()  # triangle


def test_the_maps_and_the_gyroplane_layer_tend_to_their_euclidean_counterparts_as_c_goes_to_zero():
    c = 1e-9  # the ball's radius 1/sqrt(c) ~ 3e4: points of norm ~1 see a flat space (metric 4 I)
    x, y, u = tangents(20, 3, seed=9, scale=1), tangents(20, 3, seed=10, scale=1), tangents(20, 3, seed=11)
    close = {"rtol": 1e-6, "atol": 1e-6}
    torch.testing.assert_close(mobius_add(x, y, c), x + y, **close)
    torch.testing.assert_close(expmap(x, u, c), x + u, **close)
    torch.testing.assert_close(logmap(x, y, c), y - x, **close)
    torch.testing.assert_close(distance(x, y, c), 2 * (x - y).norm(dim=-1), **close)
    torch.testing.assert_close(conformal_factor(x, c), torch.full((20, 1), 2.0, dtype=f64), **close)
    layer = GyroplaneLayer(3, 6, c).double()
    with torch.no_grad():
        layer.bias.normal_(generator=torch.Generator().manual_seed(12))
        affine = 4 * ((x.unsqueeze(1) - layer.bias) * layer.weight).sum(-1)  # 4 <w_k, z - b_k>
        torch.testing.assert_close(layer(x), affine, **close)


@pytest.mark.parametrize("c", CURVATURES)
def test_a_gyroplane_through_the_origin_scores_the_geodesic_distance_to_it(c):
    """With b = 0 the gyroplane is the hyperplane {<z, w> = 0}; a point t w/|w| on its normal is at
    distance d(0, z) from it (the origin is its foot), so f(z) = ||a||_0 d = 2 |w| d(0, z), signed."""
    layer = GyroplaneLayer(4, 3, c).double()
    direction = layer.weight[1] / layer.weight[1].norm()
    t = torch.tensor([-0.6, -0.1, 0.2, 0.9], dtype=f64).unsqueeze(1) / math.sqrt(c)
    z = t * direction.detach()  # (4, 4) on the normal of gyroplane 1
    with torch.no_grad():
        expected = 2 * layer.weight[1].norm() * distance(torch.zeros_like(z), z, c) * t.squeeze(1).sign()
        torch.testing.assert_close(layer(z)[:, 1], expected)


def change_of_variables_log_density(q: WrappedNormal, v: torch.Tensor) -> torch.Tensor:
    """log of the Lebesgue density at z = push(v): log N(v; 0, sigma^2) - log |det dz/dv|, with the
    Jacobian (D, D) from autograd."""
    normal = torch.distributions.Normal(torch.zeros_like(q.scale), q.scale).log_prob(v).sum(-1)
    jacobians = torch.stack([torch.autograd.functional.jacobian(q.push, row) for row in v])  # (N, D, D)
    return normal - torch.linalg.det(jacobians).abs().log()


@pytest.mark.parametrize(("c", "scale"), [(1.0, [0.5, 1.2]), (2.5, [0.5, 1.2]), (1.5, [0.3, 0.9, 0.6])])
def test_wrapped_normal_log_prob_is_the_change_of_variables_density(c, scale):
    """At D = 2 (and D = 3, where the log-det term (D - 1) log(sqrt(c) d / sinh(sqrt(c) d)) counts twice)."""
    dim = len(scale)
    mu = expmap0(torch.tensor([0.4, -0.3, 0.2][:dim], dtype=f64), c)
    q = WrappedNormal(mu, torch.tensor(scale, dtype=f64), c)
    v = q.scale * torch.randn(40, dim, generator=torch.Generator().manual_seed(13), dtype=f64)
    z = q.push(v)
    riemannian_to_lebesgue = dim * conformal_factor(z, c).squeeze(-1).log()  # dvol = lambda_z^D dz
    torch.testing.assert_close(q.log_prob(z) + riemannian_to_lebesgue, change_of_variables_log_density(q, v))


@pytest.mark.parametrize("c", (1.0, 2.0))
def test_wrapped_normal_integrates_to_one_over_the_disk(c):
    radius = 1 / math.sqrt(c)
    grid = torch.linspace(-radius, radius, 1001, dtype=f64)
    cell = (grid[1] - grid[0]) ** 2
    z = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
    z = z[c * z.pow(2).sum(-1) < 1 - 1e-6]
    q = WrappedNormal(expmap0(torch.tensor([0.3, 0.2], dtype=f64), c), torch.tensor([0.4, 0.7], dtype=f64), c)
    density = (q.log_prob(z) + 2 * conformal_factor(z, c).squeeze(-1).log()).exp()
    assert (density * cell).sum().item() == pytest.approx(1.0, abs=2e-3)


@pytest.mark.parametrize("dtype", (torch.float32, torch.float64))
def test_samples_lie_strictly_inside_the_ball_with_finite_densities_even_for_wide_scales(dtype):
    c = 2.0
    mu = expmap0(torch.full((500, 6), 3.0, dtype=dtype), c)  # near the boundary
    q = WrappedNormal(mu, torch.full_like(mu, 10.0), c)
    z = q.rsample()
    assert (math.sqrt(c) * z.norm(dim=-1) < 1).all()
    assert torch.isfinite(q.log_prob(z)).all()
    assert torch.isfinite(q.sample(3)).all() and q.sample(3).shape == (3, 500, 6)


def test_the_kl_estimate_vanishes_when_the_posterior_is_the_prior_and_is_positive_otherwise():
    model = PoincareVAE(1, 3, [8, 16], image_size=16, curvature=1.5, prior_sigma=0.7)
    x = torch.rand(64, 1, 16, 16)
    with torch.no_grad():
        model.head.fc_mu.weight.zero_(), model.head.fc_mu.bias.zero_(), model.head.fc_scale.weight.zero_()
        model.head.fc_scale.bias.fill_(math.log(math.expm1(0.7 - 1e-5)))  # softplus + 1e-5 = 0.7
        losses = model.loss_function(*model(x))
        assert abs(losses["KLD"].item()) < 1e-5
        model.head.fc_mu.bias.fill_(0.5)  # a shifted posterior: the estimate's mean is the KL, > 0
        estimates = torch.stack([model.loss_function(*model(x))["KLD"] for _ in range(20)])
        assert estimates.mean() > 5 * estimates.std() / math.sqrt(20)


@pytest.mark.parametrize("dtype", [torch.float32, f64])
def test_the_kl_estimate_of_a_wide_posterior_at_the_origin_is_the_tangent_gaussians_kl(dtype):
    # Two wrapped normals centred at the origin are their tangent Gaussians pushed by the same map,
    # so their KL is the Gaussians': D/2 (s^2 - 1 - 2 log s) against N(0, I). At D = 10 and s = 2
    # a quarter of the draws lie beyond distance 6.2 from the origin, where float32's margin would
    # pull them in: an estimate in the inputs' precision came out at 5.2 instead of 8.07.
    dim, s, n = 10, 2.0, 40000
    torch.manual_seed(0)
    zeros = torch.zeros(n, dim, dtype=dtype)
    posterior, prior = WrappedNormal(zeros, zeros + s), WrappedNormal(zeros, zeros + 1.0)
    z = posterior.rsample()
    assert z.dtype == dtype
    estimates = posterior.log_prob(z) - prior.log_prob(z)
    exact = dim / 2 * (s**2 - 1 - 2 * math.log(s))
    assert abs(estimates.mean().item() - exact) < 4 * estimates.std().item() / math.sqrt(n)


def test_model_declares_its_geometry_samples_inside_the_ball_and_checks_its_arguments():
    model = PoincareVAE(1, 4, [8, 16], image_size=16, curvature=4.0)
    assert model.latent_geometry == "poincare_ball"
    z = model.sample_prior(200, torch.device("cpu"))
    assert z.shape == (200, 4) and (2.0 * z.norm(dim=-1) < 1).all()
    with torch.no_grad():  # a traversal may step off the ball: the decoder pulls it back inside
        assert torch.isfinite(model.decode(torch.full((2, 4), 5.0))).all()
    for bad in ({"curvature": 0.0}, {"prior_sigma": -1.0}, {"gyroplane_dim": 0}):
        with pytest.raises(ValueError, match="PoincareVAE needs|gyroplane_dim"):
            PoincareVAE(1, 4, [8, 16], image_size=16, **bad)

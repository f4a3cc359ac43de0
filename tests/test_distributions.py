"""The posterior objects models' ``encode`` returns: one interface, checked against torch.distributions."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Categorical, Gamma, Normal, kl_divergence

from vaezoo.models.cat_vae import RelaxedCategoricalPosterior
from vaezoo.models.gamma_vae import GammaPosterior
from vaezoo.models.joint_vae import JointPosterior
from vaezoo.nn.distributions import DiagonalGaussian, PointMass
from vaezoo.nn.gumbel import RelaxedCategorical


def gaussian(seed: int) -> DiagonalGaussian:
    g = torch.Generator().manual_seed(seed)
    return DiagonalGaussian(torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g))


def as_torch(q: DiagonalGaussian) -> Normal:
    return Normal(q.mu, torch.exp(0.5 * q.log_var))


def test_gaussian_log_prob_and_kl_match_torch_and_unpack_like_pytorch_vae():
    q, p = gaussian(0), gaussian(1)
    z = q.rsample()
    torch.testing.assert_close(q.log_prob(z), as_torch(q).log_prob(z).sum(-1))
    torch.testing.assert_close(q.kl(p), kl_divergence(as_torch(q), as_torch(p)).sum(-1))
    torch.testing.assert_close(q.kl(q), torch.zeros(3))
    mu, log_var = q  # PyTorch-VAE's `mu, log_var = model.encode(x)`
    assert mu is q.mu and log_var is q.log_var and len(q) == 2 and q[:1] == [q.mu]
    half = q.map(lambda t: t.half())
    assert isinstance(half, DiagonalGaussian) and half.mu.dtype == torch.float16
    with pytest.raises(TypeError, match="needs a Gaussian"):
        q.kl(PointMass(q.mu))


def test_point_mass_draws_its_code_and_has_no_density():
    code = torch.randn(2, 3)
    q = PointMass(code)
    assert q.rsample() is code and q.mode() is code and list(q) == [code]
    with pytest.raises(NotImplementedError, match="no density"):
        q.log_prob(code)


def test_gamma_log_prob_and_closed_form_kl_match_torch():
    g = torch.Generator().manual_seed(2)
    shape, rate = (torch.rand(3, 4, generator=g) * 3 + 0.5 for _ in range(2))
    q = GammaPosterior(shape, rate, shape_boosts=4)
    p = GammaPosterior(torch.full((3, 4), 2.0), torch.ones(3, 4), shape_boosts=4)
    z = q.rsample()
    assert (z > 0).all() and z.shape == (3, 4)
    torch.testing.assert_close(q.log_prob(z), Gamma(shape, rate).log_prob(z).sum(-1))
    expected = kl_divergence(Gamma(shape, rate), Gamma(p.concentration, p.rate)).sum(-1)
    torch.testing.assert_close(q.kl(p), expected)
    torch.testing.assert_close(q.kl(q), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(q.mode(), shape / rate)


def categorical_posterior(counts: list[int], seed: int) -> RelaxedCategoricalPosterior:
    torch.manual_seed(seed)
    module = RelaxedCategorical(5, counts, 1.0, 0.5, 3e-5, 100)
    return RelaxedCategoricalPosterior(torch.randn(2, sum(counts)) * 2, module)


@pytest.mark.parametrize("counts", [[4, 4, 4], [3, 5]])  # equal class counts take the fast path
def test_categorical_kl_and_log_prob_match_torch(counts):
    q = categorical_posterior(counts, 0)
    blocks = q.logits.split(counts, dim=-1)
    torch.testing.assert_close(q.kl(q.uniform()), q.categorical.kl(q.logits))  # the model's KL term
    other = RelaxedCategoricalPosterior(torch.randn(2, sum(counts)), q.categorical)
    expected = sum(
        kl_divergence(Categorical(logits=a), Categorical(logits=b))
        for a, b in zip(blocks, other.logits.split(counts, dim=-1))
    )
    torch.testing.assert_close(q.kl(other), expected)
    mode = q.mode()  # the most probable class of every variable
    best = sum(torch.log_softmax(block, -1).max(-1).values for block in blocks)
    torch.testing.assert_close(q.log_prob(mode), best)
    assert q.rsample(global_step=0).shape == (2, sum(counts))


def test_joint_posterior_adds_its_parts():
    module = categorical_posterior([3, 3], 1).categorical
    z_part = gaussian(3)  # batch of 3
    c_part = RelaxedCategoricalPosterior(torch.randn(3, 6), module)
    joint = JointPosterior(z_part, c_part)
    other = JointPosterior(gaussian(4), c_part.uniform())
    torch.testing.assert_close(joint.kl(other), z_part.kl(other.gaussian) + c_part.kl(c_part.uniform()))
    code = torch.cat([z_part.mu, c_part.mode()], dim=1)  # (3, 4 + 6)
    torch.testing.assert_close(joint.mode(), code)
    torch.testing.assert_close(
        joint.log_prob(code), z_part.log_prob(z_part.mu) + c_part.log_prob(c_part.mode())
    )
    assert len(joint) == 3 and joint.fields().keys() == {"mu", "log_var", "logits"}

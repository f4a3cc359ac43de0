"""CIWAE and PIWAE (Rainforth et al. 2018): the combined bound at its ends, and PIWAE's two
objectives each training its own networks only. The shared contract is in test_zoo_contract.py."""

from __future__ import annotations

import pytest
import torch

from vaezoo.losses.importance import log_importance_weights, multi_sample_bound
from vaezoo.models.ciwae import CIWAE
from vaezoo.models.iwae import IWAE
from vaezoo.models.miwae import MIWAE
from vaezoo.models.piwae import PIWAE

SMALL = {"hidden_dims": [8, 16], "image_size": 16, "recon_reduction": "sum"}


def small(cls: type, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return cls(1, 4, **{**SMALL, **kwargs}).eval()


def images(n: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, 16, 16, generator=torch.Generator().manual_seed(seed))


# -- CIWAE ---------------------------------------------------------------------------------------


def test_ciwae_is_the_elbo_at_beta_one_the_iwae_at_zero_and_their_mix_between():
    model, iwae, x, kl_weight = small(CIWAE, num_samples=6), small(IWAE, num_samples=6), images(), 0.8
    iwae.load_state_dict(model.state_dict())
    output = model(x)  # one draw of samples for every beta
    recon, log_prior, log_posterior = model.sample_terms(output)
    log_w = -recon + kl_weight * (log_prior - log_posterior)  # (B, K)
    elbo, bound = (
        log_w.mean(dim=1).mean(),
        (torch.logsumexp(log_w, dim=1) - torch.log(torch.tensor(6.0))).mean(),
    )
    assert bound > elbo  # the samples differ, so the IWAE bound is strictly tighter
    losses = {}
    for beta in (1.0, 0.0, 0.3):
        model.beta = beta
        losses[beta] = model.loss_function(*output, M_N=kl_weight)["loss"]
    torch.testing.assert_close(losses[1.0], -elbo)
    torch.testing.assert_close(losses[0.0], -bound)
    torch.testing.assert_close(losses[0.0], iwae.loss_function(*output, M_N=kl_weight)["loss"])
    torch.testing.assert_close(losses[0.3], -(0.3 * elbo + 0.7 * bound))
    torch.testing.assert_close(model.loss_function(*output, M_N=kl_weight)["ELBO"], elbo)


def test_ciwae_wants_beta_in_the_unit_interval():
    with pytest.raises(ValueError, match="beta"):
        CIWAE(1, 4, **SMALL, beta=1.5)
    assert small(CIWAE, beta=0.25).config["beta"] == 0.25


# -- PIWAE ---------------------------------------------------------------------------------------


def snapshot(params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def unchanged(params: list[torch.nn.Parameter], before: list[torch.Tensor]) -> bool:
    return all(torch.equal(p, b) for p, b in zip(params, before, strict=True))


def test_piwae_splits_its_parameters_into_encoder_and_decoder():
    model = small(PIWAE, likelihood="gaussian")
    encoder, decoder = model.encoder_parameters(), model.auxiliary_parameters()
    assert {id(p) for p in encoder}.isdisjoint(id(p) for p in decoder)
    assert len(encoder) + len(decoder) == len(list(model.parameters()))
    assert any(p is model.likelihood.log_scale for p in decoder)  # the learned scale is generative
    assert all(
        not name.startswith("decoder") for name, p in model.named_parameters() if any(p is q for q in encoder)
    )


def test_piwae_objectives_are_miwae_for_the_encoder_and_iwae_of_all_samples_for_the_decoder():
    model, miwae = small(PIWAE, num_samples=3, num_estimates=2), small(MIWAE, num_samples=3, num_estimates=2)
    miwae.load_state_dict(model.state_dict())
    x = images()
    output = model(x)
    recon, log_prior, log_posterior = model.sample_terms(output)
    log_w = log_importance_weights(-recon, log_prior, log_posterior)  # (B, 6)
    main = model.loss_function(*output)
    torch.testing.assert_close(main["loss"], miwae.loss_function(*output)["loss"])
    torch.testing.assert_close(main["loss"], -multi_sample_bound(log_w, 2).mean())
    auxiliary = model.auxiliary_loss(output)  # eval mode: decoding again gives the same images
    torch.testing.assert_close(auxiliary["loss"], -multi_sample_bound(log_w, 1).mean())
    assert auxiliary["IWAE_Bound"] >= -main["loss"] - 1e-4  # IWAE-MK is at least MIWAE-(M, K)


def test_piwae_each_step_moves_only_its_own_networks():
    model = small(PIWAE, likelihood="gaussian").train()
    encoder, decoder = model.encoder_parameters(), model.auxiliary_parameters()
    main_optimizer = torch.optim.SGD(encoder, lr=0.1)  # as the trainer builds them
    aux_optimizer = torch.optim.SGD(decoder, lr=0.1)
    output = model(images(8))
    before_encoder, before_decoder = snapshot(encoder), snapshot(decoder)

    main_optimizer.zero_grad()
    model.loss_function(*output)["loss"].backward()
    main_optimizer.step()  # the encoder's step (MIWAE)
    assert not unchanged(encoder, before_encoder) and unchanged(decoder, before_decoder)

    after_encoder = snapshot(encoder)
    for p in model.parameters():
        p.grad = None
    aux_optimizer.zero_grad()
    model.auxiliary_loss(output)["loss"].backward()  # after the main step, like the trainer
    assert all(p.grad is None for p in encoder)  # no gradient reaches the encoder at all
    aux_optimizer.step()  # the decoder's step (IWAE-MK)
    assert unchanged(encoder, after_encoder) and not unchanged(decoder, before_decoder)

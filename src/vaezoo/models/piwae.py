"""The partially importance weighted autoencoder of Rainforth et al. (ICML 2018)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from vaezoo.losses.importance import log_importance_weights, multi_sample_bound
from vaezoo.models.miwae import MIWAE
from vaezoo.registry import register_model


@register_model
class PIWAE(MIWAE):
    """Partially importance weighted autoencoder (Rainforth et al. 2018, "Tighter Variational
    Bounds are Not Necessarily Better", Sec. 4): each network gets the target that suits it.

    From one draw of M x K samples z ~ q(z|x) and the IWAE's log-weights (see :class:`IWAE`)::

        encoder phi (main optimizer):      loss     = -mean_batch MIWAE_{M,K}
        decoder theta (second optimizer):  aux loss = -mean_batch log (1/MK) sum_{m,k} w_{m,k}

    The inference network keeps MIWAE's better gradient signal-to-noise ratio, the generative
    network gets the tightest bound, the IWAE over all M*K samples. The split goes through the
    trainer's auxiliary-optimizer hook: ``auxiliary_parameters`` are the decoder's and the
    likelihood's (its learned scale), the main optimizer keeps the encoder and its head.
    ``loss`` (MIWAE) reaches the decoder's parameters too, but no optimizer of the main objective
    holds them and the trainer zeroes their gradients before the auxiliary step.
    ``auxiliary_loss`` decodes the *detached* samples of the same forward pass again (the main
    step has freed that graph and changed the decoder's weights in place), so its gradient
    reaches the decoder alone: one more decoder pass per step (in training mode it updates the
    decoder's BatchNorm statistics a second time, on the same samples). It has no ``M_N`` from the
    trainer: its weights use ``M_N`` = 1 unless given (the decoder's gradient does not
    otherwise depend on it). Loss keys: the IWAE's; the auxiliary dict has ``loss`` and
    ``IWAE_Bound`` (the decoder's bound, as ``loss`` with the opposite sign).

    Signature: ``(in_channels, latent_dim, hidden_dims, num_samples, num_estimates)`` (K and M, as
    MIWAE's), then VanillaVAE's keyword-only arguments.
    """

    def encoder_parameters(self) -> list[nn.Parameter]:
        """phi: the encoder stack and the head that gives mu and log_var."""
        return [*self.encoder.parameters(), *getattr(self, self.head_name).parameters()]

    def auxiliary_parameters(self) -> list[nn.Parameter]:
        """theta: every parameter outside the encoder (decoder, learned likelihood scale)."""
        encoder = {id(p) for p in self.encoder_parameters()}
        return [p for p in self.parameters() if id(p) not in encoder]

    def auxiliary_loss(self, output: Any, M_N: float = 1.0, **kwargs: Any) -> dict[str, Tensor]:
        output = self.output_cls(*output[: len(self.output_cls._fields)])  # a plain tuple too
        z = output.z.detach()  # (B, S, D) the forward pass's samples, cut from the encoder
        all_recons, all_params = self.decode_with_params(z.flatten(0, 1))  # (B*S, C, H, W) each
        fields = {"z": z, "mu": output.mu.detach(), "log_var": output.log_var.detach()}
        fields["all_recons"] = all_recons.unflatten(0, z.shape[:2])
        if "recon_params" in output._fields:  # a likelihood other than mse
            fields["recon_params"] = all_params.unflatten(0, z.shape[:2])
        recon, log_prior, log_posterior = self.sample_terms(output._replace(**fields))  # (B, S) each
        bound = multi_sample_bound(log_importance_weights(-recon, log_prior, log_posterior, M_N))  # IWAE-MK
        return {"loss": -bound.mean(), "IWAE_Bound": bound.mean().detach()}

"""GroupVAE: group-VAE averaging on the dimensions of the factors known to be shared."""

from __future__ import annotations

from torch import Tensor

from vaezoo.models.ada_gvae import AdaGVAE, split_pairs
from vaezoo.nn.distributions import DiagonalGaussian
from vaezoo.nn.weak import known_shared_mask
from vaezoo.registry import register_model


@register_model
class GroupVAE(AdaGVAE):
    """Group-based VAE, Hosoya (2019), "Group-based learning of disentangled representations with
    generalizability for novel contents" (IJCAI), as the known-factor baseline of Locatello et al.
    (2020): latent dimension f stands for factor f; the dimensions of the factors that differ
    within the pair (read from ``labels``, rows i and B+i) keep their own posteriors, all others
    are averaged (mean of means and of variances). Needs ``latent_dim`` >= the number of factors.
    """

    def shared_dimensions(self, q1: DiagonalGaussian, q2: DiagonalGaussian, labels: Tensor | None) -> Tensor:
        if labels is None or labels.dim() != 2:
            raise ValueError(
                f"{type(self).__name__} needs labels= the (2B, F) factor classes of the pairs "
                "(a data set with factors and data.pairs set)"
            )
        first, second = split_pairs(labels)
        return known_shared_mask(first != second, self.latent_dim)

"""A latent-code discriminator: tells samples of q(z) from samples of prod_j q(z_j).

Kim & Mnih (2018), "Disentangling by Factorising", Appendix (architecture table): six fully
connected layers of 1000 units with LeakyReLU(0.2), then two logits. No batch norm (PyTorch-VAE's
added it), so a code's score does not depend on the rest of its batch.
"""

from __future__ import annotations

from torch import Tensor, nn


class LatentDiscriminator(nn.Module):
    """(B, D) codes -> (B, 2) logits: index 0 "from the joint q(z)", index 1 "from prod_j q(z_j)"."""

    def __init__(self, latent_dim: int, hidden_units: int = 1000, num_layers: int = 6) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = latent_dim
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden_units), nn.LeakyReLU(0.2)]
            width = hidden_units
        layers.append(nn.Linear(width, 2))
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)  # (B, 2)

    def log_odds(self, z: Tensor) -> Tensor:
        """log D(z) / (1 - D(z)) = logit_joint - logit_product, (B,); its mean over z ~ q(z)
        estimates the total correlation by the density-ratio trick."""
        logits = self(z)  # (B, 2)
        return logits[:, 0] - logits[:, 1]

"""Vector quantisation with straight-through gradients, and an EMA-updated codebook option.

van den Oord, Vinyals & Kavukcuoglu, "Neural Discrete Representation Learning" (NeurIPS 2017),
Sec. 3.1-3.2 and Appendix A.1; Razavi, van den Oord & Vinyals, "Generating Diverse High-Fidelity
Images with VQ-VAE-2" (NeurIPS 2019), Sec. 3.1 (EMA with Laplace smoothing of the cluster sizes).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaezoo.nn.precision import full_precision


def world_size() -> int:
    """Processes in torch.distributed's default group; 1 when it is not initialised."""
    distributed = torch.distributed
    return distributed.get_world_size() if distributed.is_available() and distributed.is_initialized() else 1


class Quantized(NamedTuple):
    straight_through: Tensor  # (B, D, h, w) values of e, gradients passed to z_e unchanged
    vectors: Tensor  # (B, D, h, w) the chosen codebook rows e_k (carry the codebook's gradient)
    codes: Tensor  # (B, h, w) int64 indices k


class VectorQuantizer(nn.Module):
    """Replace each D-vector of a (B, D, h, w) map by its nearest of ``num_embeddings`` codebook rows.

    q(z = k | x) is one-hot at k = argmin_j ||z_e(x) - e_j|| (Eq. 1); z_q = e_k (Eq. 2). The argmin
    has no gradient, so ``straight_through`` = z_e + sg[e_k - z_e] copies the decoder's gradient to
    the encoder (Sec. 3.2). Without ``ema`` the codebook is a parameter learnt by the codebook term
    of Eq. 3. With ``ema`` it is a buffer set to moving averages (Appendix A.1, Eqs. 6-8):

        N_k <- decay * N_k + (1 - decay) * n_k          (n_k: vectors assigned to k in the batch)
        m_k <- decay * m_k + (1 - decay) * sum of the vectors assigned to k
        e_k  = m_k / N~_k,  N~_k = (N_k + eps) / (sum_j N_j + K eps) * sum_j N_j  (Laplace smoothing)

    updated only in training mode; all three are buffers, so they are saved in checkpoints. N starts
    at 1 and m at the initial codebook, i.e. each code starts as one pseudo-observation of itself.
    Under data parallelism (torch.distributed initialised, more than one process) the batch counts
    n_k and sums are summed over the processes before the update, so every process keeps the same
    codebook, the one a single process would have on the concatenation of all their batches. Every
    process must then run its training-mode forward passes in step with the others (as DDP does).

    The codebook starts as U(-1/K, 1/K) (PyTorch-VAE's choice). Encoder outputs at initialisation
    are all alike, so most codes are never chosen and stay dead; ``data_init`` instead sets the
    codebook to K random encoder outputs of the first training batch (a simple form of the
    data-dependent initialisation of Łańcucki et al. 2020, "Robust Training of Vector Quantized
    Bottleneck Models"), recorded in the ``initialized`` buffer so a resumed run does not repeat it.
    Under data parallelism the codebook of process 0 (from its own first batch) is sent to all.
    """

    # Buffers, registered in __init__ (declared here so their type is Tensor, not Tensor | Module).
    initialized: Tensor  # bool scalar: the codebook has been set (data_init)
    codebook: Tensor  # (K, D): an nn.Parameter, or a buffer with ``ema``
    ema_cluster_size: Tensor  # (K,), ``ema`` only
    ema_embedding_sum: Tensor  # (K, D), ``ema`` only

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        ema: bool = False,
        decay: float = 0.99,
        epsilon: float = 1e-5,
        data_init: bool = False,
    ) -> None:
        super().__init__()
        if not 0 < decay < 1:
            raise ValueError(f"ema_decay {decay} must be in (0, 1)")
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.ema, self.decay, self.epsilon, self.data_init = ema, decay, epsilon, data_init
        self.register_buffer("initialized", torch.tensor(not data_init))
        initial = torch.empty(num_embeddings, embedding_dim).uniform_(-1 / num_embeddings, 1 / num_embeddings)
        if ema:
            self.register_buffer("codebook", initial)
            self.register_buffer("ema_cluster_size", torch.ones(num_embeddings))
            self.register_buffer("ema_embedding_sum", initial.clone())
        else:
            self.codebook = nn.Parameter(initial)  # (K, D)

    def forward(self, z_e: Tensor) -> Quantized:
        batch, dim, height, width = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, dim)  # (B*h*w, D)
        if self.training and not self.initialized:
            self.initialize_from(flat.detach())
        codes = self.nearest(flat)  # (B*h*w,)
        vectors = self.lookup(codes.view(batch, height, width))  # (B, D, h, w), before any update
        if self.ema and self.training:
            self.ema_update(flat.detach(), codes)
        straight_through = z_e + (vectors - z_e).detach()
        return Quantized(straight_through, vectors, codes.view(batch, height, width))

    @full_precision
    def nearest(self, flat: Tensor) -> Tensor:
        """Index of the closest codebook row: ||z||^2 - 2 z.e + ||e||^2 minimised over e. (N, D) -> (N,)."""
        distances = (
            flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.codebook.t() + self.codebook.pow(2).sum(1)
        )
        return distances.argmin(dim=1)

    def lookup(self, codes: Tensor) -> Tensor:
        """Codebook rows of a (B, h, w) index map, as a (B, D, h, w) latent map (for decoding a prior's codes)."""
        return F.embedding(codes, self.codebook).permute(0, 3, 1, 2)

    @torch.no_grad()
    def initialize_from(self, flat: Tensor) -> None:
        """Codebook rows <- K encoder outputs drawn at random (with replacement if there are fewer)."""
        if len(flat) >= self.num_embeddings:
            rows = torch.randperm(len(flat), device=flat.device)[: self.num_embeddings]
        else:
            rows = torch.randint(len(flat), (self.num_embeddings,), device=flat.device)
        self.codebook.copy_(flat[rows])
        if world_size() > 1:
            torch.distributed.broadcast(self.codebook, src=0)  # one codebook for every process
        if self.ema:
            self.ema_embedding_sum.copy_(self.codebook)
            self.ema_cluster_size.fill_(1.0)
        self.initialized.fill_(True)

    @torch.no_grad()
    @full_precision
    def ema_update(self, flat: Tensor, codes: Tensor) -> None:
        counts = torch.bincount(codes, minlength=self.num_embeddings).to(flat.dtype)  # n_k, (K,)
        sums = torch.zeros_like(self.ema_embedding_sum).index_add_(0, codes, flat)  # (K, D)
        if world_size() > 1:
            # the update is linear in n_k and the sums: summed over processes, it is the global batch's
            statistics = torch.cat([counts.unsqueeze(1), sums], dim=1)  # (K, 1 + D), one message
            torch.distributed.all_reduce(statistics)
            counts, sums = statistics[:, 0], statistics[:, 1:]
        self.ema_cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_embedding_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.ema_cluster_size.sum()
        smoothed = (
            (self.ema_cluster_size + self.epsilon) / (total + self.num_embeddings * self.epsilon) * total
        )
        self.codebook.copy_(self.ema_embedding_sum / smoothed.unsqueeze(1))


def code_frequencies(codes: Tensor, num_embeddings: int) -> Tensor:
    """Share of the positions assigned to each code: any shape of indices -> (K,) summing to 1."""
    return torch.bincount(codes.flatten(), minlength=num_embeddings).float() / codes.numel()


def codebook_perplexity(codes: Tensor, num_embeddings: int) -> Tensor:
    """exp(entropy of the code frequencies): K for uniform use of all K codes, 1 for a single code."""
    p = code_frequencies(codes, num_embeddings)
    return torch.exp(-torch.special.xlogy(p, p).sum())


def codebook_usage(codes: Tensor, num_embeddings: int) -> Tensor:
    """Share of the K codes used at least once."""
    return (code_frequencies(codes, num_embeddings) > 0).float().mean()

"""Latent samplers: where the latents of generated images come from.

Sampling from a density fitted to the aggregate posterior q(z) = E_x q(z|x), instead of the prior
p(z), improves samples of most autoencoders (Ghosh et al. 2020, "From Variational to Deterministic
Autoencoders", Sec. 4, ex-post density estimation; the pythae benchmark of Chadebec et al. 2022
found it the most effective single change). Every sampler has one small interface
(:class:`~vaezoo.evaluation.samplers.base.LatentSampler`) and a name in ``SAMPLERS``, the choices
of ``--sampler``:

- ``prior`` (:class:`NormalSampler`): the model's own prior, ``model.sample_prior``; the default.
- ``gmm`` (:class:`GaussianMixtureSampler`): a K-component Gaussian mixture on the latents.
- ``two_stage`` (:class:`TwoStageSampler`): a second VAE on the latents (Dai & Wipf 2019).
- ``maf`` / ``iaf`` (:class:`MAFSampler`, :class:`IAFSampler`): autoregressive flows on the latents.
- ``vamp`` (:class:`VampSampler`): a VampPrior's pseudo-input posteriors (VampVAE).
- ``hypersphere`` (:class:`HypersphereUniformSampler`): uniform on the unit sphere (SVAE).
- ``poincare_disk`` (:class:`PoincareDiskSampler`): the wrapped-normal prior on the Poincare ball
  (PoincareVAE).
- ``manifold`` (:class:`ManifoldSampler`): HMC on the Riemannian uniform density of a learned metric
  (RHVAE).
- ``pixelcnn`` (:class:`PixelCNNSampler`): a gated PixelCNN prior over a VQ model's code indices.

Codes are what ``model.embed`` returns: (N, D) for most models, (N, D, h, w) for VQVAE. Fitted
samplers fit the flattened (N, D*h*w) codes and return samples in the codes' shape, so
``model.decode`` takes them. A fitted sampler saves to one safetensors file (tensors, plus its name
and config as metadata), so it can be cached beside a run and reloaded with :func:`load_sampler`.

One file per sampler; each registers itself with ``@register_sampler`` when imported here.
"""

from vaezoo.evaluation.samplers.base import (
    SAMPLERS,
    LatentSampler,
    ModelSampler,
    SamplerNotApplicableError,
    SamplerNotFittedError,
    SeedLike,
    as_generator,
    check_sampler_options,
    embed_batches,
    evaluating,
    fit_message,
    fit_sampler,
    flatten_codes,
    load_sampler,
    register_sampler,
    sample_images,
    sampler_class,
    sampler_help,
    sampler_names,
    sampler_options,
)
from vaezoo.evaluation.samplers.flows import IAF_MAX_DIMS, IAFSampler, MAFSampler
from vaezoo.evaluation.samplers.gmm import (
    COVARIANCE_TYPES,
    FULL_COVARIANCE_MAX_DIMS,
    GaussianMixtureSampler,
    covariance_for,
    mixture_scale,
)
from vaezoo.evaluation.samplers.hypersphere import HypersphereUniformSampler
from vaezoo.evaluation.samplers.manifold import ManifoldSampler
from vaezoo.evaluation.samplers.pixelcnn import PixelCNNSampler
from vaezoo.evaluation.samplers.poincare_disk import PoincareDiskSampler
from vaezoo.evaluation.samplers.prior import NormalSampler
from vaezoo.evaluation.samplers.two_stage import TwoStageSampler, train_latent_vae
from vaezoo.evaluation.samplers.vamp import VampSampler

__all__ = [
    "COVARIANCE_TYPES",
    "FULL_COVARIANCE_MAX_DIMS",
    "IAF_MAX_DIMS",
    "SAMPLERS",
    "GaussianMixtureSampler",
    "HypersphereUniformSampler",
    "IAFSampler",
    "LatentSampler",
    "MAFSampler",
    "ManifoldSampler",
    "ModelSampler",
    "NormalSampler",
    "PixelCNNSampler",
    "PoincareDiskSampler",
    "SamplerNotApplicableError",
    "SamplerNotFittedError",
    "SeedLike",
    "TwoStageSampler",
    "VampSampler",
    "as_generator",
    "check_sampler_options",
    "covariance_for",
    "embed_batches",
    "evaluating",
    "fit_message",
    "fit_sampler",
    "flatten_codes",
    "load_sampler",
    "mixture_scale",
    "register_sampler",
    "sample_images",
    "sampler_class",
    "sampler_help",
    "sampler_names",
    "sampler_options",
    "train_latent_vae",
]

"""Building blocks shared by the models: conv stacks, Gaussian heads, distributions, likelihoods."""

from vaezoo.nn.blocks import ConvDecoder, ConvEncoder, GaussianHead, check_image_size, output_activation
from vaezoo.nn.distributions import DiagonalGaussian
from vaezoo.nn.likelihoods import (
    LIKELIHOODS,
    Bernoulli,
    ContinuousBernoulli,
    DiscretizedLogistic,
    Gaussian,
    Laplace,
    Likelihood,
    SquaredError,
    build_likelihood,
)

__all__ = [
    "LIKELIHOODS",
    "Bernoulli",
    "ContinuousBernoulli",
    "ConvDecoder",
    "ConvEncoder",
    "DiagonalGaussian",
    "DiscretizedLogistic",
    "Gaussian",
    "GaussianHead",
    "Laplace",
    "Likelihood",
    "SquaredError",
    "build_likelihood",
    "check_image_size",
    "output_activation",
]

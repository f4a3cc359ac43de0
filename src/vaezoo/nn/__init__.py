"""Building blocks shared by the models: conv stacks, Gaussian heads, distributions."""

from vaezoo.nn.blocks import ConvDecoder, ConvEncoder, GaussianHead, check_image_size, output_activation
from vaezoo.nn.distributions import DiagonalGaussian

__all__ = [
    "ConvDecoder",
    "ConvEncoder",
    "DiagonalGaussian",
    "GaussianHead",
    "check_image_size",
    "output_activation",
]

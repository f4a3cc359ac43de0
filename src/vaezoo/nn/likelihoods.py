"""Decoder likelihoods p(x|z): the reconstruction term of the ELBO as a distribution object.

Every likelihood reads the decoder's raw output ``params`` (B, C, H, W) -- or (B, D) for vectors
(``architecture: mlp``): every reduction is over all dimensions after the batch -- and shares one
interface:

- ``log_prob(x, params) -> (B,)``: log p(x|z) summed over the pixels (features) of each example, in nats;
- ``mean(params) -> (B, C, H, W)``: the image (vector) the parameters stand for (what ``decode`` returns);
- ``normalized``: True when ``log_prob`` is a normalised log density or log mass;
- ``unnormalized_on(x)``: why it is none for the data ``x`` after all (non-binary data under a
  Bernoulli: a cross-entropy), or None;
- ``discrete``: True for a mass over the 256 levels of 8-bit data, False for a density on R;
- ``decoder_activation``: the non-linearity the decoder's last layer must apply.

The decoder has one output channel per image channel for every likelihood; a learned scale is a
single global log-scale parameter (not a per-pixel output), the simplest choice that is a proper
likelihood. PyTorch-VAE's squared error is here too (:class:`SquaredError`) so that every model
scores reconstructions through one object, but it has no normaliser and says so
(``normalized = False``): it is never reported as a likelihood.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaezoo.losses.reconstruction import squared_error

LikelihoodName = Literal[
    "mse", "bernoulli", "continuous_bernoulli", "gaussian", "laplace", "discretized_logistic"
]
LIKELIHOODS = ("mse", "bernoulli", "continuous_bernoulli", "gaussian", "laplace", "discretized_logistic")
SCALES = ("fixed", "learned")
DATA_RANGES = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0)}  # output activation -> the data's range
NUM_LEVELS = 256  # 8-bit images


# -- log probabilities, per example ---------------------------------------------------------------
def bernoulli_log_prob(x: Tensor, logits: Tensor) -> Tensor:
    """sum_pixels x log sigmoid(l) + (1 - x) log(1 - sigmoid(l)) = -BCE-with-logits, (B, ...) -> (B,).

    A log mass for binary x; for x in (0, 1) it is the usual cross-entropy score, not a likelihood
    (the continuous Bernoulli, :func:`continuous_bernoulli_log_prob`, is one).
    """
    nll = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    return -nll.flatten(start_dim=1).sum(dim=1)


def gaussian_log_prob(x: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    """sum_pixels log N(x; mean, exp(log_std)^2), (B, ...) -> (B,); ``log_std`` broadcasts."""
    standardized = (x - mean) * torch.exp(-log_std)
    log_density = -0.5 * standardized**2 - log_std - 0.5 * math.log(2 * math.pi)
    return log_density.flatten(start_dim=1).sum(dim=1)


# Below |l| / 2 = TAYLOR_BELOW (lambda in about (0.45, 0.55)) the continuous Bernoulli's closed forms
# are 0/0; their series there are exact to 1e-10.
TAYLOR_BELOW = 0.1


def continuous_bernoulli_log_norm(logits: Tensor) -> Tensor:
    """log C(lambda) of the continuous Bernoulli with lambda = sigmoid(l), elementwise.

    Loaiza-Ganem & Cunningham 2019, "The continuous Bernoulli", Eq. 7:
    C(lambda) = 2 artanh(1 - 2 lambda) / (1 - 2 lambda), and 2 at lambda = 1/2. In logits,
    1 - 2 lambda = -tanh(u) and artanh(1 - 2 lambda) = -u with u = l / 2, so
    log C = log 2 + log(u coth u): even in u, log 2 at u = 0, near |u| for large |u|. Near
    u = 0 it is the series log(u coth u) = u^2/3 - 7 u^4/90 + 62 u^6/2835 (no 0/0, finite
    gradient at lambda = 1/2); elsewhere log|u| - log tanh|u|, with log tanh a =
    log(-expm1(-2a)) - log1p(exp(-2a)) free of cancellation.
    """
    u = 0.5 * logits
    small = u.abs() < TAYLOR_BELOW
    u2 = torch.where(small, u, torch.zeros_like(u)) ** 2
    series = u2 / 3 - 7 * u2**2 / 90 + 62 * u2**3 / 2835
    a = torch.where(small, torch.full_like(u, TAYLOR_BELOW), u.abs())  # the unused branch stays finite
    closed = torch.log(a) - torch.log(-torch.expm1(-2 * a)) + torch.log1p(torch.exp(-2 * a))
    return math.log(2.0) + torch.where(small, series, closed)


def continuous_bernoulli_mean(logits: Tensor) -> Tensor:
    """E[x] of the continuous Bernoulli with lambda = sigmoid(l), elementwise.

    Loaiza-Ganem & Cunningham 2019, Sec. 3: E[x] = lambda / (2 lambda - 1) + 1 / (2 artanh(1 - 2 lambda)),
    1/2 at lambda = 1/2 -- not lambda itself. With u = l / 2 it is 1/2 + (coth u - 1/u) / 2, and near
    u = 0 the series coth u - 1/u = u/3 - u^3/45 + 2 u^5/945.
    """
    u = 0.5 * logits
    small = u.abs() < TAYLOR_BELOW
    us = torch.where(small, u, torch.zeros_like(u))
    series = us / 3 - us**3 / 45 + 2 * us**5 / 945
    safe = torch.where(small, torch.full_like(u, TAYLOR_BELOW), u)
    closed = 1 / torch.tanh(safe) - 1 / safe
    return 0.5 + 0.5 * torch.where(small, series, closed)


def continuous_bernoulli_log_prob(x: Tensor, logits: Tensor) -> Tensor:
    """sum_pixels log CB(x; lambda) = x log lambda + (1 - x) log(1 - lambda) + log C(lambda),
    (B, ...) -> (B,): a normalised log density on [0, 1] (Loaiza-Ganem & Cunningham 2019, Eq. 6)."""
    log_density = -F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    log_density = log_density + continuous_bernoulli_log_norm(logits)
    return log_density.flatten(start_dim=1).sum(dim=1)


def laplace_log_prob(x: Tensor, loc: Tensor, log_scale: Tensor) -> Tensor:
    """sum_pixels log Laplace(x; loc, b) = -|x - loc| / b - log(2 b), (B, ...) -> (B,); ``log_scale``
    (log b) broadcasts."""
    log_density = -(x - loc).abs() * torch.exp(-log_scale) - log_scale - math.log(2.0)
    return log_density.flatten(start_dim=1).sum(dim=1)


def discretized_logistic_log_prob(
    x: Tensor, loc: Tensor, log_scale: Tensor, low: float, high: float, num_levels: int = NUM_LEVELS
) -> Tensor:
    """log P(x) of the discretised logistic, summed over pixels: (B, ...) -> (B,).

    Salimans et al. 2017, "PixelCNN++", Eq. 2 with one component: the levels low + k * w (w the
    bin width (high - low) / (num_levels - 1)) get the logistic's mass on [x - w/2, x + w/2], the
    lowest level the mass below low + w/2 and the highest the mass above high - w/2, so the
    ``num_levels`` probabilities sum to 1. With a = (x + w/2 - loc) / s and b = (x - w/2 - loc) / s,
    in log space without cancellation::

        log(sigmoid(a) - sigmoid(b)) = log sigmoid(a) - softplus(b) + log(1 - exp(-w / s))
        lowest level: log sigmoid(a),   highest level: -softplus(b)
    """
    half_width = 0.5 * (high - low) / (num_levels - 1)
    inv_scale = torch.exp(-log_scale)
    upper = (x + half_width - loc) * inv_scale  # a
    lower = (x - half_width - loc) * inv_scale  # b
    log_below_upper = F.logsigmoid(upper)  # log CDF(x + w/2)
    log_above_lower = -F.softplus(lower)  # log (1 - CDF(x - w/2))
    log_bin = log_below_upper + log_above_lower + torch.log(-torch.expm1(-2 * half_width * inv_scale))
    log_mass = torch.where(
        x < low + half_width, log_below_upper, torch.where(x > high - half_width, log_above_lower, log_bin)
    )
    return log_mass.flatten(start_dim=1).sum(dim=1)


# -- the likelihood objects -----------------------------------------------------------------------
class Likelihood(nn.Module):
    """p(x|z) from the decoder's output; subclasses fill in ``log_prob`` and, if needed, ``mean``."""

    name: str = ""
    normalized: bool = True
    discrete: bool = False

    def __init__(self, output_activation: str) -> None:
        super().__init__()
        self.output_activation = output_activation

    @property
    def decoder_activation(self) -> str:
        """The decoder's last non-linearity: by default the one that keeps images in the data range."""
        return self.output_activation

    @property
    def data_range(self) -> tuple[float, float] | None:
        """(low, high) of the data, known from the output activation; None for ``"none"``."""
        return DATA_RANGES.get(self.output_activation)

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        raise NotImplementedError

    def unnormalized_on(self, x: Tensor) -> str | None:
        """Why ``log_prob`` is not a normalised log-likelihood of the data ``x`` although the
        likelihood is one in general (the data lie outside its support), or None."""
        return None

    def mean(self, params: Tensor) -> Tensor:
        return params  # the decoder's output is the image itself

    def extra_repr(self) -> str:
        return f"output_activation={self.output_activation!r}"


class SquaredError(Likelihood):
    """PyTorch-VAE's reconstruction term: minus the squared error, summed or averaged over pixels.

    With ``"sum"`` it is log N(x; x_hat, I/2) without its constant -(D/2) log pi; with ``"mean"`` it
    is that divided by D. Either way it is a score, not a normalised likelihood.
    """

    name, normalized = "mse", False

    def __init__(self, output_activation: str, reduction: str = "mean") -> None:
        super().__init__(output_activation)
        self.reduction = reduction

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        return -squared_error(params, x, self.reduction)


class Bernoulli(Likelihood):
    """Independent Bernoulli pixels with logits from the decoder (no sigmoid before the loss)."""

    name, discrete = "bernoulli", True

    def __init__(self, output_activation: str) -> None:
        if output_activation != "sigmoid":
            raise ValueError(
                f"likelihood '{self.name}' models pixels in [0, 1], but output_activation is "
                f"{output_activation!r}: use 'sigmoid' (data.normalize: unit; for vectors, values in [0, 1] "
                "without data.standardize)"
            )
        super().__init__(output_activation)

    @property
    def decoder_activation(self) -> str:
        return "none"  # logits

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        return bernoulli_log_prob(x, params)

    def unnormalized_on(self, x: Tensor) -> str | None:
        if bool(((x != 0) & (x != 1)).any()):
            return (
                "the data are not binary (pixels strictly between 0 and 1), so the Bernoulli score is a "
                "cross-entropy, not a log-likelihood; use likelihood continuous_bernoulli, discretized_logistic "
                "or gaussian for an NLL"
            )
        return None

    def mean(self, params: Tensor) -> Tensor:
        return torch.sigmoid(params)


class ContinuousBernoulli(Bernoulli):
    """The continuous Bernoulli (Loaiza-Ganem & Cunningham 2019): the Bernoulli's form with its
    normaliser C(lambda), a proper density for pixels anywhere in [0, 1] (grey levels too).

    The decoder outputs logits, like :class:`Bernoulli`'s; ``mean`` (what ``decode`` returns) is the
    distribution's mean, which is not sigmoid(l) (the paper's Sec. 3 warns of that bias).
    """

    name, discrete = "continuous_bernoulli", False

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        return continuous_bernoulli_log_prob(x, params)

    def unnormalized_on(self, x: Tensor) -> str | None:
        if bool(((x < 0) | (x > 1)).any()):
            return "the data leave [0, 1], the continuous Bernoulli's support, so its density is not theirs"
        return None

    def mean(self, params: Tensor) -> Tensor:
        return continuous_bernoulli_mean(params)


class ScaledLikelihood(Likelihood):
    """A location from the decoder and one global log-scale, fixed or learned (an ``nn.Parameter``)."""

    def __init__(self, output_activation: str, scale: float, learned: bool) -> None:
        super().__init__(output_activation)
        if not scale > 0:
            raise ValueError(f"likelihood_std must be positive, got {scale}")
        log_scale = torch.tensor(math.log(scale))
        if learned:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale, persistent=False)  # from the config, not saved


class Gaussian(ScaledLikelihood):
    """N(x; mean, sigma^2 I) with the decoder's mean (in the data range) and a global sigma."""

    name = "gaussian"

    def __init__(self, output_activation: str, std: float = 0.1, learned: bool = True) -> None:
        super().__init__(output_activation, std, learned)

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        return gaussian_log_prob(x, params, self.log_scale)


class Laplace(ScaledLikelihood):
    """Laplace(x; loc, b) per pixel, the decoder's location (in the data range) and a global scale b:
    -log p is the L1 error / b plus D log(2b). ``std`` is its standard deviation, b * sqrt(2)."""

    name = "laplace"

    def __init__(self, output_activation: str, std: float = 0.1, learned: bool = True) -> None:
        super().__init__(output_activation, std / math.sqrt(2), learned)

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        return laplace_log_prob(x, params, self.log_scale)


class DiscretizedLogistic(ScaledLikelihood):
    """The discretised logistic of PixelCNN++ over the 256 levels of 8-bit data in [0, 1] or [-1, 1].

    The decoder gives the location (in the data range); the scale s is global. ``std`` is the
    logistic's standard deviation s * pi / sqrt(3). ``mean`` returns the location.
    """

    name, discrete = "discretized_logistic", True

    def __init__(self, output_activation: str, std: float = 0.1, learned: bool = True) -> None:
        if output_activation not in DATA_RANGES:
            raise ValueError(
                f"likelihood 'discretized_logistic' needs the data range, but output_activation is "
                f"{output_activation!r}: use 'sigmoid' ([0, 1]) or 'tanh' ([-1, 1])"
            )
        super().__init__(output_activation, std * math.sqrt(3) / math.pi, learned)

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        low, high = DATA_RANGES[self.output_activation]
        return discretized_logistic_log_prob(x, params, self.log_scale, low, high)

    def unnormalized_on(self, x: Tensor) -> str | None:
        low, high = DATA_RANGES[self.output_activation]
        levels = (x - low) * ((NUM_LEVELS - 1) / (high - low))  # 0 .. 255 on 8-bit data
        off_grid = (levels - levels.round()).abs() > 1e-3
        if bool(off_grid.any()) or bool(((x < low) | (x > high)).any()):
            return (
                f"the data are not on the {NUM_LEVELS} levels of 8-bit images in [{low:g}, {high:g}], so the "
                "discretised logistic's masses are not their probabilities"
            )
        return None


def build_likelihood(
    name: str,
    output_activation: str,
    reduction: str = "mean",
    scale: str = "learned",
    std: float = 0.1,
) -> Likelihood:
    """The likelihood called ``name``; ``reduction`` is for ``"mse"``, ``scale``/``std`` for the scaled ones."""
    if name not in LIKELIHOODS:
        raise ValueError(f"likelihood '{name}' is not one of {LIKELIHOODS}")
    if scale not in SCALES:
        raise ValueError(f"likelihood_scale '{scale}' is not one of {SCALES}")
    if name == "mse":
        return SquaredError(output_activation, reduction)
    if name in ("bernoulli", "continuous_bernoulli"):
        return (Bernoulli if name == "bernoulli" else ContinuousBernoulli)(output_activation)
    scaled = {"gaussian": Gaussian, "laplace": Laplace, "discretized_logistic": DiscretizedLogistic}
    return scaled[name](output_activation, std, learned=scale == "learned")

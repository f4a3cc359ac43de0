"""The MAF, IAF, VampPrior and hyperspherical-uniform samplers (evaluation/samplers/flows.py,
vamp.py, hypersphere.py).

The flows are checked on a known 2-D density (two Gaussian blobs): the fitted density integrates
to 1, its log_prob is the change of variables of the autograd Jacobian, samples have the data's
moments; the MADE blocks are autoregressive and the two directions invert each other. The model
samplers are checked against the distributions they claim (a pseudo-input's posterior, the
uniform on S^{D-1}). Each new sampler also runs once through ``vaezoo sample --sampler``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_eval_cli import REPO, TINY
from torch.autograd.functional import jacobian

from vaezoo.cli import main
from vaezoo.evaluation.samplers import (
    IAF_MAX_DIMS,
    SAMPLERS,
    HypersphereUniformSampler,
    IAFSampler,
    MAFSampler,
    SamplerNotApplicableError,
    SamplerNotFittedError,
    VampSampler,
    fit_sampler,
    load_sampler,
)
from vaezoo.evaluation.samplers.flows import AffineAutoregressiveFlow
from vaezoo.models.s_vae import SVAE
from vaezoo.models.vamp_vae import VampVAE
from vaezoo.models.vanilla_vae import VanillaVAE

FLOWS = [MAFSampler, IAFSampler]
QUICK = {"num_blocks": 4, "width": 32, "hidden_layers": 2, "steps": 300, "batch_size": 256, "lr": 1e-2}


def two_blobs(count: int = 2000, seed: int = 0) -> torch.Tensor:
    """Equal blobs N((-2, 1), diag(0.5^2, 0.3^2)) and N((2, -1), rotated 0.6 / 0.3): (count, 2)."""
    generator = torch.Generator().manual_seed(seed)
    eps = torch.randn(count, 2, generator=generator)
    first = eps[: count // 2] * torch.tensor([0.5, 0.3]) + torch.tensor([-2.0, 1.0])
    rotation = torch.tensor([[0.6, 0.3], [-0.3, 0.6]])  # a scaled rotation: correlated coordinates
    second = eps[count // 2 :] @ rotation.T + torch.tensor([2.0, -1.0])
    return torch.cat([first, second])


@pytest.fixture(scope="module")
def fitted() -> dict[str, MAFSampler]:
    data = two_blobs()
    return {cls.name: cls(**QUICK).fit(data) for cls in FLOWS}


@pytest.mark.parametrize("name", ["maf", "iaf"])
def test_flow_density_on_two_blobs_integrates_to_one_and_beats_a_gaussian(fitted, name):
    sampler, data = fitted[name], two_blobs()
    axis = torch.linspace(-7, 7, 141)  # a 0.1 grid over +-5 standard deviations of the data
    grid = torch.cartesian_prod(axis, axis)
    mass = sampler.log_prob(grid).exp().sum().item() * 0.1**2
    assert mass == pytest.approx(1.0, abs=0.04)
    gaussian = torch.distributions.MultivariateNormal(data.mean(0), torch.cov(data.T))
    held_out = two_blobs(seed=1)
    assert sampler.log_prob(held_out).mean() > gaussian.log_prob(held_out).mean() + 0.5  # bimodal


@pytest.mark.parametrize("name", ["maf", "iaf"])
def test_flow_samples_reproduce_the_data_moments(fitted, name):
    data = two_blobs()
    samples = fitted[name].sample(4000, seed=0)
    assert samples.shape == (4000, 2)
    torch.testing.assert_close(samples.mean(0), data.mean(0), atol=0.1, rtol=0)
    torch.testing.assert_close(torch.cov(samples.T), torch.cov(data.T), atol=0.3, rtol=0)


@pytest.mark.parametrize("name", ["maf", "iaf"])
def test_log_prob_is_the_change_of_variables_of_the_autograd_jacobian(fitted, name):
    sampler = fitted[name]

    def to_noise(x: torch.Tensor) -> torch.Tensor:
        return sampler.flow.to_noise((x - sampler.shift) / sampler.scale)[0]

    normal = torch.distributions.Normal(0.0, 1.0)
    for x in two_blobs(5, seed=2):
        log_det = torch.linalg.slogdet(jacobian(to_noise, x)).logabsdet
        expected = normal.log_prob(to_noise(x)).sum() + log_det
        assert sampler.log_prob(x[None]).item() == pytest.approx(expected.item(), abs=1e-4)


def randomised_flow(reads_data: bool, dim: int = 7, width: int = 3) -> AffineAutoregressiveFlow:
    """A flow in float64 with every parameter from N(0, 0.5^2); MADEs narrower than D - 1."""
    torch.manual_seed(dim)
    flow = AffineAutoregressiveFlow(dim, 2, [width, width], reads_data).double()
    with torch.no_grad():
        for param in flow.parameters():
            param.normal_(0.0, 0.5)
    return flow


@pytest.mark.parametrize("reads_data", [True, False], ids=["maf", "iaf"])
def test_flow_blocks_are_autoregressive_and_the_two_directions_invert_each_other(reads_data):
    flow, dim = randomised_flow(reads_data), 7
    x = torch.randn(dim, dtype=torch.float64)
    for made in flow.mades:
        for output in range(2):
            matrix = jacobian(lambda v, k=output, made=made: made(v)[k], x)  # d out_i / d x_j
            assert torch.equal(torch.tril(matrix, diagonal=-1), matrix)  # only inputs before i
            assert matrix[-1, 3:].abs().sum() > 0  # spread degrees: the last output sees past input 3
    first_block = AffineAutoregressiveFlow(dim, 1, [3, 3], reads_data).double()
    first_block.load_state_dict(flow.state_dict(), strict=False)
    matrix = jacobian(lambda v: first_block.to_noise(v)[0], x)
    assert torch.equal(torch.tril(matrix), matrix)  # one step: a triangular Jacobian
    batch = torch.randn(20, dim, dtype=torch.float64)
    u, log_det = flow.to_noise(batch)
    torch.testing.assert_close(flow.to_data(u), batch)  # all D passes of a sequential direction
    with torch.no_grad():  # stopping at the fixed point gives the same
        torch.testing.assert_close(flow.to_data(u), batch)
        torch.testing.assert_close(flow.to_noise(batch)[1], log_det)
    expected = torch.linalg.slogdet(jacobian(lambda v: flow.to_noise(v)[0], batch[0])).logabsdet
    assert log_det[0].item() == pytest.approx(expected.item(), abs=1e-9)


@pytest.mark.parametrize("cls", FLOWS)
def test_save_load_round_trip_gives_identical_samples(tmp_path, cls):
    codes = torch.randn(64, 2, 2, 2)  # maps, as VQ-VAE's: fitted flat, sampled in their shape
    sampler = cls(width=8, hidden_layers=1, steps=20).fit(codes)
    loaded = load_sampler(sampler.save(tmp_path / f"{cls.name}.safetensors"))
    assert isinstance(loaded, cls) and loaded.config() == sampler.config()
    torch.testing.assert_close(loaded.sample(6, seed=3), sampler.sample(6, seed=3), rtol=0, atol=0)
    assert loaded.sample(6, seed=3).shape == (6, 2, 2, 2)
    torch.testing.assert_close(loaded.log_prob(codes), sampler.log_prob(codes), rtol=0, atol=0)


@pytest.mark.parametrize("cls", FLOWS)
def test_flow_samplers_refuse_bad_input_clearly(cls):
    with pytest.raises(SamplerNotFittedError):
        cls().sample(3)
    with pytest.raises(SamplerNotFittedError):
        cls().log_prob(torch.zeros(2, 3))
    codes = torch.randn(20, 3)
    codes[4, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        cls(steps=1).fit(codes)
    with pytest.raises(ValueError, match="N >= 2"):
        cls(steps=1).fit(torch.randn(1, 3))
    with pytest.raises(ValueError, match="must be positive"):
        cls(width=0)


def test_iaf_refuses_codes_wider_than_its_limit_and_names_maf():
    with pytest.raises(SamplerNotApplicableError, match=f"at most {IAF_MAX_DIMS} dimensions.*use 'maf'"):
        IAFSampler(steps=1).fit(torch.randn(4, IAF_MAX_DIMS + 1))


def test_a_fit_says_what_it_builds_shows_progress_and_leaves_the_global_rng_alone(capsys):
    codes, said = torch.randn(10, 3, 2, 2), []
    state = torch.random.get_rng_state()
    sampler = fit_sampler(
        "iaf", None, codes, log=said.append, width=4, hidden_layers=1, steps=2, progress=True
    )
    sampler.sample(2, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert said == [
        "fitting the iaf sampler (2 MADE blocks of 1 x 4 units, 2 steps, 12 passes per density) to 10 "
        "latents of dimension 12 (maps of 3x2x2); this can take a while"
    ]
    assert "iaf sampler" in capsys.readouterr().out  # the progress bar
    assert MAFSampler().describe(16) == "2 MADE blocks of 3 x 128 units, 2000 steps"


# -- the model samplers: VampPrior and the uniform on the hypersphere ------------------------------


def test_vamp_sampler_with_one_pseudo_input_follows_its_posterior():
    torch.manual_seed(0)
    model = VampVAE(1, 3, [8, 16], num_components=1, image_size=16)
    model.train()  # the sampler encodes in eval mode and restores the mode
    with torch.no_grad():
        mu, log_var = model.eval().encode(model.prior.pseudo_inputs())[:2]  # (1, 3) each
    model.train()
    samples = VampSampler(model).sample(20_000, seed=0)
    assert model.training and samples.shape == (20_000, 3)
    standard_error = log_var[0].exp().sqrt() / math.sqrt(20_000)  # (3,)
    assert ((samples.mean(0) - mu[0]).abs() < 5 * standard_error).all()
    torch.testing.assert_close(samples.var(0), log_var[0].exp(), rtol=0.05, atol=0)
    torch.testing.assert_close(VampSampler(model).sample(5, seed=1), VampSampler(model).sample(5, seed=1))


def test_vamp_sampler_rejects_a_model_without_a_vampprior():
    with pytest.raises(SamplerNotApplicableError, match="VanillaVAE has no VampPrior"):
        VampSampler(VanillaVAE(1, 3, [8, 16], image_size=16))


def test_hypersphere_sampler_is_uniform_on_the_unit_sphere():
    dim = 5
    model = SVAE(1, dim, [8, 16], image_size=16)
    samples = HypersphereUniformSampler(model).sample(40_000, seed=0)  # (N, D)
    torch.testing.assert_close(samples.norm(dim=1), torch.ones(40_000), rtol=0, atol=1e-6)
    torch.testing.assert_close(samples.mean(0), torch.zeros(dim), atol=0.01, rtol=0)
    torch.testing.assert_close(torch.cov(samples.T), torch.eye(dim) / dim, atol=0.01, rtol=0)
    again = HypersphereUniformSampler(model)
    torch.testing.assert_close(again.sample(4, seed=2), HypersphereUniformSampler(model).sample(4, seed=2))


def test_hypersphere_sampler_rejects_a_euclidean_model():
    with pytest.raises(SamplerNotApplicableError, match="euclidean space, not on a hypersphere"):
        HypersphereUniformSampler(VanillaVAE(1, 3, [8, 16], image_size=16))


# -- vaezoo sample --sampler NAME on tiny trained runs ---------------------------------------------


def quick(cls: type[MAFSampler]) -> type[MAFSampler]:
    """``cls`` with a small default budget, as the CLI builds samplers with their defaults."""

    class Quick(cls):  # type: ignore[valid-type, misc]
        def __init__(self, **kwargs):
            super().__init__(**{"width": 16, "hidden_layers": 1, "steps": 30, **kwargs})

    return Quick


def sample_picture(run, tmp_path, sampler: str) -> np.ndarray:
    out = tmp_path / f"{sampler}.png"
    args = ["sample", str(run), "-n", "16", "-o", str(out), "--sampler", sampler, "--fit-examples", "200"]
    assert main(args) == 0
    return np.asarray(Image.open(out))


def trained_run(tmp_path_factory, config: str, *overrides: str) -> Path:
    tmp = tmp_path_factory.mktemp(config.removesuffix(".yaml"))
    args = ["train", "-c", str(REPO / "configs" / config), *TINY, *overrides]
    assert main([*args, "--logging.save_dir", str(tmp / "runs")]) == 0
    (run,) = sorted((tmp / "runs").glob("*/version_*"))
    return run


@pytest.fixture(scope="module")
def vamp_run(tmp_path_factory) -> Path:
    """A few steps of a VampVAE (4 pseudo-inputs) on 32x32 dSprites."""
    return trained_run(tmp_path_factory, "vampvae.yaml", "--model.num_components", "4")


@pytest.fixture(scope="module")
def svae_run(tmp_path_factory) -> Path:
    return trained_run(tmp_path_factory, "svae.yaml")


@pytest.mark.slow
@pytest.mark.parametrize("cls", FLOWS)
def test_sample_with_a_flow_sampler(vamp_run, tmp_path, monkeypatch, cls):
    monkeypatch.setitem(SAMPLERS, cls.name, quick(cls))
    assert sample_picture(vamp_run, tmp_path, cls.name).std() > 0


@pytest.mark.slow
def test_sample_a_vampvae_with_the_vamp_sampler(vamp_run, tmp_path):
    assert sample_picture(vamp_run, tmp_path, "vamp").std() > 0


@pytest.mark.slow
def test_sample_an_svae_with_the_hypersphere_sampler_and_refuse_the_others(
    svae_run, vamp_run, tmp_path, capsys
):
    assert sample_picture(svae_run, tmp_path, "hypersphere").std() > 0
    for run, sampler, why in [
        (svae_run, "vamp", "has no VampPrior"),
        (vamp_run, "hypersphere", "not on a hypersphere"),
    ]:
        args = ["sample", str(run), "-n", "4", "-o", str(tmp_path / "no.png"), "--sampler", sampler]
        assert main(args) == 2
        assert why in capsys.readouterr().err


def test_every_new_sampler_is_registered_with_a_summary():
    for name in ("maf", "iaf", "vamp", "hypersphere"):
        assert SAMPLERS[name].name == name and SAMPLERS[name].summary

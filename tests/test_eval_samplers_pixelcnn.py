"""The gated PixelCNN prior over VQ codes: causal masks without a blind spot, a fit to a known code
distribution, codes <-> indices, save/load, models without a codebook, and `vaezoo sample`."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_eval_cli import TINY
from test_eval_pictures import LinearVAE

from vaezoo.cli import main
from vaezoo.evaluation.samplers import (
    SAMPLERS,
    PixelCNNSampler,
    SamplerNotApplicableError,
    fit_sampler,
    load_sampler,
    sample_images,
)
from vaezoo.models.vq_vae import VQVAE
from vaezoo.nn.pixelcnn import GatedPixelCNN

REPO = Path(__file__).resolve().parents[1]
K = 4  # codes of the constructed distributions
# two layers of kernel 3 reach two columns right in the rows above: code (i - 1, j + 2) of up_right_lines
TINY_NET = {"channels": 16, "num_layers": 2, "kernel_size": 3}


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def vq() -> VQVAE:
    """A VQVAE with K = 4 distinct codebook rows (its initial U(-1/K, 1/K) codebook)."""
    torch.manual_seed(0)
    return VQVAE(1, 3, K, hidden_dims=[8, 16], image_size=16).eval()


def dependencies(net: GatedPixelCNN, height: int, width: int) -> torch.Tensor:
    """(h*w, h*w) bool: [q, p] = the logits at raster position p change when the code at q does."""
    net = net.double()
    base = torch.randint(net.num_codes, (1, height, width))
    batch = base.repeat(height * width + 1, 1, 1)  # row 0 as is, row q + 1 with position q changed
    flat = batch.view(len(batch), -1)
    flat[1:].diagonal().add_(1).remainder_(net.num_codes)
    logits = net(batch).flatten(2)  # (h*w + 1, K, h*w)
    return (logits[1:] - logits[:1]).abs().amax(dim=1) > 1e-9


@pytest.mark.parametrize("kernel_size", [3, 5])
def test_masks_are_causal_and_leave_no_blind_spot(kernel_size):
    """Position p depends on exactly the positions before it in raster order: never on itself or a
    later one (mask A, the shifted vertical stack), and on every earlier one within reach,
    including the up-right ones the original PixelCNN's blind spot hides."""
    height, width = 4, 5
    net = GatedPixelCNN(K, channels=8, num_layers=4, kernel_size=kernel_size)
    depends = dependencies(net, height, width)
    earlier = torch.ones(height * width, height * width, dtype=torch.bool).triu(diagonal=1)  # q < p
    assert torch.equal(depends, earlier)
    # the first position's logits are the same for any input: a learnt marginal
    logits = net(torch.randint(K, (16, height, width)))[:, :, 0, 0]
    torch.testing.assert_close(logits, logits[:1].expand_as(logits), rtol=0.0, atol=1e-12)


def test_receptive_field_of_one_layer_sees_the_row_above_to_the_right():
    """One layer of kernel 3 at (2, 2) of a 4 x 5 map: the two rows above from column 1 to 3 (the
    vertical stack's 2 x 3 window, shifted down) and the two codes to its left (mask A)."""
    depends = dependencies(GatedPixelCNN(K, channels=8, num_layers=1, kernel_size=3), 4, 5)
    seen = depends[:, 2 * 5 + 2].view(4, 5)
    expected = torch.zeros(4, 5, dtype=torch.bool)
    expected[0:2, 1:4] = True
    expected[2, 0:2] = True
    assert torch.equal(seen, expected)


def up_right_lines(count: int, height: int = 4, width: int = 6, seed: int = 0) -> torch.Tensor:
    """Index maps (N, h, w) constant along the lines 2i + j = const, each line's code uniform over
    K: code (i, j) equals code (i - 1, j + 2), up and two to the right, and no other earlier one."""
    lines = torch.randint(K, (count, 2 * height + width), generator=torch.Generator().manual_seed(seed))
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return lines[:, 2 * rows + cols]  # (N, h, w)


def test_fit_learns_a_known_code_distribution_and_samples_follow_it(vq):
    """On up-right lines the determined codes (i >= 1, j <= w - 3) cost ~0 bits, the others log2 K;
    the codes reach the sampler as codebook rows and are recovered as indices exactly."""
    indices, held_out = up_right_lines(2048), up_right_lines(256, seed=1)
    codes = vq.latents_from_codes(indices).detach()  # (N, D, h, w) as model.embed gives
    state = torch.random.get_rng_state()
    sampler = PixelCNNSampler(vq, **TINY_NET, steps=150, batch_size=32, lr=1e-2).fit(codes)
    assert torch.equal(torch.random.get_rng_state(), state)  # trained in a forked RNG
    assert sampler.code_shape == (3, 4, 6)
    net = sampler.net
    assert net is not None
    with torch.no_grad():
        nll = net.nll(held_out) / math.log(2)  # (N, h, w) bits
    determined = torch.zeros(4, 6, dtype=torch.bool)
    determined[1:, :4] = True
    assert nll[:, determined].mean() < 0.05
    assert abs(nll[:, ~determined].mean() - math.log2(K)) < 0.05
    expected_bits = (~determined).float().mean() * math.log2(K)
    assert sampler.bits_per_code == pytest.approx(float(expected_bits), abs=0.1)
    assert "bits per code (uniform: 2.000)" in sampler.describe()
    drawn = sampler.sample_indices(200, seed=1)  # (200, h, w)
    follows = drawn[:, 1:, :4] == drawn[:, :-1, 2:]  # code (i, j) == code (i - 1, j + 2)
    assert follows.float().mean() > 0.97
    sampler.temperature = 0.1  # sharper: the determined codes always follow
    cold = sampler.sample_indices(50, seed=1)
    assert torch.equal(cold[:, 1:, :4], cold[:, :-1, 2:])
    samples = sampler.sample(8, seed=1)  # codebook rows, what model.decode takes
    assert torch.equal(samples, vq.latents_from_codes(sampler.sample_indices(8, seed=1)).detach())


def test_save_load_gives_identical_samples_and_checks_the_codebook(vq, tmp_path):
    codes = vq.latents_from_codes(up_right_lines(64)).detach()
    sampler = fit_sampler("pixelcnn", vq, codes, channels=8, num_layers=2, steps=5, temperature=0.7)
    path = sampler.save(tmp_path / "pixelcnn.safetensors")
    loaded = load_sampler(path, vq)
    assert isinstance(loaded, PixelCNNSampler) and loaded.temperature == 0.7
    assert torch.equal(loaded.sample(6, seed=3), sampler.sample(6, seed=3))
    assert loaded.bits_per_code == pytest.approx(sampler.bits_per_code)
    with pytest.raises(ValueError, match="needs the model"):
        load_sampler(path)
    other = VQVAE(1, 3, K, hidden_dims=[8, 16], image_size=16)  # another (random) codebook
    with pytest.raises(ValueError, match="fitted for another codebook"):
        load_sampler(path, other)


def test_models_without_a_codebook_and_codes_that_are_not_rows_are_rejected(vq):
    with pytest.raises(SamplerNotApplicableError, match="LinearVAE has no codebook"):
        fit_sampler("pixelcnn", LinearVAE(), torch.randn(8, 4))
    codes = vq.latents_from_codes(up_right_lines(8)).detach()
    with pytest.raises(ValueError, match="not codebook rows"):
        PixelCNNSampler(vq, steps=1).fit(codes + 0.05)
    with pytest.raises(ValueError, match=r"quantised maps \(N, 3, h, w\)"):
        PixelCNNSampler(vq, steps=1).fit(codes.flatten(1))
    assert SAMPLERS["pixelcnn"] is PixelCNNSampler


class TinyPixelCNN(PixelCNNSampler):
    """The 'pixelcnn' sampler with defaults small enough for a test run of the CLI."""

    def __init__(self, model, **kwargs):
        super().__init__(model, **{"channels": 8, "num_layers": 2, "steps": 10, **kwargs})


@pytest.mark.slow
def test_vaezoo_sample_with_the_pixelcnn_sampler(tmp_path, monkeypatch, capsys):
    args = ["train", "-c", str(REPO / "configs/vq_vae.yaml"), *TINY, "--model.hidden_dims", "[8, 16]"]
    args += ["--model.num_embeddings", "8", "--data.subset", "100", "--train.limit_train_batches", "2"]
    assert main([*args, "--logging.num_images", "4", "--logging.save_dir", str(tmp_path / "runs")]) == 0
    (run,) = sorted((tmp_path / "runs").glob("*/version_*"))
    monkeypatch.setitem(SAMPLERS, "pixelcnn", TinyPixelCNN)
    out = tmp_path / "samples.png"
    args = ["sample", str(run), "-n", "4", "-o", str(out), "--sampler", "pixelcnn", "--fit-examples", "32"]
    assert main(args) == 0
    said = capsys.readouterr().out
    assert "fitting the pixelcnn sampler (a gated PixelCNN of 2 layers x 8 channels over 8 codes" in said
    picture = np.asarray(Image.open(out))
    assert picture.shape[:2] == (2 * 34 + 2, 2 * 34 + 2) and np.isfinite(picture).all()  # 2 x 2 grid
    monkeypatch.setattr(VQVAE, "codebook_size", None)  # as a model without a codebook: a user error
    assert main([*args[:5], str(tmp_path / "none.png"), *args[6:]]) == 2
    assert (
        "cannot sample from VQVAE: the 'pixelcnn' sampler models codebook indices" in capsys.readouterr().err
    )


def test_decoded_samples_are_finite_images(vq):
    codes = vq.latents_from_codes(up_right_lines(16)).detach()
    sampler = PixelCNNSampler(vq, channels=8, num_layers=2, steps=2).fit(codes)
    images = sample_images(vq, sampler, 3, seed=0)
    assert images.shape == (3, 1, 16, 24) and torch.isfinite(images).all()

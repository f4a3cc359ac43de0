"""What is special about the discrete-latent and perceptual-loss models: Gumbel-softmax latents and their
temperature (CategoricalVAE, JointVAE), the vector quantiser (VQVAE) and the frozen VGG features (DFCVAE).
Each check compares against an independent computation on a constructed case."""

from __future__ import annotations

import math
import re
import warnings

import pytest
import torch
from safetensors.torch import save_file

from vaezoo.models.cat_vae import CategoricalOutput, CategoricalVAE
from vaezoo.models.dfc_vae import DFCVAE
from vaezoo.models.joint_vae import JointOutput, JointVAE
from vaezoo.models.vq_vae import VQVAE
from vaezoo.nn.gumbel import RelaxedCategorical, gumbel_softmax, kl_to_uniform
from vaezoo.nn.quantizers import VectorQuantizer, codebook_perplexity, codebook_usage
from vaezoo.nn.vgg import VGG19BNFeatures, imagenet_normalize

SMALL = {"hidden_dims": [8, 16], "image_size": 32}


def images(n: int = 4, channels: int = 1) -> torch.Tensor:
    return torch.rand(n, channels, 32, 32, generator=torch.Generator().manual_seed(0))


# -- Gumbel-softmax ---------------------------------------------------------------------------------
def test_gumbel_softmax_samples_lie_on_the_simplex():
    torch.manual_seed(0)
    y = gumbel_softmax(torch.randn(500, 7), temperature=0.7)
    assert (y >= 0).all()
    torch.testing.assert_close(y.sum(-1), torch.ones(500))


def test_gumbel_softmax_becomes_one_hot_as_the_temperature_falls():
    torch.manual_seed(0)
    logits = torch.randn(2000, 5)
    largest = [gumbel_softmax(logits, tau).max(-1).values.mean().item() for tau in (5.0, 1.0, 0.1, 0.01)]
    assert largest == sorted(largest)  # ever closer to a vertex of the simplex
    assert largest[-1] > 0.99  # a few near-ties of the perturbed logits stay split at tau = 0.01


def test_gumbel_softmax_class_frequencies_follow_the_logits():
    torch.manual_seed(0)
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    draws = gumbel_softmax(probs.log().expand(40_000, 4), temperature=0.5).argmax(-1)
    frequencies = torch.bincount(draws, minlength=4).float() / draws.numel()
    torch.testing.assert_close(frequencies, probs, atol=0.01, rtol=0)


def test_kl_to_uniform_is_zero_for_uniform_and_log_q_for_one_hot():
    assert kl_to_uniform(torch.zeros(3, 6)).abs().max() < 1e-6
    one_hot_logits = torch.full((2, 6), -1e4).index_fill_(1, torch.tensor([2]), 0.0)
    torch.testing.assert_close(kl_to_uniform(one_hot_logits), torch.full((2,), math.log(6)))
    q = torch.tensor([0.7, 0.2, 0.1])
    torch.testing.assert_close(kl_to_uniform(q.log()), (q * (q * 3).log()).sum())


# -- the annealed temperature -----------------------------------------------------------------------
def expected_temperature(step: int, initial=1.0, rate=1e-2, minimum=0.3, interval=10) -> float:
    return max(initial * math.exp(-rate * (step // interval) * interval), minimum)


def categorical_vae(**kwargs) -> CategoricalVAE:
    schedule = {"temperature": 1.0, "min_temperature": 0.3, "anneal_rate": 1e-2, "anneal_interval": 10}
    return CategoricalVAE(1, 3, 4, **SMALL, **{**schedule, **kwargs})


def test_temperature_decreases_with_global_step_to_the_minimum():
    model = categorical_vae()
    x = images()
    seen = []
    for step in (0, 9, 10, 55, 120, 10_000):
        losses = model.loss_function(*model(x, global_step=step), global_step=step)
        assert losses["Temperature"].item() == pytest.approx(expected_temperature(step))
        seen.append(losses["Temperature"].item())
    assert seen == sorted(seen, reverse=True) and seen[0] == 1.0 and seen[-1] == pytest.approx(0.3)


def test_temperature_is_restored_from_the_checkpointed_buffer():
    model = categorical_vae()
    model(images(), global_step=55)  # training mode: the step is recorded
    clone = categorical_vae()
    assert clone.categorical.temperature() == 1.0  # a fresh model has seen no training step
    clone.load_state_dict(model.state_dict())
    clone.eval()
    assert clone.categorical.temperature() == pytest.approx(expected_temperature(55))
    clone(images(), global_step=3)  # an eval-mode call does not overwrite the training step
    assert clone.loss_function(*clone(images()))["Temperature"].item() == pytest.approx(
        expected_temperature(55)
    )


def test_temperature_minimum_above_the_start_is_an_error():
    with pytest.raises(ValueError, match="min_temperature"):
        categorical_vae(temperature=0.5, min_temperature=0.6)


def test_categorical_loss_is_recon_plus_weighted_kl_to_uniform():
    model = categorical_vae(recon_reduction="sum")
    x = images(2)
    recons = torch.full_like(x, 0.5)
    logits = torch.zeros(2, 3 * 4)  # three 4-way variables side by side
    logits[0, 1] = 1e4  # one variable of the first image is certain: KL log 4, the rest 0
    losses = model.loss_function(*CategoricalOutput(recons, x, logits, logits.softmax(-1)), M_N=0.5)
    recon = ((recons - x) ** 2).sum(dim=(1, 2, 3)).mean()
    kld = math.log(4) / 2
    torch.testing.assert_close(losses["KLD"], torch.tensor(kld))
    torch.testing.assert_close(losses["loss"], recon + 0.5 * kld)


# -- JointVAE capacities ----------------------------------------------------------------------------
def test_joint_capacities_follow_the_schedule_and_the_discrete_one_is_capped():
    model = JointVAE(
        1,
        2,
        [3, 4],
        **SMALL,
        gamma=2.0,
        cont_max_capacity=5.0,
        cont_capacity_steps=100,
        disc_max_capacity=10.0,
        disc_capacity_steps=100,
        recon_reduction="sum",
    )
    x = images(2)
    mu, log_var = torch.tensor([[1.0, 0.0], [0.0, -1.0]]), torch.zeros(2, 2)
    logits = torch.zeros(2, 7)
    logits[:, 0] = 1e4  # the 3-way variable one-hot (log 3), the 4-way uniform (0)
    output = JointOutput(torch.zeros_like(x), x, mu, log_var, logits, torch.zeros(2, 9))
    kl_cont = (0.5 * (mu**2 + log_var.exp() - 1 - log_var).sum(1)).mean()
    kl_disc = math.log(3)
    for step in (0, 30, 100, 400):
        losses = model.loss_function(*output, M_N=1.0, global_step=step)
        c_cont, c_disc = 5.0 * min(1, step / 100), min(10.0 * min(1, step / 100), math.log(3) + math.log(4))
        assert losses["Capacity_Continuous"].item() == pytest.approx(c_cont)
        assert losses["Capacity_Discrete"].item() == pytest.approx(c_disc)
        expected = (x**2).sum(dim=(1, 2, 3)).mean() + 2.0 * (abs(kl_cont - c_cont) + abs(kl_disc - c_disc))
        torch.testing.assert_close(losses["loss"], expected)
    torch.testing.assert_close(losses["KLD_Discrete"], torch.tensor(kl_disc))
    assert model.sample(5).shape == (5, 1, 32, 32)


# -- the vector quantiser ---------------------------------------------------------------------------
def test_quantised_vectors_are_the_nearest_codebook_rows():
    torch.manual_seed(0)
    quantizer = VectorQuantizer(16, 3)
    quantizer.codebook.data = torch.randn(16, 3)
    z_e = torch.randn(2, 3, 4, 5)
    out = quantizer(z_e)
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, 3)
    nearest = torch.cdist(flat, quantizer.codebook).argmin(1)
    assert torch.equal(out.codes.flatten(), nearest)
    torch.testing.assert_close(
        out.straight_through.permute(0, 2, 3, 1).reshape(-1, 3), quantizer.codebook[nearest]
    )


def test_straight_through_gradient_reaches_the_encoder_not_the_codebook():
    model = VQVAE(1, 4, 8, **SMALL)
    output = model(images())
    ((output.recons - output.input) ** 2).sum().backward()  # the reconstruction term alone
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())
    assert model.quantizer.codebook.grad is None  # the codebook learns only from the codebook term


def test_perplexity_is_k_for_uniform_use_and_one_for_a_single_code():
    uniform = torch.arange(8).repeat(3)
    assert codebook_perplexity(uniform, 8).item() == pytest.approx(8.0)
    assert codebook_perplexity(torch.zeros(24, dtype=torch.long), 8).item() == pytest.approx(1.0)
    assert (
        codebook_usage(uniform, 8).item() == 1.0
        and codebook_usage(torch.zeros(5, dtype=torch.long), 8) == 1 / 8
    )


def test_ema_moves_the_assigned_code_towards_its_encoder_outputs_in_training_only():
    quantizer = VectorQuantizer(2, 2, ema=True, decay=0.9, epsilon=1e-5)
    start = torch.tensor([[0.0, 0.0], [10.0, 10.0]])
    quantizer.codebook.copy_(start)
    quantizer.ema_embedding_sum.copy_(start)
    z_e = torch.tensor([[1.0, 2.0], [3.0, 2.0]]).t().reshape(1, 2, 1, 2)  # two vectors, both nearest code 0
    quantizer.eval()
    quantizer(z_e)
    assert torch.equal(quantizer.codebook, start)  # no update outside training
    quantizer.train()
    quantizer(z_e)
    sizes = torch.tensor([0.9 * 1 + 0.1 * 2, 0.9 * 1])  # N_k <- decay N_k + (1 - decay) n_k, from 1
    sums = torch.stack([0.1 * torch.tensor([4.0, 4.0]), 0.9 * start[1]])  # m_k likewise, from e_k
    smoothed = (sizes + 1e-5) / (sizes.sum() + 2e-5) * sizes.sum()
    torch.testing.assert_close(quantizer.codebook, sums / smoothed[:, None])
    assert (
        quantizer.codebook[0].sub(torch.tensor([2.0, 2.0])).norm()
        < start[0].sub(torch.tensor([2.0, 2.0])).norm()
    )
    assert {"codebook", "ema_cluster_size", "ema_embedding_sum"} <= set(quantizer.state_dict())


def test_data_init_takes_codes_from_the_first_training_batch_once():
    torch.manual_seed(0)
    quantizer = VectorQuantizer(6, 3, data_init=True)
    z_e = torch.randn(2, 3, 4, 4)
    quantizer.eval()(z_e)
    assert not quantizer.initialized  # evaluation does not initialise
    quantizer.train()(z_e)
    vectors = z_e.permute(0, 2, 3, 1).reshape(-1, 3)
    is_input_row = (quantizer.codebook[:, None, :] == vectors[None]).all(-1).any(1)
    assert quantizer.initialized and is_input_row.all() and len(quantizer.codebook.unique(dim=0)) == 6
    first = quantizer.codebook.detach().clone()
    quantizer(torch.randn(2, 3, 4, 4))
    assert torch.equal(quantizer.codebook, first)  # once only
    assert "initialized" in quantizer.state_dict()  # a resumed run does not repeat it


@pytest.mark.parametrize("ema", [False, True])
def test_vq_loss_is_eq3_with_the_codebook_term_left_out_under_ema(ema):
    model = VQVAE(1, 4, 8, **SMALL, beta=0.25, ema=ema, recon_reduction="sum")
    output = model(images(2))
    losses = model.loss_function(*output)
    error = ((output.z_e - output.z_q) ** 2).sum(dim=(1, 2, 3)).mean().detach()
    recon = ((output.recons - output.input) ** 2).sum(dim=(1, 2, 3)).mean().detach()
    vq = 0.25 * error + (0 if ema else error)
    torch.testing.assert_close(losses["VQ_Loss"], vq)
    torch.testing.assert_close(losses["loss"].detach(), recon + vq)


def test_vq_sample_explains_there_is_no_prior():
    with pytest.raises(NotImplementedError, match="no prior over its codes"):
        VQVAE(1, 4, 8, **SMALL).sample(2)


# -- DFCVAE's frozen VGG ----------------------------------------------------------------------------
def test_random_features_are_announced():
    with pytest.warns(UserWarning, match="RANDOM weights and the loss is not the paper's"):
        DFCVAE(1, 4, **SMALL)


def test_vgg_is_frozen_and_outside_the_state_dict_and_the_parameters():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # random features: announced, tested above
        model = DFCVAE(1, 4, **SMALL)
    vgg = model.feature_network
    vgg_ids = {id(p) for p in vgg.parameters()}
    assert vgg_ids and not vgg_ids & {id(p) for p in model.parameters()}
    assert not any(key.startswith(("feature", "features")) for key in model.state_dict())
    model.train()
    assert not vgg.training and not any(p.requires_grad for p in vgg.parameters())
    output = model(images())
    model.loss_function(*output)["loss"].backward()
    assert all(p.grad is None for p in vgg.parameters())
    assert model.encoder.layers[0][0].weight.grad.abs().sum() > 0  # the feature loss reaches the VAE


def test_vgg_keys_follow_torchvisions_vgg19_bn_layout():
    # vgg19_bn features: per conv layer (conv, bn, relu), a max-pool after each of the 5 blocks of
    # 2, 2, 4, 4, 4 convs -> convs at 0, 3 | 7, 10 | 14, 17, 20, 23 | 27, 30, 33, 36 | 40, 43, 46, 49.
    convs = [0, 3, 7, 10, 14, 17, 20, 23, 27, 30, 33, 36, 40, 43, 46, 49]
    expected = {f"features.{i}.{name}" for i in convs for name in ("weight", "bias")}
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    expected |= {f"features.{i + 1}.{name}" for i in convs for name in bn}
    assert set(VGG19BNFeatures(["relu5_4"]).state_dict()) == expected
    assert VGG19BNFeatures(["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]).taps == [2, 9, 16, 29, 42]


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_feature_weight_file_round_trip(tmp_path, suffix):
    torch.manual_seed(0)
    source = VGG19BNFeatures(["relu3_1"])
    for module in source.features:
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
    state = {**source.state_dict(), "classifier.0.weight": torch.zeros(2, 2)}  # as torchvision's full model
    path = tmp_path / f"vgg19_bn{suffix}"
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # real weights: no warning
        model = DFCVAE(3, 4, **SMALL, feature_weights=str(path))
    loaded = model.feature_network.state_dict()
    assert loaded.keys() == source.state_dict().keys()
    assert all(torch.equal(loaded[k], v) for k, v in source.state_dict().items())


def test_missing_or_wrong_weight_file_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "nowhere" / "vgg19_bn.pth"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        DFCVAE(1, 4, **SMALL, feature_weights=str(missing))
    wrong = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match=re.escape(str(wrong))):
        DFCVAE(1, 4, **SMALL, feature_weights=str(wrong))


@pytest.mark.parametrize(("value_range", "gray"), [((0.0, 1.0), 0.25), ((-1.0, 1.0), -0.5)])
def test_imagenet_normalisation_from_the_data_range(value_range, gray):
    x = torch.full((2, 1, 4, 4), gray)  # 0.25 in [0, 1] and -0.5 in [-1, 1] are both a quarter up the range
    out = imagenet_normalize(x, value_range)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    assert out.shape == (2, 3, 4, 4)
    torch.testing.assert_close(out[0, :, 0, 0], (0.25 - mean) / std)
    rgb = torch.rand(1, 3, 2, 2)
    torch.testing.assert_close(imagenet_normalize(rgb)[0, :, 0, 0], (rgb[0, :, 0, 0] - mean) / std)


def test_prior_draws_one_class_per_categorical_variable():
    latent = RelaxedCategorical(8, [3, 4, 2], 1.0, 0.5, 0.0, 1)
    draws = latent.sample_prior(6, torch.device("cpu"))  # (6, 3 + 4 + 2)
    for block in draws.split([3, 4, 2], dim=1):
        assert torch.equal(block.sum(1), torch.ones(6)) and set(block.unique().tolist()) <= {0.0, 1.0}
    assert latent.max_kl == pytest.approx(math.log(3 * 4 * 2))

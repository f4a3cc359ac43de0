"""KLAutoencoder and VQGAN: the adaptive weight, the hinge loss, the discriminator's start step,
the spatial latent, the perceptual term and the VQGAN option."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vaezoo.models.kl_autoencoder import KLAutoencoder, last_weight
from vaezoo.models.vq_vae import VQVAE
from vaezoo.models.vqgan import VQGAN
from vaezoo.nn.adversarial import PatchDiscriminator, adaptive_weight, hinge_discriminator_loss
from vaezoo.nn.vgg import VGG19BNFeatures


def small_kl(**kwargs: object) -> KLAutoencoder:
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="no perceptual"):
        return KLAutoencoder(1, 4, [8, 16], image_size=16, disc_width=8, **kwargs)  # type: ignore[arg-type]


def test_adaptive_weight_matches_a_hand_computation() -> None:
    # a one-weight "decoder" x_hat = w * a: L_rec = (w a - t)^2, L_GAN = -(w b)
    w = nn.Parameter(torch.tensor([1.5]))
    a, t, b = torch.tensor(2.0), torch.tensor(1.0), torch.tensor(0.25)
    rec = ((w * a - t) ** 2).sum()
    gan = -(w * b).sum()
    expected = abs(2 * a * (1.5 * a - t)) / (abs(b) + 1e-4)  # |dL_rec/dw| / (|dL_GAN/dw| + delta)
    got = adaptive_weight(rec, gan, w)
    torch.testing.assert_close(got, expected)
    assert not got.requires_grad
    (rec + got * gan).backward()  # the graphs were kept for the full loss
    torch.testing.assert_close(w.grad, torch.tensor([2 * a * (1.5 * a - t) - float(expected) * b]))
    rec, gan = ((w * a - t) ** 2).sum(), -(w * b).sum()  # new graphs: backward freed the old ones
    assert adaptive_weight(rec, gan, w, max_weight=3.0) == 3.0  # clamped
    with torch.no_grad():
        assert adaptive_weight(((w * a) ** 2).sum(), -(w * b).sum(), w) == 0.0  # no graph: weight 0


def test_hinge_loss_known_values() -> None:
    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([-2.0, 0.5])
    # real: relu(1 - 2) = 0, relu(1 - 0) = 1 -> 0.5; fake: relu(1 - 2) = 0, relu(1.5) -> 0.75
    torch.testing.assert_close(hinge_discriminator_loss(real, fake), torch.tensor(0.625))
    assert hinge_discriminator_loss(torch.ones(3) * 5, -torch.ones(3) * 5) == 0.0


def test_patch_discriminator_scores_patches() -> None:
    logits = PatchDiscriminator(3, width=8, num_layers=2)(torch.rand(2, 3, 32, 32))
    assert logits.shape == (2, 1, 6, 6)
    with pytest.raises(ValueError, match="num_layers"):
        PatchDiscriminator(3, num_layers=0)


def test_discriminator_starts_at_its_step() -> None:
    model = small_kl(disc_start=3)
    x = torch.rand(4, 1, 16, 16)
    out = model(x)
    before = model.loss(out, global_step=2)
    assert before["Generator_Loss"] == 0 and before["Adaptive_Weight"] == 0
    expected = before["Reconstruction_Loss"] + 1e-6 * before["KLD"]
    torch.testing.assert_close(before["loss"].detach(), expected)
    assert model.auxiliary_loss(out, global_step=2)["loss"] == 0
    after = model.loss(out, global_step=3)
    assert after["Generator_Loss"] != 0 and after["Adaptive_Weight"] > 0
    assert not torch.allclose(after["loss"], before["loss"])
    assert model.auxiliary_loss(out, global_step=3)["loss"] > 0
    decoder = model.decoder
    assert isinstance(decoder, nn.Sequential)
    assert last_weight(decoder) is decoder[-2].weight  # the transposed conv before the sigmoid


def test_spatial_latent_round_trips() -> None:
    model = small_kl()
    x = torch.rand(3, 1, 16, 16)
    mu, log_var = model.encode(x)
    assert mu.shape == log_var.shape == (3, 4, 4, 4)  # (B, Z, H/4, W/4)
    assert model.decode(mu).shape == x.shape
    assert model.sample_prior(5, torch.device("cpu")).shape == (5, 4, 4, 4)
    assert model.sample(5).shape == (5, 1, 16, 16)
    assert model.kl_per_dimension(x).shape == (3, 64)
    torch.testing.assert_close(model.kl_per_dimension(x).sum(1).mean(), model.loss(model(x))["KLD"])


def write_vgg_weights(path: str) -> None:
    torch.manual_seed(1)
    network = VGG19BNFeatures(["relu1_2", "relu2_2", "relu3_4"])
    torch.save(network.state_dict(), path)


def test_perceptual_term_only_with_a_weights_file(tmp_path: object) -> None:
    x = torch.rand(2, 1, 16, 16)
    without = small_kl()
    assert without.perceptual is None and without.loss(without(x))["Perceptual_Loss"] == 0
    path = f"{tmp_path}/vgg.pth"
    write_vgg_weights(path)
    model = KLAutoencoder(1, 4, [8, 16], image_size=16, perceptual_weights=path, adversarial=False)
    losses = model.loss(model(x))
    assert losses["Perceptual_Loss"] > 0
    torch.testing.assert_close(
        losses["loss"].detach(),
        losses["Reconstruction_Loss"] + losses["Perceptual_Loss"] + 1e-6 * losses["KLD"],
    )
    with pytest.raises(FileNotFoundError, match="not found"):
        KLAutoencoder(1, 4, [8, 16], image_size=16, perceptual_weights=f"{tmp_path}/missing.pth")


def test_loss_goes_down_with_the_discriminator_on() -> None:
    model = small_kl(disc_start=0)
    main = torch.optim.Adam([p for n, p in model.named_parameters() if not n.startswith("adversarial")], 1e-2)
    disc = torch.optim.Adam(model.auxiliary_parameters(), 1e-3)
    x = torch.rand(8, 1, 16, 16)
    recon = []
    for step in range(25):
        out = model(x)
        losses = model.loss(out, global_step=step)
        main.zero_grad()
        losses["loss"].backward()
        main.step()
        disc.zero_grad()
        model.auxiliary_loss(out, global_step=step)["loss"].backward()
        disc.step()
        recon.append(float(losses["Reconstruction_Loss"]))
    assert recon[-1] < 0.7 * recon[0]


def test_vqgan_option_off_is_vqvae_and_on_adds_the_gan() -> None:
    torch.manual_seed(0)
    vq = VQVAE(1, 8, 16, [8, 16], image_size=16)
    with pytest.warns(UserWarning, match="no perceptual"):
        off = VQGAN(1, 8, 16, [8, 16], image_size=16, adversarial=False)
    off.load_state_dict(vq.state_dict())
    assert off.auxiliary_parameters() == []
    x = torch.rand(4, 1, 16, 16)
    out = vq(x)
    expected, got = vq.loss(out), off.loss(out, global_step=10)
    torch.testing.assert_close(got["loss"], expected["loss"])
    with pytest.raises(NotImplementedError, match="adversarial=False"):
        off.auxiliary_loss(out)
    with pytest.warns(UserWarning, match="no perceptual"):
        on = VQGAN(1, 8, 16, [8, 16], image_size=16, disc_start=5, disc_width=8)
    assert on.auxiliary_parameters()
    out = on(x)
    assert on.loss(out, global_step=4)["Generator_Loss"] == 0
    assert on.loss(out, global_step=5)["Adaptive_Weight"] > 0

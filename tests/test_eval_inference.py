"""The inference copy evaluation runs its heavy passes on (vaezoo.evaluation.inference): batch norms
folded into convolutions and channels_last weights compute what the original model computes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vaezoo.evaluation.inference import fold_batch_norms, inference_copy
from vaezoo.models import VanillaVAE

SMALL = {"hidden_dims": [8, 16], "image_size": 16}


def trained_statistics(model: nn.Module) -> nn.Module:
    """Give every batch norm non-trivial running statistics and affine parameters."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            size = module.num_features
            module.running_mean.copy_(torch.randn(size, generator=generator))
            module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
            module.weight.data.copy_(torch.randn(size, generator=generator))
            module.bias.data.copy_(torch.randn(size, generator=generator))
    return model.eval()


def test_inference_copy_encodes_decodes_and_weighs_like_the_original():
    model = trained_statistics(VanillaVAE(1, 4, likelihood="bernoulli", **SMALL)).train()
    fast = inference_copy(model)
    assert model.training and not fast.training  # the original's mode is kept
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # still there: not folded
    assert norms > 0 and sum(isinstance(m, nn.BatchNorm2d) for m in fast.modules()) == 0
    assert all(p.is_contiguous() for p in model.parameters())
    model.eval()
    x = torch.rand(6, 1, 16, 16).round()
    with torch.no_grad():
        torch.testing.assert_close(fast.embed(x), model.embed(x), rtol=1e-5, atol=1e-5)
        z = torch.randn(6, 4)
        torch.testing.assert_close(fast.decode(z), model.decode(z), rtol=1e-5, atol=1e-5)
        torch.manual_seed(0)
        slow_w = model.log_importance_weights(x, 5)
        torch.manual_seed(0)
        torch.testing.assert_close(fast.log_importance_weights(x, 5), slow_w, rtol=1e-5, atol=1e-3)


def test_fold_batch_norms_only_in_eval_mode_and_only_conv_then_norm():
    seq = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    trained_statistics(seq)
    x = torch.randn(2, 3, 8, 8)
    expected = seq(x)
    assert fold_batch_norms(seq) == 1  # the leading norm has no convolution before it
    assert isinstance(seq[0], nn.BatchNorm2d) and isinstance(seq[2], nn.Identity)
    torch.testing.assert_close(seq(x), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norms(nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1)).train())

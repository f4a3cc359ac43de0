"""The real Fashion-MNIST that Debian ships (package dataset-fashion-mnist, installed by .ci/run)."""

import numpy as np
import torch

from vaezoo.config import DataConfig
from vaezoo.data import VAEDataModule


def test_fashion_mnist_from_the_debian_package():
    module = VAEDataModule(DataConfig(name="fashion_mnist", image_size=32), batch_size=256)
    module.setup()
    assert (module.num_train, module.num_val, module.channels, module.label_dim) == (60_000, 10_000, 1, 10)
    images, labels = next(iter(module.val_dataloader()))
    assert images.shape == (256, 1, 32, 32) and labels.dtype == torch.int64
    # 28x28 digits zero-padded to 32x32: the 2-pixel border is empty, the centre is not.
    assert images[:, :, :2].abs().max() == 0 and images[:, :, :, -2:].abs().max() == 0
    # Fashion-MNIST's mean pixel is ~0.286 over 28x28, i.e. ~0.219 over the padded 32x32.
    assert 0.18 < images.mean().item() < 0.26
    counts = np.bincount(labels.numpy(), minlength=10)
    assert (counts > 0).all()  # every class appears in the first test batch

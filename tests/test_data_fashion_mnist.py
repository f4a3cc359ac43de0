"""The real Fashion-MNIST that Debian ships (package dataset-fashion-mnist, installed by `make test`).

Without the package the test skips and says how to enable it; on CI (``CI=true``) it fails instead,
so a CI image that lost the package cannot pass unnoticed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import skip_or_fail

from vaezoo.config import DataConfig
from vaezoo.data import VAEDataModule
from vaezoo.data.idx import DEFAULT_PATHS

FOLDER = Path(DEFAULT_PATHS["fashion_mnist"])


def require_fashion_mnist(folder: Path = FOLDER, env: Mapping[str, str] = os.environ) -> None:
    """Return if ``folder`` exists; else skip (or, when ``CI`` is ``true``, fail) saying how to get it."""
    if folder.is_dir():
        return
    message = (
        f"{folder} does not exist: Fashion-MNIST comes from the Debian package dataset-fashion-mnist. "
        "Enable this test with `sudo apt-get install dataset-fashion-mnist`, or run `make test`, "
        "which installs it when it can"
    )
    skip_or_fail(message, env)


def test_fashion_mnist_from_the_debian_package():
    require_fashion_mnist()
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


@pytest.mark.parametrize("ci", [None, "false", ""])
def test_missing_package_skips_with_how_to_enable(tmp_path: Path, ci: str | None):
    env = {} if ci is None else {"CI": ci}
    with pytest.raises(pytest.skip.Exception, match=r"sudo apt-get install dataset-fashion-mnist.*make test"):
        require_fashion_mnist(tmp_path / "missing", env)


@pytest.mark.parametrize("ci", ["true", "TRUE"])
def test_missing_package_fails_on_ci(tmp_path: Path, ci: str):
    with pytest.raises(pytest.fail.Exception, match=r"missing does not exist.*sudo apt-get install"):
        require_fashion_mnist(tmp_path / "missing", {"CI": ci})


def test_present_package_neither_skips_nor_fails(tmp_path: Path):
    assert require_fashion_mnist(tmp_path, {"CI": "true"}) is None

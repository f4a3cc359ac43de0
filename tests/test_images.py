"""Our own make_grid / save_image (no torchvision)."""

import numpy as np
import pytest
import torch
from PIL import Image

from vaezoo.images import interleave_rows, make_grid, save_image


def test_grid_layout_and_padding():
    images = torch.stack([torch.full((1, 4, 5), float(i) / 10) for i in range(6)])  # (6, 1, 4, 5)
    grid = make_grid(images, nrow=4, padding=2, pad_value=1.0)
    assert grid.shape == (1, 2 * (4 + 2) + 2, 4 * (5 + 2) + 2)
    assert grid[0, 2, 2].item() == pytest.approx(0.0)  # image 0 top-left
    assert grid[0, 2, 2 + 3 * 7].item() == pytest.approx(0.3)  # image 3, row 0 col 3
    assert grid[0, 2 + 6, 2 + 7].item() == pytest.approx(0.5)  # image 5, row 1 col 1
    assert grid[0, 0, 0].item() == 1.0 and grid[0, 2 + 6, 2 + 2 * 7].item() == 1.0  # padding, empty cell


def test_value_range_maps_to_unit_interval():
    images = torch.tensor([-1.0, 0.0, 1.0, 3.0]).view(4, 1, 1, 1)
    grid = make_grid(images, nrow=4, padding=0, value_range=(-1, 1))
    assert grid.flatten().tolist() == [0.0, 0.5, 1.0, 1.0]


def test_save_image_round_trip(tmp_path):
    rgb = torch.rand(4, 3, 8, 8)
    path = save_image(rgb, tmp_path / "sub" / "grid.png", nrow=2, padding=0)
    loaded = np.asarray(Image.open(path))
    assert loaded.shape == (16, 16, 3)
    expected = (rgb[1].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    assert np.array_equal(loaded[:8, 8:], expected)
    gray = save_image(torch.zeros(1, 1, 5, 7), tmp_path / "g.png", padding=0)
    assert Image.open(gray).mode == "L" and Image.open(gray).size == (7, 5)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left


def test_interleave_rows():
    originals, recons = torch.zeros(4, 1, 2, 2), torch.ones(4, 1, 2, 2)
    rows = interleave_rows(originals, recons, nrow=2)
    assert rows[:, 0, 0, 0].tolist() == [0, 0, 1, 1, 0, 0, 1, 1]


def test_a_short_last_row_keeps_each_input_above_its_reconstruction():
    # 5 images in rows of 2 (as -n 32 in rows of 5): the last input alone, a blank beside it
    originals = torch.arange(1, 6, dtype=torch.float32).view(5, 1, 1, 1)
    recons = originals + 10
    rows = interleave_rows(originals, recons, nrow=2)[:, 0, 0, 0].tolist()
    assert rows == [1, 2, 11, 12, 3, 4, 13, 14, 5, 1, 15, 1]  # the blank is the darkest input value
    assert [rows[i + 2] - rows[i] for i in range(0, 12, 4)] == [10, 10, 10]  # column by column


def test_bad_shape_is_an_error():
    with pytest.raises(ValueError, match="expects \\(B, C, H, W\\)"):
        make_grid(torch.zeros(2, 2))

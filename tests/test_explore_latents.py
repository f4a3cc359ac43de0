"""The explorer's sliders on constructed codes with known answers: order, collapse, spread, affinity."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from vaezoo.explore.latents import build_sliders, factor_affinity


def grid_factors() -> np.ndarray:
    """Every combination of a 4-valued and a 5-valued factor, 10 times: (200, 2), independent."""
    return np.array(list(itertools.product(range(4), range(5))) * 10, dtype=np.float64)


def test_sliders_follow_the_kl_and_mark_the_collapsed_ones():
    generator = torch.Generator().manual_seed(0)
    codes = torch.randn(500, 3, generator=generator) * torch.tensor([0.5, 2.0, 0.001])
    sliders = build_sliders(codes, kl=torch.tensor([0.5, 2.0, 0.001]))
    assert [s.dim for s in sliders] == [1, 0, 2]
    assert [s.rank for s in sliders] == [0, 1, 2]
    assert [s.collapsed for s in sliders] == [False, False, True]
    assert sliders[0].unit == pytest.approx(2.0, rel=0.1)  # an active latent moves by its own spread
    assert sliders[1].unit == pytest.approx(0.5, rel=0.1)
    # the collapsed one moves by a typical active spread (the median of 0.5 and 2), not by its own 0.001
    assert sliders[2].unit == pytest.approx(float(torch.tensor([sliders[0].unit, sliders[1].unit]).median()))
    assert sliders[2].kl == pytest.approx(0.001)
    assert sliders[0].affinity is None


def test_without_a_kl_the_activity_orders_and_decides_collapse():
    codes = torch.stack([torch.linspace(-0.05, 0.05, 100), torch.linspace(-3, 3, 100)], dim=1)
    sliders = build_sliders(codes)
    assert [s.dim for s in sliders] == [1, 0]
    assert [s.collapsed for s in sliders] == [False, True]  # variance ~0.0009 < 0.01 (Burda et al.)
    assert all(s.kl is None for s in sliders)
    assert sliders[0].activity == pytest.approx(float(codes[:, 1].var()))


def test_no_active_latent_moves_by_one():
    sliders = build_sliders(torch.zeros(10, 2))
    assert [s.unit for s in sliders] == [1.0, 1.0] and all(s.collapsed for s in sliders)


def test_max_sliders_keeps_the_most_informative():
    codes = torch.randn(50, 6)
    sliders = build_sliders(codes, kl=torch.arange(6.0), max_sliders=2)
    assert [s.dim for s in sliders] == [5, 4]


def test_a_kl_of_another_width_is_refused():
    with pytest.raises(ValueError, match="kl has 3 values for codes of 2 dimensions"):
        build_sliders(torch.randn(10, 2), kl=torch.ones(3))


def test_affinity_is_one_for_a_copied_factor_and_zero_for_an_independent_or_constant_code():
    factors = grid_factors()
    codes = np.stack([factors[:, 0] * 0.7, -factors[:, 1], np.full(len(factors), 3.0)], axis=1)
    affinity = factor_affinity(codes, factors)  # (3 codes, 2 factors)
    np.testing.assert_allclose(affinity, [[1, 0], [0, 1], [0, 0]], atol=1e-12)


def test_affinity_of_a_factor_that_never_varies_is_zero():
    factors = np.stack([np.arange(40) % 4, np.zeros(40)], axis=1)
    affinity = factor_affinity(factors.copy(), factors)
    assert affinity[0, 0] == pytest.approx(1.0) and affinity[:, 1].tolist() == [0.0, 0.0]


def test_sliders_name_each_factor_affinity():
    factors = grid_factors()
    codes = torch.from_numpy(np.stack([factors[:, 1], factors[:, 0]], axis=1))
    sliders = build_sliders(
        codes, kl=torch.tensor([1.0, 2.0]), factors=factors, factor_names=["shape", "posX"]
    )
    assert sliders[0].dim == 1 and sliders[0].affinity == pytest.approx({"shape": 1.0, "posX": 0.0})
    assert sliders[1].affinity == pytest.approx({"shape": 0.0, "posX": 1.0})
    assert sliders[0].to_json()["affinity"] == sliders[0].affinity

"""Noise, long-tail and balancing tools: rates, transition patterns, profiles, seeding."""

from __future__ import annotations

import numpy as np
import pytest

from gaave_fast.data import (
    balanced_rows,
    balanced_sampler,
    long_tail_counts,
    long_tail_indices,
    pair_noise,
    symmetric_noise,
)

C = 10


def _labels(n_per_class=1000, classes=C, seed=0):
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(classes), n_per_class))


@pytest.mark.parametrize("rate", [0.1, 0.2, 0.3, 0.45])
def test_symmetric_rate_and_uniform_targets(rate):
    labels = _labels()
    noisy, mask = symmetric_noise(labels, rate, C, seed=1)
    assert noisy.dtype == np.int64 and mask.dtype == bool
    np.testing.assert_array_equal(mask, noisy != labels)  # the mask is the ground truth
    for c in range(C):  # the requested rate in every class, to rounding
        assert mask[labels == c].sum() == round(rate * 1000)
    # flips spread over the other C-1 classes: each transition near rate/(C-1) of the class
    trans = np.zeros((C, C))
    np.add.at(trans, (labels, noisy), 1)
    trans /= 1000
    off = trans[~np.eye(C, dtype=bool)]
    expected = rate / (C - 1)
    sd = np.sqrt(1000 * rate * (1 / (C - 1)) * (1 - 1 / (C - 1))) / 1000  # multinomial spread
    assert np.abs(off - expected).max() < 5 * sd
    np.testing.assert_allclose(np.diag(trans), 1 - rate, atol=1e-3)


@pytest.mark.parametrize("rate", [0.1, 0.3])
def test_pair_flips_to_next_class(rate):
    labels = _labels()
    noisy, mask = pair_noise(labels, rate, C, seed=2)
    np.testing.assert_array_equal(noisy[mask], (labels[mask] + 1) % C)
    np.testing.assert_array_equal(noisy[~mask], labels[~mask])
    assert mask.mean() == pytest.approx(rate, abs=1e-3)
    assert (noisy[labels == C - 1][mask[labels == C - 1]] == 0).all()  # wraps around


def test_noise_is_seeded_and_checks_arguments():
    labels = _labels(100)
    a, b, c = (symmetric_noise(labels, 0.2, C, s)[0] for s in (5, 5, 6))
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()
    assert symmetric_noise(labels, 0.0, C, 0)[1].sum() == 0
    with pytest.raises(ValueError, match="rate"):
        pair_noise(labels, 1.0, C, 0)
    with pytest.raises(ValueError, match="labels must lie"):
        pair_noise(labels, 0.1, 5, 0)


def test_long_tail_profile_cifar10():
    labels = _labels(5000)
    keep = long_tail_indices(labels, 50, seed=0)
    counts = np.bincount(labels[keep], minlength=C)
    expected = [int(5000 * 50 ** (-c / (C - 1))) for c in range(C)]  # Cui et al. 2019
    assert counts.tolist() == expected
    assert counts.sum() == 13996  # CIFAR-10-LT with imbalance ratio 50, as published
    assert long_tail_counts([5000] * C, 100).sum() == 12406  # ... and with ratio 100
    assert counts[0] / counts[-1] == 50
    assert (np.diff(keep) > 0).all()
    other = long_tail_indices(labels, 50, seed=1)
    assert not np.array_equal(keep, other) and len(keep) == len(other)


def test_long_tail_caps_at_available_samples():
    labels = np.array([0] * 100 + [1] * 5 + [2] * 40)
    keep = long_tail_indices(labels, 4, seed=0)
    assert np.bincount(labels[keep]).tolist() == [100, 5, 25]  # class 1 wants 50, has 5


def test_balanced_sampling_equalizes_classes():
    labels = np.array([0] * 900 + [1] * 90 + [2] * 10)
    for draw in (np.array(list(balanced_sampler(labels, seed=3))), balanced_rows(labels, seed=3)):
        assert len(draw) == len(labels)
        freq = np.bincount(labels[draw], minlength=3) / len(draw)
        np.testing.assert_allclose(freq, 1 / 3, atol=0.06)
    np.testing.assert_array_equal(list(balanced_sampler(labels, seed=4)), list(balanced_sampler(labels, seed=4)))
    assert len(list(balanced_sampler(labels, 0, num_samples=30))) == 30

"""The class-shift guard and the relabel options, on constructed annotator outputs (closed forms)."""

import numpy as np
import pytest

from gaave_fast.pipeline.annotate import DISCARDED, agreement, decide
from gaave_fast.pipeline.guard import (
    cap_class_shift,
    class_counts_after,
    class_shift,
    shift_report,
)

D = DISCARDED


def test_class_shift_closed_form():
    np.testing.assert_allclose(class_shift(np.array([50, 50]), np.array([70, 30])), [0.4, -0.4])
    # Shares 0.2 / 0.8 -> 0.1 / 0.9 of a smaller set; an empty class is NaN.
    s = class_shift(np.array([20, 80, 0]), np.array([5, 45, 0]))
    np.testing.assert_allclose(s[:2], [-0.5, 0.125])
    assert np.isnan(s[2])
    rep = shift_report(np.array([0, 0, 1, 1]), np.array([2]), np.array([0]), ["a", "b", "c"])
    assert rep == {"a": {"before": 2, "after": 3, "shift": 0.5}, "b": {"before": 2, "after": 1, "shift": -0.5},
                   "c": {"before": 0, "after": 0, "shift": None}}


def test_relabels_into_a_growing_class_go_back_least_suspicious_first():
    # 50 / 50; Eq. 5 moves 20 class-1 candidates into class 0: 70 / 30, shifts +-0.4.
    labels = np.repeat([0, 1], 50)
    index = np.arange(50, 70)
    suspicion = np.arange(20.0)[::-1]  # candidate 19 (position 69) is the least suspicious
    back = cap_class_shift(labels, index, np.zeros(20, np.int64), suspicion, 0.25, 2)
    # Share of class 0 <= 0.5 * 1.25 = 0.625 of N' = 100: at most 62 samples, so 8 go back.
    np.testing.assert_array_equal(np.flatnonzero(back), np.arange(12, 20))
    after = class_counts_after(labels, index, np.where(back, 1, 0), 2)
    assert after.tolist() == [62, 38]


def test_discarded_candidates_of_a_shrinking_class_come_back():
    # 40 / 60; 30 class-0 candidates discarded: 10 / 60 (shift -0.64 and +0.43).
    labels = np.repeat([0, 1], [40, 60])
    back = cap_class_shift(labels, np.arange(30), np.full(30, D), np.zeros(30), 0.25, 2)
    # Class 0 needs n0 / (n0 + 60) >= 0.4 * 0.75 = 0.3: n0 >= 25.7, so 16 come back, by position
    # (equal suspicion); class 1 is then at 60 / 86, +0.16.
    np.testing.assert_array_equal(np.flatnonzero(back), np.arange(16))


def test_growth_from_discards_elsewhere():
    # 100 / 100; 50 class-1 candidates discarded: class 0 grows to 100 / 150 (+0.33) without any
    # relabel into it; class 1 shrinks (-0.33). Discarded class-1 candidates come back until
    # n1 / (100 + n1) >= 0.5 * 0.8: n1 >= 66.7, so 17 of them.
    labels = np.repeat([0, 1], 100)
    back = cap_class_shift(labels, np.arange(100, 150), np.full(50, D), np.arange(50.0)[::-1], 0.2, 2)
    np.testing.assert_array_equal(np.flatnonzero(back), np.arange(33, 50))


def test_within_the_cap_nothing_changes():
    labels = np.repeat([0, 1, 2], 100)
    index = np.array([0, 1, 150, 250])
    new = np.array([1, D, 0, 2])
    assert not cap_class_shift(labels, index, new, np.zeros(4), 0.25, 3).any()


@pytest.mark.parametrize("seed", range(5))
def test_every_class_ends_within_the_cap(seed):
    # Random collapses (most candidates moved into class 0 or discarded): the bound always holds,
    # and only candidates whose label changed go back.
    rng = np.random.default_rng(seed)
    c = 6
    labels = rng.choice(c, 2000, p=[0.1, 0.3, 0.2, 0.2, 0.15, 0.05])
    index = np.sort(rng.choice(2000, 900, replace=False))
    new = np.where(rng.random(900) < 0.7, 0, np.where(rng.random(900) < 0.5, D, rng.integers(0, c, 900)))
    cap = rng.uniform(0.05, 0.5)
    back = cap_class_shift(labels, index, new, rng.random(900), cap, c)
    final = np.where(back, labels[index], new)
    before = np.bincount(labels, minlength=c)
    assert np.abs(class_shift(before, class_counts_after(labels, index, final, c))).max() <= cap + 1e-12
    assert np.abs(class_shift(before, class_counts_after(labels, index, new, c))).max() > cap
    assert (labels[index][back] != new[back]).all()
    # Giving back one candidate fewer (the last one in each queue) would not do.
    assert back.sum() < 900


def test_bad_cap():
    with pytest.raises(ValueError, match="cap"):
        cap_class_shift(np.zeros(3, int), np.array([0]), np.array([0]), np.zeros(1), 0.0, 1)


# ----------------------------------------------------------------------------- relabel options
# Head annotator: 2 head classes + other; tail annotator: 1 tail class + other.
PH = np.array([[0.8, 0.1, 0.1],    # head class 0, tail other (0.9): head wins, 0.72
               [0.1, 0.3, 0.6],    # head other, tail class (0.7): tail wins, 0.42
               [0.5, 0.4, 0.1],    # head class 0, tail class too: Eq. 5 discards, 0
               [0.2, 0.2, 0.6]])   # both other: discarded, 0
PT = np.array([[0.1, 0.9], [0.7, 0.3], [0.6, 0.4], [0.2, 0.8]])


def test_agreement_closed_form():
    np.testing.assert_allclose(agreement(PH, PT), [0.72, 0.42, 0.0, 0.0])


@pytest.mark.parametrize("rule, threshold, uncertain, new, kept", [
    ("eq5", 0.9, "drop", [5, 7, D, D], [0, 0, 0, 0]),
    ("eq5", 0.9, "keep", [5, 7, 1, 2], [0, 0, 1, 1]),
    ("confident", 0.5, "drop", [5, D, D, D], [0, 0, 0, 0]),
    ("confident", 0.5, "keep", [5, 4, 1, 2], [0, 1, 1, 1]),
    ("confident", 0.4, "drop", [5, 7, D, D], [0, 0, 0, 0]),
])
def test_decide(rule, threshold, uncertain, new, kept):
    own, eq5 = np.array([3, 4, 1, 2]), np.array([5, 7, D, D])
    got_new, got_kept = decide(own, eq5, agreement(PH, PT), rule, threshold, uncertain)
    np.testing.assert_array_equal(got_new, new)
    np.testing.assert_array_equal(got_kept, np.array(kept, bool))


def test_decide_bad_rule():
    with pytest.raises(ValueError, match="relabel"):
        decide(np.zeros(1, int), np.zeros(1, int), np.zeros(1), "vote", 0.5, "drop")
    with pytest.raises(ValueError, match="uncertain"):
        decide(np.zeros(1, int), np.zeros(1, int), np.zeros(1), "eq5", 0.5, "maybe")

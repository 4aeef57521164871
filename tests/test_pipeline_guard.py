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


def test_shrinking_is_not_guarded():
    # 40 / 60; 30 class-0 candidates discarded: 10 / 60 (shift -0.64 and +0.43): no relabel to undo.
    labels = np.repeat([0, 1], [40, 60])
    assert not cap_class_shift(labels, np.arange(30), np.full(30, D), np.zeros(30), 0.25, 2).any()


def test_growth_by_relabels_and_discards():
    # 100 / 100 / 100. 30 class-1 candidates relabelled into 0 (suspicion 0..29), 40 class-2
    # candidates discarded: 130 / 70 / 60 of 260, class 0 at +0.5. With cap 0.21 class 0 may hold
    # 1.21 / 3 of N' = 260 (N' is fixed: only relabels go back): 104 samples, so 26 go back, the
    # least suspicious first; class 1 stays below (96 of 260, +0.108).
    labels = np.repeat([0, 1, 2], 100)
    index = np.concatenate([np.arange(100, 130), np.arange(200, 240)])
    new = np.concatenate([np.zeros(30, np.int64), np.full(40, D)])
    suspicion = np.concatenate([np.arange(30.0), np.zeros(40)])
    back = cap_class_shift(labels, index, new, suspicion, 0.21, 3)
    np.testing.assert_array_equal(np.flatnonzero(back), np.arange(26))


def test_within_the_cap_nothing_changes():
    labels = np.repeat([0, 1, 2], 100)
    index = np.array([0, 1, 150, 250])
    new = np.array([1, D, 0, 2])
    assert not cap_class_shift(labels, index, new, np.zeros(4), 0.25, 3).any()


@pytest.mark.parametrize("seed", range(5))
def test_every_class_ends_within_the_cap(seed):
    # Random collapses (most relabels go into class 0): no class ends above the cap while a
    # relabel into it is left, and only relabelled candidates go back.
    rng = np.random.default_rng(seed)
    c = 6
    labels = rng.choice(c, 2000, p=[0.1, 0.3, 0.2, 0.2, 0.15, 0.05])
    index = np.sort(rng.choice(2000, 900, replace=False))
    new = np.where(rng.random(900) < 0.7, 0, np.where(rng.random(900) < 0.2, D, rng.integers(0, c, 900)))
    cap = rng.uniform(0.05, 0.5)
    back = cap_class_shift(labels, index, new, rng.random(900), cap, c)
    final = np.where(back, labels[index], new)
    shift = class_shift(np.bincount(labels, minlength=c), class_counts_after(labels, index, final, c))
    moved_in = np.bincount(final[(final >= 0) & (final != labels[index])], minlength=c)
    assert ((shift <= cap + 1e-12) | (moved_in == 0)).all()
    assert shift[0] <= cap + 1e-12
    assert ((labels[index][back] != new[back]) & (new[back] != D)).all()
    assert class_shift(np.bincount(labels, minlength=c), class_counts_after(labels, index, new, c))[0] > cap


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

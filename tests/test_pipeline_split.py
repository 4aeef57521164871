"""Dataset Splitting and Subset Refactoring on hand-made label vectors."""

import numpy as np
import pytest
import torch

from gaave_fast.pipeline.refactor import (
    RemappedDataset,
    proportional_quotas,
    refactor,
    whole_set,
)
from gaave_fast.pipeline.split import split_classes


def labels_from_counts(counts, seed=0):
    lab = np.concatenate([np.full(c, k) for k, c in enumerate(counts)]).astype(np.int64)
    return np.random.default_rng(seed).permutation(lab)


# Expected tails worked out by hand from the rule "minimise max(head ratio, tail ratio)".
@pytest.mark.parametrize("counts, tail", [
    # RAF-DB train: surprise, fear, disgust, happiness, sadness, anger, neutral. Cut after 1290
    # gives head 4772/1290 = 3.70 and tail 717/281 = 2.55; every other cut has a side above 4.5.
    ([1290, 281, 717, 4772, 1982, 705, 2524], [1, 2, 5]),
    # FER2013 train: the cut before disgust gives head 7186/3162 = 2.27, tail 1.
    ([3966, 435, 4074, 7186, 4802, 3162, 4933], [1]),
    # CIFAR-10-LT mu = 50 (5000 * 50^(-c/9)): the middle cut gives 50^(4/9) on both sides.
    ([int(5000 * 50 ** (-c / 9)) for c in range(10)], [5, 6, 7, 8, 9]),
])
def test_auto_split_matches_hand_computed(counts, tail):
    s = split_classes(labels_from_counts(counts))
    assert list(s.tail) == tail
    assert sorted(s.head + s.tail) == list(range(len(counts)))
    assert s.rule == "auto" and list(s.counts) == counts


def ratio(counts, classes):
    c = counts[list(classes)]
    return c.max() / c.min()


def test_auto_split_is_the_best_cut_by_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(20):
        counts = rng.integers(1, 200, size=rng.integers(2, 9))
        s = split_classes(labels_from_counts(counts))

        got = max(ratio(counts, s.head), ratio(counts, s.tail))
        assert min(counts[list(s.head)]) >= max(counts[list(s.tail)])
        # No cut of the count-sorted classes has a lower worst-side ratio.
        order = np.argsort(-counts, kind="stable")
        for m in range(1, len(counts)):
            assert got <= max(ratio(counts, order[:m]), ratio(counts, order[m:])) + 1e-12


def test_tiny_and_empty_classes():
    counts = [40, 25, 1, 0]
    labels = labels_from_counts(counts)
    s = split_classes(labels, num_classes=4)
    assert s.head == (0, 1) and s.tail == (2,) and s.empty == (3,)
    h, t = refactor(labels, s, seed=0)
    # D'h: every sample, class 2 becomes "other" = 2.
    assert h.indices.size == 66 and h.num_classes == 3 and h.other == 2
    np.testing.assert_array_equal(np.bincount(h.labels), [40, 25, 1])
    np.testing.assert_array_equal(h.to_original(h.labels), np.where(labels[h.indices] == 2, -1, labels[h.indices]))
    # D't: the one tail sample plus one "other" sample (quota 40:25 of 1 -> class 0).
    assert t.indices.size == 2 and t.num_classes == 2
    assert sorted(labels[t.indices].tolist()) == [0, 2]
    assert t.labels[labels[t.indices] == 2].tolist() == [0] and t.labels[labels[t.indices] == 0].tolist() == [1]


def test_two_classes():
    labels = labels_from_counts([30, 10])
    s = split_classes(labels)
    assert s.head == (0,) and s.tail == (1,)
    h, t = refactor(labels, s, seed=3)
    np.testing.assert_array_equal(h.labels, labels)  # head class 0 -> 0, tail class 1 -> other = 1
    assert t.indices.size == 20
    np.testing.assert_array_equal(t.labels, 1 - labels[t.indices])  # tail 1 -> 0, head 0 -> other = 1


def test_tail_other_class_proportions_and_seed():
    counts = [500, 300, 200, 60, 40, 7]
    labels = labels_from_counts(counts)
    s = split_classes(labels, head_classes=[0, 1, 2])
    _, t = refactor(labels, s, seed=0)
    other = t.indices[t.labels == t.other]
    assert other.size == 60 and np.unique(other).size == 60
    drawn = np.bincount(labels[other], minlength=6)
    exact = 60 * np.array(counts[:3]) / 1000
    assert np.all(np.abs(drawn[:3] - exact) < 1) and drawn[3:].sum() == 0
    # Tail classes keep every sample, remapped to 0..2.
    np.testing.assert_array_equal(np.bincount(t.labels), [60, 40, 7, 60])
    assert np.all(np.diff(t.indices) > 0)
    t2 = refactor(labels, s, seed=0)[1]
    np.testing.assert_array_equal(t.indices, t2.indices)
    t3 = refactor(labels, s, seed=1)[1]
    assert not np.array_equal(t.indices, t3.indices)


def test_proportional_quotas_closed_form():
    rng = np.random.default_rng(0)
    for _ in range(200):
        c = rng.integers(1, 100, size=rng.integers(1, 6))
        total = int(rng.integers(0, 2 * c.sum()))
        q = proportional_quotas(c, total)
        want = min(total, c.sum())
        assert q.sum() == want and np.all(q <= c) and np.all(q >= 0)
        assert np.all(np.abs(q - want * c / c.sum()) < 1)


def test_given_split_and_errors():
    labels = labels_from_counts([10, 20, 30, 0])
    s = split_classes(labels, num_classes=4, head_classes=[0])
    assert s.head == (0,) and s.tail == (1, 2) and s.rule == "given"
    with pytest.raises(ValueError, match="head_classes"):
        split_classes(labels, num_classes=4, head_classes=[3])  # empty class
    with pytest.raises(ValueError, match="head_classes"):
        split_classes(labels, num_classes=4, head_classes=[0, 1, 2])
    with pytest.raises(ValueError, match="duplicates"):
        split_classes(labels, num_classes=4, head_classes=[0, 0])
    with pytest.raises(ValueError, match="two non-empty"):
        split_classes(np.zeros(5, np.int64))
    with pytest.raises(ValueError, match="labels"):
        split_classes(np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match="num_classes"):
        split_classes(labels, num_classes=2)


def test_remapped_dataset_and_whole_set():
    base = [(torch.full((1, 2, 2), float(i)), i % 3, i) for i in range(10)]
    labels = np.array([b[1] for b in base])
    w = whole_set(labels, 3)
    assert w.num_classes == 3 and w.other == -1 and w.in_real_class().all()
    view = RemappedDataset(base, np.array([7, 2]), np.array([5, 6]))
    img, lab, pos = view[0]
    assert len(view) == 2 and lab == 5 and pos == 7 and float(img[0, 0, 0]) == 7.0
    with pytest.raises(ValueError, match="indices"):
        RemappedDataset(base, np.array([1, 2]), np.array([0]))

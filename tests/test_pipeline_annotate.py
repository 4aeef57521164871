"""The relabel rule (Eq. 5) against a hand-written table of every case."""

import numpy as np
import pytest

from gaave_fast.pipeline.annotate import DISCARDED, relabel

HEAD = [5, 2]        # C1 = 2: head annotator outputs 0, 1 and "other" = 2
TAIL = [0, 7, 3]     # C2 = 3: tail annotator outputs 0, 1, 2 and "other" = 3
D = DISCARDED
# (pred_head, pred_tail, expected original label)
TABLE = [
    (0, 0, D), (0, 1, D), (0, 2, D), (0, 3, 5),   # head names class 5; only kept when tail says other
    (1, 0, D), (1, 1, D), (1, 2, D), (1, 3, 2),
    (2, 0, 0), (2, 1, 7), (2, 2, 3), (2, 3, D),   # head says other: tail's class wins; both other: discard
]


def test_every_case_of_eq5():
    ph, pt, want = (np.array(c) for c in zip(*TABLE))
    np.testing.assert_array_equal(relabel(ph, pt, HEAD, TAIL), want)
    assert relabel(np.zeros(0, int), np.zeros(0, int), HEAD, TAIL).shape == (0,)


def test_bad_input():
    with pytest.raises(ValueError, match="pred_head"):
        relabel(np.array([3]), np.array([0]), HEAD, TAIL)
    with pytest.raises(ValueError, match="pred_tail"):
        relabel(np.array([0]), np.array([4]), HEAD, TAIL)
    with pytest.raises(ValueError, match="shapes"):
        relabel(np.array([0, 1]), np.array([0]), HEAD, TAIL)

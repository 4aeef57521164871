"""Self-Annotators (GAAVE step 6): the relabel rule of Eq. 5.

The head annotator predicts over ``C1`` head classes + "other" (id ``C1``); the tail annotator
over ``C2`` tail classes + "other" (id ``C2``). A noise candidate gets

* the head prediction, if the head annotator names a head class and the tail annotator says
  "other";
* the tail prediction, if the tail annotator names a tail class and the head annotator says
  "other";
* no label otherwise (both name a real class, or both say "other"): it is discarded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DISCARDED = -1


def relabel(pred_head: np.ndarray, pred_tail: np.ndarray, head_classes: Sequence[int],
            tail_classes: Sequence[int]) -> np.ndarray:
    """Apply Eq. 5 to the annotators' predictions.

    Args:
        pred_head: int [n] argmax of the head annotator, in ``0..C1`` (``C1`` = other).
        pred_tail: int [n] argmax of the tail annotator, in ``0..C2`` (``C2`` = other).
        head_classes: original class id of each head class (length C1).
        tail_classes: original class id of each tail class (length C2).

    Returns:
        int64 [n] new labels as original class ids, :data:`DISCARDED` (-1) where discarded.
    """
    ph = np.asarray(pred_head, dtype=np.int64)
    pt = np.asarray(pred_tail, dtype=np.int64)
    if ph.shape != pt.shape or ph.ndim != 1:
        raise ValueError(f"pred_head {ph.shape} and pred_tail {pt.shape} must be equal 1-D shapes")
    c1, c2 = len(head_classes), len(tail_classes)
    if ph.size and (ph.min() < 0 or ph.max() > c1):
        raise ValueError(f"pred_head must lie in 0..{c1} (C1 = other)")
    if pt.size and (pt.min() < 0 or pt.max() > c2):
        raise ValueError(f"pred_tail must lie in 0..{c2} (C2 = other)")
    head_lut = np.array(list(head_classes) + [DISCARDED], dtype=np.int64)
    tail_lut = np.array(list(tail_classes) + [DISCARDED], dtype=np.int64)
    out = np.full(ph.shape, DISCARDED, dtype=np.int64)
    head_wins = (ph != c1) & (pt == c2)
    tail_wins = (pt != c2) & (ph == c1)
    out[head_wins] = head_lut[ph[head_wins]]
    out[tail_wins] = tail_lut[pt[tail_wins]]
    return out

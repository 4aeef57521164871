"""Self-Annotators (GAAVE step 6): the relabel rule of Eq. 5.

The head annotator predicts over ``C1`` head classes + "other" (id ``C1``); the tail annotator
over ``C2`` tail classes + "other" (id ``C2``). A noise candidate gets

* the head prediction, if the head annotator names a head class and the tail annotator says
  "other";
* the tail prediction, if the tail annotator names a tail class and the head annotator says
  "other";
* no label otherwise (both name a real class, or both say "other"): it is discarded.

Beside Eq. 5 (``relabel="eq5"``, the paper's rule), ``relabel="confident"`` relabels only where
the annotators agree with enough confidence: the probability that both name Eq. 5's outcome
(head class and "other", or "other" and tail class; the annotators' softmax outputs
multiplied) must reach a threshold. The candidates left without a label are discarded
(``uncertain="drop"``, the paper) or kept with their own label (``uncertain="keep"``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DISCARDED = -1
RELABEL_RULES = ("eq5", "confident")
UNCERTAIN_RULES = ("drop", "keep")


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


def agreement(prob_head: np.ndarray, prob_tail: np.ndarray) -> np.ndarray:
    """How surely the two annotators give Eq. 5's outcome of their argmax predictions.

    Args:
        prob_head: float [n, C1 + 1] softmax of the head annotator (last column = other).
        prob_tail: float [n, C2 + 1] softmax of the tail annotator (last column = other).

    Returns:
        float64 [n]: ``p_head(c) * p_tail(other)`` where the head class c wins,
        ``p_head(other) * p_tail(c)`` where the tail class c wins, 0 where Eq. 5 discards.
    """
    ph, pt = np.asarray(prob_head, np.float64), np.asarray(prob_tail, np.float64)
    if ph.ndim != 2 or pt.ndim != 2 or ph.shape[0] != pt.shape[0]:
        raise ValueError(f"prob_head {ph.shape} and prob_tail {pt.shape} must be [n, C1+1] and [n, C2+1]")
    rows = np.arange(ph.shape[0])
    ah, at = ph.argmax(1), pt.argmax(1)
    oh, ot = ph.shape[1] - 1, pt.shape[1] - 1
    out = np.zeros(ph.shape[0])
    head_wins = (ah != oh) & (at == ot)
    tail_wins = (at != ot) & (ah == oh)
    out[head_wins] = ph[rows, ah][head_wins] * pt[head_wins, ot]
    out[tail_wins] = pt[rows, at][tail_wins] * ph[tail_wins, oh]
    return out


def decide(own: np.ndarray, eq5_label: np.ndarray, confidence: np.ndarray, rule: str, threshold: float,
           uncertain: str) -> tuple[np.ndarray, np.ndarray]:
    """The candidates' new labels under a relabel rule (module docstring).

    Args:
        own: int [n] the candidates' given labels.
        eq5_label: int [n] Eq. 5's labels (:data:`DISCARDED` where it has none).
        confidence: float [n] :func:`agreement` (used by ``"confident"``).
        rule: ``"eq5"`` or ``"confident"``; threshold: the agreement ``"confident"`` needs.
        uncertain: ``"drop"`` or ``"keep"``: what happens to a candidate left without a label.

    Returns:
        ``(new_label int64 [n], kept bool [n])``: ``new_label`` is the own label where ``kept``.
    """
    if rule not in RELABEL_RULES:
        raise ValueError(f"relabel must be one of {RELABEL_RULES}, got {rule!r}")
    if uncertain not in UNCERTAIN_RULES:
        raise ValueError(f"uncertain must be one of {UNCERTAIN_RULES}, got {uncertain!r}")
    own, new = np.asarray(own, np.int64), np.asarray(eq5_label, np.int64).copy()
    if rule == "confident":
        new[np.asarray(confidence) < threshold] = DISCARDED
    kept = (new == DISCARDED) & (uncertain == "keep")
    new[kept] = own[kept]
    return new, kept

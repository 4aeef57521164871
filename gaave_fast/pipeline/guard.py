"""The class-shift guard: relabelling must not move a class's share of the training set too far.

A class's *shift* is the relative change of its share, ``(n'_c / N') / (n_c / N) - 1``, from the
given labels (``n_c`` of ``N``) to the final training set (``n'_c`` of ``N'``: clean samples,
relabelled candidates and candidates kept with their label; discarded ones are gone). Cleaning
can collapse classes: the criterion flags most samples of the hard classes, and the annotators,
trained on what is left, name an easy class for them or discard them (docs/pipeline.md,
"Class collapse").

:func:`cap_class_shift` keeps every ``|shift| <= cap`` by giving candidates back their own label,
least suspicious first, one at a time, always for the class that is furthest out:

* a class that grew too much gets back, from the candidates relabelled *into* it, their own
  label (if none is left, its growth comes from discards elsewhere, and a discarded candidate
  of the class that shrank most comes back);
* a class that shrank too much gets back its own candidates that were relabelled away or discarded.

Giving a candidate back its label moves the set towards the given labels (with every candidate
back all shifts are 0), so the loop ends, at most once per candidate, with every class within
the cap. Discarding the relabelled candidates instead could not refill a class that shrank.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .annotate import DISCARDED


def class_counts_after(labels: np.ndarray, index: np.ndarray, new_label: np.ndarray, num_classes: int) -> np.ndarray:
    """Samples per class in the final training set.

    Args:
        labels: int64 [N] the given labels.
        index: int64 [n] positions of the candidates. new_label: int64 [n] their label in the
            final set (:data:`~.annotate.DISCARDED` = left out); positions not in ``index`` keep
            their label.

    Returns:
        int64 [C].
    """
    lab = np.asarray(labels, np.int64).copy()
    lab[np.asarray(index, np.int64)] = np.asarray(new_label, np.int64)
    return np.bincount(lab[lab >= 0], minlength=num_classes).astype(np.int64)


def class_shift(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Relative change of each class's share, ``(after_c / sum(after)) / (before_c / sum(before)) - 1``.

    Args:
        before, after: int [C] samples per class (``before`` with at least one sample).

    Returns:
        float64 [C]; NaN for a class with no sample in ``before``; -1 when ``after`` is empty.
    """
    b, a = np.asarray(before, np.float64), np.asarray(after, np.float64)
    if b.shape != a.shape or b.ndim != 1 or b.sum() <= 0:
        raise ValueError(f"before {b.shape} and after {a.shape} must be equal 1-D counts, before non-empty")
    if a.sum() <= 0:
        return np.where(b > 0, -1.0, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, (a / a.sum()) / (b / b.sum()) - 1.0, np.nan)


def shift_report(labels: np.ndarray, index: np.ndarray, new_label: np.ndarray, classes: Sequence[str]) -> dict:
    """JSON-ready ``{class name: {"before", "after", "shift"}}`` of the final training set (shift None
    for a class without given samples)."""
    c = len(classes)
    before = np.bincount(np.asarray(labels, np.int64), minlength=c)
    after = class_counts_after(labels, index, new_label, c)
    shift = class_shift(before, after)
    return {str(name): {"before": int(before[i]), "after": int(after[i]),
                        "shift": None if np.isnan(shift[i]) else round(float(shift[i]), 6)}
            for i, name in enumerate(classes)}


def cap_class_shift(labels: np.ndarray, index: np.ndarray, new_label: np.ndarray, suspicion: np.ndarray,
                    cap: float, num_classes: int) -> np.ndarray:
    """Give candidates back their own label until every class's ``|shift| <= cap`` (module docstring).

    Args:
        labels: int64 [N] the given labels.
        index: int64 [n] positions of the candidates (distinct).
        new_label: int64 [n] the relabelling's outcome (a class, or DISCARDED).
        suspicion: float [n] higher = more likely mislabelled; the least suspicious candidate
            goes back first (ties: the lower position).
        cap: the largest allowed ``|shift|`` (> 0).
        num_classes: C.

    Returns:
        bool [n]: the candidates that get their own label back (``new_label`` is not modified).
    """
    if not cap > 0:
        raise ValueError(f"cap must be > 0, got {cap}")
    labels = np.asarray(labels, np.int64)
    index, new = np.asarray(index, np.int64), np.asarray(new_label, np.int64)
    suspicion = np.asarray(suspicion, np.float64)
    if not index.shape == new.shape == suspicion.shape or index.ndim != 1:
        raise ValueError(f"index {index.shape}, new_label {new.shape}, suspicion {suspicion.shape} must be equal 1-D")
    own = labels[index]
    before = np.bincount(labels, minlength=num_classes).astype(np.float64)
    after = class_counts_after(labels, index, new, num_classes).astype(np.float64)
    share = np.where(before > 0, before / before.sum(), np.inf)  # classes without given samples get none
    back = np.zeros(index.size, bool)
    # Per class, the candidates that can go back, least suspicious first (then by position).
    order = np.lexsort((index, suspicion))
    moved = order[own[order] != new[order]]
    into = _Queues(moved, new[moved], num_classes, back)
    out_of = _Queues(moved, own[moved], num_classes, back)
    gone = moved[new[moved] == DISCARDED]
    discarded = _Queues(gone, own[gone], num_classes, back)
    while True:
        shift = after / after.sum() / share - 1.0
        bad = [c for c in range(num_classes) if abs(shift[c]) > cap]
        if not bad:
            return back
        c = max(bad, key=lambda c: (abs(shift[c]), -c))
        if shift[c] < 0:
            # n'_c < n_c only if some of c's candidates left it, and N' <= N: one is there.
            i = out_of.first(c)
        elif into.first(c) is not None:
            i = into.first(c)
        else:
            # c gained share only because N' < N (and n'_c <= n_c): a discarded candidate is left.
            i = next(discarded.first(e) for e in np.argsort(shift, kind="stable") if discarded.first(e) is not None)
        back[i] = True
        if new[i] != DISCARDED:
            after[new[i]] -= 1
        after[own[i]] += 1


class _Queues:
    """Per-class queues of candidate numbers, in a fixed order, that skip the ones already back."""

    def __init__(self, items: np.ndarray, cls: np.ndarray, num_classes: int, back: np.ndarray):
        self.q = [items[cls == c].tolist() for c in range(num_classes)]
        self.pos = [0] * num_classes
        self.back = back

    def first(self, c: int) -> int | None:
        """The first candidate of class ``c`` not yet back, or None."""
        q, p = self.q[c], self.pos[c]
        while p < len(q) and self.back[q[p]]:
            p += 1
        self.pos[c] = p
        return q[p] if p < len(q) else None

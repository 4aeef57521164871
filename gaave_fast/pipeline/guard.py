"""The class-shift guard: relabelling must not move a class's share of the training set too far.

A class's *shift* is the relative change of its share, ``(n'_c / N') / (n_c / N) - 1``, from the
given labels (``n_c`` of ``N``) to the final training set (``n'_c`` of ``N'``: clean samples,
relabelled candidates and candidates kept with their label; discarded ones are gone). Eq. 5 can
collapse classes into one: its annotators learn from the clean samples, which the easy classes
dominate, and name an easy class for many hard candidates (docs/pipeline.md, "Class collapse").

:func:`cap_class_shift` limits the growth that relabelling causes: while a class's shift is
above the cap, the least suspicious candidate relabelled *into* it gets its own label back (one
at a time, always for the class furthest above the cap). It ends, at most once per relabel,
with every class at or below the cap or without relabels into it left. Giving the label back
(rather than discarding the candidate) also returns the sample to the class it was taken from,
so the classes that relabelling emptied recover too.

Shrinking is not guarded: under symmetric noise on a long tail, exact cleaning shrinks the tail
classes' shares by 60-80% (their given labels are mostly wrong), so a lower bound would block
right corrections; the run still warns about it.
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
    """Give relabelled candidates back their own label until no class grew beyond the cap (module docstring).

    Args:
        labels: int64 [N] the given labels.
        index: int64 [n] positions of the candidates (distinct).
        new_label: int64 [n] the relabelling's outcome (a class, or DISCARDED).
        suspicion: float [n] higher = more likely mislabelled; the least suspicious candidate
            goes back first (ties: the lower position).
        cap: the largest allowed shift (> 0).
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
    share = np.where(before > 0, before / before.sum(), np.inf)  # a class without given samples gets none
    back = np.zeros(index.size, bool)
    # Per class, the candidates relabelled into it, least suspicious first (then by position).
    order = np.lexsort((index, suspicion))
    moved = order[(new[order] != DISCARDED) & (own[order] != new[order])]
    into = [list(moved[new[moved] == c][::-1]) for c in range(num_classes)]  # pop() takes the first
    while True:
        shift = after / after.sum() / share - 1.0
        over = [c for c in range(num_classes) if shift[c] > cap and into[c]]
        if not over:
            return back
        c = max(over, key=lambda c: (shift[c], -c))
        i = into[c].pop()
        back[i] = True
        after[c] -= 1
        after[own[i]] += 1

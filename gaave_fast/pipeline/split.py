"""Dataset Splitting (GAAVE step 1): head and tail classes by sample count.

The automatic rule: sort the non-empty classes by count (descending, ties by class id) and cut
the sorted list at the position ``m`` (1 <= m < number of non-empty classes) that minimises the
larger of the two sides' imbalance ratios ``max count / min count``; ties are broken by the
product of the two ratios, then by the smaller ``m``. A side with one class has ratio 1.
This keeps both refactored subsets as balanced as a single cut allows; on RAF-DB's training
counts it puts fear, disgust and anger in the tail, and on a long-tailed CIFAR-10 (mu = 50) it
cuts in the middle. Empty classes belong to neither side (they have no samples to refactor).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClassSplit:
    """Head/tail assignment of the classes.

    Attributes:
        head: sorted original class ids of the head classes (C1 of them).
        tail: sorted original class ids of the tail classes (C2 of them).
        counts: int64 [C], samples per class in the labels the split was computed from.
        empty: sorted class ids with no samples (in neither side).
        rule: ``"auto"`` or ``"given"``.
    """

    head: tuple[int, ...]
    tail: tuple[int, ...]
    counts: tuple[int, ...]
    empty: tuple[int, ...]
    rule: str

    @property
    def num_classes(self) -> int:
        """Number of classes C of the original problem."""
        return len(self.counts)

    def imbalance(self, side: str) -> float:
        """Max/min class count on ``side`` (``"head"`` or ``"tail"``)."""
        classes = {"head": self.head, "tail": self.tail}.get(side)
        if classes is None:
            raise ValueError(f"side must be 'head' or 'tail', got {side!r}")
        c = np.asarray(self.counts)[list(classes)]
        return float(c.max() / c.min())

    def to_dict(self) -> dict:
        """JSON-ready dict (inverse of :meth:`from_dict`)."""
        return {"head": list(self.head), "tail": list(self.tail), "counts": list(self.counts),
                "empty": list(self.empty), "rule": self.rule}

    @classmethod
    def from_dict(cls, d: dict) -> ClassSplit:
        """Rebuild a split saved by :meth:`to_dict`."""
        return cls(tuple(int(c) for c in d["head"]), tuple(int(c) for c in d["tail"]),
                   tuple(int(c) for c in d["counts"]), tuple(int(c) for c in d["empty"]),
                   str(d["rule"]))


def class_counts(labels: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """Samples per class.

    Args:
        labels: int array [N] of class ids in 0..num_classes-1.
        num_classes: C; inferred as ``labels.max() + 1`` when None.

    Returns:
        int64 [C] counts.
    """
    labels = _check_labels(labels, num_classes)
    c = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    return np.bincount(labels, minlength=c).astype(np.int64)


def split_classes(labels: np.ndarray, num_classes: int | None = None,
                  head_classes: Sequence[int] | None = None) -> ClassSplit:
    """Split the classes into head and tail by sample count.

    Args:
        labels: int array [N], the (noisy) training labels.
        num_classes: C; inferred from ``labels`` when None.
        head_classes: the head classes to use; None picks them with the automatic rule of
            this module's docstring. The tail is every other non-empty class.

    Returns:
        The :class:`ClassSplit`.

    Raises:
        ValueError: fewer than two non-empty classes, or a bad ``head_classes``.
    """
    counts = class_counts(labels, num_classes)
    nonempty = [c for c in range(len(counts)) if counts[c] > 0]
    empty = tuple(c for c in range(len(counts)) if counts[c] == 0)
    if len(nonempty) < 2:
        raise ValueError(f"labels: need at least two non-empty classes to split, got {len(nonempty)}")
    if head_classes is not None:
        head = sorted({int(c) for c in head_classes})
        if len(head) != len(list(head_classes)):
            raise ValueError(f"head_classes has duplicates: {[int(c) for c in head_classes]}")
        bad = [c for c in head if c not in nonempty]
        if bad:
            raise ValueError(f"head_classes {bad} are out of range or have no samples")
        tail = [c for c in nonempty if c not in head]
        if not tail:
            raise ValueError("head_classes covers every non-empty class; the tail would be empty")
        return ClassSplit(tuple(head), tuple(tail), tuple(int(x) for x in counts), empty, "given")

    # Stable sort by count descending, ties by class id ascending.
    order = sorted(nonempty, key=lambda c: (-counts[c], c))
    sc = counts[order].astype(np.float64)
    best_key, best_m = None, None
    for m in range(1, len(order)):
        rh, rt = sc[0] / sc[m - 1], sc[m] / sc[-1]
        key = (max(rh, rt), rh * rt, m)
        if best_key is None or key < best_key:
            best_key, best_m = key, m
    head = sorted(order[:best_m])
    tail = sorted(order[best_m:])
    return ClassSplit(tuple(head), tuple(tail), tuple(int(x) for x in counts), empty, "auto")


def _check_labels(labels: np.ndarray, num_classes: int | None) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    if labels.min() < 0:
        raise ValueError(f"labels must be >= 0, got {labels.min()}")
    if num_classes is not None and labels.max() >= num_classes:
        raise ValueError(f"labels contain {labels.max()} >= num_classes={num_classes}")
    return labels.astype(np.int64)

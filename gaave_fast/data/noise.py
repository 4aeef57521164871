"""Seeded synthetic label noise and long-tail subsampling (the GAAVE paper's CIFAR-10-LT protocol).

* Symmetric and pair flipping follow Han et al. 2018 (Co-teaching): symmetric flips go to one
  of the other ``C - 1`` classes uniformly, pair flips go ``c -> (c + 1) mod C``. Unlike a
  per-sample Bernoulli draw, exactly ``round(rate * n_c)`` samples of each class ``c`` are
  flipped, so the realized rate matches the request (to rounding) in every class.
* Long-tail subsampling follows Cui et al. 2019: class ``c`` keeps
  ``n_c = int(n_max * mu ** (-c / (C - 1)))`` samples (as their code: truncation), ``n_max``
  the largest class count; ``mu = 50`` on CIFAR-10 gives 5,000 ... 100 per class.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _check(labels: Sequence[int] | np.ndarray, rate: float, num_classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"rate must lie in [0, 1), got {rate}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}, got {labels.min()}..{labels.max()}")
    return labels.astype(np.int64)


def _flip_rows(labels: np.ndarray, rate: float, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Exactly round(rate * n_c) randomly chosen rows of each class c, as a bool mask [N]."""
    mask = np.zeros(len(labels), dtype=bool)
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        mask[rng.choice(members, size=round(rate * len(members)), replace=False)] = True
    return mask


def symmetric_noise(
    labels: Sequence[int] | np.ndarray, rate: float, num_classes: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Flip a fraction ``rate`` of each class to a uniformly drawn *other* class.

    Args:
        labels: int [N] clean labels in ``0..num_classes-1``.
        rate: noise rate ν in [0, 1).
        num_classes: C.
        seed: seed of the choice of rows and targets.

    Returns:
        ``(noisy_labels int64 [N], is_noisy bool [N])`` with ``is_noisy == (noisy != labels)``.
    """
    labels = _check(labels, rate, num_classes)
    rng = np.random.default_rng(seed)
    mask = _flip_rows(labels, rate, num_classes, rng)
    # An offset in 1..C-1 added mod C is uniform over the other classes.
    offset = rng.integers(1, num_classes, size=int(mask.sum()))
    noisy = labels.copy()
    noisy[mask] = (labels[mask] + offset) % num_classes
    return noisy, mask


def pair_noise(
    labels: Sequence[int] | np.ndarray, rate: float, num_classes: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Flip a fraction ``rate`` of each class ``c`` to ``(c + 1) % num_classes``.

    Same arguments and returns as :func:`symmetric_noise`.
    """
    labels = _check(labels, rate, num_classes)
    mask = _flip_rows(labels, rate, num_classes, np.random.default_rng(seed))
    noisy = labels.copy()
    noisy[mask] = (labels[mask] + 1) % num_classes
    return noisy, mask


def long_tail_counts(class_counts: Sequence[int], imbalance_ratio: float) -> np.ndarray:
    """Per-class sizes of the exponential long-tail profile, int64 [C].

    ``n_c = min(int(n_max * mu ** (-c / (C - 1))), class_counts[c])`` with ``n_max = max(class_counts)``.
    """
    counts = np.asarray(class_counts, dtype=np.int64)
    if imbalance_ratio < 1:
        raise ValueError(f"imbalance_ratio must be >= 1, got {imbalance_ratio}")
    if len(counts) < 2:
        raise ValueError("long-tail subsampling needs at least 2 classes")
    c = np.arange(len(counts))
    target = (counts.max() * float(imbalance_ratio) ** (-c / (len(counts) - 1))).astype(np.int64)
    return np.minimum(target, counts)


def long_tail_indices(
    labels: Sequence[int] | np.ndarray, imbalance_ratio: float, seed: int, num_classes: int | None = None
) -> np.ndarray:
    """Rows to keep for a long-tailed subset (Cui et al. 2019), class 0 the head.

    Args:
        labels: int [N] labels in ``0..num_classes-1``.
        imbalance_ratio: μ = n_max / n_min, >= 1.
        seed: seed of the choice of kept rows within each class.
        num_classes: C; default ``labels.max() + 1``.

    Returns:
        int64 [M] sorted row indices into ``labels``; class ``c`` keeps
        :func:`long_tail_counts` ``[c]`` rows chosen uniformly at random.
    """
    labels = np.asarray(labels, dtype=np.int64)
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    _check(labels, 0.0, num_classes)
    counts = long_tail_counts(np.bincount(labels, minlength=num_classes), imbalance_ratio)
    rng = np.random.default_rng(seed)
    keep = [rng.choice(np.flatnonzero(labels == c), size=int(n), replace=False) for c, n in enumerate(counts)]
    return np.sort(np.concatenate(keep)).astype(np.int64)

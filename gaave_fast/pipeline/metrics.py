"""Noise-detection metrics against known true labels (for tests and benchmarks)."""

from __future__ import annotations

import numpy as np


def roc_auc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` (higher = more likely positive), ties counted half.

    Computed as the Mann-Whitney U statistic from average ranks.

    Args:
        score: float [n]. positive: bool [n] (at least one of each class).
    """
    score = np.asarray(score, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    if score.shape != positive.shape:
        raise ValueError(f"score {score.shape} and positive {positive.shape} differ")
    n1 = int(positive.sum())
    n0 = positive.size - n1
    if n1 == 0 or n0 == 0:
        raise ValueError("positive must contain both classes")
    # Average rank (1-based) of each run of equal scores.
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    before = np.cumsum(counts) - counts
    r = (before + (counts + 1) / 2.0)[inverse]
    return float((r[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def detection_metrics(flagged: np.ndarray, is_noisy: np.ndarray, score: np.ndarray | None = None) -> dict[str, float]:
    """Precision, recall and F1 of a flagged set, and the AUROC of a score, against the truth.

    Args:
        flagged: bool [n], samples marked noisy.
        is_noisy: bool [n], observed label differs from the true label.
        score: float [n] suspicion (higher = more likely noisy), optional.

    Returns:
        dict with ``precision``, ``recall``, ``f1``, ``flagged`` (count), ``noise_rate`` and,
        with a score, ``auroc``.
    """
    f = np.asarray(flagged, dtype=bool)
    t = np.asarray(is_noisy, dtype=bool)
    if f.shape != t.shape:
        raise ValueError(f"flagged {f.shape} and is_noisy {t.shape} differ")
    tp = int((f & t).sum())
    p = tp / f.sum() if f.sum() else 0.0
    r = tp / t.sum() if t.sum() else 0.0
    out = {"precision": float(p), "recall": float(r), "f1": float(2 * p * r / (p + r)) if p + r else 0.0,
           "flagged": int(f.sum()), "noise_rate": float(t.mean())}
    if score is not None:
        out["auroc"] = roc_auc(score, t) if 0 < t.sum() < t.size else float("nan")
    return out

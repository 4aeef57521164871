"""Class-balanced oversampling (as used to train on AffectNet's skewed classes)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def class_weights(labels: Sequence[int] | np.ndarray) -> np.ndarray:
    """float64 [N] sampling weight of each sample, ``1 / count(its class)``: each class gets equal mass."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.ndim != 1 or len(labels) == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {labels.shape}")
    if labels.min() < 0:
        raise ValueError(f"labels must be >= 0, got {labels.min()}")
    return 1.0 / np.bincount(labels)[labels]


def balanced_sampler(
    labels: Sequence[int] | np.ndarray, seed: int = 0, num_samples: int | None = None
) -> torch.utils.data.WeightedRandomSampler:
    """A ``WeightedRandomSampler`` drawing each class equally often, with replacement.

    Args:
        labels: int [N] class of each sample.
        seed: seeds the sampler's generator (each epoch draws anew from it).
        num_samples: draws per epoch; default N.

    Returns:
        A sampler yielding row indices into ``labels``; pass it as ``DataLoader(sampler=...)``.
    """
    weights = torch.as_tensor(class_weights(labels))
    return torch.utils.data.WeightedRandomSampler(
        weights, len(weights) if num_samples is None else num_samples, replacement=True,
        generator=torch.Generator().manual_seed(seed))


def balanced_rows(labels: Sequence[int] | np.ndarray, seed: int = 0, num_samples: int | None = None) -> np.ndarray:
    """One epoch of class-balanced draws, int64 [num_samples] row indices (default N), with replacement.

    For pipelines that take a fixed list of rows (DALI's file reader) instead of a sampler.
    """
    weights = class_weights(labels)
    rng = np.random.default_rng(seed)
    return rng.choice(len(weights), size=len(weights) if num_samples is None else num_samples,
                      p=weights / weights.sum()).astype(np.int64)

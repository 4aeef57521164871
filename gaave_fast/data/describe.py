"""What a dataset says about its samples: labels, class names, file paths, publisher rows.

Works on the data layer's :class:`FaceDataset` and :class:`ArrayDataset` and on any map-style
dataset of ``(image, label[, index])`` items (falling back to reading the items or to positions).
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset


def dataset_labels(dataset: Dataset) -> np.ndarray:
    """int64 [N] labels: the ``labels`` attribute, ``samples["label"]``, or read from the items."""
    for get in (lambda d: d.labels, lambda d: d.samples["label"]):
        try:
            return np.asarray(get(dataset), dtype=np.int64)
        except (AttributeError, KeyError, TypeError):
            pass
    return np.array([int(dataset[i][1]) for i in range(len(dataset))], dtype=np.int64)


def dataset_classes(dataset: Dataset, num_classes: int | None = None) -> list[str]:
    """Class names: the ``classes`` attribute, else ``"0".."C-1"`` (C = ``num_classes`` or max label + 1)."""
    names = getattr(dataset, "classes", None)
    if names:
        return [str(c) for c in names]
    if num_classes is None:
        num_classes = int(dataset_labels(dataset).max()) + 1
    return [str(i) for i in range(num_classes)]


def dataset_paths(dataset: Dataset) -> list[str] | None:
    """The file of each sample (``samples["path"]`` or ``paths``), None for in-memory data."""
    for get in (lambda d: d.samples["path"], lambda d: d.paths):
        try:
            p = list(get(dataset))
        except (AttributeError, KeyError, TypeError):
            continue
        if len(p) == len(dataset):
            return [str(x) for x in p]
    return None


def dataset_rows(dataset: Dataset) -> np.ndarray:
    """int64 [N] row of each sample in the publisher's label file (``samples["row"]``), else positions."""
    samples = getattr(dataset, "samples", None)
    if samples is not None and "row" in samples:
        return samples["row"].to_numpy(np.int64)
    return np.arange(len(dataset), dtype=np.int64)

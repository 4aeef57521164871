"""Steps 1-2 (Dataset Splitting via :mod:`.split`, Subset Refactoring) on index/label arrays, and a
label-remapping dataset view.

* Head set D'h: every head-class sample with its class remapped to ``0..C1-1``, plus every
  tail-class sample as the extra class ``C1`` ("other").
* Tail set D't: every tail-class sample remapped to ``0..C2-1``, plus an extra class ``C2``
  drawn without replacement from the head classes, ``n = max tail-class count`` samples in
  all, split over the head classes in proportion to their counts (largest-remainder rounding,
  so the quotas sum to ``n`` exactly and each is within 1 of the exact proportion).

Everything is expressed as dataset positions, so any map-style dataset works.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from .split import ClassSplit, split_classes


@dataclass(frozen=True)
class RefactoredSubset:
    """One refactored subset.

    Attributes:
        name: ``"head"``, ``"tail"`` or ``"all"`` (no splitting).
        indices: int64 [n], positions in the training dataset (sorted).
        labels: int64 [n], remapped labels in ``0..num_classes-1``.
        classes: original class ids of the subset's real classes; remapped class ``j`` is
            ``classes[j]``. The extra class, when present, is ``len(classes)``.
        has_other: whether the subset has the extra "other" class.
    """

    name: str
    indices: np.ndarray
    labels: np.ndarray
    classes: tuple[int, ...]
    has_other: bool

    @property
    def num_classes(self) -> int:
        """Output classes of a model on this subset (real classes + the extra one if any)."""
        return len(self.classes) + int(self.has_other)

    @property
    def other(self) -> int:
        """The remapped id of the extra class (-1 when there is none)."""
        return len(self.classes) if self.has_other else -1

    def in_real_class(self) -> np.ndarray:
        """Boolean [n]: the sample's label is one of the subset's real classes (not "other")."""
        return self.labels != self.other

    def to_original(self, remapped: np.ndarray) -> np.ndarray:
        """Map remapped labels back to original class ids; the extra class maps to -1."""
        remapped = np.asarray(remapped, dtype=np.int64)
        lut = np.array(list(self.classes) + ([-1] if self.has_other else []), dtype=np.int64)
        return lut[remapped]

    def select(self, mask: np.ndarray) -> RefactoredSubset:
        """The samples where boolean ``mask`` [n] is True, same class map."""
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != self.indices.shape:
            raise ValueError(f"mask has shape {mask.shape}, expected {self.indices.shape}")
        return RefactoredSubset(self.name, self.indices[mask], self.labels[mask], self.classes,
                                self.has_other)


def refactor(labels: np.ndarray, split: ClassSplit, seed: int) -> tuple[RefactoredSubset, RefactoredSubset]:
    """Build D'h and D't from the (noisy) labels.

    Args:
        labels: int array [N], label of each dataset position.
        split: the head/tail classes (from :func:`~gaave_fast.pipeline.split.split_classes`).
        seed: seeds the draw of D't's extra class.

    Returns:
        ``(head_set, tail_set)``.
    """
    labels = np.asarray(labels).astype(np.int64)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= split.num_classes):
        raise ValueError(f"labels must lie in 0..{split.num_classes - 1}")
    head_map = np.full(split.num_classes, -1, np.int64)
    head_map[list(split.head)] = np.arange(len(split.head))
    tail_map = np.full(split.num_classes, -1, np.int64)
    tail_map[list(split.tail)] = np.arange(len(split.tail))

    pos = np.arange(labels.size, dtype=np.int64)
    is_head, is_tail = head_map[labels] >= 0, tail_map[labels] >= 0
    # D'h: head samples with their class, tail samples as "other" (= C1).
    h_idx = pos[is_head | is_tail]
    h_lab = np.where(head_map[labels[h_idx]] >= 0, head_map[labels[h_idx]], len(split.head))
    head_set = RefactoredSubset("head", h_idx, h_lab, split.head, True)

    # D't: tail samples with their class, plus a proportional draw from the head classes.
    counts = np.bincount(labels, minlength=split.num_classes)
    n_other = int(counts[list(split.tail)].max())
    quotas = proportional_quotas(counts[list(split.head)], n_other)
    rng = np.random.default_rng(seed)
    drawn = [rng.choice(pos[labels == c], size=q, replace=False) for c, q in zip(split.head, quotas) if q > 0]
    t_idx = np.concatenate([pos[is_tail]] + drawn)
    t_lab = np.where(is_tail[t_idx], tail_map[labels[t_idx]], len(split.tail))
    order = np.argsort(t_idx, kind="stable")
    tail_set = RefactoredSubset("tail", t_idx[order], t_lab[order], split.tail, True)
    return head_set, tail_set


def whole_set(labels: np.ndarray, num_classes: int) -> RefactoredSubset:
    """All samples with their own labels (the ablation without splitting and refactoring)."""
    labels = np.asarray(labels).astype(np.int64)
    return RefactoredSubset("all", np.arange(labels.size, dtype=np.int64), labels.copy(),
                            tuple(range(num_classes)), False)


@dataclass(frozen=True)
class Subsets:
    """The result of steps 1-2: the subsets each model trains on, and how they were made.

    Attributes:
        subsets: ``{"head": D'h, "tail": D't}``, or ``{"all": whole set}`` without splitting.
        info: JSON-ready description: ``data`` (fingerprint), ``split`` and ``imbalance`` (when
            split), ``subsets`` (classes, extra class, size, class counts of each) and, when the
            pipeline builds its own models, ``normalization``.
    """

    subsets: dict[str, RefactoredSubset]
    info: dict[str, Any]


def make_subsets(labels: np.ndarray, num_classes: int, *, split: bool, head_classes: Sequence[int] | None,
                 seed: int) -> Subsets:
    """Steps 1-2, Dataset Splitting and Subset Refactoring.

    Args:
        labels: int64 [N] (noisy) training labels.
        num_classes: C.
        split: split into head and tail (False: the whole set, the ``no_split`` ablation).
        head_classes: the head classes, None = the automatic rule of :mod:`.split`.
        seed: seeds the draw of D't's extra class.

    Returns:
        :class:`Subsets` (``info`` without ``data`` and ``normalization``).
    """
    info: dict[str, Any] = {}
    if split:
        cs = split_classes(labels, num_classes, head_classes)
        subsets = dict(zip(("head", "tail"), refactor(labels, cs, seed)))
        info["split"] = cs.to_dict()
        info["imbalance"] = {"head": cs.imbalance("head"), "tail": cs.imbalance("tail")}
    else:
        subsets = {"all": whole_set(labels, num_classes)}
    info["subsets"] = {n: {"classes": list(s.classes), "has_other": s.has_other, "size": int(s.indices.size),
                           "class_counts": np.bincount(s.labels, minlength=s.num_classes).tolist()}
                       for n, s in subsets.items()}
    return Subsets(subsets, info)


def proportional_quotas(counts: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` draws over groups in proportion to ``counts`` (largest remainder).

    Args:
        counts: int [G] group sizes (the quota never exceeds a group's size).
        total: draws wanted; capped at ``counts.sum()``.

    Returns:
        int64 [G] quotas summing to ``min(total, counts.sum())``; ties in the remainder go to
        the larger group, then the earlier one.
    """
    counts = np.asarray(counts, dtype=np.int64)
    total = int(min(total, counts.sum()))
    if total <= 0:
        return np.zeros_like(counts)
    exact = total * counts / counts.sum()
    q = np.floor(exact).astype(np.int64)
    rem = exact - q
    order = sorted(range(len(counts)), key=lambda g: (-rem[g], -counts[g], g))
    for g in order[: total - int(q.sum())]:
        q[g] += 1
    return q


class RemappedDataset(Dataset):
    """A ``Subset``-like view that swaps in new labels and keeps dataset positions.

    Items are ``(image, label, position)`` where ``image`` is the base dataset's image (its first
    item element), ``label`` the new label (int) and ``position`` the base-dataset position, so
    batches follow the loader contract ``(images, labels, indices)``.

    Args:
        dataset: map-style dataset whose items start with the image.
        indices: int [n] positions into ``dataset``.
        labels: int [n] labels to return.
    """

    def __init__(self, dataset: Dataset, indices: np.ndarray, labels: np.ndarray):
        indices = np.asarray(indices, dtype=np.int64)
        labels = np.asarray(labels, dtype=np.int64)
        if indices.shape != labels.shape or indices.ndim != 1:
            raise ValueError(f"indices {indices.shape} and labels {labels.shape} must be equal 1-D shapes")
        self.dataset, self.indices, self.labels = dataset, indices, labels

    @classmethod
    def of(cls, dataset: Dataset, subset: RefactoredSubset) -> RemappedDataset:
        """The view of ``dataset`` for a refactored subset."""
        return cls(dataset, subset.indices, subset.labels)

    def __len__(self) -> int:
        return int(self.indices.size)

    def __getitem__(self, i: int) -> tuple[Any, int, int]:
        item = self.dataset[int(self.indices[i])]
        image = item[0] if isinstance(item, (tuple, list)) else item["image"]
        return image, int(self.labels[i]), int(self.indices[i])

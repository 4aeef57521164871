"""The loader contract: turning whatever a loader yields into (images, labels, indices).

A batch is a tuple/list ``(images, labels[, indices])`` or a dict with keys
``image``/``images``, ``label``/``labels`` and optionally ``index``/``indices``
(DALI's ``DALIGenericIterator`` yields a one-element list of such dicts). Images
are N×C×H×W, either float (in [0,1] pixel units, or normalized with the
mean/std passed to the scan) or uint8 (0..255, converted to [0,1] and then
normalized with mean/std when given). Labels are integer class ids, indices the
dataset rows (unique per epoch).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

_IMAGE_KEYS = ("image", "images", "data", "x")
_LABEL_KEYS = ("label", "labels", "target", "targets", "y")
_INDEX_KEYS = ("index", "indices", "idx")


@dataclass
class Batch:
    images: torch.Tensor  # N×C×H×W
    labels: torch.Tensor  # N, int64
    indices: torch.Tensor | None  # N, int64, or None when the loader gives none


def _pick(batch: dict, keys: tuple[str, ...], what: str, number: int, required: bool = True):
    for key in keys:
        if key in batch:
            return batch[key]
    if required:
        raise ValueError(
            f"batch {number}: no {what} in the batch dict (keys {sorted(batch)}); "
            f"expected one of {list(keys)}"
        )
    return None


def parse_batch(batch, number: int) -> Batch:
    """Split one loader batch into images, labels and (optional) indices.

    Raises ValueError naming the batch number for anything outside the contract.
    """
    if isinstance(batch, list) and len(batch) == 1 and isinstance(batch[0], dict):
        batch = batch[0]  # DALIGenericIterator: one dict per pipeline
    if isinstance(batch, dict):
        images = _pick(batch, _IMAGE_KEYS, "images", number)
        labels = _pick(batch, _LABEL_KEYS, "labels", number)
        indices = _pick(batch, _INDEX_KEYS, "indices", number, required=False)
    elif isinstance(batch, (tuple, list)) and len(batch) in (2, 3):
        images, labels = batch[0], batch[1]
        indices = batch[2] if len(batch) == 3 else None
    else:
        raise ValueError(
            f"batch {number}: expected (images, labels[, indices]) or a dict with image/label/index "
            f"keys, got {type(batch).__name__}"
            + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
        )
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"batch {number}: images must be a torch.Tensor, got {type(images).__name__}")  # noqa: TRY004 (callers turn ValueError into the one-line error)
    if images.dim() != 4:
        raise ValueError(
            f"batch {number}: images must be 4-D [N, C, H, W], got shape {tuple(images.shape)}"
        )
    if not (images.is_floating_point() or images.dtype == torch.uint8):
        raise ValueError(f"batch {number}: images must be float or uint8, got {images.dtype}")
    labels = _as_vector(labels, "labels", number, images.shape[0])
    if indices is not None:
        indices = _as_vector(indices, "indices", number, images.shape[0])
    return Batch(images, labels, indices)


def _as_vector(values, name: str, number: int, n: int) -> torch.Tensor:
    t = torch.as_tensor(values)
    if t.dim() == 2 and t.shape[1] == 1:  # DALI yields labels as N×1
        t = t[:, 0]
    if t.dim() != 1 or t.shape[0] != n:
        raise ValueError(f"batch {number}: {name} must have shape [{n}] (one per image), got {tuple(t.shape)}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"batch {number}: {name} must be integers, got {t.dtype}")
    return t.long()


def refuses_positions(loader: Iterable) -> bool:
    """True when positions in this loader are not dataset indices (it shuffles)."""
    sampler = getattr(loader, "sampler", None)
    batch_sampler = getattr(loader, "batch_sampler", None)
    inner = getattr(batch_sampler, "sampler", None)
    for s in (sampler, inner):
        if s is not None and not isinstance(s, torch.utils.data.SequentialSampler):
            # DistributedSampler without shuffle is sequential within its shard but
            # its positions are not dataset indices either.
            return True
    return False


def samples_to_scan(
    batch: Batch,
    number: int,
    position: int,
    *,
    finished: set[int],
    seen: set[int],
    positions_refused: bool,
    verify_finished: Callable[[int, np.ndarray, np.ndarray, torch.Tensor], None] | None = None,
) -> tuple[np.ndarray, torch.Tensor, torch.Tensor] | None:
    """The samples of one parsed batch that a scan still has to attack (the full and early-exit scans).

    Args:
        batch: the parsed batch of ``n`` samples.
        number: the batch's number in the loader (for messages).
        position: how many samples the loader yielded before this batch; positions stand in for
            dataset indices when the batch carries none.
        finished: dataset indices scanned before a resume (skipped).
        seen: dataset indices taken so far by this scan; updated with the returned ones.
        positions_refused: the loader shuffles or shards, so positions cannot stand in for indices.
        verify_finished: called as ``(number, indices, labels, images)`` with the batch's finished
            samples, to check them against the checkpoint they were restored from.

    Returns:
        ``(indices [m] int64, images [m, C, H, W], labels [m] int64 on the CPU)`` of the ``m``
        samples left to scan, or None when the whole batch was finished before a resume.

    Raises:
        ValueError: a batch without indices where positions are refused, a dataset index that
            appears twice, or a negative label.
    """
    n = batch.images.shape[0]
    if batch.indices is None:
        if positions_refused:
            raise ValueError(
                "the loader shuffles (or shards) but yields no dataset indices, so results could not be "
                "mapped back to samples: yield (images, labels, indices), or scan an unshuffled loader"
            )
        indices = torch.arange(position, position + n)
    else:
        indices = batch.indices.cpu()
    idx = indices.numpy()
    todo = np.array([i not in finished for i in idx.tolist()], dtype=bool)
    if verify_finished is not None and not todo.all():
        done = torch.from_numpy(~todo)
        verify_finished(number, idx[~todo], batch.labels.cpu().numpy()[~todo],
                        batch.images[done.to(batch.images.device)])
    if not todo.any():
        return None
    repeated = [i for i in idx[todo].tolist() if i in seen]
    if repeated or len(set(idx.tolist())) != n:
        dup = repeated[0] if repeated else next(i for i in idx.tolist() if (idx == i).sum() > 1)
        raise ValueError(f"batch {number}: dataset index {dup} appears more than once in the loader")
    seen.update(idx[todo].tolist())
    keep = torch.from_numpy(todo)
    images = batch.images if bool(todo.all()) else batch.images[keep.to(batch.images.device)]
    labels = batch.labels.cpu()[keep]
    if len(labels) and int(labels.min()) < 0:
        raise ValueError(f"batch {number}: negative label {int(labels.min())}")
    return idx[todo], images, labels

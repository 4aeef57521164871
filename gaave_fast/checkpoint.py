"""Resumable progress for long scans: periodic, atomic checkpoints with a fingerprint.

A checkpoint holds the per-sample results finished so far, a checksum of each
finished sample's image, and a fingerprint of what produced them (model weights,
attack settings, data size, a hash of the dataset's labels and file names when it
has them). Resuming with a different fingerprint, or with other labels or images at
a finished dataset index, is refused, since mixing results of two settings or two
datasets would silently corrupt the scan.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gaave_fast import files
from gaave_fast.result import COLUMNS


def model_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 (hex, 16 chars) of the model's state dict: names, dtypes, shapes and values."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def data_fingerprint(loader) -> str | None:
    """SHA-256 (hex, 16 chars) of the labels and file paths of ``loader.dataset``, when it has them.

    None for loaders without such a dataset: the per-sample checks of :meth:`ScanCheckpoint.check_samples`
    still compare labels and image checksums at every finished index.
    """
    dataset = getattr(loader, "dataset", None)
    labels = getattr(dataset, "labels", None)
    if labels is None:
        return None
    digest = hashlib.sha256()
    values = labels.numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    digest.update(np.ascontiguousarray(values.astype(np.int64)).tobytes())
    for path in getattr(dataset, "paths", None) or ():
        digest.update(f"{path}\n".encode())
    return digest.hexdigest()[:16]


_CHECKSUM_WEIGHTS: dict[tuple[int, torch.device], torch.Tensor] = {}


@torch.no_grad()
def image_checksums(images: torch.Tensor) -> torch.Tensor:
    """A float32 [N] checksum per image (a fixed pseudo-random weighted sum of its values).

    Args:
        images: N×C×H×W, any dtype and device (checksums are computed where the images are).
    """
    flat = images.reshape(images.shape[0], -1).float()
    key = (flat.shape[1], flat.device)
    if key not in _CHECKSUM_WEIGHTS:
        gen = torch.Generator().manual_seed(flat.shape[1])
        _CHECKSUM_WEIGHTS[key] = (0.5 + torch.rand(flat.shape[1], generator=gen)).to(flat.device)
    return flat @ _CHECKSUM_WEIGHTS[key]


def _same_checksum(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # float32 sums of the same pixels differ by rounding (batch composition changes the kernels), other images by far more.
    return np.abs(a - b) <= 1e-4 * (np.abs(a) + np.abs(b)) + 1e-3


class ScanCheckpoint:
    """Reads and writes one checkpoint file (npz) for a scan with the given fingerprint."""

    def __init__(self, path: str | os.PathLike, fingerprint: dict[str, Any], columns: tuple[str, ...] = COLUMNS):
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.columns = columns

    def load(self) -> dict[str, np.ndarray] | None:
        """The finished columns and image ``checksum``, or None when there is no checkpoint yet.

        Raises ValueError when the checkpoint comes from another model, data size
        or attack setting, naming what differs.
        """
        if not self.path.exists():
            return None
        try:
            with np.load(self.path) as data:
                saved = json.loads(str(data["fingerprint"]))
                columns = {name: data[name] for name in (*self.columns, "checksum")}
        except (KeyError, ValueError, OSError) as err:
            raise ValueError(f"checkpoint {self.path} is unreadable or not a gaave_fast scan checkpoint: {err}") from err
        differs = {
            key: (saved.get(key), value) for key, value in self.fingerprint.items() if saved.get(key) != value
        }
        if differs:
            detail = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in differs.items())
            raise ValueError(
                f"checkpoint {self.path} was written by a different scan ({detail}). "
                "Use another checkpoint path, or delete this one to start over."
            )
        self._rows = {int(i): r for r, i in enumerate(columns["index"].tolist())}
        return columns

    def check_samples(self, saved: dict[str, np.ndarray], batch: int, indices: np.ndarray, labels: np.ndarray,
                      images: torch.Tensor) -> None:
        """Refuse a resume whose finished samples now have other labels or images.

        Args:
            saved: what :meth:`load` returned. batch: the loader's batch number (for the message).
            indices, labels: int [n] finished dataset indices of this batch and their labels now.
            images: [n, C, H, W] their images now (compared by :func:`image_checksums`).

        Raises:
            ValueError: naming the first differing dataset index.
        """
        rows = np.array([self._rows[int(i)] for i in indices], dtype=np.int64)
        now = image_checksums(images).cpu().numpy().astype(np.float32)
        bad = (saved["label"][rows] != labels) | ~_same_checksum(saved["checksum"][rows], now)
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            what = "label" if saved["label"][rows[j]] != labels[j] else "image"
            raise ValueError(f"checkpoint {self.path} was written on other data: batch {batch}, dataset index "
                             f"{int(indices[j])} has another {what} now; use another checkpoint path, or delete "
                             "this one to start over")

    def save(self, columns: dict[str, np.ndarray]) -> None:
        """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
        files.write_npz(self.path, fingerprint=np.array(json.dumps(self.fingerprint)), **columns)


def resume_from(store: ScanCheckpoint | None, columns: tuple[str, ...]) -> tuple[
        dict[str, list[np.ndarray]], set[int], Callable[[int, np.ndarray, np.ndarray, torch.Tensor], None] | None]:
    """Where a scan starts: what its checkpoint holds, or nothing.

    Args:
        store: the scan's checkpoint, or None when it keeps none.
        columns: the result columns the scan collects (``checksum`` is added).

    Returns:
        ``(done, finished, verify_finished)``: per column the list of finished arrays (the
        checkpoint's, if any), the finished dataset indices, and the check that finished samples
        met again in the loader still have their labels and images (``store.check_samples`` bound
        to the checkpoint; None without one).
    """
    done: dict[str, list[np.ndarray]] = {name: [] for name in (*columns, "checksum")}
    saved = store.load() if store is not None else None
    if saved is None:
        return done, set(), None
    for name, parts in done.items():
        parts.append(saved[name])
    return done, set(saved["index"].tolist()), partial(store.check_samples, saved)


def joined(done: dict[str, list[np.ndarray]], columns: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """Each column's collected arrays as one array (in the order they finished).

    Args:
        done: per column the list of arrays a scan collected (see :func:`resume_from`).
        columns: the columns to return; None = every one (``checksum`` included, for the checkpoint).
    """
    return {name: np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64) for name, parts in done.items()
            if columns is None or name in columns}

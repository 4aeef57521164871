"""``make_loader``: one call from a dataset to batches in the loader contract.

Backends: DALI (:mod:`gaave_fast.data.dali`, GPU decode where CUDA is up) and a torch
``DataLoader`` over the dataset's PIL decoding. Both yield dicts ``{"image", "label", "index"}``
(``index`` = dataset row), read each kept row exactly once per epoch (across shards too), and
agree on the same files up to JPEG-decoder / resize rounding.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from .dali import DaliLoader, dali_available
from .sampling import balanced_rows
from .validation import REPORT_COLUMNS, describe, scan_files


def _shard(n: int, shard_id: int, num_shards: int) -> slice:
    # The same contiguous split as DALI's readers: shard s gets [n*s/S, n*(s+1)/S).
    return slice(n * shard_id // num_shards, n * (shard_id + 1) // num_shards)


class EpochRows(torch.utils.data.Sampler[int]):
    """Rows for one shard, drawn anew each epoch (each ``iter()`` is one epoch).

    Every epoch orders ``rows`` (kept, seeded-shuffled, or class-balanced redrawn with
    ``labels``) identically on all shards, then hands shard ``shard_id`` its contiguous part.
    """

    def __init__(self, rows: np.ndarray, *, shuffle: bool, seed: int, shard_id: int, num_shards: int,
                 balance_labels: np.ndarray | None = None) -> None:
        self.rows, self.shuffle, self.seed = np.asarray(rows, dtype=np.int64), shuffle, seed
        self.shard_id, self.num_shards, self.balance_labels = shard_id, num_shards, balance_labels
        self.epoch = 0

    def epoch_rows(self, epoch: int) -> np.ndarray:
        """int64 rows of this shard in ``epoch``."""
        rows = self.rows
        if self.balance_labels is not None:
            rows = rows[balanced_rows(self.balance_labels[rows], seed=self.seed + epoch)]
        elif self.shuffle:
            rows = rows[np.random.default_rng([self.seed, epoch]).permutation(len(rows))]
        return rows[_shard(len(rows), self.shard_id, self.num_shards)]

    def __len__(self) -> int:
        s = _shard(len(self.rows), self.shard_id, self.num_shards)
        return s.stop - s.start

    def __iter__(self) -> Iterator[int]:
        rows = self.epoch_rows(self.epoch)
        self.epoch += 1
        return iter(rows.tolist())


class _SafeItems(torch.utils.data.Dataset):
    """Dataset items, or ``(None, row, error)`` for a sample that fails to load."""

    def __init__(self, dataset, flip: bool) -> None:
        self.dataset, self.flip = dataset, flip

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, row: int):
        try:
            image, label, index = self.dataset[row]
        except Exception as err:  # one bad file must not end the epoch: report it instead  # noqa: BLE001
            return None, int(row), f"{type(err).__name__}: {err}"
        if self.flip and torch.rand(()) < 0.5:
            image = image.flip(-1)
        return image, label, index


def _collate(items: list) -> dict:
    good = [it for it in items if it[0] is not None]
    return {
        "image": torch.stack([it[0] for it in good]) if good else torch.empty(0),
        "label": torch.tensor([it[1] for it in good], dtype=torch.int64),
        "index": torch.tensor([it[2] for it in good], dtype=torch.int64),
        "failed": [(it[1], it[2]) for it in items if it[0] is None],  # (row, error)
    }


class TorchLoader:
    """A torch ``DataLoader`` in the loader contract that skips (and names) unreadable samples.

    Arguments as :func:`make_loader`; ``rows`` are the dataset rows to read.
    """

    backend = "torch"

    def __init__(self, dataset, rows: np.ndarray, *, batch_size: int, shuffle: bool, flip: bool, workers: int,
                 seed: int, shard_id: int, num_shards: int, balance: bool) -> None:
        self.dataset = dataset
        self.sampler = EpochRows(rows, shuffle=shuffle, seed=seed, shard_id=shard_id, num_shards=num_shards,
                                 balance_labels=np.asarray(dataset.labels) if balance else None)
        self._loader = torch.utils.data.DataLoader(
            _SafeItems(dataset, flip), batch_size=batch_size, sampler=self.sampler, num_workers=workers,
            collate_fn=_collate, pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for batch in self._loader:
            failed = batch.pop("failed")
            if failed:
                paths = getattr(self.dataset, "paths", None)
                named = [f"row {row}{' ' + paths[row] if paths else ''}: {err}" for row, err in failed]
                warnings.warn(f"skipped {len(failed)} unreadable samples:\n  " + "\n  ".join(named), stacklevel=2)
            if batch["index"].numel():
                yield batch


def _report_from(exclude: pd.DataFrame | Iterable[int] | None, dataset) -> pd.DataFrame:
    if exclude is None:
        return pd.DataFrame(columns=list(REPORT_COLUMNS))
    if isinstance(exclude, pd.DataFrame):
        if "row" not in exclude.columns:
            raise ValueError("exclude: a DataFrame needs a 'row' column (as validate() returns)")
        report = exclude.copy()
    else:
        report = pd.DataFrame({"row": np.asarray(list(exclude), dtype=np.int64)})
    paths = getattr(dataset, "paths", None)
    if "path" not in report.columns:
        report["path"] = [paths[r] if paths else "" for r in report["row"]]
    if "problem" not in report.columns:
        report["problem"] = "excluded by the caller"
    return report[list(REPORT_COLUMNS)]


def make_loader(
    dataset,
    backend: str = "auto",
    *,
    batch_size: int = 256,
    shuffle: bool = False,
    flip: bool = False,
    workers: int | None = None,
    seed: int = 0,
    shard_id: int = 0,
    num_shards: int = 1,
    device: str = "auto",
    rows: Sequence[int] | np.ndarray | None = None,
    exclude: pd.DataFrame | Iterable[int] | None = None,
    check: str = "quick",
    balance: bool = False,
    progress: bool = False,
) -> DaliLoader | TorchLoader:
    """Batches ``{"image", "label", "index"}`` of a dataset (the loader contract of ``scan``).

    Args:
        dataset: a :class:`~gaave_fast.data.FaceDataset` (any reader's output) or an
            :class:`~gaave_fast.data.ArrayDataset`.
        backend: ``"dali"``, ``"torch"`` or ``"auto"`` (DALI for file datasets when installed).
        batch_size: samples per batch; the last batch of an epoch may be smaller.
        shuffle: new seeded order each epoch (the same on all shards).
        flip: random horizontal flips (training).
        workers: DALI threads / DataLoader worker processes (default: all CPUs; torch 0 = main process).
        seed: seed of shuffling, flips and balancing.
        shard_id, num_shards: this process's shard (e.g. its GPU rank) of contiguous shards.
        device: DALI only: ``"auto"`` (GPU decode when CUDA is available), ``"gpu"``, ``"cpu"``.
        rows: dataset rows to read (default all).
        exclude: rows to leave out: a :func:`~gaave_fast.data.validate` report or row numbers.
        check: ``"quick"`` (default) checks headers, file ends and boxes of file datasets
            first; ``"full"`` decodes every image (:func:`validate`); ``"none"`` skips it.
            Broken rows are excluded with a warning naming them.
        balance: class-balanced oversampling (torch: redrawn each epoch; DALI: drawn once).
        progress: progress bar for the check.

    Returns:
        An iterable with ``len()`` (batches per epoch) and attributes ``backend``,
        ``excluded`` (DataFrame row/path/problem) and ``rows`` (rows read, before sharding).
        ``image``: float32 N×3×H×W (N×C×H×W for arrays) in [0, 1] or normalized with the
        dataset's mean/std; ``label``, ``index``: int64 [N].
    """
    if backend not in ("auto", "dali", "torch"):
        raise ValueError(f"backend must be 'auto', 'dali' or 'torch', got {backend!r}")
    if check not in ("quick", "full", "none"):
        raise ValueError(f"check must be 'quick', 'full' or 'none', got {check!r}")
    if not 0 <= shard_id < num_shards:
        raise ValueError(f"shard_id must lie in 0..{num_shards - 1}, got {shard_id}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    file_based = hasattr(dataset, "paths")
    if backend == "auto":
        backend = "dali" if file_based and dali_available() else "torch"
    if backend == "dali" and not file_based:
        raise ValueError(f"backend='dali' reads image files; {type(dataset).__name__} is in memory: use 'torch'")
    if backend == "dali" and not dali_available():
        raise ImportError("backend='dali' needs NVIDIA DALI (pip install nvidia-dali-cuda130)")
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    rows = np.arange(len(dataset), dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    if len(rows) and (rows.min() < 0 or rows.max() >= len(dataset)):
        raise ValueError(f"rows must lie in 0..{len(dataset) - 1}")

    report, sizes = _report_from(exclude, dataset), None
    if file_based and check != "none":
        found, sizes = scan_files(dataset, np.unique(rows), decode=check == "full", workers=workers,
                                  progress=progress)
        report = pd.concat([report, found]).drop_duplicates("row").sort_values("row", ignore_index=True)
    report = report[report["row"].isin(rows)].reset_index(drop=True)
    if len(report):
        warnings.warn(f"{getattr(dataset, 'name', '') or type(dataset).__name__}: excluding {len(report)} "
                      f"samples:\n  {describe(report)}", stacklevel=2)
        rows = rows[~np.isin(rows, report["row"].to_numpy())]
    if len(rows) == 0:
        raise ValueError("no rows left to load")

    if backend == "dali":
        read = rows[balanced_rows(dataset.labels[rows], seed)] if balance else rows
        loader = DaliLoader(dataset, read, batch_size=batch_size, workers=workers, device=device, shard_id=shard_id,
                            num_shards=num_shards, shuffle=shuffle, flip=flip, seed=seed, sizes=sizes)
    else:
        loader = TorchLoader(dataset, rows, batch_size=batch_size, shuffle=shuffle, flip=flip, workers=workers,
                             seed=seed, shard_id=shard_id, num_shards=num_shards, balance=balance)
    loader.excluded, loader.rows = report, rows
    return loader

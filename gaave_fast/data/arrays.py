"""Datasets held in memory as uint8 arrays, and loaders for the shared npz files.

``ArrayDataset`` serves small decoded images (FER2013 48×48, CIFAR-10 32×32) without touching
the file system; the npz loaders read the research copies described in
``shared/data/README.md`` (FER2013 with its original labels; CIFAR-10 as JPEG bytes with the
CIFAR-10N human labels beside it).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from .errors import DatasetFormatError, require_file
from .noise import long_tail_indices, pair_noise, symmetric_noise

FER2013_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FER2013_USAGES = ("Training", "PublicTest", "PrivateTest")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10N_LABELS = ("aggre", "worse", "random1", "random2", "random3")


class ArrayDataset(torch.utils.data.Dataset):
    """Images held in memory.

    Args:
        images: uint8 [N, H, W] (grayscale, items get C = 1) or [N, H, W, C].
        labels: int [N] class of each image.
        indices: int [N] the dataset row reported for each item; default ``arange(N)``.
        transform: optional callable on the float32 C×H×W tensor in [0, 1].
        classes: class names (``classes[label]``), optional.
        samples: per-sample metadata table (e.g. the publisher's ``row``), optional;
            default a table of ``label`` and ``row = indices``.

    Items are ``(image float32 C×H×W in [0, 1], label int, index int)``.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: Sequence[int] | np.ndarray,
        indices: Sequence[int] | np.ndarray | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        *,
        classes: Sequence[str] | None = None,
        samples: pd.DataFrame | None = None,
    ) -> None:
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise ValueError(f"images must be uint8 [N,H,W] or [N,H,W,C], got {images.dtype} {images.shape}")
        labels = np.asarray(labels, dtype=np.int64)
        indices = np.arange(len(images), dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64)
        if not len(images) == len(labels) == len(indices):
            raise ValueError(f"images, labels, indices lengths differ: {len(images)}, {len(labels)}, {len(indices)}")
        self.images = images
        self.labels = labels
        self.indices = indices
        self.transform = transform
        self.classes = None if classes is None else list(classes)
        self.samples = pd.DataFrame({"label": labels, "row": indices}) if samples is None else samples

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return f"ArrayDataset({len(self)} images {tuple(self.images.shape[1:])})"

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        img = torch.from_numpy(self.images[i])
        img = (img[None] if img.ndim == 2 else img.permute(2, 0, 1)).float().div_(255.0)
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.labels[i]), int(self.indices[i])


def load_fer2013_npz(
    path: str | Path, test_usage: Sequence[str] = ("PublicTest", "PrivateTest")
) -> tuple[ArrayDataset, ArrayDataset, dict[str, Any]]:
    """Load the shared FER2013 npz (48×48 grayscale faces with their original, noisy labels).

    Args:
        path: ``fer2013/fer2013.npz`` (arrays ``images``, ``label``, ``usage``, ``row_index``).
        test_usage: which of ``"PublicTest"``, ``"PrivateTest"`` form the test set.

    Returns:
        ``(train, test, meta)``: ``ArrayDataset``s with indices ``0..n-1`` (items 1×48×48),
        and ``meta`` with ``classes``, ``train_rows`` / ``test_rows`` (row in the original
        ``fer2013.csv``), ``test_usage`` (the usage name of each test image).
    """
    path = Path(path)
    require_file(path, "FER2013 npz")
    unknown = set(test_usage) - set(FER2013_USAGES[1:])
    if unknown:
        raise ValueError(f"test_usage: unknown usages {sorted(unknown)}, expected PublicTest/PrivateTest")
    with np.load(path) as z:
        images, labels, usage, rows = z["images"], z["label"].astype(np.int64), z["usage"], z["row_index"]
    train = usage == 0
    test = np.isin(usage, [FER2013_USAGES.index(u) for u in test_usage])

    def part(mask: np.ndarray) -> ArrayDataset:
        samples = pd.DataFrame({"label": labels[mask], "row": rows[mask].astype(np.int64),
                                "usage": [FER2013_USAGES[u] for u in usage[mask]]})
        return ArrayDataset(images[mask], labels[mask], classes=FER2013_CLASSES, samples=samples)

    meta = {"classes": FER2013_CLASSES, "train_rows": rows[train], "test_rows": rows[test],
            "test_usage": np.array([FER2013_USAGES[u] for u in usage[test]])}
    return part(train), part(test), meta


def decode_jpeg_blob(blob: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Decode images ``rows`` of a concatenated-JPEG blob to uint8 [len(rows), H, W, 3].

    Image ``i`` is ``blob[offsets[i]:offsets[i+1]]``; all images must share one size.
    """
    out = None
    for k, i in enumerate(rows):
        with Image.open(io.BytesIO(blob[offsets[i]:offsets[i + 1]].tobytes())) as im:
            rgb = np.asarray(im.convert("RGB"))
        if out is None:
            out = np.empty((len(rows), *rgb.shape), np.uint8)
        out[k] = rgb
    return np.empty((0, 0, 0, 3), np.uint8) if out is None else out


def load_cifar10_npz(
    path: str | Path,
    noise: str | None = None,
    *,
    rate: float = 0.0,
    imbalance_ratio: float | None = None,
    seed: int = 0,
) -> tuple[ArrayDataset, ArrayDataset, dict[str, Any]]:
    """Load the shared CIFAR-10 JPEG npz, optionally long-tailed and with label noise.

    Args:
        path: ``cifar10/cifar10_jpeg.npz`` (``jpeg``, ``offsets``, ``label``, ``split``).
        noise: ``None`` (clean labels); ``"symmetric"`` or ``"pair"`` (synthetic, at ``rate``,
            see :mod:`gaave_fast.data.noise`); or a CIFAR-10N human label set ``"aggre"``,
            ``"worse"``, ``"random1"``, ``"random2"``, ``"random3"`` read from
            ``cifar10n_labels.npz`` in the same folder.
        rate: noise rate for the synthetic kinds, in [0, 1).
        imbalance_ratio: if given, subsample the training set to a long tail with this
            ratio μ (Cui et al. 2019; μ = 50 gives the GAAVE paper's CIFAR-10-LT) before noise.
        seed: seed of the subsampling and the synthetic noise.

    Returns:
        ``(train, test, meta)``: ``ArrayDataset``s of 3×32×32 items; train indices are
        ``0..n-1``. ``meta``: ``classes``, ``train_rows`` (canonical CIFAR-10 training index of
        each train item), ``clean_label`` [n], ``is_noisy`` bool [n] (labels != clean labels).
    """
    path = Path(path)
    require_file(path, "CIFAR-10 npz")
    kinds = (None, "symmetric", "pair", *CIFAR10N_LABELS)
    if noise not in kinds:
        raise ValueError(f"noise must be one of {kinds}, got {noise!r}")
    with np.load(path) as z:
        blob, offsets, clean, split = z["jpeg"], z["offsets"], z["label"].astype(np.int64), z["split"]
    train_rows = np.flatnonzero(split == 0)
    test_rows = np.flatnonzero(split == 1)
    if imbalance_ratio is not None:
        train_rows = train_rows[long_tail_indices(clean[train_rows], imbalance_ratio, seed, num_classes=10)]
    labels = clean[train_rows].copy()
    if noise in ("symmetric", "pair"):
        flip = symmetric_noise if noise == "symmetric" else pair_noise
        labels, _ = flip(labels, rate, 10, seed)
    elif noise is not None:
        human_path = path.parent / "cifar10n_labels.npz"
        require_file(human_path, "CIFAR-10N labels (next to the CIFAR-10 npz)")
        with np.load(human_path) as z:
            key = f"{noise}_label" if noise in ("aggre", "worse") else f"random_label{noise[-1]}"
            if key not in z:
                raise DatasetFormatError(f"{human_path}: no array {key!r}, has {sorted(z.files)}")
            human = z[key].astype(np.int64)
        labels = human[train_rows]  # CIFAR-10N is in canonical order = train_rows' numbering
    meta = {"classes": CIFAR10_CLASSES, "train_rows": train_rows, "clean_label": clean[train_rows],
            "is_noisy": labels != clean[train_rows]}
    train = ArrayDataset(decode_jpeg_blob(blob, offsets, train_rows), labels, classes=CIFAR10_CLASSES,
                         samples=pd.DataFrame({"label": labels, "row": train_rows, "clean_label": clean[train_rows]}))
    test = ArrayDataset(decode_jpeg_blob(blob, offsets, test_rows), clean[test_rows], classes=CIFAR10_CLASSES,
                        samples=pd.DataFrame({"label": clean[test_rows], "row": test_rows}))
    return train, test, meta

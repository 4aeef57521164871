"""``KIND:PATH`` dataset arguments: parsing, opening with the data layer's readers, checks.

Kinds and what PATH is:

* ``rafdb``: the RAF-DB folder (``EmoLabel/``, ``Image/aligned/``); splits train, test, all.
* ``ferplus``: the FERPlus folder (``fer2013new.csv``, ``FER2013Train/`` ...); train, valid, test.
* ``fer2013``: the original ``fer2013.csv``; train, valid, test, all.
* ``affectnet``: the AffectNet folder; train, val.
* ``folder``: an image tree ``<root>/<class>/<image>``; no splits.
* ``csv``: a manifest with ``path, label[, x, y, w, h]``; no splits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch.utils.data import Dataset

from gaave_fast.data import (
    FaceDataset,
    read_affectnet,
    read_fer2013_csv,
    read_ferplus,
    read_image_folder,
    read_manifest,
    read_rafdb,
    validate,
)
from gaave_fast.data.describe import dataset_classes

from .common import CliError

KINDS = ("rafdb", "ferplus", "fer2013", "affectnet", "folder", "csv")
SPLITS: dict[str, tuple[str, ...]] = {
    "rafdb": ("train", "test", "all"), "ferplus": ("train", "valid", "test"),
    "fer2013": ("train", "valid", "test", "all"), "affectnet": ("train", "val"), "folder": (), "csv": (),
}
TEST_SPLIT = {"rafdb": "test", "ferplus": "test", "fer2013": "test", "affectnet": "val"}
# Native sizes where the publisher ships aligned crops (RAF-DB 100 px, FER 48 px); AffectNet's
# boxes are resized to the paper's 224; other folders to 112.
IMAGE_SIZE = {"rafdb": 100, "ferplus": 48, "fer2013": 48, "affectnet": 224, "folder": 112, "csv": 112}
SPEC_HELP = f"KIND:PATH with KIND one of {', '.join(KINDS)}"


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed ``KIND:PATH`` argument (``path`` made absolute)."""

    kind: str
    path: Path

    def __str__(self) -> str:
        return f"{self.kind}:{self.path}"


def parse_spec(text: str) -> DatasetSpec:
    """Parse ``KIND:PATH``; the path must exist.

    Raises:
        CliError: no colon, an unknown kind, or a path that does not exist.
    """
    kind, sep, path = str(text).partition(":")
    if not sep or not path:
        raise CliError(f"dataset {text!r} must be {SPEC_HELP} (e.g. rafdb:/data/RAF-DB)")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise CliError(f"unknown dataset kind {kind!r} in {text!r}: use one of {', '.join(KINDS)}")
    p = Path(path).expanduser().resolve()
    if not p.exists():
        raise CliError(f"{kind} dataset path does not exist: {p}")
    if kind == "fer2013" and not p.is_file():
        raise CliError(f"fer2013 expects the fer2013.csv file, got the folder {p}")
    if kind == "csv" and not p.is_file():
        raise CliError(f"csv expects a manifest file (path,label[,x,y,w,h]), got the folder {p}")
    if kind not in ("fer2013", "csv") and not p.is_dir():
        raise CliError(f"{kind} expects a folder, got the file {p}")
    return DatasetSpec(kind, p)


def default_split(kind: str) -> str | None:
    """The training split of a kind (None for kinds without splits)."""
    return "train" if SPLITS[kind] else None


def check_split(spec: DatasetSpec, split: str | None) -> str | None:
    """``split`` or the kind's default, checked against the kind's splits."""
    if split is None:
        return default_split(spec.kind)
    if not SPLITS[spec.kind]:
        raise CliError(f"{spec.kind} datasets have no splits; drop --split {split} (use --test for a test set)")
    if split not in SPLITS[spec.kind]:
        raise CliError(f"{spec.kind} has no split {split!r}; use one of {', '.join(SPLITS[spec.kind])}")
    return split


def open_dataset(spec: DatasetSpec, split: str | None, image_size: int | None,
                 affectnet_classes: int = 7) -> Dataset:
    """Read a dataset with the data layer's reader for its kind.

    Args:
        spec: the parsed argument. split: checked by :func:`check_split`.
        image_size: side in pixels (None = :data:`IMAGE_SIZE` of the kind); FER2013 stays 48.
        affectnet_classes: 7 or 8 (with contempt).

    Returns:
        A :class:`FaceDataset` (files) or :class:`ArrayDataset` (FER2013 pixels) with ``classes``.
    """
    split = check_split(spec, split)
    size = image_size or IMAGE_SIZE[spec.kind]
    p = spec.path
    if spec.kind == "rafdb":
        return read_rafdb(p, split, image_size=size)
    if spec.kind == "ferplus":
        return read_ferplus(p, split, image_size=size)
    if spec.kind == "fer2013":
        if image_size not in (None, 48):
            raise CliError("fer2013.csv holds 48x48 faces; drop --image-size (other sizes are not supported)")
        return read_fer2013_csv(p, split)
    if spec.kind == "affectnet":
        if affectnet_classes not in (7, 8):
            raise CliError(f"--affectnet-classes must be 7 or 8, got {affectnet_classes}")
        return read_affectnet(p, split, affectnet_classes, image_size=size)
    if spec.kind == "folder":
        return read_image_folder(p, image_size=size)
    return read_manifest(p, image_size=size)


def check_labels(dataset: Dataset, num_classes: int, what: str) -> None:
    """Refuse labels outside ``0..num_classes-1``, naming the first bad sample.

    Raises:
        CliError: a label is negative or >= ``num_classes``.
    """
    labels = np.asarray(dataset.labels)
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        i = int(bad[0])
        where = f" ({dataset.paths[i]})" if hasattr(dataset, "paths") else ""
        raise CliError(f"{what}: sample {i}{where} has label {int(labels[i])}, outside the {num_classes} classes "
                       f"0..{num_classes - 1} ({bad.size} such samples)")


def check_same_classes(train: Dataset, test: Dataset) -> None:
    """The test set must name the same classes in the same order as the training set."""
    a, b = dataset_classes(train), dataset_classes(test)
    if a != b:
        raise CliError(f"the test set's classes {b} differ from the training set's {a}; "
                       "give a test set with the same class names")


def without_rows(dataset: Dataset, rows: np.ndarray) -> Dataset:
    """The dataset without the given positions (broken files); positions are renumbered 0..n-1."""
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        return dataset
    if not isinstance(dataset, FaceDataset):
        raise CliError(f"cannot exclude rows from a {type(dataset).__name__}")
    keep = np.setdiff1d(np.arange(len(dataset)), rows)
    return FaceDataset(dataset.samples.iloc[keep].reset_index(drop=True), dataset.classes,
                       image_size=dataset.image_size, name=dataset.name)


def find_broken(dataset: Dataset, check: str, workers: int | None) -> pd.DataFrame:
    """Broken files of a file dataset (``check``: ``"full"`` decodes, ``"quick"`` reads headers, ``"none"``).

    Returns:
        :func:`~gaave_fast.data.validate`'s table (``row, path, problem``); empty for in-memory data.
    """
    if check == "none" or not hasattr(dataset, "paths"):
        return pd.DataFrame(columns=["row", "path", "problem"])
    return validate(dataset, workers=workers, decode=check == "full", progress=False)


def describe_dataset(spec: DatasetSpec, split: str | None, dataset: Dataset) -> dict[str, Any]:
    """What identifies a dataset in a run folder's ``run.json``."""
    return {"spec": str(spec), "kind": spec.kind, "path": str(spec.path), "split": split,
            "image_size": getattr(dataset, "image_size", None) and list(dataset.image_size),
            "classes": dataset_classes(dataset), "samples": len(dataset)}


__all__ = ["KINDS", "SPEC_HELP", "DatasetSpec", "check_labels", "check_same_classes", "check_split",
           "default_split", "describe_dataset", "find_broken", "open_dataset", "parse_spec",
           "without_rows"]

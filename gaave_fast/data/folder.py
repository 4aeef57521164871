"""Generic sources: a class-per-sub-folder image tree and a CSV manifest."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .dataset import BOX_COLUMNS, FaceDataset
from .errors import (
    DatasetFormatError,
    DatasetNotFoundError,
    read_label_text,
    require_file,
)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def read_image_folder(
    root: str | Path, *, extensions: Sequence[str] = IMAGE_EXTENSIONS, **options: Any
) -> FaceDataset:
    """Read ``<root>/<class name>/**/<image>`` (torchvision ``ImageFolder`` layout).

    Classes are the sub-folder names in sorted order; files are listed recursively in sorted
    order and matched by extension (case-insensitive). ``samples.row`` is the position in that
    order. ``**options`` are :class:`FaceDataset` options.

    Raises:
        DatasetNotFoundError: ``root`` is not a folder. DatasetFormatError: no class folder
        or no image in it.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DatasetNotFoundError(f"image folder not found: {root}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise DatasetFormatError(f"{root}: no class sub-folders (expected <root>/<class>/<image>)")
    exts = {e.lower() for e in extensions}
    records = [(str(p), label) for label, name in enumerate(classes)
               for p in sorted((root / name).rglob("*"))
               # A broken symlink stays a sample, so that validate and the loaders report it missing.
               if (p.is_file() or (p.is_symlink() and not p.exists())) and p.suffix.lower() in exts]
    if not records:
        raise DatasetFormatError(f"{root}: no images with extensions {sorted(exts)} in {classes}")
    samples = pd.DataFrame(records, columns=["path", "label"])
    samples["row"] = np.arange(len(samples))
    return FaceDataset(samples, classes, name=f"folder {root.name}", **options)


def read_manifest(
    csv: str | Path, *, root: str | Path | None = None, classes: Sequence[str] | None = None, **options: Any
) -> FaceDataset:
    """Read a CSV manifest with columns ``path, label`` and optionally ``x, y, w, h`` (face box).

    Args:
        csv: the manifest; extra columns are kept as metadata.
        root: folder relative paths start from; default the manifest's folder.
        classes: class names. Labels may be integers (``0..len(classes)-1``) or class names;
            without ``classes``, integer labels get names ``"0".."C-1"`` and named labels the
            sorted unique names; a mix of the two (e.g. ``-1``, ``1.0`` or ``happy`` among class
            ids) is an error.
        **options: :class:`FaceDataset` options.

    Box cells left empty mean "whole image". ``samples.row`` is the 0-based data row.

    Raises:
        DatasetNotFoundError: no manifest. DatasetFormatError naming the row: missing
        ``path``/``label`` columns, only some of ``x, y, w, h``, an unknown label, mixed
        class ids and names, a non-numeric box.
    """
    csv = Path(csv).expanduser().resolve()
    require_file(csv, "manifest")
    base = csv.parent if root is None else Path(root).expanduser().resolve()
    frame = pd.read_csv(io.StringIO(read_label_text(csv)), dtype={"path": str, "label": str}, keep_default_na=False)
    missing = [c for c in ("path", "label") if c not in frame.columns]
    if missing:
        raise DatasetFormatError(f"{csv}: missing columns {missing}; has {list(frame.columns)}")
    box_cols = [c for c in BOX_COLUMNS if c in frame.columns]
    if box_cols and len(box_cols) != 4:
        raise DatasetFormatError(f"{csv}: a box needs all of columns {list(BOX_COLUMNS)}, found only {box_cols}")
    labels, names = _encode_labels(frame["label"].str.strip(), classes, csv)
    samples = frame.copy()
    samples["label"] = labels
    samples["path"] = [str(base / p) for p in frame["path"]]
    samples["row"] = np.arange(len(frame))
    for c in box_cols:
        text = frame[c].astype(str).str.strip()
        values = pd.to_numeric(text.where(text != "", "nan"), errors="coerce")
        bad = values.isna() & (text != "")
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DatasetFormatError(f"{csv} row {row} (line {row + 2}): box column {c!r} is not a number: {text[row]!r}")
        samples[c] = values.astype(np.float64)
    return FaceDataset(samples, names, name=f"manifest {csv.name}", **options)


def _encode_labels(text: pd.Series, classes: Sequence[str] | None, csv: Path) -> tuple[np.ndarray, list[str]]:
    """Label cells -> int64 codes and class names (see :func:`read_manifest`)."""
    empty = (text == "").to_numpy()
    if empty.any():
        row = int(np.flatnonzero(empty)[0])
        raise DatasetFormatError(f"{csv} row {row} (line {row + 2}): empty label")
    ids = text.str.fullmatch(r"\d+").to_numpy()
    if classes is None and not ids.all():
        # A stray "-1", "1.0" or "happy" among class ids (or a number among names) would
        # silently turn every label into a name: refuse the odd one out, naming its row.
        numeric = pd.to_numeric(text, errors="coerce").notna().to_numpy()
        odd = ~ids if ids.sum() * 2 >= len(ids) else numeric
        if odd.any():
            row = int(np.flatnonzero(odd)[0])
            raise DatasetFormatError(
                f"{csv} row {row} (line {row + 2}): label {text.iloc[row]!r} does not fit the others; labels "
                "must be all class ids 0..C-1 or all class names")
    if ids.all():
        codes = text.astype(np.int64).to_numpy()
        names = list(classes) if classes is not None else [str(i) for i in range(int(codes.max(initial=-1)) + 1)]
        bad = codes >= len(names)
    else:
        names = list(classes) if classes is not None else sorted(set(text))
        lookup = {name: i for i, name in enumerate(names)}
        codes = np.array([lookup.get(t, -1) for t in text], dtype=np.int64)
        bad = codes < 0
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DatasetFormatError(f"{csv} row {row} (line {row + 2}): unknown label {text.iloc[row]!r}; classes are {names}")
    return codes, names

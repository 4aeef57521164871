"""AffectNet (manually annotated part), read from the publisher's layout.

Layout (as shipped)::

    <root>/Manually_Annotated_file_lists/training.csv     (or <root>/training.csv)
    <root>/Manually_Annotated_file_lists/validation.csv   (some copies have no header line)
    <root>/Manually_Annotated_Images/<subDirectory_filePath>  (or <root>/<subDirectory_filePath>)

CSV columns: ``subDirectory_filePath, face_x, face_y, face_width, face_height,
facial_landmarks, expression, valence, arousal``. Expression codes: 0 neutral, 1 happy,
2 sad, 3 surprise, 4 fear, 5 disgust, 6 anger, 7 contempt, 8 none, 9 uncertain, 10 non-face.
Codes 8, 9, 10 are dropped (and 7 in the 7-class mode); the face box is the crop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .dataset import FaceDataset
from .errors import DatasetFormatError, DatasetNotFoundError

AFFECTNET_CLASSES = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt")
COLUMNS = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height",
           "facial_landmarks", "expression", "valence", "arousal")
_CSV_NAMES = {"train": "training.csv", "val": "validation.csv"}
_MAX_CODE = 10


def _find(root: Path, candidates: list[Path], what: str) -> Path:
    for path in candidates:
        if path.exists():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise DatasetNotFoundError(f"AffectNet {what} not found under {root} (looked for {tried})")


def _read_csv(csv: Path) -> pd.DataFrame:
    with open(csv, newline="") as f:
        first = f.readline().strip().split(",")
    has_header = first[0] == COLUMNS[0]
    if has_header and tuple(first) != COLUMNS:
        missing = [c for c in COLUMNS if c not in first]
        raise DatasetFormatError(f"{csv}: header {first} differs from AffectNet's {list(COLUMNS)} (missing {missing})")
    if not has_header and len(first) != len(COLUMNS):
        raise DatasetFormatError(f"{csv}: first line has {len(first)} fields and is not AffectNet's header "
                                 f"{list(COLUMNS)}")
    # The landmarks (136 numbers a row) are skipped: they would dominate memory on 288k rows.
    usecols = [c for c in COLUMNS if c != "facial_landmarks"]
    frame = pd.read_csv(csv, header=0 if has_header else None, names=list(COLUMNS), usecols=usecols,
                        dtype={"subDirectory_filePath": str}, keep_default_na=False)
    frame["row"] = np.arange(len(frame))
    return frame


def read_affectnet(
    root: str | Path,
    split: str = "train",
    num_classes: int = 7,
    *,
    csv: str | Path | None = None,
    image_dir: str | Path | None = None,
    **options: Any,
) -> FaceDataset:
    """Read AffectNet's manually annotated training or validation list.

    Args:
        root: the AffectNet folder (see the module docstring for the layouts found).
        split: ``"train"`` (``training.csv``) or ``"val"`` (``validation.csv``).
        num_classes: 7 (codes 0..6) or 8 (codes 0..7, with contempt).
        csv: the list file, if not in the publisher's place.
        image_dir: the folder ``subDirectory_filePath`` is relative to, if not found under root.
        **options: :class:`FaceDataset` options (``image_size``, ``mean``, ``std``, ``transform``).

    Returns:
        A :class:`FaceDataset` with boxes ``x, y, w, h`` = ``face_x, face_y, face_width,
        face_height``; ``samples.row`` is the 0-based data row of the csv; ``valence`` and
        ``arousal`` are kept.

    Raises:
        DatasetNotFoundError: csv or image folder missing.
        DatasetFormatError: wrong columns, or an expression code outside 0..10 (names the row).
    """
    if split not in _CSV_NAMES:
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if num_classes not in (7, 8):
        raise ValueError(f"num_classes must be 7 or 8, got {num_classes}")
    root = Path(root).expanduser().resolve()
    name = _CSV_NAMES[split]
    csv = Path(csv) if csv is not None else _find(
        root, [root / "Manually_Annotated_file_lists" / name, root / name], name)
    if not csv.is_file():
        raise DatasetNotFoundError(f"AffectNet list not found: {csv}")
    images = Path(image_dir) if image_dir is not None else _find(
        root, [root / "Manually_Annotated_Images", root], "image folder")
    frame = _read_csv(csv)
    codes = pd.to_numeric(frame["expression"], errors="coerce")
    bad = ~codes.isin(range(_MAX_CODE + 1))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DatasetFormatError(f"{csv} row {row}: unknown expression code {frame.at[row, 'expression']!r} "
                                 f"(expected 0..{_MAX_CODE})")
    keep = (codes < num_classes).to_numpy()
    frame, codes = frame[keep].reset_index(drop=True), codes[keep].reset_index(drop=True)
    boxes = {new: pd.to_numeric(frame[old], errors="coerce")  # non-numbers become NaN = bad box
             for new, old in zip("xywh", ("face_x", "face_y", "face_width", "face_height"))}
    samples = pd.DataFrame({
        "path": [str(images / p) for p in frame["subDirectory_filePath"]],
        "label": codes.astype(np.int64),
        **boxes,
        "row": frame["row"],
        "valence": pd.to_numeric(frame["valence"], errors="coerce"),
        "arousal": pd.to_numeric(frame["arousal"], errors="coerce"),
    })
    return FaceDataset(samples, AFFECTNET_CLASSES[:num_classes], name=f"AffectNet {split} ({num_classes} classes)",
                       **options)

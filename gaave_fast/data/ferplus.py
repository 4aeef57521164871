"""FERPlus (re-annotated FER2013) and the original ``fer2013.csv``.

FERPlus layout (as shipped by Microsoft's FERPlus repository, after its image generation)::

    <root>/fer2013new.csv    Usage, Image name, neutral, happiness, surprise, sadness, anger,
                             disgust, fear, contempt, unknown, NF   (10 votes per face)
    <root>/FER2013Train/fer0000000.png ...    (48×48 grayscale; Usage "Training")
    <root>/FER2013Valid/...                   (Usage "PublicTest")
    <root>/FER2013Test/...                    (Usage "PrivateTest")

Row i of ``fer2013new.csv`` is row i of ``fer2013.csv`` (columns ``emotion, pixels, Usage``);
rows with an empty image name are not faces and are dropped.

The vote processing is a port of FERPlus's own ``_process_data``: single stray votes are
removed first; ``majority`` keeps a face when its top count exceeds half of the remaining
votes and is an emotion (not unknown / NF); ``distribution`` keeps up to three top emotions
covering 75% of the votes, as FERPlus's probability / cross-entropy modes do.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .arrays import FER2013_CLASSES, FER2013_USAGES, ArrayDataset
from .dataset import FaceDataset
from .errors import DatasetFormatError, read_label_text, require_file

FERPLUS_CLASSES = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")
VOTE_COLUMNS = (*FERPLUS_CLASSES, "unknown", "NF")
SPLITS = {"train": ("Training", "FER2013Train"), "valid": ("PublicTest", "FER2013Valid"),
          "test": ("PrivateTest", "FER2013Test")}
_FER_PIXELS = 48 * 48


def ferplus_targets(votes: np.ndarray, mode: str = "majority") -> np.ndarray:
    """FERPlus's target for each face, float64 [N, 10] (sums to 1 per row).

    Args:
        votes: [N, 10] vote counts in ``VOTE_COLUMNS`` order.
        mode: ``"majority"`` (one-hot at the majority) or ``"distribution"``.

    Rows without a valid target come out one-hot at ``unknown`` (column 8), as in FERPlus.
    """
    if mode not in ("majority", "distribution"):
        raise ValueError(f"mode must be 'majority' or 'distribution', got {mode!r}")
    votes = np.where(votes <= 1, 0.0, np.asarray(votes, dtype=np.float64))  # drop stray single votes
    unknown = np.zeros(votes.shape[1])
    unknown[-2] = 1.0
    out = np.empty_like(votes)
    for n, raw in enumerate(votes):
        total = raw.sum()
        emotion = np.zeros_like(raw)
        count = 0
        if mode == "majority":
            if raw.max() > 0.5 * total:
                emotion[np.argmax(raw)] = raw.max()
            else:
                emotion = unknown.copy()
        else:
            raw = raw.copy()
            covered, valid = 0.0, True
            while covered < 0.75 * total and count < 3 and valid:
                top = raw.max()
                for i in range(len(raw)):
                    if raw[i] == top:
                        emotion[i], raw[i] = top, 0.0
                        covered += top
                        count += 1
                        if i >= 8:  # unknown / NF tie with the top votes: stop here
                            valid = False
                            if emotion.sum() > top:  # other emotions came first: drop this one
                                emotion[i] = 0.0
                                count -= 1
                            break
        if emotion.sum() <= 0.5 * total or count > 3:
            emotion = unknown.copy()
        out[n] = emotion / emotion.sum()
    return out


def _read_vote_csv(csv: Path) -> pd.DataFrame:
    frame = pd.read_csv(io.StringIO(read_label_text(csv)), dtype={"Image name": str}, keep_default_na=False)
    missing = [c for c in ("Usage", "Image name", *VOTE_COLUMNS) if c not in frame.columns]
    if missing:
        raise DatasetFormatError(f"{csv}: missing columns {missing}; has {list(frame.columns)}")
    bad_usage = ~frame["Usage"].isin(FER2013_USAGES)
    if bad_usage.any():
        row = int(np.flatnonzero(bad_usage)[0])
        raise DatasetFormatError(f"{csv} row {row} (line {row + 2}): unknown Usage {frame['Usage'][row]!r}")
    votes = frame[list(VOTE_COLUMNS)].apply(pd.to_numeric, errors="coerce")
    bad = votes.isna().any(axis=1) | (votes < 0).any(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DatasetFormatError(f"{csv} row {row} (line {row + 2}): votes must be non-negative numbers, "
                                 f"got {frame.loc[row, list(VOTE_COLUMNS)].tolist()}")
    frame[list(VOTE_COLUMNS)] = votes
    return frame


def read_ferplus(
    root: str | Path,
    split: str = "train",
    mode: str = "majority",
    *,
    csv: str | Path | None = None,
    fer2013_csv: str | Path | None = None,
    **options: Any,
) -> FaceDataset | ArrayDataset:
    """Read FERPlus labels with the PNG folders (or the pixels of ``fer2013.csv``).

    Args:
        root: folder with ``fer2013new.csv`` and ``FER2013Train/``, ``FER2013Valid/``,
            ``FER2013Test/``.
        split: ``"train"``, ``"valid"`` or ``"test"``.
        mode: ``"majority"`` or ``"distribution"`` (see the module docstring).
        csv: the vote file if not ``<root>/fer2013new.csv``.
        fer2013_csv: take the pixels from this ``fer2013.csv`` instead of the PNGs; returns an
            :class:`ArrayDataset` (items 1×48×48).
        **options: :class:`FaceDataset` options (``image_size``, ``mean``, ``std``, ``transform``).

    Returns:
        A dataset with 8 classes (``FERPLUS_CLASSES``); ``samples.row`` is the row of
        ``fer2013new.csv`` (= row of ``fer2013.csv``), the vote columns are kept, and
        ``dataset.soft_labels`` is float32 [N, 8] (one-hot in majority mode); labels are
        its argmax.

    Raises:
        DatasetNotFoundError / DatasetFormatError naming the file and row.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    root = Path(root).expanduser().resolve()
    csv = root / "fer2013new.csv" if csv is None else Path(csv)
    require_file(csv, "FERPlus vote file", "<root>/fer2013new.csv and <root>/FER2013Train/ ...")
    frame = _read_vote_csv(csv)
    usage, folder = SPLITS[split]
    frame["row"] = np.arange(len(frame))
    frame = frame[(frame["Usage"] == usage) & (frame["Image name"].str.strip() != "")]
    targets = ferplus_targets(frame[list(VOTE_COLUMNS)].to_numpy(), mode)
    keep = targets.argmax(axis=1) < len(FERPLUS_CLASSES)  # FERPlus drops unknown / NF targets
    frame, targets = frame[keep].reset_index(drop=True), targets[keep, : len(FERPLUS_CLASSES)]
    soft = (targets / targets.sum(axis=1, keepdims=True)).astype(np.float32)
    frame["label"] = soft.argmax(axis=1)
    if fer2013_csv is not None:
        images = read_fer2013_pixels(fer2013_csv, frame["row"].to_numpy())
        data = ArrayDataset(images, frame["label"], classes=FERPLUS_CLASSES,
                            samples=frame.assign(path=str(fer2013_csv)))
    else:
        frame["path"] = [str(root / folder / name.strip()) for name in frame["Image name"]]
        data = FaceDataset(frame, FERPLUS_CLASSES, name=f"FERPlus {split} ({mode})", **options)
    data.soft_labels = soft
    return data


def _read_fer2013_frame(path: Path) -> pd.DataFrame:
    require_file(path, "fer2013.csv")
    frame = pd.read_csv(path, dtype={"pixels": str, "Usage": str}, keep_default_na=False)
    missing = [c for c in ("emotion", "pixels", "Usage") if c not in frame.columns]
    if missing:
        raise DatasetFormatError(f"{path}: missing columns {missing}; has {list(frame.columns)}")
    return frame


def read_fer2013_pixels(path: str | Path, rows: np.ndarray | None = None) -> np.ndarray:
    """The faces of ``fer2013.csv`` rows ``rows`` (default all), uint8 [N, 48, 48].

    Raises:
        DatasetFormatError: a pixel string does not hold 2,304 values in 0..255 (names the row).
    """
    path = Path(path)
    return _pixels(_read_fer2013_frame(path), path, rows)


def _parse_ints(text: str) -> np.ndarray:
    """Space-separated integers; a bad token yields a short array (caught by the length check)."""
    with warnings.catch_warnings():
        # fromstring is 5x faster than str.split; on a bad token numpy < 2.3 warns and stops,
        # newer numpy raises.
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return np.fromstring(text, dtype=np.int64, sep=" ")
        except ValueError:
            return np.empty(0, np.int64)


def _pixels(frame: pd.DataFrame, path: Path, rows: np.ndarray | None) -> np.ndarray:
    rows = np.arange(len(frame)) if rows is None else np.asarray(rows)
    if len(rows) and rows.max() >= len(frame):
        raise DatasetFormatError(f"{path}: has {len(frame)} rows, asked for row {rows.max()}")
    images = np.empty((len(rows), 48, 48), np.uint8)
    column = frame["pixels"].to_numpy()
    for k, row in enumerate(rows):
        values = _parse_ints(column[row])
        if len(values) != _FER_PIXELS or values.min() < 0 or values.max() > 255:
            raise DatasetFormatError(f"{path} row {row} (line {row + 2}): pixels must be 2304 integers in 0..255")
        images[k] = values.reshape(48, 48)
    return images


def read_fer2013_csv(path: str | Path, split: str = "train") -> ArrayDataset:
    """Read the original FER2013 release (``emotion, pixels, Usage``) with its original labels.

    Args:
        path: ``fer2013.csv``.
        split: ``"train"`` (Training), ``"valid"`` (PublicTest), ``"test"`` (PrivateTest) or ``"all"``.

    Returns:
        An :class:`ArrayDataset` of 1×48×48 items, 7 classes (``FER2013_CLASSES``: emotion
        codes 0..6 = angry, disgust, fear, happy, sad, surprise, neutral); ``samples.row`` is
        the csv row.

    Raises:
        DatasetFormatError naming the row for an unknown emotion code, Usage or pixel string.
    """
    if split not in (*SPLITS, "all"):
        raise ValueError(f"split must be one of {[*SPLITS, 'all']}, got {split!r}")
    path = Path(path)
    frame = _read_fer2013_frame(path)
    codes = pd.to_numeric(frame["emotion"], errors="coerce")
    bad = ~codes.isin(range(len(FER2013_CLASSES))) | ~frame["Usage"].isin(FER2013_USAGES)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DatasetFormatError(f"{path} row {row} (line {row + 2}): unknown emotion code "
                                 f"{frame.at[row, 'emotion']!r} or Usage {frame.at[row, 'Usage']!r}")
    rows = np.arange(len(frame)) if split == "all" else np.flatnonzero(frame["Usage"] == SPLITS[split][0])
    labels = codes.to_numpy()[rows].astype(np.int64)
    samples = pd.DataFrame({"path": str(path), "label": labels, "row": rows, "usage": frame["Usage"].to_numpy()[rows]})
    return ArrayDataset(_pixels(frame, path, rows), labels, classes=FER2013_CLASSES, samples=samples)

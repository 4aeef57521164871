"""RAF-DB basic emotion set, read from the publisher's layout.

Layout (as shipped)::

    <root>/EmoLabel/list_patition_label.txt     lines "train_00001.jpg 5"
    <root>/Image/aligned/train_00001_aligned.jpg  (100×100 aligned faces)

Label codes 1..7 = surprise, fear, disgust, happiness, sadness, anger, neutral; they become
classes 0..6 in that order. The split is the name prefix (``train_`` / ``test_``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from .dataset import FaceDataset
from .errors import DatasetFormatError, read_label_text, require_file

RAFDB_CLASSES = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")
LABEL_FILE = Path("EmoLabel") / "list_patition_label.txt"  # sic: the publisher's spelling
IMAGE_DIR = Path("Image") / "aligned"


def read_rafdb(root: str | Path, split: str = "train", **options: Any) -> FaceDataset:
    """Read RAF-DB basic (aligned faces).

    Args:
        root: the folder holding ``EmoLabel/`` and ``Image/``.
        split: ``"train"`` (12,271 images in the full release), ``"test"`` (3,068) or ``"all"``.
        **options: :class:`FaceDataset` options (``image_size``, ``mean``, ``std``, ``transform``).

    Returns:
        A :class:`FaceDataset`; ``samples.row`` is the 0-based line of the label file.

    Raises:
        DatasetNotFoundError: the label file is missing.
        DatasetFormatError: a line is malformed, has a label outside 1..7, or a name
            without a ``train_``/``test_`` prefix (the message names the line); a file in
            neither UTF-8 nor UTF-16 (a byte-order mark is fine).
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    root = Path(root).expanduser().resolve()
    label_file = root / LABEL_FILE
    require_file(label_file, "RAF-DB label file", f"<root>/{LABEL_FILE} and <root>/{IMAGE_DIR}/")
    records = []
    for line_no, line in enumerate(read_label_text(label_file).splitlines()):
        if not line.strip():
            continue
        fields = line.split()
        where = f"{label_file} line {line_no + 1}"
        if len(fields) != 2:
            raise DatasetFormatError(f"{where}: expected '<name>.jpg <label>', got {line!r}")
        name, code = fields
        if not (code.isascii() and code.isdigit()) or not 1 <= int(code) <= len(RAFDB_CLASSES):
            raise DatasetFormatError(f"{where}: unknown label code {code!r} (expected 1..7)")
        prefix = name.split("_", 1)[0]
        if prefix not in ("train", "test"):
            raise DatasetFormatError(f"{where}: image name {name!r} has no train_/test_ prefix")
        if split not in ("all", prefix):
            continue
        aligned = Path(name).stem + "_aligned" + Path(name).suffix
        records.append((str(root / IMAGE_DIR / aligned), int(code) - 1, line_no, prefix))
    samples = pd.DataFrame(records, columns=["path", "label", "row", "split"])
    return FaceDataset(samples, RAFDB_CLASSES, name=f"RAF-DB {split}", **options)

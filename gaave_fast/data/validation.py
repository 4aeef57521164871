"""Find the broken samples of a file-based dataset before they break an epoch.

DALI cannot skip a file it fails to decode (the whole pipeline stops), and real crawls hold
missing, empty, truncated and corrupt files and bad face boxes. :func:`validate` checks every
sample in worker processes and returns a table of the problems; the loaders exclude those
rows and name them in a warning.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from .dataset import clip_box, unsupported_mode

REPORT_COLUMNS = ("row", "path", "problem")
_TAIL_BYTES = 1024
MIN_POOL_TASKS = 64  # below this a process pool costs more than it saves
# Where a complete file of each format ends; a missing end marker means a truncated file,
# which PIL may still open (lazily) but DALI fails on.
_END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND"}


def inspect_image(path: str, box: Sequence[float] | None, decode: bool) -> tuple[str | None, int, int]:
    """Check one sample.

    Args:
        path: image file.
        box: ``(x, y, w, h)`` in pixels or ``None``.
        decode: fully decode the pixels (slow, finds corrupt data); otherwise read the header
            and the file's end only.

    Returns:
        ``(problem or None, width, height)``; width and height are 0 when unknown.
    """
    try:
        if os.path.getsize(path) == 0:
            return "empty file", 0, 0
        with Image.open(path) as im:
            width, height, fmt, mode = im.width, im.height, im.format, im.mode
            if decode:
                im.load()
    except FileNotFoundError:
        return "missing file", 0, 0
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError... for bad data  # noqa: BLE001
        text = str(err)
        if "truncated" in text.lower():
            return "truncated file", 0, 0
        return f"unreadable ({type(err).__name__}: {text})", 0, 0
    if unsupported_mode(mode) is not None:
        return unsupported_mode(mode), width, height
    marker = _END_MARKERS.get(fmt)
    if marker is not None:
        with open(path, "rb") as f:
            f.seek(max(os.path.getsize(path) - _TAIL_BYTES, 0))
            if marker not in f.read():
                return "truncated file (no end marker)", width, height
    if box is not None and clip_box(box, width, height) is None:
        return f"bad box {tuple(float(v) for v in box)} for a {width}x{height} image", width, height
    return None, width, height


def _inspect_task(task: tuple[str, tuple[float, ...] | None, bool]) -> tuple[str | None, int, int]:
    return inspect_image(*task)


def scan_files(
    dataset,
    rows: Iterable[int] | None = None,
    *,
    decode: bool = True,
    workers: int | None = None,
    progress: bool = True,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Check ``rows`` (default all) of a file-based dataset; see :func:`validate`.

    Returns:
        ``(report, sizes)``: the problem table and int64 [len(dataset), 2] ``(width, height)``
        of every checked row (0 where unknown or unchecked).
    """
    if not hasattr(dataset, "paths"):
        raise TypeError(f"validate needs a file-based dataset (with .paths), got {type(dataset).__name__}")
    rows = np.arange(len(dataset)) if rows is None else np.asarray(list(rows), dtype=np.int64)
    paths, boxes = dataset.paths, dataset.boxes
    tasks = [(paths[r], None if boxes is None else tuple(boxes[r]), decode) for r in rows]
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    bar = tqdm(total=len(tasks), desc="validate" if decode else "check files", unit="img",
               disable=not progress, leave=False)
    if workers <= 1 or len(tasks) < MIN_POOL_TASKS:
        results = []
        for task in tasks:
            results.append(_inspect_task(task))
            bar.update()
    else:
        chunk = max(1, min(256, len(tasks) // (workers * 8)))
        with multiprocessing.get_context().Pool(workers) as pool:
            results = []
            for result in pool.imap(_inspect_task, tasks, chunksize=chunk):
                results.append(result)
                bar.update()
    bar.close()
    sizes = np.zeros((len(dataset), 2), np.int64)
    problems = []
    for row, (problem, width, height) in zip(rows, results):
        sizes[row] = width, height
        if problem is not None:
            problems.append((int(row), paths[row], problem))
    return pd.DataFrame(problems, columns=list(REPORT_COLUMNS)), sizes


def validate(dataset, workers: int | None = None, *, decode: bool = True, progress: bool = True) -> pd.DataFrame:
    """Fully decode every image of a dataset and report the broken samples.

    Args:
        dataset: a :class:`~gaave_fast.data.FaceDataset` (anything with ``paths`` and
            ``boxes``); in-memory datasets have nothing to check and give an empty table.
        workers: worker processes (default: all CPUs; 0 or 1 = this process).
        decode: ``False`` only reads headers and file ends (fast; finds missing, empty,
            unreadable and truncated files and bad boxes, not corrupt pixel data).
        progress: show a tqdm progress bar.

    Returns:
        A DataFrame with columns ``row`` (dataset row), ``path``, ``problem`` (``"missing
        file"``, ``"empty file"``, ``"truncated file"``, ``"unreadable (...)"``, ``"unsupported pixel mode
        ..."`` (32-bit integer or float pixels), ``"bad box ..."``),
        one line per broken sample, sorted by row. Pass it to ``make_loader(exclude=...)``.
    """
    if not hasattr(dataset, "paths"):
        return pd.DataFrame(columns=list(REPORT_COLUMNS))
    return scan_files(dataset, decode=decode, workers=workers, progress=progress)[0]


def describe(report: pd.DataFrame, limit: int = 10) -> str:
    """One line per problem (up to ``limit``) for warnings: ``row 12 /x/a.jpg: truncated file``."""
    lines = [f"row {r.row} {r.path}: {r.problem}" for r in report.head(limit).itertuples()]
    if len(report) > limit:
        lines.append(f"... and {len(report) - limit} more")
    return "\n  ".join(lines)

"""Cleaned label files in each dataset's own format, written from a GAAVE run's per-sample table.

Every cleaned file loads with the same reader as the original and gives the new labels, without
the discarded samples; rows GAAVE did not judge (other splits, rows the reader skips, broken
files) are left as they were. Where the format allows extra columns, each row is marked
(``gaave_status``, ``gaave_old_label``); ``changes.csv`` beside it lists every changed, dropped
or excluded row for all formats.

============  ==========================================================================
kind          cleaned file (under ``out_dir``)
============  ==========================================================================
rafdb         ``EmoLabel/list_patition_label.txt`` (new codes; discarded lines removed)
              and a link ``Image`` to the original images: ``read_rafdb(out_dir)`` works
ferplus       ``fer2013new.csv``: relabeled rows get all 10 votes on the new emotion,
              discarded rows all 10 on ``unknown`` (which FERPlus's rules drop); marks;
              links to ``FER2013Train/``, ``FER2013Valid/``, ``FER2013Test/``
fer2013       ``fer2013.csv``: new ``emotion`` codes, discarded rows removed, marks and
              ``gaave_row`` (the original row)
affectnet     ``training.csv`` / ``validation.csv``: new ``expression`` codes, discarded rows
              get code 9 ("uncertain", which readers drop); a link
              ``Manually_Annotated_Images``: ``read_affectnet(out_dir)`` works
folder        ``labels.csv``: a manifest ``path,label`` (absolute paths, class names) with
              marks, discarded images left out: ``read_manifest(..., classes=...)``
csv           the manifest under its own name: new labels (ids or names, as the original
              used), absolute paths, marks, discarded rows removed
============  ==========================================================================
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from gaave_fast import files

STATUSES = ("clean", "relabeled", "kept", "discarded")
CHANGES_COLUMNS = ("row", "path", "old_label", "new_label", "status")
_FERPLUS_VOTES = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt",
                  "unknown", "NF")
_AFFECTNET_UNCERTAIN = "9"


def export_cleaned(kind: str, source: str | Path, table: pd.DataFrame, classes: Sequence[str],
                   out_dir: str | Path, *, split: str | None = None,
                   excluded: pd.DataFrame | None = None) -> dict[str, Path]:
    """Write the cleaned label file of a dataset and ``changes.csv``.

    Args:
        kind: ``rafdb``, ``ferplus``, ``fer2013``, ``affectnet``, ``folder`` or ``csv``.
        source: what the reader was given: the dataset folder, or the csv file for
            ``fer2013`` and ``csv``.
        table: one row per judged sample with columns ``row`` (row of the publisher's label
            file, the readers' ``samples.row``), ``path``, ``label``, ``new_label`` (-1 =
            discarded) and ``status`` (clean / relabeled / kept / discarded; kept rows are unchanged).
        classes: class names, ``classes[label]``.
        out_dir: folder to write into (created).
        split: the split that was read (``affectnet``: which list file, default train).
        excluded: rows left out of the run (broken files) with columns ``row`` (publisher row),
            ``label`` (class id; optional, for ``old_label``),
            ``path``, ``problem``; listed in ``changes.csv`` and otherwise left as they are.

    Returns:
        ``{"labels": the cleaned file, "changes": changes.csv}``.

    Raises:
        ValueError: an unknown kind, a bad table, or a label file that no longer matches the
            table (it changed since the run).
    """
    writers = {"rafdb": _rafdb, "ferplus": _ferplus, "fer2013": _fer2013, "affectnet": _affectnet,
               "folder": _folder, "csv": _manifest}
    if kind not in writers:
        raise ValueError(f"kind must be one of {sorted(writers)}, got {kind!r}")
    table = _check_table(table, len(classes))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    excluded = excluded if excluded is not None else pd.DataFrame(columns=["row", "path", "problem"])
    labels = writers[kind](Path(source), table, list(classes), out, split, excluded)
    changes = out / "changes.csv"
    _write_frame(change_list(table, classes, excluded), changes)
    return {"labels": labels, "changes": changes}


def change_list(table: pd.DataFrame, classes: Sequence[str], excluded: pd.DataFrame | None = None) -> pd.DataFrame:
    """The rows a cleaning changes: relabeled, discarded and (with ``excluded``) excluded ones.

    Returns:
        DataFrame ``row, path, old_label, new_label, status`` (class names; ``new_label``
        empty for discarded and excluded rows), sorted by row.
    """
    names = np.asarray(list(classes) + [""], dtype=object)  # index -1 -> ""
    changed = table[~table["status"].isin(("clean", "kept"))]  # a kept candidate keeps its label
    out = pd.DataFrame({"row": changed["row"].to_numpy(np.int64), "path": changed["path"].astype(str).to_numpy(),
                        "old_label": names[changed["label"].to_numpy()],
                        "new_label": names[changed["new_label"].to_numpy()],
                        "status": changed["status"].to_numpy()})
    if excluded is not None and len(excluded):
        out = pd.concat([out, pd.DataFrame({
            "row": excluded["row"].to_numpy(np.int64), "path": excluded["path"].astype(str).to_numpy(),
            "old_label": _excluded_names(excluded, classes), "new_label": "",
            "status": "excluded: " + excluded["problem"].astype(str)})])
    return out.sort_values("row", kind="stable", ignore_index=True)[list(CHANGES_COLUMNS)]


# ----------------------------------------------------------------------------- formats
def _rafdb(root: Path, table: pd.DataFrame, classes: list[str], out: Path, split: str | None,
           excluded: pd.DataFrame) -> Path:
    src = root / "EmoLabel" / "list_patition_label.txt"
    lines = src.read_text().splitlines()
    drop = set()
    for r in table.itertuples():
        if r.row >= len(lines):
            raise ValueError(f"{src} has {len(lines)} lines; the run refers to line {r.row + 1}: it changed since")
        name = lines[r.row].split()[0]
        if Path(name).stem not in Path(r.path).stem:
            raise ValueError(f"{src} line {r.row + 1} names {name}, the run had {r.path}: the file changed since")
        if r.status == "relabeled":
            lines[r.row] = f"{name} {r.new_label + 1}"  # RAF-DB codes are 1-based
        elif r.status == "discarded":
            drop.add(r.row)
    path = out / "EmoLabel" / "list_patition_label.txt"
    files.write_text(path, "".join(f"{line}\n" for i, line in enumerate(lines) if i not in drop))
    _link(out / "Image", root / "Image")
    return path


def _ferplus(root: Path, table: pd.DataFrame, classes: list[str], out: Path, split: str | None,
             excluded: pd.DataFrame) -> Path:
    src = root / "fer2013new.csv"
    frame = pd.read_csv(src, dtype=str, keep_default_na=False)
    _check_rows(frame, table, src)
    status, old, new = _marks(len(frame), table, classes, excluded)
    for r in table.itertuples():
        if r.status == "relabeled":
            votes = ["10" if v == classes[r.new_label] else "0" for v in _FERPLUS_VOTES]
            frame.loc[r.row, list(_FERPLUS_VOTES)] = votes
        elif r.status == "discarded":
            frame.loc[r.row, list(_FERPLUS_VOTES)] = ["10" if v == "unknown" else "0" for v in _FERPLUS_VOTES]
    frame["gaave_status"], frame["gaave_old_label"], frame["gaave_new_label"] = status, old, new
    path = out / "fer2013new.csv"
    _write_frame(frame, path)
    for folder in ("FER2013Train", "FER2013Valid", "FER2013Test"):
        _link(out / folder, root / folder)
    return path


def _fer2013(src: Path, table: pd.DataFrame, classes: list[str], out: Path, split: str | None,
             excluded: pd.DataFrame) -> Path:
    frame = pd.read_csv(src, dtype=str, keep_default_na=False)
    _check_rows(frame, table, src)
    status, old, _ = _marks(len(frame), table, classes, excluded)
    relabeled = table[table["status"] == "relabeled"]
    frame.loc[relabeled["row"].to_numpy(), "emotion"] = relabeled["new_label"].astype(str).to_numpy()
    frame["gaave_status"], frame["gaave_old_label"] = status, old
    frame["gaave_row"] = np.arange(len(frame))
    frame = frame[status != "discarded"]
    path = out / "fer2013.csv"
    _write_frame(frame, path)
    return path


def _affectnet(root: Path, table: pd.DataFrame, classes: list[str], out: Path, split: str | None,
               excluded: pd.DataFrame) -> Path:
    name = "validation.csv" if split == "val" else "training.csv"
    src = _first_existing([root / "Manually_Annotated_file_lists" / name, root / name])
    images = _first_existing([root / "Manually_Annotated_Images", root])
    with open(src, newline="") as f:
        rows = list(csv.reader(f))
    skip = 1 if rows and rows[0] and rows[0][0] == "subDirectory_filePath" else 0
    for r in table.itertuples():
        line = r.row + skip
        if line >= len(rows) or not str(r.path).endswith(rows[line][0]):
            raise ValueError(f"{src} data row {r.row} does not name {r.path}: the file changed since the run")
        if r.status == "relabeled":
            rows[line][6] = str(r.new_label)  # class ids are AffectNet's expression codes
        elif r.status == "discarded":
            rows[line][6] = _AFFECTNET_UNCERTAIN
    path = out / name
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    files.write_text(path, text.getvalue())
    _link(out / "Manually_Annotated_Images", images)
    return path


def _folder(root: Path, table: pd.DataFrame, classes: list[str], out: Path, split: str | None,
            excluded: pd.DataFrame) -> Path:
    names = np.asarray(classes, dtype=object)
    kept = table[table["status"] != "discarded"]
    frame = pd.DataFrame({"row": kept["row"].to_numpy(np.int64), "path": kept["path"].astype(str).to_numpy(),
                          "label": names[np.where(kept["status"] == "relabeled", kept["new_label"], kept["label"])],
                          "gaave_status": kept["status"].to_numpy(), "gaave_old_label": names[kept["label"]]})
    if len(excluded):
        frame = pd.concat([frame, pd.DataFrame({
            "row": excluded["row"].to_numpy(np.int64), "path": excluded["path"].astype(str).to_numpy(),
            "label": [Path(p).relative_to(root).parts[0] for p in excluded["path"]],
            "gaave_status": "excluded", "gaave_old_label": _excluded_names(excluded, classes)})])
    frame = frame.sort_values("row", kind="stable").drop(columns="row")
    path = out / "labels.csv"
    _write_frame(frame, path)
    return path


def _manifest(src: Path, table: pd.DataFrame, classes: list[str], out: Path, split: str | None,
              excluded: pd.DataFrame) -> Path:
    frame = pd.read_csv(src, dtype=str, keep_default_na=False)
    _check_rows(frame, table, src)
    status, old, _ = _marks(len(frame), table, classes, excluded)
    numeric = frame["label"].str.strip().str.fullmatch(r"\d+").all()
    relabeled = table[table["status"] == "relabeled"]
    new = relabeled["new_label"].to_numpy()
    frame.loc[relabeled["row"].to_numpy(), "label"] = new.astype(str) if numeric else np.asarray(classes)[new]
    frame["path"] = [str((src.parent / p).resolve()) for p in frame["path"]]
    frame["gaave_status"], frame["gaave_old_label"] = status, old
    frame = frame[status != "discarded"]
    path = out / src.name
    _write_frame(frame, path)
    return path


# ----------------------------------------------------------------------------- helpers
def _check_table(table: pd.DataFrame, num_classes: int) -> pd.DataFrame:
    missing = [c for c in ("row", "path", "label", "new_label", "status") if c not in table.columns]
    if missing:
        raise ValueError(f"table lacks columns {missing}")
    bad = sorted(set(table["status"]) - set(STATUSES))
    if bad:
        raise ValueError(f"table has unknown statuses {bad}; expected {STATUSES}")
    t = table.copy()
    for c in ("row", "label", "new_label"):
        t[c] = t[c].astype(np.int64)
    if ((t["label"] < 0) | (t["label"] >= num_classes) | (t["new_label"] >= num_classes)).any():
        raise ValueError(f"table labels must lie in 0..{num_classes - 1}")
    if ((t["status"] == "relabeled") & (t["new_label"] < 0)).any():
        raise ValueError("a relabeled row has no new label")
    return t


def _check_rows(frame: pd.DataFrame, table: pd.DataFrame, src: Path) -> None:
    if len(table) and table["row"].max() >= len(frame):
        raise ValueError(f"{src} has {len(frame)} rows; the run refers to row {table['row'].max()}: it changed since")


def _marks(n: int, table: pd.DataFrame, classes: list[str], excluded: pd.DataFrame) -> tuple[np.ndarray, ...]:
    """Per-row ``gaave_status``, ``gaave_old_label`` and ``gaave_new_label`` ("" = not judged)."""
    names = np.asarray(list(classes) + [""], dtype=object)
    status, old, new = (np.full(n, "", dtype=object) for _ in range(3))
    rows = table["row"].to_numpy()
    status[rows] = table["status"].to_numpy()
    old[rows] = names[table["label"].to_numpy()]
    new[rows] = names[table["new_label"].to_numpy()]
    status[excluded["row"].to_numpy(np.int64)] = "excluded"
    old[excluded["row"].to_numpy(np.int64)] = _excluded_names(excluded, classes)
    return status, old, new


def _excluded_names(excluded: pd.DataFrame, classes: Sequence[str]) -> np.ndarray:
    """Class names of the excluded rows (their ``label`` column; "" where unknown)."""
    names = np.asarray(list(classes) + [""], dtype=object)  # index -1 -> ""
    if "label" not in excluded.columns:
        return np.full(len(excluded), "", dtype=object)
    labels = pd.to_numeric(excluded["label"], errors="coerce").fillna(-1).to_numpy(np.int64)
    return names[np.where((labels >= 0) & (labels < len(classes)), labels, -1)]


def _first_existing(paths: list[Path]) -> Path:
    for p in paths:
        if p.exists():
            return p
    raise FileNotFoundError(f"none of {[str(p) for p in paths]} exists")


def _link(link: Path, target: Path) -> None:
    # A link to the original images makes the cleaned folder readable with the same reader;
    # where links are not allowed, the user points the reader at the images instead.
    if target.exists() and not link.exists() and not link.is_symlink():
        try:
            link.symlink_to(target.resolve(), target_is_directory=True)
        except OSError:
            pass


def _write_frame(frame: pd.DataFrame, path: Path) -> None:
    files.write_with(path, lambda tmp: frame.to_csv(tmp, index=False))


__all__ = ["CHANGES_COLUMNS", "STATUSES", "change_list", "export_cleaned"]

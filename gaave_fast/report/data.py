"""What the report reads from a run folder, and the numbers it derives (timings, transitions)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gaave_fast import files
from gaave_fast.pipeline.store import STAGE_LABELS, RunStore


@dataclass
class RunOutputs:
    """A finished run's outputs.

    Attributes:
        store: the run folder. table: the per-sample table (samples.parquet or samples.csv).
        metrics: metrics.json. config: config.yaml as text. run: run.json ({} if absent).
        classes: class names. excluded: excluded.csv (empty if absent).
    """

    store: RunStore
    table: pd.DataFrame
    metrics: dict[str, Any]
    config: str
    run: dict[str, Any] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)
    excluded: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def dir(self) -> Path:
        """The run folder."""
        return self.store.root

    @property
    def taus(self) -> dict[str, float]:
        """Threshold of each subset (head/tail, or all)."""
        return {s: float(c["tau"]) for s, c in self.metrics.get("criterion", {}).get("tau", {}).items()}


def load_run(run_dir: str | Path) -> RunOutputs:
    """Read a finished run folder.

    Raises:
        FileNotFoundError: the folder lacks metrics.json or the per-sample table (the run has
            not finished: re-run ``gaave run`` first).
    """
    store = RunStore(run_dir)
    table = store.load_table()
    metrics = store.load_report()
    run = files.read_json(store.file("run")) if store.file("run").exists() else {}
    classes = list(run.get("dataset", {}).get("classes") or [])
    if not classes:
        n = int(max(table["label"].max(), table["new_label"].max())) + 1
        classes = [str(i) for i in range(n)]
    excluded = pd.read_csv(store.file("excluded"), keep_default_na=False) if store.file("excluded").exists() \
        else pd.DataFrame(columns=["row", "path", "problem"])
    config = store.file("config").read_text() if store.file("config").exists() else ""
    return RunOutputs(store, table, metrics, config, run, classes, excluded)


def stage_timings(run: RunOutputs) -> list[tuple[str, float]]:
    """Wall seconds of each computed stage (timings.json), in run order, with readable names.

    A stage resumed across sessions counts the session that finished it.
    """
    t = run.metrics.get("timings", {})
    return [(label, float(t[key])) for key, label in STAGE_LABELS.items() if key in t]


def session_seconds(run: RunOutputs) -> list[float | None]:
    """Wall seconds of each ``gaave run`` session (None = it did not finish: killed or failed)."""
    return [s.get("seconds") for s in run.run.get("sessions", [])]


def transitions(table: pd.DataFrame, num_classes: int) -> np.ndarray:
    """Counts of the noise candidates from their label to their outcome.

    Returns:
        int64 [C, C + 1]: row = original label, column = new label, last column = discarded.
    """
    cand = table[table["candidate"].astype(bool)]
    new = cand["new_label"].to_numpy(np.int64)
    col = np.where(new < 0, num_classes, new)
    m = np.zeros((num_classes, num_classes + 1), np.int64)
    np.add.at(m, (cand["label"].to_numpy(np.int64), col), 1)
    return m


def class_summary(table: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Per class: samples, candidates, relabeled away, discarded, relabeled into it, final count."""
    c = len(classes)
    lab = table["label"].to_numpy(np.int64)
    new = table["new_label"].to_numpy(np.int64)
    status = table["status"].to_numpy()
    cand = table["candidate"].to_numpy(bool)

    def count(mask: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return np.bincount(labels[mask], minlength=c)[:c]

    moved = (status == "relabeled") & (new != lab)
    return pd.DataFrame({
        "class": classes, "samples": count(np.ones_like(cand), lab), "candidates": count(cand, lab),
        "relabeled_away": count(moved, lab), "discarded": count(status == "discarded", lab),
        "relabeled_into": count(moved, np.where(moved, new, 0)),
        "final": count(new >= 0, np.where(new >= 0, new, 0)),
    })


def read_truth(path: str | Path, table: pd.DataFrame, classes: list[str]) -> np.ndarray:
    """True labels of the table's samples from a csv with ``path`` and ``true_label`` columns.

    Paths are relative to the csv's folder or absolute; labels are class names or ids.

    Returns:
        int64 [n] true label of each table row, -1 where the csv has none.
    """
    path = Path(path)
    truth = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in ("path", "true_label") if c not in truth.columns]
    if missing:
        raise ValueError(f"{path}: truth file lacks columns {missing}")
    lookup = {name: i for i, name in enumerate(classes)}
    ids = [lookup[t] if t in lookup else int(t) if t.isdigit() else -1 for t in truth["true_label"]]
    where = {str((path.parent / p).resolve()): i for p, i in zip(truth["path"], ids)}
    return np.array([where.get(str(Path(p).resolve()), -1) for p in table["path"]], dtype=np.int64)

"""The per-sample table of a run (samples.csv / samples.parquet; columns in docs/outputs.md)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from gaave_fast.result import suspicion_score

from .annotate import DISCARDED
from .criterion import Criterion


def sample_table(labels: np.ndarray, criterion: Criterion, scans: dict[str, dict[str, np.ndarray]],
                 annotations: dict[str, np.ndarray] | None, classes: Sequence[str], *,
                 rows: np.ndarray, paths: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per training position: what the run found and did.

    Args:
        labels: int64 [N] the given (noisy) labels.
        criterion: step 5's result.
        scans: ``{subset: {"index" [n], "k"/"margin"/"loss" [T', n]}}`` (step 4).
        annotations: step 6's ``{"index", "new_label"[, "kept"]}`` over the candidates, or None
            when the candidates are dropped.
        classes: the C class names.
        rows: int64 [N] row of each sample in the publisher's label file.
        paths: the file of each sample, or None.

    Returns:
        Columns ``index`` (position), ``path`` (when known), ``row``, ``label``, ``label_name``,
        ``subset`` (whose model judged it), ``k_e<j>`` (k of scan j; -1 = not scanned),
        ``k_exact`` (decided records only: every k_e<j> is exact; else some are censored by
        early exit and only their side of tau is known),
        ``margin`` and ``loss`` (means over the scans), ``k`` (combined), ``score``
        (:func:`gaave_fast.result.suspicion_score`), ``candidate``, ``new_label`` (-1 = discarded,
        or removed when candidates are dropped), ``new_label_name`` and ``status``
        (clean / relabeled / kept / discarded).
    """
    n = labels.size
    names = np.asarray(list(classes) + [""], dtype=object)  # new_label -1 (discarded) -> ""
    df = pd.DataFrame({"index": np.arange(n)})
    if paths is not None:
        df["path"] = paths
    df["row"] = rows
    df["label"] = labels
    df["label_name"] = names[labels]
    df["subset"] = np.array(list(criterion.subsets) + [""])[criterion.subset_id]
    num_scans = next(iter(scans.values()))["k"].shape[0]
    for j in range(num_scans):
        col = np.full(n, -1, np.int16)
        for s in scans.values():
            col[s["index"]] = s["k"][j]
        df[f"k_e{j}"] = col
    if all("k_exact" in s for s in scans.values()):
        col = np.ones(n, bool)
        for s in scans.values():
            col[s["index"]] = s["k_exact"].all(axis=0)
        df["k_exact"] = col
    for f in ("margin", "loss"):
        col = np.full(n, np.nan, np.float32)
        for s in scans.values():
            col[s["index"]] = s[f].mean(0)
        df[f] = col
    df["k"] = criterion.k
    df["score"] = suspicion_score(criterion.k, df["margin"].to_numpy())
    df["candidate"] = criterion.candidate
    new = np.where(criterion.candidate, DISCARDED, labels)
    kept = np.zeros(n, bool)
    if annotations is not None:
        new[annotations["index"]] = annotations["new_label"]
        if "kept" in annotations:
            kept[annotations["index"]] = annotations["kept"]
    df["new_label"] = new
    df["new_label_name"] = names[new]
    df["status"] = np.where(~criterion.candidate, "clean",
                            np.where(kept, "kept", np.where(new >= 0, "relabeled", "discarded")))
    return df

"""``gaave run`` without argparse: open the data, run (or resume) the pipeline, write the outputs.

A run folder holds the pipeline's own outputs (docs/pipeline.md) plus:

* ``run.json``: the dataset (kind, path, split, image size, classes), the test set, the truth
  file if any, and one entry per session (start, end, seconds) for the report's timings;
* ``excluded.csv``: broken files left out (found once, reused when the run resumes);
* ``samples.csv`` and ``samples.parquet``: the per-sample table with class names, the
  publisher's row and the suspicion score (docs/outputs.md);
* ``cleaned/``: the cleaned label file in the dataset's own format (:mod:`gaave_fast.export`);
* ``report/``: the HTML report and its PNG plots (:mod:`gaave_fast.report`).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch.utils.data import Dataset

from gaave_fast.data import DatasetNotFoundError
from gaave_fast.export import export_cleaned
from gaave_fast.pipeline import STAGES, Pipeline, PipelineConfig

from .common import CliError, write_json_atomic
from .datasets import (TEST_SPLIT, DatasetSpec, check_labels, check_same_classes, check_split, class_names,
                       describe_dataset, find_broken, open_dataset, parse_spec, publisher_rows, without_rows)

log = logging.getLogger("gaave")
_IDENTITY = ("spec", "split", "image_size", "classes", "samples")


@dataclass
class RunRequest:
    """Everything ``gaave run`` needs.

    Attributes:
        dataset: the training data. split: its split (None = the kind's default).
        out: the run folder.
        config: the pipeline settings.
        test: ``"auto"`` (the kind's test split, if it has one and it is there), ``"none"``, a split name of the same
            dataset, or a ``KIND:PATH`` (read with its kind's test split).
        image_size: side in pixels (None = the kind's default).
        check: broken-file check before training: ``"full"`` (decode), ``"quick"``, ``"none"``.
        check_workers: processes of that check (None = all CPUs).
        start: recompute this stage and the ones after it (None = resume).
        truth: optional csv ``path,true_label`` of known true labels, scored in the report.
        report: write the report at the end.
        affectnet_classes: 7 or 8.
        command: the command line, recorded in run.json.
    """

    dataset: DatasetSpec
    split: str | None
    out: Path
    config: PipelineConfig
    test: str = "auto"
    image_size: int | None = None
    check: str = "full"
    check_workers: int | None = None
    start: str | None = None
    truth: Path | None = None
    report: bool = True
    affectnet_classes: int = 7
    command: str = ""


@dataclass
class RunData:
    """The opened datasets of a run."""

    train: Dataset  # without the broken files; positions = the pipeline's sample ids
    test: Dataset | None
    classes: list[str]
    excluded: pd.DataFrame  # row (position before exclusion), publisher_row, path, problem


def execute_run(req: RunRequest) -> dict[str, Any]:
    """Run or resume the pipeline in ``req.out`` and write the table, cleaned labels and report.

    Returns:
        A summary: ``samples``, ``excluded``, ``candidates``, ``relabeled``, ``discarded``,
        ``baseline`` / ``final`` test metrics (when a test set exists) and output ``paths``.

    Raises:
        CliError: unusable data or a run folder that holds a run on other data.
    """
    if req.start is not None and req.start not in STAGES:
        raise CliError(f"--start must be one of {', '.join(STAGES)}, got {req.start!r}")
    started = time.time()
    split = check_split(req.dataset, req.split)
    data = open_run_data(req.dataset, split, req.image_size, req.test, req.out, req.check, req.check_workers,
                         req.affectnet_classes)
    record = _begin_session(req, split, data)
    log.info("run %s: %d samples (%d broken files excluded), %d classes, test set: %s", req.out, len(data.train),
             len(data.excluded), len(data.classes), "none" if data.test is None else f"{len(data.test)} samples")
    pipe = Pipeline(req.config, data.train, req.out, test_set=data.test, num_classes=len(data.classes))
    metrics = pipe.run(req.start)
    table = sample_table(pipe.table(), data.train, data.classes)
    paths = write_table(table, req.out)
    changed = export_cleaned(req.dataset.kind, req.dataset.path, table, data.classes, req.out / "cleaned",
                             split=split, excluded=data.excluded.assign(row=data.excluded["publisher_row"]))
    _end_session(req.out, record, time.time() - started)
    paths.update({"cleaned": changed["labels"], "changes": changed["changes"]})
    if req.report:
        from gaave_fast.report import write_report

        paths["report"] = write_report(req.out, images=data.train, truth=req.truth)
    return summarize(table, metrics, len(data.excluded), paths)


def open_run_data(spec: DatasetSpec, split: str | None, image_size: int | None, test: str, out: Path,
                  check: str = "full", check_workers: int | None = None, affectnet_classes: int = 7) -> RunData:
    """Open the training and test data of a run, leaving out broken files (cached in ``excluded.csv``)."""
    full = open_dataset(spec, split, image_size, affectnet_classes)
    classes = class_names(full)
    ident = describe_dataset(spec, split, full)
    prev = _read_run_json(out)
    if prev is not None:
        diff = [k for k in _IDENTITY if prev["dataset"].get(k) != ident.get(k)]
        if diff:
            raise CliError(f"{out} holds a run on other data ({', '.join(diff)} differ: it used "
                           f"{prev['dataset']['spec']}); choose another --out")
    cache = out / "excluded.csv"
    if prev is not None and cache.exists():
        broken = pd.read_csv(cache, keep_default_na=False)
    else:
        broken = find_broken(full, check, check_workers)
        broken.insert(1, "publisher_row", publisher_rows(full)[broken["row"].to_numpy(np.int64)])
        out.mkdir(parents=True, exist_ok=True)
        broken.to_csv(cache, index=False)
    train = without_rows(full, broken["row"].to_numpy(np.int64))
    if len(train) == 0:
        raise CliError(f"{spec}: no readable samples left after excluding {len(broken)} broken files")
    check_labels(train, len(classes), str(spec))
    test_set = open_test(spec, test, image_size, affectnet_classes)
    if test_set is not None:
        check_same_classes(full, test_set)
        check_labels(test_set, len(classes), "test set")
        # Broken test files would stop the evaluation: leave them out too.
        test_set = without_rows(test_set, find_broken(test_set, check, check_workers)["row"].to_numpy(np.int64))
    return RunData(train, test_set, classes, broken)


def open_test(spec: DatasetSpec, test: str, image_size: int | None, affectnet_classes: int) -> Dataset | None:
    """The test set named by ``--test`` (see :class:`RunRequest`)."""
    if test == "none":
        return None
    if test == "auto":
        if spec.kind not in TEST_SPLIT:
            return None
        try:
            return open_dataset(spec, TEST_SPLIT[spec.kind], image_size, affectnet_classes)
        except DatasetNotFoundError as err:  # e.g. an AffectNet copy without validation.csv
            log.warning("no test set (%s): the baseline and final model are not evaluated", err)
            return None
    if ":" in test:
        other = parse_spec(test)
        return open_dataset(other, TEST_SPLIT.get(other.kind), image_size, affectnet_classes)
    return open_dataset(spec, check_split(spec, test), image_size, affectnet_classes)


def open_saved_run(out: Path) -> RunData:
    """Re-open the data of a finished run from its ``run.json`` (for ``gaave report``)."""
    rec = _read_run_json(out)
    if rec is None:
        raise CliError(f"{out} is not a gaave run folder (no run.json); give the --out of 'gaave run'")
    d = rec["dataset"]
    spec = parse_spec(d["spec"])
    size = d["image_size"][0] if d.get("image_size") else None
    return open_run_data(spec, d["split"], size, "none", out, affectnet_classes=rec.get("affectnet_classes", 7))


def sample_table(table: pd.DataFrame, dataset: Dataset, classes: list[str]) -> pd.DataFrame:
    """The pipeline's per-sample table with the publisher's ``row``, class names and ``score``.

    ``score`` = -(k + sigmoid(margin)), as :attr:`gaave_fast.ScanResult.score`: higher = more
    suspicious; k first, the margin breaks ties.
    """
    t = table.copy()
    names = np.asarray(list(classes) + [""], dtype=object)  # new_label -1 (discarded) -> ""
    pos = t["index"].to_numpy(np.int64)
    t.insert(t.columns.get_loc("label"), "row", publisher_rows(dataset)[pos])
    t.insert(t.columns.get_loc("label") + 1, "label_name", names[t["label"].to_numpy(np.int64)])
    k = t["k"].to_numpy(np.float64)
    margin = t["margin"].to_numpy(np.float64)
    t.insert(t.columns.get_loc("k") + 1, "score", -(k + 1.0 / (1.0 + np.exp(-margin))))
    t.insert(t.columns.get_loc("new_label") + 1, "new_label_name", names[t["new_label"].to_numpy(np.int64)])
    return t


def write_table(table: pd.DataFrame, out: Path) -> dict[str, Path]:
    """Write ``samples.csv`` and (with pyarrow installed) ``samples.parquet`` atomically; returns their paths."""
    paths = {"table_csv": out / "samples.csv", "table_parquet": out / "samples.parquet"}
    for key, path in list(paths.items()):
        tmp = path.with_name(path.name + ".tmp")
        if key == "table_csv":
            table.to_csv(tmp, index=False)
        else:
            try:
                table.to_parquet(tmp, index=False)
            except ImportError:  # pyarrow is optional: the csv holds the same table
                log.warning("pyarrow is not installed: wrote samples.csv only (pip install pyarrow)")
                del paths[key]
                continue
        tmp.replace(path)
    return paths


def summarize(table: pd.DataFrame, metrics: dict[str, Any], excluded: int, paths: dict[str, Path]) -> dict[str, Any]:
    """Counts, test metrics and output paths of a finished run."""
    s: dict[str, Any] = {"samples": len(table), "excluded": excluded, "candidates": int(table["candidate"].sum()),
                         "relabeled": int((table["status"] == "relabeled").sum()),
                         "discarded": int((table["status"] == "discarded").sum())}
    for key, name in (("baseline", "baseline"), ("final_gaave", "final"), ("final_drop", "final")):
        if "test" in metrics.get(key, {}):
            s[name] = {m: metrics[key]["test"][m] for m in ("accuracy", "mean_class_accuracy")}
    s["paths"] = {k: str(v) for k, v in paths.items()}
    return s


def _read_run_json(out: Path) -> dict[str, Any] | None:
    path = out / "run.json"
    return json.loads(path.read_text()) if path.exists() else None


def _begin_session(req: RunRequest, split: str | None, data: RunData) -> dict[str, Any]:
    rec = _read_run_json(req.out) or {}
    truth = str(req.truth.resolve()) if req.truth else rec.get("truth")
    rec.update({"dataset": _identity(req, split, data), "test": req.test, "truth": truth,
                "affectnet_classes": req.affectnet_classes})
    session = {"started": _now(), "started_unix": time.time(), "finished": None, "seconds": None,
               "command": req.command or " ".join(sys.argv)}
    rec.setdefault("sessions", []).append(session)
    write_json_atomic(req.out / "run.json", rec)
    return rec


def _identity(req: RunRequest, split: str | None, data: RunData) -> dict[str, Any]:
    d = describe_dataset(req.dataset, split, data.train)
    d["samples"] = len(data.train) + len(data.excluded)  # identity counts the files before exclusion
    return d


def _end_session(out: Path, rec: dict[str, Any], seconds: float) -> None:
    rec["sessions"][-1].update({"finished": _now(), "seconds": round(seconds, 3)})
    write_json_atomic(out / "run.json", rec)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")

"""``gaave run`` without argparse: open the data, run (or resume) the pipeline, write the outputs.

Besides the pipeline's outputs (:mod:`gaave_fast.pipeline.store`), a ``gaave run`` folder holds:

* ``run.json``: the dataset (kind, path, split, image size, classes), the test set, the truth
  file if any, and one entry per session (start, end, seconds);
* ``excluded.csv``: broken files left out (found once per ``--check`` level, reused when the run resumes);
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

from gaave_fast import files
from gaave_fast.data import DatasetNotFoundError
from gaave_fast.data.describe import dataset_classes, dataset_rows
from gaave_fast.export import export_cleaned
from gaave_fast.pipeline import STAGES, Pipeline, PipelineConfig, RunStore
from gaave_fast.pipeline.pretrained import PretrainedError

from .common import CliError
from .datasets import (
    TEST_SPLIT,
    DatasetSpec,
    check_labels,
    check_same_classes,
    check_split,
    describe_dataset,
    find_broken,
    open_dataset,
    parse_spec,
    without_rows,
)

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
    """The opened, checked datasets of a run.

    Attributes:
        train: the training set without the broken files; its positions are the pipeline's sample ids.
        test: the test set (None = no evaluation).
        classes: the class names.
        excluded: broken files left out: ``row`` (position before exclusion), ``publisher_row``,
            ``path``, ``problem``.
        identity: what identifies the training data in run.json (:func:`describe_dataset`).
    """

    train: Dataset
    test: Dataset | None
    classes: list[str]
    excluded: pd.DataFrame
    identity: dict[str, Any]


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
    store = RunStore(req.out)
    split = check_split(req.dataset, req.split)
    data = open_run_data(store, req.dataset, split, req.image_size, req.test, req.check, req.check_workers,
                         req.affectnet_classes)
    record = _begin_session(store, req, split, data)
    log.info("run %s: %d samples (%d broken files excluded), %d classes, test set: %s", req.out, len(data.train),
             len(data.excluded), len(data.classes), "none" if data.test is None else f"{len(data.test)} samples")
    pipe = Pipeline(req.config, data.train, req.out, test_set=data.test, num_classes=len(data.classes),
                    classes=data.classes)
    try:
        metrics = pipe.run(req.start)
    except PretrainedError as err:  # a --pretrained file that does not fit the architecture
        raise CliError(str(err)) from None
    table = store.load_table()
    paths = {k: store.file(k) for k in ("table_csv", "table_parquet") if store.file(k).exists()}
    changed = export_cleaned(req.dataset.kind, req.dataset.path, table, data.classes, store.file("cleaned"),
                             split=split, excluded=data.excluded.assign(row=data.excluded["publisher_row"]))
    _end_session(store, record, time.time() - started)
    paths.update({"cleaned": changed["labels"], "changes": changed["changes"]})
    if req.report:
        from gaave_fast.report import write_report

        paths["report"] = write_report(req.out, images=data.train, truth=req.truth)
    return summarize(table, metrics, len(data.excluded), paths)


def open_run_data(store: RunStore, spec: DatasetSpec, split: str | None, image_size: int | None, test: str,
                  check: str = "full", check_workers: int | None = None, affectnet_classes: int = 7) -> RunData:
    """Open and check the training and test data of a run, leaving out broken files.

    The broken files are found once and kept in ``excluded.csv``; a run folder that holds a
    run on other data (another dataset, split, image size, class list or file count) is refused.

    Raises:
        CliError: other data than the folder's run, no readable sample, labels outside the
            classes, or a test set with other classes.
    """
    full = open_dataset(spec, split, image_size, affectnet_classes)
    classes = dataset_classes(full)
    identity = describe_dataset(spec, split, full)
    prev = _read_run_json(store)
    if prev is not None:
        diff = [k for k in _IDENTITY if prev["dataset"].get(k) != identity.get(k)]
        if diff:
            raise CliError(f"{store.root} holds a run on other data ({', '.join(diff)} differ: it used "
                           f"{prev['dataset']['spec']}); choose another --out")
    cache = store.file("excluded")
    if prev is not None and cache.exists():
        broken = pd.read_csv(cache, keep_default_na=False)
    else:
        broken = find_broken(full, check, check_workers)
        broken.insert(1, "publisher_row", dataset_rows(full)[broken["row"].to_numpy(np.int64)])
        files.write_with(cache, lambda tmp: broken.to_csv(tmp, index=False))
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
    return RunData(train, test_set, classes, broken, identity)


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
    store = RunStore(out)
    rec = _read_run_json(store)
    if rec is None:
        raise CliError(f"{out} is not a gaave run folder (no run.json); give the --out of 'gaave run'")
    d = rec["dataset"]
    spec = parse_spec(d["spec"])
    size = d["image_size"][0] if d.get("image_size") else None
    return open_run_data(store, spec, d["split"], size, "none", affectnet_classes=rec.get("affectnet_classes", 7))


def summarize(table: pd.DataFrame, metrics: dict[str, Any], excluded: int, paths: dict[str, Path]) -> dict[str, Any]:
    """Counts, test metrics and output paths of a finished run."""
    s: dict[str, Any] = {"samples": len(table), "excluded": excluded, "candidates": int(table["candidate"].sum()),
                         "relabeled": int((table["status"] == "relabeled").sum()),
                         "discarded": int((table["status"] == "discarded").sum())}
    for key, name in (("baseline", "baseline"), ("final_gaave", "final"), ("final_drop", "final")):
        if "test" in metrics.get(key, {}):
            s[name] = {m: metrics[key]["test"][m] for m in ("accuracy", "mean_class_accuracy")}
            if "test_last10" in metrics[key]:
                s[name]["last10"] = metrics[key]["test_last10"]
    s["paths"] = {k: str(v) for k, v in paths.items()}
    return s


def _read_run_json(store: RunStore) -> dict[str, Any] | None:
    path = store.file("run")
    return json.loads(path.read_text()) if path.exists() else None


def _begin_session(store: RunStore, req: RunRequest, split: str | None, data: RunData) -> dict[str, Any]:
    rec = _read_run_json(store) or {}
    truth = str(req.truth.resolve()) if req.truth else rec.get("truth")
    rec.update({"dataset": data.identity, "test": req.test, "truth": truth, "affectnet_classes": req.affectnet_classes})
    session = {"started": _now(), "started_unix": time.time(), "finished": None, "seconds": None,
               "command": req.command or " ".join(sys.argv)}
    rec.setdefault("sessions", []).append(session)
    files.write_json(store.file("run"), rec)
    return rec


def _end_session(store: RunStore, rec: dict[str, Any], seconds: float) -> None:
    rec["sessions"][-1].update({"finished": _now(), "seconds": round(seconds, 3)})
    files.write_json(store.file("run"), rec)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")

"""``gaave run`` without argparse: open the data, run (or resume) the pipeline, write the outputs.

Besides the pipeline's outputs (:mod:`gaave_fast.pipeline.store`), a ``gaave run`` folder holds:

* ``run.json``: the dataset (kind, path, split, image size, classes), the test set, the truth
  file if any, and one entry per session (start, end, seconds);
* ``excluded.csv``: broken files left out: those the ``--check`` found (found again when a later
  session asks for another ``--check`` level, reused otherwise) and those that could not be read
  during the run (problem ``unreadable during the run: ...``, always kept);
* ``cleaned/``: the cleaned label file in the dataset's own format (:mod:`gaave_fast.export`);
* ``report/``: the HTML report and its PNG plots (:mod:`gaave_fast.report`).
"""

from __future__ import annotations

import logging
import re
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
from gaave_fast.data import DatasetNotFoundError, UnreadableSampleError
from gaave_fast.data.describe import dataset_classes, dataset_rows
from gaave_fast.export import export_cleaned
from gaave_fast.pipeline import STAGES, Pipeline, PipelineConfig, RunStore
from gaave_fast.pipeline.pretrained import PretrainedError

from .common import CliError, check_output_folder, one_line
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
            ``path``, ``problem``, ``label``.
        identity: what identifies the training data in run.json (:func:`describe_dataset`).
        rows: int64 [len(train)], the row before exclusion of each training sample.
        changed: the excluded files differ from the ones the folder's run used.
    """

    train: Dataset
    test: Dataset | None
    classes: list[str]
    excluded: pd.DataFrame
    identity: dict[str, Any]
    rows: np.ndarray
    changed: bool = False


_UNREADABLE = "unreadable during the run"
_MAX_RESTARTS = 20


class ReadGuard(Dataset):
    """The training set, whose read errors become :class:`UnreadableSampleError` naming the position.

    Other attributes (labels, classes, paths...) are the wrapped dataset's.
    """

    def __init__(self, dataset: Dataset, what: str = "sample"):
        self.dataset, self.what = dataset, what

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not set yet (unpickling in a worker process)
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int):
        try:
            return self.dataset[index]
        except Exception as err:  # PIL and the readers raise OSError, ValueError, SyntaxError...  # noqa: BLE001
            raise UnreadableSampleError(f"{_UNREADABLE}: {self.what} at position {int(index)} ({type(err).__name__}: "
                                        f"{one_line(err)})") from None


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
    check_output_folder(req.out)
    store = RunStore(req.out)
    split = check_split(req.dataset, req.split)
    start, record = req.start, None
    for _ in range(_MAX_RESTARTS):
        data = open_run_data(store, req.dataset, split, req.image_size, req.test, req.check, req.check_workers,
                             req.affectnet_classes)
        if data.changed and start is None and _read_run_json(store) is not None and store.file("config").exists():
            log.info("the excluded files changed: recomputing the run from the split")
            start = "split"
        record = record or _begin_session(store, req, split, data)  # one session, whatever restarts it takes
        log.info("run %s: %d samples (%d broken files excluded), %d classes, test set: %s", req.out, len(data.train),
                 len(data.excluded), len(data.classes), "none" if data.test is None else f"{len(data.test)} samples")
        test_set = None if data.test is None else ReadGuard(data.test, "test sample")
        pipe = Pipeline(req.config, ReadGuard(data.train), req.out, test_set=test_set,
                        num_classes=len(data.classes), classes=data.classes)
        try:
            metrics = pipe.run(start)
            break
        except UnreadableSampleError as err:
            if "test sample at position" in str(err):
                raise CliError(f"a test set file cannot be read ({one_line(err)}); run 'gaave validate' on the test "
                               "set or use --check full") from None
            # A file the --check did not catch: leave it out (named in excluded.csv) and start over on the rest,
            # as every saved output is keyed by sample position.
            _exclude_unreadable(store, data, err)
            start = "split"
        except PretrainedError as err:  # a --pretrained file that does not fit the architecture
            raise CliError(str(err)) from None
        except ValueError as err:  # damaged run files, settings the data cannot satisfy: the messages say which
            log.debug("pipeline error", exc_info=True)
            raise CliError(f"{req.out}: {one_line(err)}") from None
    else:
        raise CliError(f"{req.out}: more than {_MAX_RESTARTS} unreadable files turned up during the run; run "
                       "'gaave validate' on the dataset, or use --check full")
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
                  check: str | None = "full", check_workers: int | None = None, affectnet_classes: int = 7) -> RunData:
    """Open and check the training and test data of a run, leaving out broken files.

    The broken files are found once per ``check`` level and kept in ``excluded.csv`` (``check``
    None reuses whatever it holds); files found unreadable during a run stay in it. A run folder
    that holds a run on other data (another dataset, split, image size, class list or file count)
    is refused.

    Raises:
        CliError: other data than the folder's run, no readable sample, fewer than two classes,
            labels outside the classes, or a test set with other classes.
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
    cached = _read_excluded(cache) if prev is not None and cache.exists() else None
    if cached is not None and (check is None or prev.get("check", check) == check):
        broken, changed = cached, False
    else:
        broken = find_broken(full, check or "full", check_workers)
        broken.insert(1, "publisher_row", dataset_rows(full)[broken["row"].to_numpy(np.int64)])
        broken["label"] = np.asarray(full.labels)[broken["row"].to_numpy(np.int64)]
        if cached is not None:  # files found unreadable during a run stay out whatever the check
            found = cached[cached["problem"].astype(str).str.startswith(_UNREADABLE)]
            broken = pd.concat([broken, found[~found["row"].isin(broken["row"])]], ignore_index=True)
            broken = broken.sort_values("row", ignore_index=True)
        changed = cached is None or set(cached["row"].tolist()) != set(broken["row"].tolist())
        files.write_with(cache, lambda tmp: broken.to_csv(tmp, index=False))
    keep = np.setdiff1d(np.arange(len(full)), broken["row"].to_numpy(np.int64))
    train = without_rows(full, broken["row"].to_numpy(np.int64))
    if len(train) == 0:
        raise CliError(f"{spec}: no readable samples left after excluding {len(broken)} broken files")
    check_labels(train, len(classes), str(spec))
    _check_trainable(train, classes, str(spec))
    test_set = open_test(spec, test, image_size, affectnet_classes)
    if test_set is not None:
        check_same_classes(full, test_set)
        check_labels(test_set, len(classes), "test set")
        # Broken test files would stop the evaluation: leave them out too.
        test_set = without_rows(test_set, find_broken(test_set, check or "full", check_workers)["row"].to_numpy(np.int64))
    return RunData(train, test_set, classes, broken, identity, keep, changed)


def _read_excluded(path: Path) -> pd.DataFrame | None:
    try:
        table = pd.read_csv(path, keep_default_na=False)
    except (ValueError, OSError, UnicodeDecodeError):  # a damaged cache is found again
        return None
    return table if {"row", "publisher_row", "path", "problem"} <= set(table.columns) else None


def _exclude_unreadable(store: RunStore, data: RunData, err: UnreadableSampleError) -> None:
    match = re.search(r": sample at position (\d+) \(([^\n]*?)\)$", str(err), re.MULTILINE)
    if match is None:
        raise err
    position = int(match.group(1))
    row = int(data.rows[position])
    paths = getattr(data.train, "paths", None)
    entry = {"row": row, "publisher_row": int(dataset_rows(data.train)[position]),
             "path": paths[position] if paths else "", "problem": f"{_UNREADABLE}: {match.group(2)}",
             "label": int(np.asarray(data.train.labels)[position])}
    log.warning("%s could not be read (%s): excluded; the run starts over without it", entry["path"] or
                f"sample {row}", match.group(2))
    broken = pd.concat([data.excluded, pd.DataFrame([entry])], ignore_index=True).sort_values("row", ignore_index=True)
    files.write_with(store.file("excluded"), lambda tmp: broken.to_csv(tmp, index=False))


def _check_trainable(train: Dataset, classes: list[str], what: str) -> None:
    counts = np.bincount(np.asarray(train.labels, dtype=np.int64), minlength=len(classes))
    present = [classes[c] for c in np.flatnonzero(counts)]
    if len(present) < 2:
        raise CliError(f"{what}: GAAVE needs samples of at least two classes; the readable samples are all of "
                       f"class {present[0]!r} ({len(train)} samples)")


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
    return open_run_data(store, spec, d["split"], size, "none", check=None,
                         affectnet_classes=rec.get("affectnet_classes", 7))


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
    if not path.exists():
        return None
    try:
        return files.read_json(path)
    except ValueError as err:
        raise CliError(f"{one_line(err)}; or use another --out") from None


def _begin_session(store: RunStore, req: RunRequest, split: str | None, data: RunData) -> dict[str, Any]:
    rec = _read_run_json(store) or {}
    truth = str(req.truth.resolve()) if req.truth else rec.get("truth")
    rec.update({"dataset": data.identity, "test": req.test, "truth": truth, "affectnet_classes": req.affectnet_classes,
                "check": req.check})
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

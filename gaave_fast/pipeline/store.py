"""A run folder: where every output of a run lives, atomic saves and loads, staleness, timings.

Only this module knows the file names. Layout (``gaave run`` adds the last four)::

    config.yaml                 the PipelineConfig of the run
    pretrained.json             with a pretrained backbone: the file and the keys loaded, skipped, missing
    split/split.json            steps 1-2: head/tail classes, counts, normalisation, data fingerprint
    split/subsets.npz           positions and remapped labels of D'h and D't (or the whole set)
    base_<subset>/              step 3: checkpoint.pt (training state), model.pt, metrics.json
    record_<subset>/            step 4: snap_<j>.npz (k, margin, loss, pred of scan j), checkpoint.pt, done.json
    criterion.json, candidates.npz                      step 5
    annotate/                   step 6: annot_head/, annot_tail/ (like base_*), annotations.npz
    final_gaave/ or final_drop/ step 7: the retrained model (model.pt, metrics.json)
    baseline/                   the same training on the raw labels
    samples.csv, samples.parquet  the per-sample table (docs/outputs.md)
    timings.json                wall seconds per stage key ("base:head", "final:gaave", ...)
    metrics.json                every stage's metrics in one report (with "timings")
    run.json, excluded.csv, cleaned/, report/   written by ``gaave run`` and ``gaave report``

A stage's outputs are complete once its marker (the file it writes last) exists; every write
is atomic (:mod:`gaave_fast.files`), so an interrupted run resumes from complete files only.
Under torch.distributed only rank 0 writes, and every save ends with a barrier.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from gaave_fast import files
from gaave_fast.distributed import barrier, is_main

from .config import PipelineConfig
from .criterion import Criterion
from .refactor import RefactoredSubset, Subsets

log = logging.getLogger(__name__)

STAGES = ("split", "base", "record", "criterion", "annotate", "final", "baseline")
"""The stages in run order; a stage key is a stage or ``stage:part`` (``base:head``, ``final:drop``)."""

_DEPENDENCY_CHAIN = STAGES[:6]  # each depends on the one before; the baseline depends on none of them
_FIELD_STAGES: dict[str, tuple[str, ...]] = {
    "seed": STAGES, "ablation": ("split",), "head_classes": ("split",),
    "arch": ("base", "annotate", "final", "baseline"), "width": ("base", "annotate", "final", "baseline"),
    "pretrained": ("base", "annotate", "final", "baseline"), "scan_amp": ("record",), "scan_compile": ("record",),
    "base": ("base",), "gaave_epochs": ("record",), "eps": ("record",), "alpha": ("record",),
    "steps": ("record",), "scan_backend": ("record",), "scan_batch_size": ("record",),
    "combine": ("criterion",), "record": ("record",), "pilot_fraction": ("record",), "tau_head": ("criterion",), "tau_tail": ("criterion",),
    "tau_rule": ("criterion",), "tau_fraction": ("criterion",), "annotator": ("annotate",),
    "preset": ("criterion",), "relabel": ("annotate",), "relabel_confidence": ("annotate",),
    "uncertain": ("annotate",), "max_class_shift": ("annotate",), "class_guard": ("annotate",),
    "final": ("final", "baseline"), "baseline": ("baseline",), "device": (),
}
"""The stages each PipelineConfig field affects (every field must be listed: a test checks it)."""

_NO_EFFECT = ("progress", "num_workers", "eval_batch_size")  # TrainConfig fields that leave results unchanged

_FILES = {"config": "config.yaml", "metrics": "metrics.json", "timings": "timings.json", "run": "run.json",
          "pretrained": "pretrained.json",
          "excluded": "excluded.csv", "table_csv": "samples.csv", "table_parquet": "samples.parquet",
          "cleaned": "cleaned", "report": "report"}

# Human names of the stage keys, in run order (the report's timing table).
STAGE_LABELS = {"split": "split", "base:head": "base head", "base:tail": "base tail", "base:all": "base all",
                "record:head": "GAAVE scans head", "record:tail": "GAAVE scans tail",
                "record:all": "GAAVE scans all", "criterion": "criterion", "annotate": "self-annotators",
                "final:gaave": "final model", "final:drop": "final model (drop)", "baseline": "baseline"}


def stale_stages(old: PipelineConfig, new: PipelineConfig) -> set[str]:
    """Stages whose outputs a config change invalidates (the changed fields' stages and all after them)."""
    before, after = _effective(old.to_dict()), _effective(new.to_dict())
    hit = {stage for name, stages in _FIELD_STAGES.items() if before.get(name) != after.get(name) for stage in stages}
    out = hit - set(_DEPENDENCY_CHAIN)
    first = [i for i, stage in enumerate(_DEPENDENCY_CHAIN) if stage in hit]
    if first:
        out |= set(_DEPENDENCY_CHAIN[min(first):])
    return out


def stages_from(start: str) -> set[str]:
    """The stages that ``run(start=...)`` recomputes: ``start`` and every stage that depends on it."""
    if start not in STAGES:
        raise ValueError(f"start must be one of {STAGES}, got {start!r}")
    if start == "baseline":
        return {"baseline"}
    out = set(_DEPENDENCY_CHAIN[_DEPENDENCY_CHAIN.index(start):])
    if start in ("split", "final"):
        out.add("baseline")
    return out


class RunStore:
    """The files of one run folder.

    Args:
        root: the run folder (created on the first save).
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)

    # ----------------------------------------------------------------------------- where
    def file(self, name: str) -> Path:
        """A run-level file or folder: ``config``, ``pretrained``, ``metrics``, ``timings``, ``run``, ``excluded``,
        ``table_csv``, ``table_parquet``, ``cleaned``, ``report``."""
        return self.root / _FILES[name]

    def dir(self, key: str) -> Path:
        """The folder of a stage key with its own folder (``split``, ``base:head``, ``record:tail``,
        ``annotate``, ``annotator:head``, ``final:gaave``, ``baseline``)."""
        stage, _, part = key.partition(":")
        if stage == "annotator":
            return self.root / "annotate" / f"annot_{part}"
        return self.root / (f"{stage}_{part}" if part else stage)

    def checkpoint(self, key: str) -> Path:
        """The training-state file of a training stage key (resumed when it exists)."""
        return self.dir(key) / "checkpoint.pt"

    def _marker(self, key: str) -> Path:
        stage = key.partition(":")[0]
        if stage == "split":
            return self.dir(key) / "split.json"
        if stage == "record":
            return self.dir(key) / "done.json"
        if stage == "criterion":
            return self.root / "criterion.json"
        if stage == "annotate":
            return self.dir(key) / "annotations.npz"
        return self.dir(key) / "metrics.json"  # base, annotator, final, baseline

    def _stage_paths(self, stage: str) -> list[Path]:
        if stage == "criterion":
            return [self.root / "criterion.json", self.root / "candidates.npz"]
        parts = {"base": ("head", "tail", "all"), "record": ("head", "tail", "all"), "final": ("gaave", "drop")}
        return [self.dir(f"{stage}:{p}") for p in parts[stage]] if stage in parts else [self.dir(stage)]

    def has(self, key: str) -> bool:
        """Whether the stage key's outputs are complete."""
        return self._marker(key).exists()

    def holds_run(self) -> bool:
        """Whether the folder holds a run whose split stage finished (its config and normalisation are known)."""
        return self.file("config").is_file() and self._marker("split").is_file()

    # ----------------------------------------------------------------------------- opening
    def begin(self, config: PipelineConfig, data: dict[str, Any], start: str | None = None) -> None:
        """Prepare the folder for a run of ``config`` on data with fingerprint ``data``.

        Deletes the outputs of the stages that a config change (against the saved config.yaml)
        or ``start`` invalidates, drops their timings and saves the new config.

        Raises:
            ValueError: the folder holds a run on other data (and ``start`` is not ``"split"``).
        """
        stale = stages_from(start) if start is not None else set()
        if start != "split":
            self.check_data(data)
        if self.file("config").exists():
            stale |= stale_stages(PipelineConfig.load(self.file("config")), config)
        if stale:
            log.info("recomputing stages %s", sorted(stale, key=STAGES.index))
        if is_main():
            for stage in stale:
                for p in self._stage_paths(stage):
                    if p.is_dir():
                        shutil.rmtree(p)
                    elif p.exists():
                        p.unlink()
            if stale and self.file("timings").exists():
                kept = {k: v for k, v in self.timings().items() if k.split(":")[0] not in stale}
                files.write_json(self.file("timings"), kept)
            config.save(self.file("config"))
        barrier()

    def check_data(self, data: dict[str, Any]) -> None:
        """Refuse a folder whose split stage was computed on other data (outputs are keyed by position)."""
        path = self._marker("split")
        if path.exists():
            saved = files.read_json(path).get("data")
            if saved != data:
                raise ValueError(f"output_dir {self.root} holds a run on other data ({saved}, now {data}): "
                                 "use another output_dir or run(start='split')")

    # ----------------------------------------------------------------------------- timings
    @contextmanager
    def timed(self, key: str) -> Iterator[None]:
        """Time the block and record its wall seconds under ``key`` when it completes.

        An interrupted block records nothing (its session's share is not counted); the block
        ends with a barrier so that every process sees the stage's outputs.
        """
        t0 = time.perf_counter()
        yield
        if is_main():
            t = self.timings()
            t[key] = round(time.perf_counter() - t0, 3)
            files.write_json(self.file("timings"), t)
        barrier()

    def timings(self) -> dict[str, float]:
        """Wall seconds of each computed stage key (``timings.json``; {} before the first)."""
        path = self.file("timings")
        return files.read_json(path) if path.exists() else {}

    def save_pretrained(self, summary: dict[str, Any]) -> None:
        """Write pretrained.json (what the pretrained backbone file filled in every model)."""
        if is_main():
            files.write_json(self.file("pretrained"), summary)
        barrier()

    # ----------------------------------------------------------------------------- steps 1-2
    def save_split(self, split: Subsets) -> None:
        """Save the subsets and the split description (marker: split.json)."""
        d = self.dir("split")
        if is_main():
            files.write_npz(d / "subsets.npz", **{f"{n}_{a}": getattr(s, a) for n, s in split.subsets.items()
                                                   for a in ("indices", "labels")})
            files.write_json(d / "split.json", split.info)
        barrier()

    def load_split(self) -> Subsets:
        """The saved :class:`~.refactor.Subsets`."""
        d = self.dir("split")
        info = files.read_json(d / "split.json")
        z = np.load(d / "subsets.npz")
        subsets = {n: RefactoredSubset(n, z[f"{n}_indices"], z[f"{n}_labels"], tuple(s["classes"]), s["has_other"])
                   for n, s in info["subsets"].items()}
        return Subsets(subsets, info)

    # ----------------------------------------------------------------------------- trained models
    def save_model(self, key: str, model: nn.Module, metrics: dict[str, Any]) -> None:
        """Save a trained model's state dict (model.pt) and its metrics (the marker)."""
        d = self.dir(key)
        if is_main():
            files.torch_save({k: v.detach().cpu() for k, v in model.state_dict().items()}, d / "model.pt")
            files.write_json(d / "metrics.json", metrics)
        barrier()

    def load_metrics(self, key: str) -> dict[str, Any]:
        """The metrics of a trained model's stage key."""
        return files.read_json(self.dir(key) / "metrics.json")

    def load_weights(self, key: str, model: nn.Module) -> nn.Module:
        """Load the saved state dict of a stage key into ``model`` (``weights_only``) and return it."""
        state = torch.load(self.dir(key) / "model.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        return model

    # ----------------------------------------------------------------------------- step 4
    def snapshot_path(self, subset: str, j: int) -> Path:
        """File of scan ``j`` (0-based) of a subset's recording."""
        return self.dir(f"record:{subset}") / f"snap_{j:03d}.npz"

    def save_snapshot(self, subset: str, j: int, arrays: dict[str, np.ndarray]) -> None:
        """Save scan ``j`` of a subset (rank 0), then wait for every process."""
        if is_main():
            files.write_npz(self.snapshot_path(subset, j), **arrays)
        barrier()

    def save_record(self, subset: str, scans: int) -> None:
        """Mark a subset's recording complete after its ``scans`` snapshots."""
        if is_main():
            files.write_json(self.dir(f"record:{subset}") / "done.json", {"snapshots": scans})
        barrier()

    def load_record(self, subset: str, fields: tuple[str, ...]) -> dict[str, np.ndarray]:
        """A subset's recording: ``index`` [n] and each field stacked over the scans, [T', n]."""
        scans = files.read_json(self.dir(f"record:{subset}") / "done.json")["snapshots"]
        snaps = [np.load(self.snapshot_path(subset, j)) for j in range(scans)]
        out = {"index": snaps[0]["index"]}
        for f in fields:
            out[f] = np.stack([s[f] for s in snaps])
        return out

    # ----------------------------------------------------------------------------- step 5
    def save_criterion(self, c: Criterion) -> None:
        """Save the per-sample criterion arrays and its summary (marker: criterion.json)."""
        if is_main():
            files.write_npz(self.root / "candidates.npz", subset=c.subset_id, k=c.k, candidate=c.candidate)
            files.write_json(self.root / "criterion.json", c.summary())
        barrier()

    def load_criterion(self) -> Criterion:
        """The saved :class:`~.criterion.Criterion`."""
        z = np.load(self.root / "candidates.npz")
        return Criterion.from_saved(files.read_json(self.root / "criterion.json"), z["subset"], z["k"],
                                    z["candidate"])

    # ----------------------------------------------------------------------------- step 6
    def save_annotations(self, arrays: dict[str, np.ndarray]) -> None:
        """Save the self-annotators' predictions and new labels of the candidates."""
        if is_main():
            files.write_npz(self._marker("annotate"), **arrays)
        barrier()

    def load_annotations(self) -> dict[str, np.ndarray]:
        """``{"index", "pred_head", "pred_tail", "prob_head", "prob_tail", "eq5_label", "confidence",
        "new_label", "kept", "guarded"}`` over the candidates (runs saved before the relabel options
        have the first four and ``new_label`` only)."""
        z = np.load(self._marker("annotate"))
        return {k: z[k] for k in z.files}

    # ----------------------------------------------------------------------------- table, report
    def save_table(self, table: pd.DataFrame) -> dict[str, Path]:
        """Write the per-sample table as samples.csv and (with pyarrow) samples.parquet.

        Returns:
            ``{"table_csv": path[, "table_parquet": path]}``.
        """
        paths = {"table_csv": self.file("table_csv")}
        if is_main():
            files.write_with(paths["table_csv"], lambda tmp: table.to_csv(tmp, index=False))
        try:
            import pyarrow  # noqa: F401  (optional: the csv holds the same table)

            paths["table_parquet"] = self.file("table_parquet")
            if is_main():
                files.write_with(paths["table_parquet"], lambda tmp: table.to_parquet(tmp, index=False))
        except ImportError:
            log.warning("pyarrow is not installed: wrote samples.csv only (pip install pyarrow)")
        barrier()
        return paths

    def load_table(self) -> pd.DataFrame:
        """The per-sample table (samples.parquet when present, else samples.csv).

        Raises:
            FileNotFoundError: neither exists (the run has not finished).
        """
        if self.file("table_parquet").exists():
            return pd.read_parquet(self.file("table_parquet"))
        if self.file("table_csv").exists():
            return pd.read_csv(self.file("table_csv"))
        raise FileNotFoundError(f"{self.root} has no samples.parquet or samples.csv: the run has not finished")

    def save_metrics(self, config: PipelineConfig, class_shift: dict[str, Any] | None = None) -> dict[str, Any]:
        """Gather every saved stage's metrics and the timings into metrics.json; returns the dict.

        Args:
            config: the run's config.
            class_shift: the final training set's per-class counts and shifts
                (:func:`~.guard.shift_report`), stored as ``class_shift``.
        """
        r: dict[str, Any] = {"config": config.to_dict()}
        r["split"] = files.read_json(self._marker("split"))
        if config.pretrained is not None and self.file("pretrained").exists():
            r["pretrained"] = files.read_json(self.file("pretrained"))
        r["base"] = {p: self.load_metrics(f"base:{p}") for p in ("all", "head", "tail") if self.has(f"base:{p}")}
        if self.has("criterion"):
            r["criterion"] = files.read_json(self._marker("criterion"))
        if self.has("annotate"):
            a = self.load_annotations()
            new, kept = a["new_label"], a.get("kept", np.zeros(a["new_label"].size, bool))
            r["annotate"] = {"candidates": int(new.size), "relabeled": int(((new >= 0) & ~kept).sum()),
                             "kept": int(kept.sum()), "discarded": int((new < 0).sum())}
            if "guarded" in a:
                r["annotate"]["guarded"] = int(a["guarded"].sum())
            for name in ("head", "tail"):
                if self.has(f"annotator:{name}"):
                    r["annotate"][f"annotator_{name}"] = self.load_metrics(f"annotator:{name}")
        for key in ("baseline", "final:drop", "final:gaave"):
            if self.has(key):
                r[self.dir(key).name] = self.load_metrics(key)
        if class_shift is not None:
            r["class_shift"] = class_shift
        if self.file("timings").exists():
            r["timings"] = self.timings()
        if is_main():
            files.write_json(self.file("metrics"), r)
        barrier()
        return r

    def load_report(self) -> dict[str, Any]:
        """metrics.json of a finished run.

        Raises:
            FileNotFoundError: there is none (the run has not finished).
        """
        path = self.file("metrics")
        if not path.exists():
            raise FileNotFoundError(f"{self.root} has no metrics.json: the run has not finished")
        return files.read_json(path)


def _effective(d: dict[str, Any]) -> dict[str, Any]:
    d = dict(d)
    for k in ("base", "annotator", "final"):
        d[k] = {f: v for f, v in d[k].items() if f not in _NO_EFFECT}
    return d

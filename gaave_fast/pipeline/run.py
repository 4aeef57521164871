"""The GAAVE pipeline: split, refactor, base models, GAAVE scans, criterion, self-annotators, retraining.

Outputs (under ``output_dir``)::

    config.yaml                 the PipelineConfig of the run
    split/split.json            head/tail classes, counts, normalisation constants
    split/subsets.npz           positions and remapped labels of D'h and D't (or the whole set)
    base_<subset>/              checkpoint.pt (training state), model.pt (state dict), metrics.json
    gaave_<subset>/             snap_<j>.npz (k, margin, loss of snapshot j), checkpoint.pt, done.json
    criterion.json, candidates.npz
    annotate/                   annot_head/, annot_tail/ (like base_*), annotations.npz
    final_gaave/ or final_drop/ the retrained model (model.pt, metrics.json)
    baseline/                   the model trained on the raw labels
    samples.csv|parquet         the per-sample table
    timings.json                wall seconds per stage ("base:head", "final:gaave", ...)
    metrics.json                everything above in one report (with "timings")

Every stage loads its outputs when they exist, and a training stage interrupted mid-way resumes
from its checkpoint, so re-running an interrupted run continues it. When the saved config
differs from the new one, the stages the changed fields affect (and the ones after them) are
recomputed; ``run(start=stage)`` forces that stage and the ones after it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset

from .annotate import DISCARDED, relabel
from .config import PipelineConfig
from .criterion import TauChoice, combine_k, select_tau
from .gaave import SNAPSHOT_FIELDS, snapshot
from .models import ModelFactory, model_factory
from .refactor import RefactoredSubset, RemappedDataset, refactor, whole_set
from .split import split_classes
from .train import accuracy, dist_info, fit, load_model, predict, save_model

log = logging.getLogger(__name__)

STAGES = ("split", "base", "gaave", "criterion", "annotate", "final", "baseline")
_CHAIN = STAGES[:6]  # each depends on the one before; the baseline depends on none of them
_FIELD_STAGES: dict[str, tuple[str, ...]] = {
    "seed": STAGES, "ablation": ("split",), "head_classes": ("split",),
    "arch": ("base", "annotate", "final", "baseline"), "width": ("base", "annotate", "final", "baseline"),
    "base": ("base",), "gaave_epochs": ("gaave",), "eps": ("gaave",), "alpha": ("gaave",),
    "steps": ("gaave",), "scan_backend": ("gaave",), "scan_batch_size": ("gaave",),
    "combine": ("criterion",), "tau_head": ("criterion",), "tau_tail": ("criterion",),
    "tau_rule": ("criterion",), "tau_fraction": ("criterion",), "annotator": ("annotate",),
    "final": ("final", "baseline"), "baseline": ("baseline",), "device": (), "table_format": (),
}
_NO_EFFECT = ("progress", "num_workers", "eval_batch_size")  # TrainConfig fields that leave results unchanged
_SEED_OFFSET = {"head": 1, "tail": 2, "all": 3, "annot_head": 4, "annot_tail": 5, "final": 6}


def dataset_labels(dataset: Dataset) -> np.ndarray:
    """Labels of a dataset's items: its ``labels`` attribute, ``samples["label"]``, or by reading items."""
    for get in (lambda d: d.labels, lambda d: d.samples["label"]):
        try:
            return np.asarray(get(dataset), dtype=np.int64)
        except (AttributeError, KeyError, TypeError):
            pass
    return np.array([int(dataset[i][1]) for i in range(len(dataset))], dtype=np.int64)


def stale_stages(old: PipelineConfig, new: PipelineConfig) -> set[str]:
    """Stages whose outputs a config change invalidates (the changed fields' stages and all after them)."""
    a, b = _effective(old.to_dict()), _effective(new.to_dict())
    hit = {s for f in _FIELD_STAGES if a.get(f) != b.get(f) for s in _FIELD_STAGES[f]}
    out = set(hit) - set(_CHAIN)
    chain_hit = [i for i, s in enumerate(_CHAIN) if s in hit]
    if chain_hit:
        out |= set(_CHAIN[min(chain_hit):])
    return out


class Pipeline:
    """The GAAVE method end to end, with saved, resumable stages.

    Args:
        config: the :class:`PipelineConfig`.
        train_set: map-style training dataset of ``(image float [C,H,W] in [0,1], label, index)``
            with the observed (possibly noisy) labels; its positions 0..N-1 are the sample ids
            in every output.
        output_dir: where the outputs go (created).
        test_set: evaluation dataset with clean labels (None = no evaluation).
        labels, test_labels: int [N] labels of the datasets' items (default: read from the
            datasets, see :func:`dataset_labels`).
        num_classes: C (default: ``max label + 1`` over both label arrays).
        make_model: ``make_model(num_classes) -> nn.Module`` taking [0,1] images; default the
            config's ``arch`` with per-channel normalisation measured on the training images.
            It is not saved: pass the same factory when re-running.
    """

    def __init__(self, config: PipelineConfig, train_set: Dataset, output_dir: str | Path, *,
                 test_set: Dataset | None = None, labels: np.ndarray | None = None,
                 test_labels: np.ndarray | None = None, num_classes: int | None = None,
                 make_model: ModelFactory | None = None):
        if not isinstance(config, PipelineConfig):
            raise TypeError(f"config must be a PipelineConfig, got {type(config).__name__}")
        self.config, self.train_set, self.test_set = config, train_set, test_set
        self.out = Path(output_dir)
        self.labels = dataset_labels(train_set) if labels is None else np.asarray(labels, np.int64)
        if self.labels.shape != (len(train_set),):
            raise ValueError(f"labels has shape {self.labels.shape}, expected ({len(train_set)},)")
        self.test_labels = None
        if test_set is not None:
            self.test_labels = dataset_labels(test_set) if test_labels is None else np.asarray(test_labels, np.int64)
            if self.test_labels.shape != (len(test_set),):
                raise ValueError(f"test_labels has shape {self.test_labels.shape}, expected ({len(test_set)},)")
        seen = int(max(self.labels.max(), -1 if self.test_labels is None else self.test_labels.max())) + 1
        self.num_classes = seen if num_classes is None else int(num_classes)
        if self.num_classes < seen:
            raise ValueError(f"num_classes={num_classes} but labels go up to {seen - 1}")
        if self.labels.min() < 0:
            raise ValueError("labels must be >= 0")
        self._factory = make_model
        self._norm: dict[str, Any] | None = None

    # ----------------------------------------------------------------------------- driver
    def run(self, start: str | None = None) -> dict[str, Any]:
        """Run (or resume) every stage and return the metrics report (also saved as metrics.json).

        Args:
            start: recompute this stage and every stage that depends on it, discarding their
                saved outputs (one of :data:`STAGES`); None = recompute only what a config
                change invalidated.
        """
        if start is not None and start not in STAGES:
            raise ValueError(f"start must be one of {STAGES}, got {start!r}")
        self._prepare(start)
        subsets = self.split()
        self.train_base(subsets)
        self.gaave(subsets)
        self.criterion(subsets)
        if self.config.relabels:
            self.annotate(subsets)
        self.train_final("gaave" if self.config.relabels else "drop")
        if self.config.baseline:
            self.train_baseline()
        self.write_table()
        return self.report()

    def _prepare(self, start: str | None) -> None:
        cfg_path = self.out / "config.yaml"
        if start != "split":
            self._check_data()
        stale: set[str] = set()
        if cfg_path.exists():
            stale = stale_stages(PipelineConfig.load(cfg_path), self.config)
        if start == "baseline":
            stale.add("baseline")
        elif start is not None:
            stale |= set(_CHAIN[_CHAIN.index(start):])
            if start in ("split", "final"):
                stale.add("baseline")
        if stale:
            log.info("recomputing stages %s", sorted(stale, key=STAGES.index))
        if self._is_main():
            for s in stale:
                for d in self._stage_paths(s):
                    if d.is_dir():
                        shutil.rmtree(d)
                    elif d.exists():
                        d.unlink()
            tpath = self.out / "timings.json"
            if stale and tpath.exists():
                t = json.loads(tpath.read_text())
                _write_json(tpath, {k: v for k, v in t.items() if k.split(":")[0] not in stale})
            self.config.save(cfg_path)
        self._barrier()

    def _stage_paths(self, stage: str) -> list[Path]:
        o = self.out
        return {"split": [o / "split"], "base": [o / "base_head", o / "base_tail", o / "base_all"],
                "gaave": [o / "gaave_head", o / "gaave_tail", o / "gaave_all"],
                "criterion": [o / "criterion.json", o / "candidates.npz"], "annotate": [o / "annotate"],
                "final": [o / "final_gaave", o / "final_drop"], "baseline": [o / "baseline"]}[stage]

    # ----------------------------------------------------------------------------- stages
    def split(self) -> dict[str, RefactoredSubset]:
        """Stage 1-2: Dataset Splitting and Subset Refactoring (loaded when saved).

        Returns:
            ``{"head": D'h, "tail": D't}``, or ``{"all": whole set}`` for the no_split ablation.
        """
        d = self.out / "split"
        if not (d / "split.json").exists():
            t0 = time.perf_counter()
            info: dict[str, Any] = {"data": self._fingerprint()}
            if self.config.splits:
                cs = split_classes(self.labels, self.num_classes, self.config.head_classes)
                subsets = dict(zip(("head", "tail"), refactor(self.labels, cs, self.config.seed)))
                info["split"] = cs.to_dict()
                info["imbalance"] = {"head": cs.imbalance("head"), "tail": cs.imbalance("tail")}
            else:
                subsets = {"all": whole_set(self.labels, self.num_classes)}
            info["subsets"] = {n: {"classes": list(s.classes), "has_other": s.has_other, "size": int(s.indices.size),
                                   "class_counts": np.bincount(s.labels, minlength=s.num_classes).tolist()}
                               for n, s in subsets.items()}
            if self._factory is None:
                info["normalization"] = self._measure_norm()
            if self._is_main():
                d.mkdir(parents=True, exist_ok=True)
                np.savez(d / "subsets.npz", **{f"{n}_{a}": getattr(s, a) for n, s in subsets.items()
                                               for a in ("indices", "labels")})
                _write_json(d / "split.json", info)
            self._record_time("split", t0)
        self._check_data()
        info = json.loads((d / "split.json").read_text())
        self._norm = info.get("normalization")
        z = np.load(d / "subsets.npz")
        out = {}
        for n, s in info["subsets"].items():
            out[n] = RefactoredSubset(n, z[f"{n}_indices"], z[f"{n}_labels"], tuple(s["classes"]), s["has_other"])
        return out

    def train_base(self, subsets: dict[str, RefactoredSubset]) -> dict[str, dict]:
        """Stage 3: train one base model per subset for ``config.base.epochs`` epochs.

        Returns:
            ``{subset: metrics}`` with the eval-mode training accuracy on the subset
            (``train_acc``) and the last epoch's history entry.
        """
        cfg = self.config
        total = cfg.base.epochs + cfg.gaave_epochs - 1  # the schedule spans the GAAVE epochs too
        out = {}
        for name, sub in subsets.items():
            d = self.out / f"base_{name}"
            if not (d / "metrics.json").exists():
                t0 = time.perf_counter()
                view = RemappedDataset.of(self.train_set, sub)
                res = fit(self.new_model(sub.num_classes), view, sub.labels, cfg.base, seed=cfg.seed + _SEED_OFFSET[name],
                          device=cfg.device, epochs=total, stop_at=cfg.base.epochs, checkpoint=d / "checkpoint.pt",
                          desc=f"base {name}")
                m = self._fit_metrics(res.model, view, sub, res.history)
                if self._is_main():
                    save_model(res.model, d / "model.pt")
                    _write_json(d / "metrics.json", m)
                self._record_time(f"base:{name}", t0)
            out[name] = json.loads((d / "metrics.json").read_text())
            log.info("base %s: training accuracy %.4f", name, out[name]["train_acc"])
        return out

    def gaave(self, subsets: dict[str, RefactoredSubset]) -> dict[str, dict[str, np.ndarray]]:
        """Stage 4 (Algorithm 1): T' snapshots per subset of k, margin and loss.

        Snapshot 0 scans the base model; each further snapshot follows one more epoch of training
        (continuing the base run: same optimizer state and schedule). Only the samples whose
        label is one of the subset's real classes are scanned: each sample is judged by the
        model of the subset that owns its class.

        Returns:
            ``{subset: {"index": int64 [n], "k"/"margin"/"loss": [T', n], "pred": [T', n]}}``.
        """
        cfg = self.config
        total = cfg.base.epochs + cfg.gaave_epochs - 1
        out = {}
        for name, sub in subsets.items():
            d = self.out / f"gaave_{name}"
            own = sub.select(sub.own())
            view = RemappedDataset.of(self.train_set, own)
            if not (d / "done.json").exists():
                t0 = time.perf_counter()
                d.mkdir(parents=True, exist_ok=True)
                model = self.new_model(sub.num_classes)

                def record(epoch: int, m: nn.Module, d: Path = d, view: RemappedDataset = view) -> dict:
                    j = epoch - cfg.base.epochs
                    path = d / f"snap_{j:03d}.npz"
                    if not path.exists():
                        snap = snapshot(m, view, eps=cfg.eps, alpha=cfg.alpha, steps=cfg.steps, backend=cfg.scan_backend,
                                        batch_size=cfg.scan_batch_size, device=cfg.device, progress=cfg.base.progress)
                        if self._is_main():
                            np.savez(d / "snap.tmp.npz", **snap)
                            (d / "snap.tmp.npz").replace(path)
                        self._barrier()
                    z = np.load(path)
                    return {"snapshot": j, "k_mean": float(z["k"].mean())}

                base_dir = self.out / f"base_{name}"
                load_model(model, base_dir / "model.pt")
                record(cfg.base.epochs, model)
                if cfg.gaave_epochs > 1:
                    fit(model, RemappedDataset.of(self.train_set, sub), sub.labels, cfg.base, seed=cfg.seed + _SEED_OFFSET[name],
                        device=cfg.device, epochs=total, checkpoint=d / "checkpoint.pt",
                        init_checkpoint=base_dir / "checkpoint.pt", on_epoch_end=record, desc=f"gaave {name}")
                if self._is_main():
                    _write_json(d / "done.json", {"snapshots": cfg.gaave_epochs})
                self._record_time(f"gaave:{name}", t0)
            snaps = [np.load(d / f"snap_{j:03d}.npz") for j in range(cfg.gaave_epochs)]
            out[name] = {"index": snaps[0]["index"]}
            for f in SNAPSHOT_FIELDS[1:]:
                out[name][f] = np.stack([s[f] for s in snaps])
        return out

    def criterion(self, subsets: dict[str, RefactoredSubset]) -> dict[str, Any]:
        """Stage 5: combine k over the snapshots, choose tau per subset, mark candidates ``k <= tau``.

        Returns:
            ``{"tau": {subset: TauChoice dict}, "candidates": int}``; per-sample arrays are in
            candidates.npz (``subset`` id, combined ``k``, ``candidate``).
        """
        cfg = self.config
        path = self.out / "criterion.json"
        if not path.exists():
            t0 = time.perf_counter()
            scans = self.gaave(subsets)
            n = self.labels.size
            subset_id = np.full(n, -1, np.int64)
            k_all = np.full(n, np.nan)
            cand = np.zeros(n, bool)
            taus: dict[str, dict] = {}
            for j, name in enumerate(subsets):
                s = scans[name]
                k = combine_k(s["k"], cfg.combine)
                given = {"head": cfg.tau_head, "tail": cfg.tau_tail, "all": cfg.tau_head}[name]
                if given is not None:
                    choice = TauChoice(float(given), "given", int((k <= given).sum()), k.size)
                else:
                    choice = select_tau(k, cfg.tau_rule, cfg.tau_fraction)
                taus[name] = choice.to_dict()
                subset_id[s["index"]] = j
                k_all[s["index"]] = k
                cand[s["index"]] = k <= choice.tau
                log.info("criterion %s: tau %.3f (%s), %d of %d flagged", name, choice.tau, choice.rule,
                         choice.flagged, choice.total)
            if self._is_main():
                np.savez(self.out / "candidates.npz", subset=subset_id, k=k_all, candidate=cand)
                _write_json(path, {"tau": taus, "combine": cfg.combine, "candidates": int(cand.sum()),
                                   "subsets": list(subsets)})
            self._record_time("criterion", t0)
        return json.loads(path.read_text())

    def candidates(self) -> np.ndarray:
        """Boolean [N]: the noise candidates of the saved criterion stage."""
        return np.load(self.out / "candidates.npz")["candidate"]

    def annotate(self, subsets: dict[str, RefactoredSubset]) -> dict[str, np.ndarray]:
        """Stage 6: train the self-annotators on the clean parts of D'h and D't; relabel by Eq. 5.

        Both annotators start from the same initialisation (the pipeline seed) with the
        architecture of the base models.

        Returns:
            ``{"index", "pred_head", "pred_tail", "new_label"}`` arrays over the candidates
            (``new_label`` -1 = discarded).
        """
        if set(subsets) != {"head", "tail"}:
            raise ValueError("annotate needs the head and tail subsets (ablation 'no_split' has none)")
        cfg = self.config
        d = self.out / "annotate"
        path = d / "annotations.npz"
        if not path.exists():
            t0 = time.perf_counter()
            cand = self.candidates()
            idx = np.flatnonzero(cand)
            # Without candidates there is nothing to relabel: no annotators are trained.
            preds = {name: np.zeros(0, np.int64) for name in ("head", "tail")}
            for name in ("head", "tail") if idx.size else ():
                sub = subsets[name]
                clean = sub.select(~cand[sub.indices])
                ad = d / f"annot_{name}"
                view = RemappedDataset.of(self.train_set, clean)
                if (ad / "model.pt").exists():
                    model = load_model(self.new_model(sub.num_classes), ad / "model.pt")
                else:
                    res = fit(self.new_model(sub.num_classes), view, clean.labels, cfg.annotator,
                              seed=cfg.seed + _SEED_OFFSET[f"annot_{name}"], device=cfg.device,
                              checkpoint=ad / "checkpoint.pt", desc=f"annotator {name}")
                    model = res.model
                    m = self._fit_metrics(model, view, clean, res.history)
                    if self._is_main():
                        _write_json(ad / "metrics.json", m)
                        save_model(model, ad / "model.pt")
                    self._barrier()
                cview = RemappedDataset(self.train_set, idx, np.zeros_like(idx))
                _, logits = predict(model, cview, batch_size=cfg.annotator.eval_batch_size, device=cfg.device)
                preds[name] = logits.argmax(1)
            new = relabel(preds["head"], preds["tail"], subsets["head"].classes, subsets["tail"].classes)
            if self._is_main():
                d.mkdir(parents=True, exist_ok=True)
                np.savez(d / "tmp.npz", index=idx, pred_head=preds["head"], pred_tail=preds["tail"], new_label=new)
                (d / "tmp.npz").replace(path)
            self._record_time("annotate", t0)
        z = np.load(path)
        return {k: z[k] for k in z.files}

    def final_labels(self, mode: str) -> tuple[np.ndarray, np.ndarray]:
        """Training set of the final model.

        Args:
            mode: ``"gaave"`` (clean + relabelled candidates) or ``"drop"`` (clean only).

        Returns:
            ``(positions int64 [m], labels int64 [m])``.
        """
        cand = self.candidates()
        lab = self.labels.copy()
        keep = ~cand
        if mode == "gaave":
            a = self.annotate(self.split())
            lab[a["index"]] = a["new_label"]
            keep = keep | (lab >= 0) & cand
        elif mode != "drop":
            raise ValueError(f"mode must be 'gaave' or 'drop', got {mode!r}")
        pos = np.flatnonzero(keep)
        return pos, lab[pos]

    def train_final(self, mode: str) -> dict[str, Any]:
        """Stage 7: retrain from scratch on the final training set and evaluate on the test set.

        Args:
            mode: ``"gaave"`` or ``"drop"`` (see :meth:`final_labels`); outputs go to
                ``final_<mode>/``. ``"drop"`` on a full run gives the "without self-annotator"
                ablation from the same candidates.
        """
        pos, lab = self.final_labels(mode)
        return self._train_eval(self.out / f"final_{mode}", pos, lab, f"final {mode}")

    def train_baseline(self) -> dict[str, Any]:
        """The baseline: the final model's training on the raw labels, evaluated the same way."""
        return self._train_eval(self.out / "baseline", np.arange(self.labels.size), self.labels, "baseline")

    # ----------------------------------------------------------------------------- outputs
    def table(self) -> pd.DataFrame:
        """The per-sample table (one row per training position).

        Columns: ``index`` (position), ``path`` (when the dataset has paths), ``label``
        (original), ``subset`` (head/tail/all: whose model judged it), ``k_e<j>`` (k at snapshot
        j), ``k`` (combined), ``margin`` and ``loss`` (means over snapshots), ``candidate``,
        ``new_label`` (the final label; -1 = discarded or, for ``drop``, removed) and ``status``
        (clean / relabeled / discarded).
        """
        subsets = self.split()
        scans = self.gaave(subsets)
        n = self.labels.size
        df = pd.DataFrame({"index": np.arange(n)})
        paths = _dataset_paths(self.train_set)
        if paths is not None:
            df["path"] = paths
        df["label"] = self.labels
        z = np.load(self.out / "candidates.npz")
        names = np.array(list(subsets) + [""])
        df["subset"] = names[z["subset"]]
        for j in range(self.config.gaave_epochs):
            col = np.full(n, -1, np.int16)
            for s in scans.values():
                col[s["index"]] = s["k"][j]
            df[f"k_e{j}"] = col
        for f in ("margin", "loss"):
            col = np.full(n, np.nan, np.float32)
            for s in scans.values():
                col[s["index"]] = s[f].mean(0)
            df[f] = col
        df["k"] = z["k"]
        df["candidate"] = z["candidate"]
        new = np.where(z["candidate"], DISCARDED, self.labels)
        if self.config.relabels and (self.out / "annotate" / "annotations.npz").exists():
            a = self.annotate(subsets)
            new[a["index"]] = a["new_label"]
        df["new_label"] = new
        df["status"] = np.where(~z["candidate"], "clean", np.where(new >= 0, "relabeled", "discarded"))
        return df

    def write_table(self) -> Path:
        """Save :meth:`table` as samples.csv or samples.parquet (``config.table_format``)."""
        path = self.out / f"samples.{self.config.table_format}"
        df = self.table()
        if self._is_main():
            if self.config.table_format == "parquet":
                df.to_parquet(path, index=False)
            else:
                df.to_csv(path, index=False)
        return path

    def report(self) -> dict[str, Any]:
        """Gather the saved stage metrics into one dict and write metrics.json."""
        o = self.out
        r: dict[str, Any] = {"config": self.config.to_dict()}
        r["split"] = json.loads((o / "split" / "split.json").read_text())
        r["base"] = {p.name[5:]: json.loads((p / "metrics.json").read_text()) for p in sorted(o.glob("base_*"))
                     if (p / "metrics.json").exists()}
        if (o / "criterion.json").exists():
            r["criterion"] = json.loads((o / "criterion.json").read_text())
        if (o / "annotate" / "annotations.npz").exists():
            nl = np.load(o / "annotate" / "annotations.npz")["new_label"]
            r["annotate"] = {"candidates": int(nl.size), "relabeled": int((nl >= 0).sum()),
                             "discarded": int((nl < 0).sum())}
            for name in ("head", "tail"):
                mp = o / "annotate" / f"annot_{name}" / "metrics.json"
                if mp.exists():
                    r["annotate"][f"annotator_{name}"] = json.loads(mp.read_text())
        for p in sorted(list(o.glob("final_*")) + [o / "baseline"]):
            if (p / "metrics.json").exists():
                r[p.name] = json.loads((p / "metrics.json").read_text())
        if (o / "timings.json").exists():
            r["timings"] = json.loads((o / "timings.json").read_text())
        if self._is_main():
            _write_json(o / "metrics.json", r)
        return r

    # ----------------------------------------------------------------------------- helpers
    def new_model(self, num_classes: int) -> nn.Module:
        """A freshly initialised model of the run's architecture with ``num_classes`` outputs.

        Every model of a run starts from the same seed, so the two annotators (and the final
        model and the baseline) share their initial weights up to the output layer's size.
        The default factory needs the normalisation measured by the split stage (run if needed).
        """
        if self._factory is None:
            if self._norm is None:
                self.split()
            n = self._norm
            self._factory = model_factory(self.config.arch, n["in_channels"], n["image_size"], n["mean"], n["std"],
                                          self.config.width)
        torch.manual_seed(self.config.seed)
        return self._factory(num_classes)

    def _fingerprint(self) -> dict[str, Any]:
        return {"num_samples": int(self.labels.size), "num_classes": self.num_classes,
                "labels_sha1": hashlib.sha1(self.labels.astype(np.int64).tobytes()).hexdigest()}

    def _check_data(self) -> None:
        # Outputs are keyed by dataset position: refuse to mix runs on different data.
        path = self.out / "split" / "split.json"
        if path.exists():
            saved = json.loads(path.read_text()).get("data")
            if saved != self._fingerprint():
                raise ValueError(f"output_dir {self.out} holds a run on other data ({saved}, now "
                                 f"{self._fingerprint()}): use another output_dir or run(start='split')")

    def _measure_norm(self, max_samples: int = 4096) -> dict[str, Any]:
        # Per-channel mean/std of the training images, on evenly spaced positions (deterministic).
        n = len(self.train_set)
        pos = np.unique(np.linspace(0, n - 1, min(n, max_samples)).astype(np.int64))
        x = torch.stack([torch.as_tensor(_image(self.train_set[int(i)])) for i in pos]).double()
        if x.dim() != 4:
            raise ValueError(f"train_set images must be [C, H, W], got {tuple(x.shape[1:])}")
        mean = x.mean(dim=(0, 2, 3))
        std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
        return {"in_channels": int(x.shape[1]), "image_size": int(max(x.shape[2:])), "mean": mean.tolist(),
                "std": std.tolist()}

    def _fit_metrics(self, model: nn.Module, view: RemappedDataset, sub: RefactoredSubset,
                     history: Sequence[dict]) -> dict[str, Any]:
        _, logits = predict(model, view, batch_size=self.config.base.eval_batch_size, device=self.config.device)
        acc = accuracy(logits.argmax(1), sub.labels, sub.num_classes)
        return {"train_acc": acc["accuracy"], "train_mean_class_acc": acc["mean_class_accuracy"],
                "samples": int(sub.indices.size), "epochs": len(history), "last_epoch": dict(history[-1]) if history else {}}

    def _train_eval(self, d: Path, pos: np.ndarray, lab: np.ndarray, desc: str) -> dict[str, Any]:
        cfg = self.config
        if not (d / "metrics.json").exists():
            t0 = time.perf_counter()
            if pos.size == 0:
                raise RuntimeError(f"{desc}: no training samples left")
            view = RemappedDataset(self.train_set, pos, lab)
            res = fit(self.new_model(self.num_classes), view, lab, cfg.final, seed=cfg.seed + _SEED_OFFSET["final"],
                      device=cfg.device, checkpoint=d / "checkpoint.pt", desc=desc)
            m: dict[str, Any] = {"train_samples": int(pos.size), "epochs": len(res.history),
                                 "last_epoch": dict(res.history[-1]) if res.history else {}}
            if self.test_set is not None:
                tview = RemappedDataset(self.test_set, np.arange(len(self.test_set)), self.test_labels)
                _, logits = predict(res.model, tview, batch_size=cfg.final.eval_batch_size, device=cfg.device)
                m["test"] = accuracy(logits.argmax(1), self.test_labels, self.num_classes)
                log.info("%s: test accuracy %.4f, mean class accuracy %.4f", desc, m["test"]["accuracy"],
                         m["test"]["mean_class_accuracy"])
            if self._is_main():
                save_model(res.model, d / "model.pt")
                _write_json(d / "metrics.json", m)
            self._record_time("baseline" if d.name == "baseline" else f"final:{d.name[6:]}", t0)
        return json.loads((d / "metrics.json").read_text())

    def _record_time(self, key: str, t0: float) -> None:
        # Wall seconds of a stage in the session that computed it (an interrupted session's
        # share is not counted); then the stage's closing barrier.
        if self._is_main():
            path = self.out / "timings.json"
            t = json.loads(path.read_text()) if path.exists() else {}
            t[key] = round(time.perf_counter() - t0, 3)
            _write_json(path, t)
        self._barrier()

    @staticmethod
    def _is_main() -> bool:
        return dist_info()[0] == 0

    @staticmethod
    def _barrier() -> None:
        if dist_info()[1] > 1:
            dist.barrier()


def _effective(d: dict[str, Any]) -> dict[str, Any]:
    d = dict(d)
    for k in ("base", "annotator", "final"):
        d[k] = {f: v for f, v in d[k].items() if f not in _NO_EFFECT}
    return d


def _image(item: Any) -> Any:
    return item[0] if isinstance(item, (tuple, list)) else item["image"]


def _dataset_paths(dataset: Dataset) -> list[str] | None:
    for get in (lambda d: d.samples["path"], lambda d: d.paths):
        try:
            p = list(get(dataset))
        except (AttributeError, KeyError, TypeError):
            continue
        if len(p) == len(dataset):
            return [str(x) for x in p]
    return None


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_jsonable))
    tmp.replace(path)


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if hasattr(o, "__dataclass_fields__"):
        return asdict(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")

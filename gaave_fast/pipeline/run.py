"""The GAAVE pipeline: :meth:`Pipeline.run` walks the paper's seven steps over a :class:`~.store.RunStore`.

Each step's arithmetic is a function of its own module (split/refactor, train, record,
criterion, annotate, retrain, table); this module only orders them, keeps every result in the
run folder and loads it instead of recomputing it, so re-running an interrupted run continues
it. When the saved config differs from the new one, the stages the changed fields affect (and
the ones after them) are recomputed; ``run(start=stage)`` forces that stage and the ones after it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from gaave_fast.data.describe import (
    dataset_classes,
    dataset_labels,
    dataset_paths,
    dataset_rows,
)

from .annotate import DISCARDED, agreement, decide, relabel
from .config import PipelineConfig
from .criterion import Criterion, Evidence, select_candidates, select_tau
from .guard import cap_class_shift, shift_report
from .models import ModelFactory, model_factory
from .pretrained import Backbone
from .record import (
    DECIDED_FIELDS,
    SCAN_FIELDS,
    pilot_rows,
    record_k,
    scan_decided,
    scan_subset,
)
from .refactor import RefactoredSubset, RemappedDataset, Subsets, make_subsets
from .retrain import final_training_set
from .store import STAGES, RunStore
from .table import sample_table
from .train import accuracy, fit, predict

log = logging.getLogger(__name__)

T = TypeVar("T")
_SEED_OFFSET = {"head": 1, "tail": 2, "all": 3, "annot_head": 4, "annot_tail": 5, "final": 6}


class Pipeline:
    """The GAAVE method end to end, with saved, resumable stages.

    Args:
        config: the :class:`PipelineConfig`.
        train_set: map-style training dataset of ``(image float [C,H,W] in [0,1], label, index)``
            with the observed (possibly noisy) labels; its positions 0..N-1 are the sample ids
            in every output.
        output_dir: the run folder (created; see :mod:`.store` for its layout).
        test_set: evaluation dataset with clean labels (None = no evaluation).
        labels, test_labels: int [N] labels of the datasets' items (default: read from the
            datasets, see :func:`~gaave_fast.data.describe.dataset_labels`).
        num_classes: C (default: ``max label + 1`` over both label arrays).
        classes: the C class names for the table (default: the dataset's ``classes``, else ids).
        make_model: ``make_model(num_classes) -> nn.Module`` taking [0,1] images; default the
            config's ``arch`` with per-channel normalisation measured on the training images.
            It is not saved: pass the same factory when re-running.
    """

    def __init__(self, config: PipelineConfig, train_set: Dataset, output_dir: str | Path, *,
                 test_set: Dataset | None = None, labels: np.ndarray | None = None,
                 test_labels: np.ndarray | None = None, num_classes: int | None = None,
                 classes: Sequence[str] | None = None, make_model: ModelFactory | None = None):
        if not isinstance(config, PipelineConfig):
            raise TypeError(f"config must be a PipelineConfig, got {type(config).__name__}")
        self.config, self.train_set, self.test_set = config, train_set, test_set
        self.store = RunStore(output_dir)
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
        self.classes = list(classes) if classes is not None else dataset_classes(train_set, self.num_classes)
        if len(self.classes) != self.num_classes:
            raise ValueError(f"classes names {len(self.classes)} classes, expected {self.num_classes}")
        if make_model is not None and config.pretrained is not None:
            raise ValueError("config.pretrained loads into the config's arch: it cannot be used with a make_model")
        self._factory = make_model
        self._norm: dict[str, Any] | None = None

    @property
    def out(self) -> Path:
        """The run folder."""
        return self.store.root

    # ----------------------------------------------------------------------------- the method
    def run(self, start: str | None = None) -> dict[str, Any]:
        """Run (or resume) every step and return the metrics report (also saved as metrics.json).

        Args:
            start: recompute this stage and every stage that depends on it, discarding their
                saved outputs (one of :data:`~.store.STAGES`); None = recompute only what a
                config change invalidated.
        """
        cfg = self.config
        self.store.begin(cfg, self._fingerprint(), start)
        # Steps 1-2. Dataset Splitting and Subset Refactoring: D'h and D't (or the whole set).
        split = self._stage("split", self._split, self.store.save_split, self.store.load_split)
        subsets = split.subsets
        self._norm = split.info.get("normalization")
        if cfg.pretrained is not None:
            # Checked before any training: a file that does not fit fails the run at once.
            self.store.save_pretrained(self._model_factory().pretrained_summary())
        # Step 3. Base models θh and θt, trained on D'h and D't.
        for name, sub in subsets.items():
            self._trained(f"base:{name}", lambda name=name, sub=sub: self._train_base(name, sub))
        # Step 4. GAAVE: k of every sample of a subset's own classes, recorded over T' epochs.
        scans = {name: self._stage(f"record:{name}", lambda name=name, sub=sub: self._record(name, sub),
                                   lambda arrays, name=name: self.store.save_record(name, cfg.gaave_epochs),
                                   lambda name=name: self.store.load_record(name, self._record_fields()))
                 for name, sub in subsets.items()}
        # Step 5. Criterion: k <= τ marks the noise candidates.
        criterion = self._stage("criterion", lambda: self._criterion(scans, subsets), self.store.save_criterion,
                                self.store.load_criterion)
        # Step 6. Self-Annotators relabel the candidates (Eq. 5), or the candidates are dropped.
        annotations = None
        if cfg.relabels:
            annotations = self._stage("annotate", lambda: self._annotate(subsets, criterion),
                                      self.store.save_annotations, self.store.load_annotations)
        shift = self._class_shift(criterion.candidate, annotations)
        # Step 7. Retrain on the clean and relabelled samples; the baseline on the raw labels.
        self.retrain("gaave" if cfg.relabels else "drop")
        if cfg.baseline:
            self._trained("baseline", lambda: self._train_eval("baseline", np.arange(self.labels.size), self.labels))
        self.store.save_table(sample_table(self.labels, criterion, scans, annotations, self.classes,
                                           rows=dataset_rows(self.train_set), paths=dataset_paths(self.train_set)))
        return self.store.save_metrics(cfg, shift)

    def retrain(self, mode: str) -> dict[str, Any]:
        """Step 7 from the saved candidates (and annotations): train and evaluate ``final_<mode>``.

        Args:
            mode: ``"gaave"`` (clean + relabelled) or ``"drop"`` (clean only; on a full run, the
                "without self-annotator" ablation from the same candidates).

        Returns:
            The final model's metrics (``train_samples``, ``epochs``, ``last_epoch``, ``test``).
        """
        candidate = self.store.load_criterion().candidate
        annotations = self.store.load_annotations() if mode == "gaave" else None
        pos, lab = final_training_set(self.labels, candidate, annotations, mode)
        return self._trained(f"final:{mode}", lambda: self._train_eval(f"final:{mode}", pos, lab))

    # ----------------------------------------------------------------------------- stage bodies
    def _split(self) -> Subsets:
        cfg = self.config
        made = make_subsets(self.labels, self.num_classes, split=cfg.splits, head_classes=cfg.head_classes,
                            seed=cfg.seed)
        info = {"data": self._fingerprint(), **made.info}
        if self._factory is None:
            info["normalization"] = self._measure_norm()
        return Subsets(made.subsets, info)

    def _train_base(self, name: str, sub: RefactoredSubset) -> tuple[nn.Module, dict[str, Any]]:
        cfg = self.config
        view = RemappedDataset.of(self.train_set, sub)
        # The schedule spans the recorded epochs of step 4 too, which continue this run.
        res = fit(self.new_model(sub.num_classes), view, sub.labels, cfg.base, seed=cfg.seed + _SEED_OFFSET[name],
                  device=cfg.device, epochs=cfg.base.epochs + cfg.gaave_epochs - 1, stop_at=cfg.base.epochs,
                  checkpoint=self.store.checkpoint(f"base:{name}"), desc=f"base {name}")
        m = self._fit_metrics(res.model, view, sub, res.history)
        log.info("base %s: training accuracy %.4f", name, m["train_acc"])
        return res.model, m

    def _record(self, name: str, sub: RefactoredSubset) -> dict[str, np.ndarray]:
        # Each sample is judged by the model of the subset that owns its class.
        cfg = self.config
        store = self.store
        model = store.load_weights(f"base:{name}", self.new_model(sub.num_classes))

        def load(j: int) -> dict[str, np.ndarray] | None:
            path = store.snapshot_path(name, j)
            return dict(np.load(path)) if path.exists() else None

        def scan(m: nn.Module, view: RemappedDataset) -> dict[str, np.ndarray]:
            def run(**how) -> dict[str, np.ndarray]:
                return scan_subset(m, view, eps=cfg.eps, alpha=cfg.alpha, steps=cfg.steps, backend=cfg.scan_backend,
                                   batch_size=cfg.scan_batch_size, device=cfg.device, amp=cfg.scan_amp,
                                   compile=cfg.scan_compile, progress=cfg.base.progress, **how)

            if cfg.record == "full":
                return run()
            # Decided record: tau is the given one, or chosen on the base model's (first) scan of the pilot.
            given = {"head": cfg.tau_head, "tail": cfg.tau_tail, "all": cfg.tau_head}[name]
            tau = None if given is None else int(np.floor(given))
            first = load(0)
            if tau is None and first is not None:
                tau = int(first["decide_tau"][0])
            seed = cfg.seed + _SEED_OFFSET[name]
            return scan_decided(run, len(view), tau=None if tau is None else min(max(tau, -1), cfg.steps + 1),
                                pilot=pilot_rows(len(view), cfg.pilot_fraction, seed),
                                choose=lambda k: int(np.floor(select_tau(k, cfg.setting("tau_rule"), cfg.tau_fraction).tau)))

        return record_k(model, RemappedDataset.of(self.train_set, sub), sub.labels,
                        RemappedDataset.of(self.train_set, sub.select(sub.in_real_class())), cfg.base,
                        scans=cfg.gaave_epochs, base_epochs=cfg.base.epochs, seed=cfg.seed + _SEED_OFFSET[name],
                        snapshots=(load, lambda j, arrays: store.save_snapshot(name, j, arrays)),
                        base_checkpoint=store.checkpoint(f"base:{name}"), checkpoint=store.checkpoint(f"record:{name}"),
                        device=cfg.device, scan=scan, desc=f"gaave {name}")

    def _record_fields(self) -> tuple[str, ...]:
        return SCAN_FIELDS[1:] + (DECIDED_FIELDS if self.config.record == "decided" else ())

    def _criterion(self, scans: dict[str, dict[str, np.ndarray]], subsets: dict[str, RefactoredSubset]) -> Criterion:
        cfg = self.config
        record_taus = ({n: int(s["decide_tau"][0, 0]) for n, s in scans.items() if s["index"].size}
                       if cfg.record == "decided" else None)
        evidence = {n: Evidence(subsets[n].labels[np.searchsorted(subsets[n].indices, s["index"])],
                                subsets[n].num_classes, s["margin"], s["loss"], s["pred"]) for n, s in scans.items()}
        return select_candidates({n: (s["index"], s["k"]) for n, s in scans.items()}, self.labels.size,
                                 combine=cfg.combine, taus={"head": cfg.tau_head, "tail": cfg.tau_tail,
                                                            "all": cfg.tau_head},
                                 rule=cfg.setting("tau_rule"), fraction=cfg.tau_fraction, record_taus=record_taus,
                                 evidence=evidence)

    def _annotate(self, subsets: dict[str, RefactoredSubset], criterion: Criterion) -> dict[str, np.ndarray]:
        # Both annotators start from the same trunk weights (the pipeline seed, see new_model) with
        # the architecture of the base models, and train on their subset's clean samples.
        if set(subsets) != {"head", "tail"}:
            raise ValueError("annotate needs the head and tail subsets (ablation 'no_split' has none)")
        cfg = self.config
        candidate = criterion.candidate
        idx = np.flatnonzero(candidate)
        probs = {name: np.zeros((0, subsets[name].num_classes), np.float32) for name in ("head", "tail")}
        # Without candidates there is nothing to relabel: no annotators are trained.
        for name in ("head", "tail") if idx.size else ():
            sub = subsets[name]
            clean = sub.select(~candidate[sub.indices])
            if clean.labels.size == 0:
                raise ValueError(f"every sample of the {name} subset is a noise candidate, so its annotator has no "
                                 "clean sample to learn from; the threshold tau is too high for this data")
            key = f"annotator:{name}"
            view = RemappedDataset.of(self.train_set, clean)

            def train(clean: RefactoredSubset = clean, view: RemappedDataset = view, name: str = name, key: str = key):
                res = fit(self.new_model(clean.num_classes), view, clean.labels, cfg.annotator,
                          seed=cfg.seed + _SEED_OFFSET[f"annot_{name}"], device=cfg.device,
                          checkpoint=self.store.checkpoint(key), desc=f"annotator {name}")
                return res.model, self._fit_metrics(res.model, view, clean, res.history)

            if not self.store.has(key):
                model, metrics = train()
                self.store.save_model(key, model, metrics)
            else:
                model = self.store.load_weights(key, self.new_model(sub.num_classes))
            cview = RemappedDataset(self.train_set, idx, np.zeros_like(idx))
            _, logits = predict(model, cview, batch_size=cfg.annotator.eval_batch_size, device=cfg.device)
            probs[name] = torch.softmax(torch.from_numpy(logits), 1).numpy()
        pred = {name: p.argmax(1).astype(np.int64) for name, p in probs.items()}
        eq5 = relabel(pred["head"], pred["tail"], subsets["head"].classes, subsets["tail"].classes)
        confidence = agreement(probs["head"], probs["tail"])
        own = self.labels[idx]
        new, kept = decide(own, eq5, confidence, cfg.setting("relabel"), cfg.relabel_confidence,
                           cfg.setting("uncertain"))
        guarded = np.zeros(idx.size, bool)
        if cfg.setting("class_guard"):
            guarded = cap_class_shift(self.labels, idx, new, -criterion.k[idx], cfg.max_class_shift, self.num_classes)
            new, kept = np.where(guarded, own, new), kept | guarded
            if guarded.any():
                log.info("class-shift guard: %d candidates keep their own label (max_class_shift %g)",
                         int(guarded.sum()), cfg.max_class_shift)
        return {"index": idx, "pred_head": pred["head"], "pred_tail": pred["tail"], "prob_head": probs["head"],
                "prob_tail": probs["tail"], "eq5_label": eq5, "confidence": confidence, "new_label": new,
                "kept": kept, "guarded": guarded}

    def _class_shift(self, candidate: np.ndarray, annotations: dict[str, np.ndarray] | None) -> dict[str, Any]:
        # The final training set's class shares against the given ones; warns past max_class_shift.
        idx = np.flatnonzero(candidate)
        new = np.full(idx.size, DISCARDED, np.int64) if annotations is None else annotations["new_label"]
        report = shift_report(self.labels, idx, new, self.classes)
        cap = self.config.max_class_shift
        far = {c: r for c, r in report.items() if r["shift"] is not None and abs(r["shift"]) > cap}
        if far:
            log.warning("cleaning shifts the share of %s by more than max_class_shift=%g (%s); see class_shift in "
                        "metrics.json", ", ".join(far), cap, ", ".join(f"{c} {r['before']} -> {r['after']} samples, "
                                                                      f"{r['shift']:+.0%}" for c, r in far.items()))
        return report

    def _train_eval(self, key: str, pos: np.ndarray, lab: np.ndarray) -> tuple[nn.Module, dict[str, Any]]:
        # The final model or the baseline: trained from scratch with cfg.final and evaluated on the
        # test set after every epoch (the paper reports the mean of the last 10 epochs).
        cfg = self.config
        desc = key.replace(":", " ")
        if pos.size == 0:
            raise RuntimeError(f"{desc}: no training samples left")
        evaluate = None
        if self.test_set is not None:
            tview = RemappedDataset(self.test_set, np.arange(len(self.test_set)), self.test_labels)

            def evaluate(epoch: int, model: nn.Module) -> dict[str, float]:
                _, logits = predict(model, tview, batch_size=cfg.final.eval_batch_size, device=cfg.device)
                acc = accuracy(logits.argmax(1), self.test_labels, self.num_classes)
                return {"test_acc": acc["accuracy"], "test_mca": acc["mean_class_accuracy"],
                        "test_class_acc": acc["class_accuracy"]}

        res = fit(self.new_model(self.num_classes), RemappedDataset(self.train_set, pos, lab), lab, cfg.final,
                  seed=cfg.seed + _SEED_OFFSET["final"], device=cfg.device, checkpoint=self.store.checkpoint(key),
                  on_epoch_end=evaluate, desc=desc)
        history = [{k: v for k, v in h.items() if k != "test_class_acc"} for h in res.history]
        m: dict[str, Any] = {"train_samples": int(pos.size), "epochs": len(res.history),
                             "last_epoch": dict(history[-1]) if history else {}}
        if evaluate is not None and res.history:
            m.update(test_summary(res.history))
            log.info("%s: test accuracy %.4f (mean of the last %d epochs %.4f), mean class accuracy %.4f", desc,
                     m["test"]["accuracy"], m["test_last10"]["epochs"], m["test_last10"]["accuracy"],
                     m["test"]["mean_class_accuracy"])
        m["history"] = history
        return res.model, m

    # ----------------------------------------------------------------------------- helpers
    def _stage(self, key: str, compute: Callable[[], T], save: Callable[[T], None], load: Callable[[], T]) -> T:
        # Compute and save a stage key unless its outputs are complete, then read them back.
        if not self.store.has(key):
            with self.store.timed(key):
                save(compute())
        return load()

    def _trained(self, key: str, train: Callable[[], tuple[nn.Module, dict[str, Any]]]) -> dict[str, Any]:
        # A training stage: its model and metrics are saved; its metrics are returned.
        return self._stage(key, train, lambda result: self.store.save_model(key, *result),
                           lambda: self.store.load_metrics(key))

    def new_model(self, num_classes: int) -> nn.Module:
        """A freshly initialised model of the run's architecture with ``num_classes`` outputs.

        Every model of a run starts from the same seed and draws its trunk before its
        classifier (:mod:`.models`), so all of them (the two annotators with their different
        class counts, the final model, the baseline) share their initial trunk weights: the
        pretrained backbone when the config names one. The default factory needs the
        normalisation measured by the split stage.
        """
        make = self._model_factory()
        torch.manual_seed(self.config.seed)
        return make(num_classes)

    def _model_factory(self) -> ModelFactory:
        if self._factory is None:
            if self._norm is None:
                self._norm = self._measure_norm()
            n = self._norm
            cfg = self.config
            backbone = Backbone.read(cfg.pretrained) if cfg.pretrained is not None else None
            self._factory = model_factory(cfg.arch, n["in_channels"], n["image_size"], n["mean"], n["std"],
                                          cfg.width, backbone)
        return self._factory

    def _fingerprint(self) -> dict[str, Any]:
        return {"num_samples": int(self.labels.size), "num_classes": self.num_classes,
                "labels_sha1": hashlib.sha1(self.labels.astype(np.int64).tobytes()).hexdigest()}

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


def test_summary(history: Sequence[dict[str, Any]], last: int = 10) -> dict[str, Any]:
    """The test metrics of a training run evaluated after every epoch.

    Args:
        history: per-epoch entries with ``test_acc``, ``test_mca`` and ``test_class_acc``.
        last: how many final epochs are averaged.

    Returns:
        ``test`` (the last epoch: ``accuracy``, ``mean_class_accuracy``, ``class_accuracy``),
        ``test_last10`` (means over the last ``min(last, epochs)`` epochs, and that count as
        ``epochs``) and ``test_best`` (the epoch with the highest test accuracy, first on ties:
        picked on the test set, so only an upper bound).
    """
    tail = history[-last:]
    best = max(history, key=lambda h: h["test_acc"])
    return {"test": {"accuracy": history[-1]["test_acc"], "mean_class_accuracy": history[-1]["test_mca"],
                     "class_accuracy": history[-1]["test_class_acc"]},
            "test_last10": {"accuracy": float(np.mean([h["test_acc"] for h in tail])),
                            "mean_class_accuracy": float(np.mean([h["test_mca"] for h in tail])), "epochs": len(tail)},
            "test_best": {"epoch": int(best["epoch"]), "accuracy": best["test_acc"],
                          "mean_class_accuracy": best["test_mca"]}}


def _image(item: Any) -> Any:
    return item[0] if isinstance(item, (tuple, list)) else item["image"]


__all__ = ["STAGES", "Pipeline"]

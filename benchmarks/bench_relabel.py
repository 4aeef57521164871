"""Relabelling (step 6) on real noisy labels: where Eq. 5's labels go, how often they are right,
and what the relabel options and the class-shift guard change.

One :class:`gaave_fast.Pipeline` run with the ``paper`` preset per setting (its annotators'
softmax outputs are saved), then every relabel option is applied to the same candidates and
annotator outputs without retraining (:func:`gaave_fast.pipeline.annotate.decide`,
:func:`gaave_fast.pipeline.guard.cap_class_shift`). Per option: relabels, their precision
against the true labels (CIFAR-10N; FER2013 has none), kept and discarded counts, how often a
kept candidate's own label is right, the share of right labels in the final training set,
and the largest class shift. ``--retrain`` also trains the final model of the ``default``
preset (the guard) beside the paper's and the baseline, in a copy of the run folder.

Settings: ``fer2013`` (the shared FER2013 faces, original labels, test = PrivateTest),
``c10n-worse`` and ``c10n-aggre`` (CIFAR-10 with CIFAR-10N human labels). ``--train-size``
draws a random training subset, ``--test-size`` a random test subset (0 = all).

    python benchmarks/bench_relabel.py --setting fer2013 --train-size 6000 --test-size 2000 --retrain
    python benchmarks/bench_relabel.py --setting c10n-worse --train-size 5000 --json out.json
    python benchmarks/bench_relabel.py --setting c10n-worse --retrain-options 16 1 15 --retrain-recipe sgd-cosine
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from gaave_fast.data.arrays import ArrayDataset, load_cifar10_npz, load_fer2013_npz
from gaave_fast.pipeline import (
    Pipeline,
    PipelineConfig,
    RemappedDataset,
    TrainConfig,
    accuracy,
    fit,
    predict,
)
from gaave_fast.pipeline.annotate import DISCARDED, decide
from gaave_fast.pipeline.guard import cap_class_shift, class_counts_after, class_shift
from gaave_fast.pipeline.run import test_summary

OPTIONS = [("eq5", None, "drop", False), ("eq5", None, "drop", True), ("eq5", None, "keep", False),
           *[("confident", t, u, False) for t in (0.3, 0.5, 0.7, 0.9) for u in ("drop", "keep")],
           ("confident", 0.5, "drop", True), ("confident", 0.7, "drop", True), ("confident", 0.7, "keep", True),
           ("none", None, "drop", False), ("none", None, "drop", True), ("raw", None, "keep", False)]
"""(rule, threshold, uncertain, guard); rule "none" discards every candidate (the no-annotator
ablation), "raw" keeps every given label (the baseline's training set)."""


def load(data: Path, setting: str, train_size: int, test_size: int, seed: int):
    """Training set (noisy labels), test set, true training labels (None for FER2013), class names."""
    if setting == "fer2013":
        train, test, meta = load_fer2013_npz(data / "fer2013" / "fer2013.npz", test_usage=("PrivateTest",))
        clean = None
    elif setting in ("c10n-worse", "c10n-aggre"):
        train, test, meta = load_cifar10_npz(data / "cifar10" / "cifar10_jpeg.npz", noise=setting.split("-")[1])
        clean = meta["clean_label"]
    else:
        raise SystemExit(f"--setting: unknown {setting!r}; use fer2013, c10n-worse or c10n-aggre")
    rng = np.random.default_rng(seed)
    r = np.sort(rng.choice(len(train), train_size, replace=False)) if 0 < train_size < len(train) else np.arange(len(train))
    t = np.sort(rng.choice(len(test), test_size, replace=False)) if 0 < test_size < len(test) else np.arange(len(test))
    classes = list(meta["classes"])
    tr = ArrayDataset(train.images[r], train.labels[r], classes=classes)
    te = ArrayDataset(test.images[t], test.labels[t], classes=classes)
    return tr, te, None if clean is None else clean[r], classes


def option_labels(pipe: Pipeline, option: tuple, cap: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One relabel option on the saved annotator outputs: ``(new_label, kept)`` of the candidates,
    and the final training labels [N] (-1 = left out)."""
    rule, threshold, uncertain, guard = option
    labels, c = pipe.labels, pipe.num_classes
    a = pipe.store.load_annotations()
    idx, own = a["index"], labels[a["index"]]
    if rule == "none":
        new, kept = np.full(idx.size, DISCARDED), np.zeros(idx.size, bool)
    elif rule == "raw":
        new, kept = own.copy(), np.ones(idx.size, bool)
    else:
        new, kept = decide(own, a["eq5_label"], a["confidence"], rule, threshold or 0.0, uncertain)
    if guard:
        back = cap_class_shift(labels, idx, new, -pipe.store.load_criterion().k[idx], cap, c)
        new, kept = np.where(back, own, new), kept | back
    final = labels.copy()
    final[idx] = new
    return new, kept, final


RECIPES = {"pipeline": {},
           # A CPU-sized stand-in for the paper's SGD + cosine (RESULTS.md, issue 10).
           "sgd-cosine": {"optimizer": "sgd", "lr": 0.05, "weight_decay": 5e-4, "schedule": "cosine", "epochs": 20,
                          "crop_padding": 4}}


def retrain_option(pipe: Pipeline, final: np.ndarray, test, recipe: str = "pipeline", loss_fn=None) -> dict:
    """The final model on one option's training labels (-1 = left out), with the pipeline's model and
    seed, its final-training recipe or one of :data:`RECIPES`, and ``fit``'s ``loss_fn`` (None = CE)."""
    cfg = replace(pipe.config, final=replace(pipe.config.final, **RECIPES[recipe]))
    pos = np.flatnonzero(final >= 0)
    tview = RemappedDataset(test, np.arange(len(test)), test.labels)

    def evaluate(epoch: int, model: torch.nn.Module) -> dict:
        _, logits = predict(model, tview, device=cfg.device)
        acc = accuracy(logits.argmax(1), test.labels, pipe.num_classes)
        return {"test_acc": acc["accuracy"], "test_mca": acc["mean_class_accuracy"],
                "test_class_acc": acc["class_accuracy"]}

    res = fit(pipe.new_model(pipe.num_classes), RemappedDataset(pipe.train_set, pos, final[pos]), final[pos], cfg.final,
              seed=cfg.seed + 6, device=cfg.device, on_epoch_end=evaluate, desc="option", loss_fn=loss_fn)  # 6: the pipeline's final offset
    s = test_summary(res.history)
    return {**s["test"], "last10": s["test_last10"], "best": s["test_best"], "train_samples": int(pos.size)}


def option_rows(pipe: Pipeline, clean: np.ndarray | None, cap: float) -> list[dict]:
    """Every relabel option applied to the saved annotator outputs of a finished run."""
    labels, c = pipe.labels, pipe.num_classes
    idx = pipe.store.load_annotations()["index"]
    own = labels[idx]
    before = np.bincount(labels, minlength=c)
    rows = []
    for rule, threshold, uncertain, guard in OPTIONS:
        new, kept, final = option_labels(pipe, (rule, threshold, uncertain, guard), cap)
        rel = (new != DISCARDED) & ~kept
        after = class_counts_after(labels, idx, new, c)
        shift = class_shift(before, after)
        row = {"rule": rule, "threshold": threshold, "uncertain": uncertain, "guard": guard,
               "relabeled": int(rel.sum()), "changed": int((rel & (new != own)).sum()), "kept": int(kept.sum()),
               "discarded": int((new == DISCARDED).sum()), "train_samples": int(after.sum()),
               "max_growth": float(np.nanmax(shift)), "max_shrink": float(np.nanmin(shift)),
               "class_counts": after.tolist()}
        if clean is not None:
            ci = clean[idx]
            use = final >= 0
            row.update({"relabel_precision": float((new[rel] == ci[rel]).mean()) if rel.any() else None,
                        "kept_own_right": float((own[kept] == ci[kept]).mean()) if kept.any() else None,
                        "discarded_own_right": float((own[new == DISCARDED] == ci[new == DISCARDED]).mean())
                        if (new == DISCARDED).any() else None,
                        "train_labels_right": float((final[use] == clean[use]).mean())})
        rows.append(row)
    return rows


def annotator_bias(pipe: Pipeline, classes: list[str]) -> dict:
    """Where Eq. 5's labels come from: candidates per class, the annotators' clean training sets, the
    tail annotator's 'other' rate, and Eq. 5's outcome per given class."""
    labels, c = pipe.labels, pipe.num_classes
    a = pipe.store.load_annotations()
    split = pipe.store.load_split()
    cand = pipe.store.load_criterion().candidate
    idx = a["index"]
    tail = split.subsets["tail"]
    clean_counts = np.bincount(labels[~cand], minlength=c)
    trans = np.zeros((c, c + 1), np.int64)  # given label -> Eq. 5 label (last column: discarded)
    np.add.at(trans, (labels[idx], np.where(a["eq5_label"] >= 0, a["eq5_label"], c)), 1)
    return {"head": [classes[i] for i in split.subsets["head"].classes],
            "tail": [classes[i] for i in tail.classes],
            "given_counts": np.bincount(labels, minlength=c).tolist(),
            "candidates_per_class": np.bincount(labels[idx], minlength=c).tolist(),
            "candidate_rate": (np.bincount(labels[idx], minlength=c) / np.bincount(labels, minlength=c)).round(3).tolist(),
            "clean_counts": clean_counts.tolist(),
            "tail_says_other": float((a["pred_tail"] == tail.other).mean()) if idx.size else None,
            "eq5_label_counts": np.bincount(a["eq5_label"][a["eq5_label"] >= 0], minlength=c).tolist(),
            "transitions": trans.tolist()}


def run(a: argparse.Namespace, setting: str) -> dict:
    train, test, clean, classes = load(a.data, setting, a.train_size, a.test_size, a.seed)
    t = {"batch_size": a.batch_size, "progress": False}
    cfg = PipelineConfig(preset="paper", seed=a.seed, arch="small_cnn", width=a.width,
                         base=TrainConfig(epochs=a.base_epochs, **t), gaave_epochs=a.gaave_epochs,
                         annotator=TrainConfig(epochs=a.epochs, **t), final=TrainConfig(epochs=a.epochs, **t),
                         device="cpu")
    out = a.out / setting
    t0 = time.time()
    pipe = Pipeline(cfg, train, out / "paper", test_set=test)
    rep = pipe.run()
    r = {"setting": setting, "train_samples": len(train), "test_samples": len(test),
         "noise_rate": None if clean is None else float((clean != train.labels).mean()),
         "candidates": rep["criterion"]["candidates"], "seconds_paper_run": time.time() - t0,
         "bias": annotator_bias(pipe, classes), "options": option_rows(pipe, clean, cfg.max_class_shift),
         "class_shift_paper": rep["class_shift"], "base_train_acc": {k: v["train_acc"] for k, v in rep["base"].items()},
         "annotator_train_acc": {k: rep["annotate"][f"annotator_{k}"]["train_acc"] for k in ("head", "tail")},
         "final": {"baseline": final_row(rep["baseline"]), "paper": final_row(rep["final_gaave"])}}
    if a.retrain:
        if not (out / "default").exists():
            shutil.copytree(out / "paper", out / "default")
        d = Pipeline(replace(cfg, preset="default"), train, out / "default", test_set=test).run()
        r["final"]["default"] = final_row(d["final_gaave"])
        r["class_shift_default"] = d["class_shift"]
        r["guarded"] = d["annotate"]["guarded"]
    for i in a.retrain_options:
        key = "{}{}/{}{}".format(*[x if x is not None else "" for x in OPTIONS[i][:2]], OPTIONS[i][2],
                                 "+guard" if OPTIONS[i][3] else "")
        r["final"][key] = retrain_option(pipe, option_labels(pipe, OPTIONS[i], cfg.max_class_shift)[2], test,
                                         a.retrain_recipe)
    return r


def final_row(m: dict) -> dict:
    # The last epoch's test metrics, the means of the last 10 epochs and the best epoch (when recorded).
    return {**m["test"], "last10": m.get("test_last10"), "best": m.get("test_best"), "train_samples": m["train_samples"]}


def print_run(r: dict) -> None:
    b = r["bias"]
    print(f"\n== {r['setting']}: {r['train_samples']} training images, noise {r['noise_rate']}, "
          f"{r['candidates']} candidates; head {b['head']}, tail {b['tail']}; tail annotator says 'other' for "
          f"{b['tail_says_other']:.3f} of the candidates")
    for key in ("given_counts", "candidates_per_class", "candidate_rate", "clean_counts", "eq5_label_counts"):
        print(f"  {key:22s} {b[key]}")
    print(f"{'rule':10s} {'thr':>4s} {'uncert':>6s} {'guard':>5s} {'relab':>6s} {'chg':>6s} {'prec':>6s} "
          f"{'kept':>6s} {'own ok':>6s} {'disc':>6s} {'train n':>7s} {'lab ok':>6s} {'grow':>6s} {'shrink':>6s}")
    for o in r["options"]:
        def f(v):
            return "     -" if v is None else f"{v:6.3f}"
        print(f"{o['rule']:10s} {o['threshold'] or 0:4.1f} {o['uncertain']:>6s} {o['guard']!s:>5s} "
              f"{o['relabeled']:6d} {o['changed']:6d} {f(o.get('relabel_precision'))} {o['kept']:6d} "
              f"{f(o.get('kept_own_right'))} {o['discarded']:6d} {o['train_samples']:7d} "
              f"{f(o.get('train_labels_right'))} {o['max_growth']:+6.2f} {o['max_shrink']:+6.2f}")
    for name, m in r["final"].items():
        last10 = f", last-10 mean {m['last10']['accuracy']:.4f} / {m['last10']['mean_class_accuracy']:.4f}" if m["last10"] else ""
        print(f"final {name:9s} test accuracy {m['accuracy']:.4f}, mean class accuracy {m['mean_class_accuracy']:.4f}"
              f"{last10}, per class {[None if v is None else round(v, 2) for v in m['class_accuracy']]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path(os.environ.get("GAAVE_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")))
    p.add_argument("--setting", action="append", help="fer2013, c10n-worse or c10n-aggre (repeatable)")
    p.add_argument("--train-size", type=int, default=6000)
    p.add_argument("--test-size", type=int, default=2000)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--base-epochs", type=int, default=10)
    p.add_argument("--gaave-epochs", type=int, default=3)
    p.add_argument("--epochs", type=int, default=10, help="annotator, final and baseline epochs")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--retrain", action="store_true", help="also train the default preset's final model")
    p.add_argument("--retrain-options", type=int, nargs="*", default=[],
                   help="also train a final model on these options' labels (positions in OPTIONS)")
    p.add_argument("--retrain-recipe", choices=tuple(RECIPES), default="pipeline",
                   help="training of those final models: the pipeline's (default) or sgd-cosine")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("runs/bench_relabel"))
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    results = []
    for s in a.setting or ["c10n-worse"]:
        r = run(a, s)
        print_run(r)
        results.append(r)
    doc = {"machine": {"torch": torch.__version__, "threads": torch.get_num_threads()},
           "args": {k: str(v) for k, v in vars(a).items()}, "results": results}
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(doc, indent=1, default=float))


if __name__ == "__main__":
    main()

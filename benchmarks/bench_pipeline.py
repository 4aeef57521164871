"""GAAVE pipeline on real noisy labels: noise detection and final accuracy, and the measurement
that chose the pipeline's defaults.

Settings (``--setting``, repeatable): ``c10n-worse`` (CIFAR-10 with CIFAR-10N ``worse_label``
human noise, about 40%) and ``lt-{pair,sym}-{10,20,30}`` (CIFAR-10-LT, imbalance mu = 50,
synthetic pair or symmetric noise at 10/20/30%: the paper's Table 2 protocol). Data from
``--data`` or $GAAVE_DATA (default ../shared/data).

Modes:

* ``--mode pipeline``: one :class:`gaave_fast.Pipeline` per setting. Rows: the baseline (raw
  labels), GAAVE, GAAVE without self-annotator (candidates dropped), GAAVE without
  splitting/refactoring; every row uses the same seed, model and final-training epochs. Noise
  detection (precision, recall, F1, AUROC against the true labels) of the k criterion, beside
  the loss and margin of the same base models and cleanlab on out-of-fold probabilities.
* ``--mode detect``: trains the head/tail base models for ``--detect-epochs`` epochs and scans
  after every epoch (at ``--eps`` every epoch and at ``--extra-eps`` every ``--eps-every``
  epochs), then reports the AUROC of k, margin and loss for every single epoch and for every
  window of epochs averaged (T = window start, T' = window length): where the attack adds
  signal, and which (T, T', eps, combine) to use.

    python benchmarks/bench_pipeline.py --mode detect --setting c10n-worse --train-size 5000
    python benchmarks/bench_pipeline.py --setting c10n-worse --train-size 5000 --json out.json
    python benchmarks/bench_pipeline.py --device cuda --arch resnet18 --train-size 0 --setting lt-pair-20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from gaave_fast.data.arrays import ArrayDataset, load_cifar10_npz
from gaave_fast.pipeline import (
    Pipeline,
    PipelineConfig,
    RemappedDataset,
    TrainConfig,
    accuracy,
    combine_k,
    detection_metrics,
    fit,
    make_subsets,
    predict,
    roc_auc,
    scan_subset,
)

SETTING = re.compile(r"^(c10n-worse|lt-(pair|sym)-(\d+))$")


# ----------------------------------------------------------------------------------- data
def load_setting(data: Path, setting: str, train_size: int, lt_scale: float, seed: int):
    """Training set (noisy labels), clean test set, true training labels, noise mask."""
    m = SETTING.match(setting)
    if m is None:
        raise SystemExit(f"--setting: unknown {setting!r}; use c10n-worse or lt-{{pair,sym}}-{{10,20,30}}")
    path = data / "cifar10" / "cifar10_jpeg.npz"
    if m.group(1) == "c10n-worse":
        train, test, meta = load_cifar10_npz(path, noise="worse")
        rows = np.arange(len(train))
        if 0 < train_size < len(train):
            rows = np.sort(np.random.default_rng(seed).choice(len(train), train_size, replace=False))
    else:
        kind = {"pair": "pair", "sym": "symmetric"}[m.group(2)]
        train, test, meta = load_cifar10_npz(path, noise=kind, rate=int(m.group(3)) / 100, imbalance_ratio=50,
                                             seed=seed)
        rows = np.arange(len(train))
        if lt_scale < 1:  # the same fraction of every (clean) class keeps the long-tail profile
            rng = np.random.default_rng(seed)
            clean = meta["clean_label"]
            rows = np.sort(np.concatenate([rng.choice(np.flatnonzero(clean == c), max(1, round(lt_scale * (clean == c).sum())),
                                                      replace=False) for c in range(10)]))
    sub = ArrayDataset(train.images[rows], train.labels[rows])
    return sub, test, meta["clean_label"][rows], meta["is_noisy"][rows]


def base_config(a: argparse.Namespace) -> PipelineConfig:
    t = {"batch_size": a.batch_size, "flip": a.augment, "crop_padding": 4 if a.augment else 0, "progress": a.progress}
    return PipelineConfig(seed=a.seed, arch=a.arch, width=a.width, base=TrainConfig(epochs=a.base_epochs, **t),
                          gaave_epochs=a.gaave_epochs, eps=a.eps / 255, combine=a.combine, scan_backend=a.backend,
                          annotator=TrainConfig(epochs=a.epochs, **t),
                          final=TrainConfig(epochs=a.epochs, oversample=a.oversample, **t),
                          device=a.device)


# ------------------------------------------------------------------------------ detection
def ranked(primary: np.ndarray, tiebreak: np.ndarray) -> np.ndarray:
    """A score that orders by ``primary`` and breaks its ties by ``tiebreak`` (both: higher = noisier)."""
    order = np.lexsort((tiebreak, primary))
    s = np.empty(primary.size)
    s[order] = np.arange(primary.size)
    return s


def scores_from_snapshots(pipe: Pipeline) -> dict[str, np.ndarray]:
    """Per-sample suspicion scores (higher = noisier) from the pipeline's saved GAAVE scans."""
    scans = {name: pipe.store.load_record(name, ("k", "margin", "loss")) for name in pipe.store.load_split().subsets}
    n = pipe.labels.size
    cols = {f: np.full((pipe.config.gaave_epochs, n), np.nan) for f in ("k", "margin", "loss")}
    for s in scans.values():
        for f, col in cols.items():
            col[:, s["index"]] = s[f]
    k = combine_k(cols["k"], pipe.config.combine)
    return {"k (combined, margin ties)": ranked(-k, -cols["margin"].mean(0)), "k (combined)": -k,
            "k base model": ranked(-cols["k"][0], -cols["margin"][0]), "margin base model": -cols["margin"][0],
            "loss base model": cols["loss"][0], "margin mean": -cols["margin"].mean(0),
            "loss mean": cols["loss"].mean(0)}


def cleanlab_oof(pipe: Pipeline, folds: int, epochs: int) -> dict:
    """cleanlab's find_label_issues and quality ranking on K-fold out-of-fold probabilities."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    cfg, train, labels = pipe.config, pipe.train_set, pipe.labels
    n = labels.size
    fold = np.random.default_rng(cfg.seed).permutation(n) % folds
    probs = np.zeros((n, pipe.num_classes))
    tc = replace(cfg.base, epochs=epochs)
    t0 = time.time()
    for f in range(folds):
        tr, va = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        res = fit(pipe.new_model(pipe.num_classes), RemappedDataset(train, tr, labels[tr]), labels[tr], tc, seed=cfg.seed + f, device=cfg.device,
                  desc=f"cleanlab fold {f}")
        _, logits = predict(res.model, RemappedDataset(train, va, labels[va]), device=cfg.device)
        probs[va] = torch.softmax(torch.from_numpy(logits), 1).numpy()
    issues = find_label_issues(labels, probs)
    quality = get_label_quality_scores(labels, probs)
    return {"flagged": issues, "score": -quality, "seconds": time.time() - t0}


# ------------------------------------------------------------------------------ pipeline mode
def run_pipeline(a: argparse.Namespace, setting: str, out: Path) -> dict:
    train, test, clean, noisy = load_setting(a.data, setting, a.train_size, a.lt_scale, a.seed)
    cfg = base_config(a)
    rep: dict = {"setting": setting, "train_samples": len(train), "noise_rate": float(noisy.mean()),
                 "train_counts": np.bincount(train.labels, minlength=10).tolist()}
    t0 = time.time()
    pipe = Pipeline(cfg, train, out / "full", test_set=test)
    full = pipe.run()
    drop = pipe.retrain("drop")
    rep["seconds_full"] = time.time() - t0
    df = pipe.store.load_table()
    det = {}
    cand = df["candidate"].to_numpy()
    scores = scores_from_snapshots(pipe)
    det["GAAVE k <= tau"] = detection_metrics(cand, noisy, scores["k (combined, margin ties)"])
    for name, s in scores.items():
        det[name] = {"auroc": roc_auc(s, noisy)}
    # The same flag count as GAAVE, taken by the loss of the same base models (a "small-loss" rule).
    top = np.argsort(-scores["loss base model"])[: int(cand.sum())]
    small_loss = np.zeros_like(cand)
    small_loss[top] = True
    det["small loss, same count"] = detection_metrics(small_loss, noisy, scores["loss base model"])
    t1 = time.time()
    ns = Pipeline(replace(cfg, ablation="no_split", baseline=False), train, out / "no_split",
                  test_set=test)
    ns_rep = ns.run()
    rep["seconds_no_split"] = time.time() - t1
    ns_df = ns.store.load_table()
    det["no split: k <= tau"] = detection_metrics(ns_df["candidate"].to_numpy(), noisy,
                                                  scores_from_snapshots(ns)["k (combined, margin ties)"])
    if a.cleanlab_folds > 1:
        cl = cleanlab_oof(pipe, a.cleanlab_folds, a.cleanlab_epochs or cfg.base.epochs)
        det[f"cleanlab OOF ({a.cleanlab_folds} folds)"] = detection_metrics(cl["flagged"], noisy, cl["score"])
        rep["seconds_cleanlab"] = cl["seconds"]
    rel = (df["status"] == "relabeled").to_numpy()
    rep["relabel"] = {"relabeled": int(rel.sum()), "discarded": int((df["status"] == "discarded").sum()),
                      "relabel_correct": float((df["new_label"].to_numpy()[rel] == clean[rel]).mean()) if rel.any() else None,
                      "of_which_were_noisy": float(noisy[rel].mean()) if rel.any() else None}
    rep["base_train_acc"] = {k: v["train_acc"] for k, v in full["base"].items()}
    rep["tau"] = {k: v["tau"] for k, v in full["criterion"]["tau"].items()}
    rep["detection"] = det
    rep["final"] = {
        "baseline": _final_row(full["baseline"]),
        "GAAVE": _final_row(full["final_gaave"]),
        "w/o self-annotator": _final_row(drop),
        "w/o split & refactor": _final_row(ns_rep["final_drop"]),
    }
    return rep


def _final_row(m: dict) -> dict:
    return {"accuracy": m["test"]["accuracy"], "mean_class_accuracy": m["test"]["mean_class_accuracy"],
            "last10": m.get("test_last10"), "best": m.get("test_best"),
            "train_samples": m["train_samples"], "final_train_acc": m["last_epoch"].get("train_acc")}


# -------------------------------------------------------------------------------- detect mode
def run_detect(a: argparse.Namespace, setting: str) -> dict:
    """Scan after every epoch; AUROC of every score per epoch and per window of epochs."""
    train, _, _, noisy = load_setting(a.data, setting, a.train_size, a.lt_scale, a.seed)
    cfg = base_config(a)
    pipe = Pipeline(cfg, train, a.out / f"detect_{setting}")
    # The pipeline's own split, refactoring, model factory and initialisation.
    subsets = make_subsets(pipe.labels, pipe.num_classes, split=cfg.splits, head_classes=cfg.head_classes,
                           seed=cfg.seed).subsets
    E = a.detect_epochs
    extra = [e / 255 for e in a.extra_eps]
    rng = np.random.default_rng(cfg.seed)
    rec: dict = {}
    pos_all = []
    train_acc: dict = {}
    t0 = time.time()
    for name, sub in subsets.items():
        own = sub.select(sub.in_real_class())
        keep = np.sort(rng.choice(own.indices.size, min(own.indices.size, int(a.scan_fraction * own.indices.size) or 1),
                                  replace=False))
        view = RemappedDataset.of(train, own.select(np.isin(np.arange(own.indices.size), keep)))
        full_view = RemappedDataset.of(train, sub)
        pos_all.append(view.indices)
        store: dict = {}
        train_acc[name] = []

        def on_epoch(epoch: int, m: torch.nn.Module, view=view, store=store, full_view=full_view, sub=sub, name=name) -> None:
            _, logits = predict(m, full_view, device=cfg.device)
            train_acc[name].append(accuracy(logits.argmax(1), sub.labels)["accuracy"])
            for eps in [cfg.eps] + (extra if epoch % a.eps_every == 0 or epoch == E else []):
                s = scan_subset(m, view, eps=eps, alpha=None, steps=cfg.steps, backend=cfg.scan_backend,
                             batch_size=cfg.scan_batch_size, device=cfg.device)
                store[(epoch, round(eps * 255, 3))] = s

        fit(pipe.new_model(sub.num_classes), full_view, sub.labels, replace(cfg.base, epochs=E),
            seed=cfg.seed + 1, device=cfg.device, on_epoch_end=on_epoch, desc=f"detect {name}")
        rec[name] = store
    pos = np.concatenate(pos_all)
    y = noisy[pos]

    def series(eps: float, field: str) -> dict[int, np.ndarray]:
        out = {}
        for e in range(1, E + 1):
            if all((e, eps) in rec[n] for n in rec):
                out[e] = np.concatenate([rec[n][(e, eps)][field] for n in rec]).astype(np.float64)
        return out

    e0 = round(cfg.eps * 255, 3)
    K, M, L = series(e0, "k"), series(e0, "margin"), series(e0, "loss")
    per_epoch = []
    for e in range(1, E + 1):
        row = {"epoch": e, "train_acc": {n: train_acc[n][e - 1] for n in train_acc},
               f"k@{e0:g}": roc_auc(ranked(-K[e], -M[e]), y), "k raw": roc_auc(-K[e], y),
               "margin": roc_auc(-M[e], y), "loss": roc_auc(L[e], y)}
        for x in a.extra_eps:
            kx = series(round(x, 3), "k")
            if e in kx:
                row[f"k@{x:g}"] = roc_auc(ranked(-kx[e], -M[e]), y)
        per_epoch.append(row)
    windows = []
    for s in range(1, E + 1):
        for t in range(s, E + 1):
            ks = np.stack([K[e] for e in range(s, t + 1)])
            ms = np.stack([M[e] for e in range(s, t + 1)]).mean(0)
            ls = np.stack([L[e] for e in range(s, t + 1)]).mean(0)
            w = {"T": s, "T_prime": t - s + 1, "margin mean": roc_auc(-ms, y), "loss mean": roc_auc(ls, y)}
            for how in ("mean", "min", "median", "last"):
                w[f"k {how}"] = roc_auc(ranked(-combine_k(ks, how), -ms), y)
            w["k mean raw"] = roc_auc(-combine_k(ks, "mean"), y)
            windows.append(w)
    return {"setting": setting, "train_samples": len(train), "scanned": int(pos.size), "noise_rate": float(y.mean()),
            "epochs": E, "seconds": time.time() - t0, "per_epoch": per_epoch, "windows": windows,
            "best": {key: max(windows, key=lambda w: w[key]) for key in ("k mean", "margin mean", "loss mean", "k min",
                                                                        "k median")}}


# ---------------------------------------------------------------------------------- printing
def print_pipeline(r: dict) -> None:
    print(f"\n== {r['setting']}: {r['train_samples']} training images, noise {r['noise_rate']:.3f}, "
          f"tau {r['tau']}, base-model training accuracy {r['base_train_acc']}")
    print(f"{'noise detection':34s} {'prec':>6s} {'recall':>6s} {'F1':>6s} {'AUROC':>6s} {'flagged':>7s}")
    for name, d in r["detection"].items():
        cells = " ".join(f"{d[k]:6.3f}" if k in d else "     -" for k in ("precision", "recall", "f1", "auroc"))
        print(f"{name:34s} {cells} {d.get('flagged', ''):>7}")
    print(f"relabel: {r['relabel']}")
    print(f"{'final model (test)':24s} {'acc':>6s} {'mca':>6s} {'train n':>8s}")
    for name, d in r["final"].items():
        print(f"{name:24s} {d['accuracy']:6.3f} {d['mean_class_accuracy']:6.3f} {d['train_samples']:8d}")


def print_detect(r: dict) -> None:
    print(f"\n== detect {r['setting']}: {r['train_samples']} images ({r['scanned']} scanned), noise {r['noise_rate']:.3f}")
    keys = [k for k in r["per_epoch"][-1] if k not in ("epoch", "train_acc")]
    print("epoch  train_acc(head,tail)  " + "  ".join(f"{k:>8s}" for k in keys))
    for row in r["per_epoch"]:
        acc = ",".join(f"{v:.2f}" for v in row["train_acc"].values())
        print(f"{row['epoch']:5d}  {acc:20s}  " + "  ".join(f"{row[k]:8.3f}" if k in row else "       -" for k in keys))
    print("best window (T = first epoch averaged, T' = epochs averaged):")
    for key, w in r["best"].items():
        print(f"  {key:12s} T={w['T']:2d} T'={w['T_prime']:2d}: " + ", ".join(
            f"{k} {w[k]:.3f}" for k in ("k mean", "k min", "k median", "k last", "margin mean", "loss mean")))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path(os.environ.get("GAAVE_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")))
    p.add_argument("--mode", choices=("pipeline", "detect"), default="pipeline")
    p.add_argument("--setting", action="append", help="c10n-worse or lt-{pair,sym}-{10,20,30} (repeatable)")
    p.add_argument("--train-size", type=int, default=5000, help="random CIFAR-10N subset (0 = all 50k)")
    p.add_argument("--lt-scale", type=float, default=0.4, help="fraction of each CIFAR-10-LT class kept")
    p.add_argument("--arch", default="small_cnn", choices=("small_cnn", "resnet18"))
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--base-epochs", type=int, default=PipelineConfig().base.epochs, help="T")
    p.add_argument("--gaave-epochs", type=int, default=PipelineConfig().gaave_epochs, help="T'")
    p.add_argument("--epochs", type=int, default=20, help="annotator, final and baseline epochs")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--oversample", action="store_true", help="class-balanced sampling for final and baseline")
    p.add_argument("--no-augment", dest="augment", action="store_false", help="no flips and crops")
    p.add_argument("--eps", type=float, default=1.0, help="attack radius, in 1/255 units")
    p.add_argument("--combine", default=PipelineConfig().combine)
    p.add_argument("--backend", default="auto")
    p.add_argument("--cleanlab-folds", type=int, default=4)
    p.add_argument("--cleanlab-epochs", type=int, default=0, help="0 = the base epochs T")
    p.add_argument("--detect-epochs", type=int, default=20)
    p.add_argument("--extra-eps", type=float, nargs="*", default=[4.0, 8.0], help="detect mode, 1/255 units")
    p.add_argument("--eps-every", type=int, default=5)
    p.add_argument("--scan-fraction", type=float, default=0.5, help="detect mode: share of samples scanned")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--progress", action="store_true")
    p.add_argument("--out", type=Path, default=Path("runs/bench_pipeline"))
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if not (a.data / "cifar10" / "cifar10_jpeg.npz").exists():
        raise SystemExit(f"--data: no cifar10/cifar10_jpeg.npz under {a.data} (set --data or GAAVE_DATA)")
    settings = a.setting or ["c10n-worse"]
    machine = {"platform": platform.platform(), "cpu_threads": torch.get_num_threads(),
               "device": a.device or ("cuda" if torch.cuda.is_available() else "cpu"),
               "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None, "torch": torch.__version__}
    results = []
    for s in settings:
        if a.mode == "detect":
            r = run_detect(a, s)
            print_detect(r)
        else:
            r = run_pipeline(a, s, a.out / s)
            print_pipeline(r)
        results.append(r)
    doc = {"machine": machine, "args": {k: str(v) for k, v in vars(a).items()}, "results": results}
    text = json.dumps(doc, indent=1, default=float)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(text)
    print(json.dumps({"machine": machine, "results": [{k: v for k, v in r.items() if k not in ("windows", "per_epoch")}
                                                        for r in results]}, default=float))


if __name__ == "__main__":
    main()

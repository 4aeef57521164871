"""GAAVE beside peer methods on the same data, split and model: detection and final accuracy.

Detection (against the known true labels): precision, recall, F1 of the flagged set, AUROC of
the method's score, wall time.

* ``cleanlab``: ``cleanlab.filter.find_label_issues`` (prune_by_noise_rate) on K-fold
  out-of-fold predicted probabilities (K models of T epochs); AUROC of 1 - label quality.
* ``small-loss``: per-sample cross-entropy of one model trained T epochs on the noisy labels
  (early, before it memorises them), flagged by a two-component Gaussian mixture on the loss
  (the DivideMix rule, no known noise rate); AUROC of the loss.
* ``GAAVE``: the pipeline's candidates (k <= tau, tau by its GMM rule) from the base models (T
  epochs, T' scans); AUROC of the score -(k + sigmoid(margin)); time = split, base models,
  scans and criterion.

Final accuracy on the clean test set (accuracy and mean class accuracy), every model trained
from scratch with the same epochs, optimiser, schedule and augmentation:

* ``CE`` (the pipeline's baseline on the raw labels), ``GCE`` (Zhang & Sabuncu 2018, q = 0.7),
  ``SCE`` (Wang et al. 2019, alpha = 0.1, beta = 1, log 0 clipped to -4) on the raw labels;
* ``GAAVE``: the pipeline's final model (clean + relabelled candidates); time = annotators and
  final training.

Datasets (from ``--data`` or $GAAVE_DATA, default ../shared/data; loaded with
``gaave_fast.data.load_cifar10_npz``):

* ``c10n``: a random ``--train-size`` subset of CIFAR-10N ``worse_label`` (about 40% human noise);
* ``c10lt``: CIFAR-10-LT: ``--lt-max`` images of the largest class, imbalance ratio 50 (Cui et
  al. 2019), then symmetric noise at ``--lt-rate`` (exactly that share of each class flipped).

The test set is a random ``--test-size`` subset of the CIFAR-10 test set (clean labels).

    python benchmarks/compare_peers.py --threads 2 --json peers.json

Prints a table per dataset, then every number and the settings as JSON (also written to ``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from gaave_fast.data import (
    ArrayDataset,
    load_cifar10_npz,
    long_tail_indices,
    symmetric_noise,
)
from gaave_fast.pipeline import (
    Pipeline,
    PipelineConfig,
    RemappedDataset,
    TrainConfig,
    accuracy,
    detection_metrics,
    fit,
    predict,
)

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------------- data
def load(data: Path, a: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The two benchmark datasets: train (noisy labels), test (clean), true train labels, noise mask."""
    rng = np.random.default_rng(a.seed)
    train, test, meta = load_cifar10_npz(data / "cifar10" / "cifar10_jpeg.npz", noise="worse")
    clean = meta["clean_label"]
    t_rows = np.sort(rng.choice(len(test), min(a.test_size, len(test)), replace=False))
    test_set = ArrayDataset(test.images[t_rows], test.labels[t_rows])
    out = {}
    if "c10n" in a.datasets:
        rows = np.sort(rng.choice(len(train), a.train_size, replace=False))
        out["c10n"] = {"train": ArrayDataset(train.images[rows], train.labels[rows]), "test": test_set,
                       "true": clean[rows], "desc": f"CIFAR-10N worse, {a.train_size} random training images"}
    if "c10lt" in a.datasets:
        # At most lt_max per class first, then the long tail over those (class 0 keeps lt_max).
        pool = np.concatenate([rng.choice(np.flatnonzero(clean == c), a.lt_max, replace=False) for c in range(10)])
        rows = np.sort(pool[long_tail_indices(clean[pool], 50, a.seed, num_classes=10)])
        noisy, _ = symmetric_noise(clean[rows], a.lt_rate, 10, a.seed)
        out["c10lt"] = {"train": ArrayDataset(train.images[rows], noisy), "test": test_set, "true": clean[rows],
                        "desc": f"CIFAR-10-LT mu=50 ({len(rows)} images, {a.lt_max}..{a.lt_max // 50} per class), "
                                f"{a.lt_rate:.0%} symmetric noise"}
    return out


# ------------------------------------------------------------------------------ training
def gce_loss(q: float = 0.7) -> LossFn:
    """Generalized cross-entropy (1 - p_y^q) / q."""
    def f(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        p = F.softmax(logits, 1).gather(1, y[:, None]).squeeze(1).clamp_min(1e-7)
        return ((1 - p ** q) / q).mean()
    return f


def sce_loss(alpha: float = 0.1, beta: float = 1.0, log_zero: float = -4.0) -> LossFn:
    """Symmetric cross-entropy alpha * CE + beta * reverse CE (log 0 clipped to ``log_zero``)."""
    def f(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        p = F.softmax(logits, 1).clamp(1e-7, 1.0)
        onehot = F.one_hot(y, logits.shape[1]).float()
        rce = -(p * torch.clamp(torch.log(onehot), min=log_zero)).sum(1)
        return alpha * F.cross_entropy(logits, y) + beta * rce.mean()
    return f


def train_with_loss(pipe: Pipeline, loss_fn: LossFn, cfg: TrainConfig, seed: int) -> torch.nn.Module:
    """Train a fresh model of the run on the raw labels with ``loss_fn`` in place of CE (``fit``'s
    epoch order, augmentation, optimiser and schedule)."""
    labels = pipe.labels
    view = RemappedDataset(pipe.train_set, np.arange(labels.size), labels)
    return fit(pipe.new_model(pipe.num_classes), view, labels, cfg, seed=seed, device=pipe.config.device,
               desc="peer", loss_fn=loss_fn).model


def test_metrics(pipe: Pipeline, model: torch.nn.Module) -> dict[str, float]:
    """Accuracy and mean class accuracy on the pipeline's test set."""
    view = RemappedDataset(pipe.test_set, np.arange(len(pipe.test_set)), pipe.test_labels)
    _, logits = predict(model, view, device=pipe.config.device)
    m = accuracy(logits.argmax(1), pipe.test_labels, pipe.num_classes)
    return {"accuracy": m["accuracy"], "mean_class_accuracy": m["mean_class_accuracy"]}


# ------------------------------------------------------------------------------ detection
def cleanlab_detect(pipe: Pipeline, folds: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """cleanlab on K-fold out-of-fold probabilities: (flagged, score)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    labels, n = pipe.labels, pipe.labels.size
    fold = np.random.default_rng(seed).permutation(n) % folds
    probs = np.zeros((n, pipe.num_classes))
    for f in range(folds):
        tr, va = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        res = fit(pipe.new_model(pipe.num_classes), RemappedDataset(pipe.train_set, tr, labels[tr]), labels[tr],
                  pipe.config.base, seed=seed + 10 + f, device=pipe.config.device, desc=f"cleanlab fold {f}")
        idx, logits = predict(res.model, RemappedDataset(pipe.train_set, va, labels[va]), device=pipe.config.device)
        probs[idx] = torch.softmax(torch.from_numpy(logits).double(), 1).numpy()
    flagged = find_label_issues(labels, probs, filter_by="prune_by_noise_rate")
    return flagged, 1.0 - get_label_quality_scores(labels, probs)


def small_loss_detect(pipe: Pipeline, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Loss of a T-epoch model and a two-component GMM on it: (flagged, loss)."""
    from sklearn.mixture import GaussianMixture

    labels = pipe.labels
    res = fit(pipe.new_model(pipe.num_classes), RemappedDataset(pipe.train_set, np.arange(labels.size), labels),
              labels, pipe.config.base, seed=seed + 20, device=pipe.config.device, desc="small-loss")
    _idx, logits = predict(res.model, RemappedDataset(pipe.train_set, np.arange(labels.size), labels),
                          device=pipe.config.device)
    z = torch.from_numpy(logits).double()
    loss = (torch.logsumexp(z, 1) - z[torch.arange(labels.size), torch.from_numpy(labels)]).numpy()
    gmm = GaussianMixture(2, random_state=seed, reg_covar=1e-4).fit(loss[:, None])
    high = int(np.argmax(gmm.means_.ravel()))
    return gmm.predict_proba(loss[:, None])[:, high] > 0.5, loss


# ------------------------------------------------------------------------------ driver
def run_dataset(name: str, d: dict[str, Any], a: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Every method on one dataset; returns detection and accuracy rows."""
    t = {"batch_size": a.batch_size, "progress": False, "flip": True, "crop_padding": 4}
    final = TrainConfig(epochs=a.epochs, schedule="cosine", **t)
    cfg = PipelineConfig(seed=a.seed, arch="small_cnn", width=a.width, base=TrainConfig(epochs=a.base_epochs, **t),
                         gaave_epochs=a.gaave_epochs, annotator=final, final=final, device=a.device,
                         scan_backend="fused", scan_batch_size=256)
    pipe = Pipeline(cfg, d["train"], work / name, test_set=d["test"], num_classes=10)
    noisy = pipe.labels != d["true"]
    det, acc = {}, {}

    report = pipe.run()
    seconds = report["timings"]
    table = pipe.store.load_table()
    t_detect = sum(v for k, v in seconds.items() if k.split(":")[0] in ("split", "base", "record", "criterion"))
    det["GAAVE (k <= tau)"] = dict(detection_metrics(table["candidate"].to_numpy(), noisy, table["score"].to_numpy()),
                                   seconds=t_detect)
    final_m = report["final_gaave"]["test"]
    acc["GAAVE (final model)"] = {"accuracy": final_m["accuracy"], "mean_class_accuracy": final_m["mean_class_accuracy"],
                                  "seconds": seconds["annotate"] + seconds["final:gaave"]}
    relab = (table["status"] == "relabeled").to_numpy()
    right = table["new_label"].to_numpy()[relab] == d["true"][relab]
    det["GAAVE (k <= tau)"]["relabels_right"] = float(right.mean()) if relab.any() else float("nan")

    t0 = time.time()
    flagged, s = cleanlab_detect(pipe, a.folds, a.seed)
    det[f"cleanlab ({a.folds}-fold OOF)"] = dict(detection_metrics(flagged, noisy, s), seconds=time.time() - t0)
    t0 = time.time()
    flagged, s = small_loss_detect(pipe, a.seed)
    det["small-loss (GMM)"] = dict(detection_metrics(flagged, noisy, s), seconds=time.time() - t0)

    base_m = report["baseline"]["test"]
    acc["CE (raw labels)"] = {"accuracy": base_m["accuracy"], "mean_class_accuracy": base_m["mean_class_accuracy"],
                              "seconds": seconds["baseline"]}
    for label, fn in (("GCE q=0.7", gce_loss()), ("SCE a=0.1 b=1", sce_loss())):
        t0 = time.time()
        model = train_with_loss(pipe, fn, final, a.seed + 30)
        acc[label] = dict(test_metrics(pipe, model), seconds=time.time() - t0)
    return {"description": d["desc"], "train_samples": len(d["train"]), "noise_rate": float(noisy.mean()),
            "detection": det, "accuracy": acc}


def print_tables(name: str, r: dict[str, Any]) -> None:
    """The two tables of one dataset."""
    print(f"\n== {name}: {r['description']} (noise rate {r['noise_rate']:.3f})")
    print(f"{'detection':28s} {'prec':>6s} {'recall':>6s} {'F1':>6s} {'AUROC':>6s} {'flagged':>7s} {'time s':>7s}")
    for m, v in r["detection"].items():
        print(f"{m:28s} {v['precision']:6.3f} {v['recall']:6.3f} {v['f1']:6.3f} {v['auroc']:6.3f} {v['flagged']:7d} "
              f"{v['seconds']:7.1f}")
    print(f"GAAVE relabels right: {r['detection']['GAAVE (k <= tau)']['relabels_right']:.3f}")
    print(f"{'final model':28s} {'acc':>6s} {'mca':>6s} {'time s':>7s}")
    for m, v in r["accuracy"].items():
        print(f"{m:28s} {v['accuracy']:6.3f} {v['mean_class_accuracy']:6.3f} {v['seconds']:7.1f}")


def main() -> None:
    """Parse the flags, run every dataset, print and optionally save the results."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path(os.environ.get("GAAVE_DATA", Path(__file__).resolve().parents[2]
                                                                     / "shared" / "data")))
    p.add_argument("--datasets", default="c10n,c10lt", help="comma-separated: c10n, c10lt")
    p.add_argument("--train-size", type=int, default=4000, help="c10n training images")
    p.add_argument("--lt-max", type=int, default=1000, help="c10lt images of the largest class")
    p.add_argument("--lt-rate", type=float, default=0.2, help="c10lt symmetric noise rate")
    p.add_argument("--test-size", type=int, default=2000)
    p.add_argument("--width", type=int, default=16, help="small_cnn width")
    p.add_argument("--base-epochs", type=int, default=8, help="T: base models, cleanlab folds, small-loss model")
    p.add_argument("--gaave-epochs", type=int, default=4, help="T': GAAVE scans")
    p.add_argument("--epochs", type=int, default=15, help="annotators, final models, CE/GCE/SCE")
    p.add_argument("--folds", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    a.datasets = [s.strip() for s in a.datasets.split(",") if s.strip()]
    torch.set_num_threads(a.threads)
    if not (a.data / "cifar10" / "cifar10_jpeg.npz").exists():
        raise SystemExit(f"no CIFAR-10 data under {a.data} (set --data or GAAVE_DATA)")
    started = time.time()
    sets = load(a.data, a)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, d in sets.items():
            results[name] = run_dataset(name, d, a, Path(tmp))
            print_tables(name, results[name])
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
               "threads": a.threads, "device": a.device, "total_seconds": time.time() - started}
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()}
    text = json.dumps({"settings": settings, "machine": machine, "results": results}, indent=2)
    print(f"\nmachine: {machine}\n\n{text}")
    if a.json:
        a.json.write_text(text)


if __name__ == "__main__":
    main()

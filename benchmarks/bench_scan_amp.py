"""The scan's autocast dtype (``scan_amp``): k agreement with float32 and noise-detection AUROC.

Trains one model on a CIFAR-10N ``worse`` subset (raw noisy labels, as the pipeline's base
models), then scans the same training images once per dtype with the same model and attack.
Rows: the share of samples whose k equals the float32 scan's, the mean |k - k_fp32|, the AUROC
of the scan's suspicion score (k, clean margin breaking ties) and of k alone against the true
noise, and the scan's samples/s. Data from ``--data`` or $GAAVE_DATA (default ../shared/data).

    python benchmarks/bench_scan_amp.py --train-size 4000 --epochs 6 --json amp.json
    python benchmarks/bench_scan_amp.py --device cuda --arch resnet18 --train-size 50000 --epochs 10
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from common import emit_json, machine_name

from gaave_fast.amp import SCAN_AMP, scan_dtype
from gaave_fast.data.arrays import ArrayDataset, load_cifar10_npz
from gaave_fast.pipeline import (
    RemappedDataset,
    TrainConfig,
    fit,
    model_factory,
    roc_auc,
    scan_subset,
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path(os.environ.get("GAAVE_DATA", "../shared/data")))
    p.add_argument("--train-size", type=int, default=4000, help="CIFAR-10N worse images (0 = all 50,000)")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--arch", default="small_cnn")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--amps", default="float32,bfloat16", help=f"comma-separated, from {SCAN_AMP[1:]}")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--eps", type=float, default=1.0, help="in grey levels (x/255)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    amps = a.amps.split(",")
    if amps[0] != "float32" or any(x not in SCAN_AMP[1:] for x in amps):
        raise SystemExit(f"--amps must start with float32 and name dtypes from {SCAN_AMP[1:]}")
    device = torch.device(a.device)

    train, _, meta = load_cifar10_npz(a.data / "cifar10" / "cifar10_jpeg.npz", noise="worse")
    rows = np.arange(len(train))
    if 0 < a.train_size < len(train):
        rows = np.sort(np.random.default_rng(a.seed).choice(len(train), a.train_size, replace=False))
    data = ArrayDataset(train.images[rows], train.labels[rows])
    labels, noisy = train.labels[rows].astype(np.int64), meta["is_noisy"][rows]
    view = RemappedDataset(data, np.arange(len(data)), labels)
    x = data.images[:2048].astype(np.float64) / 255
    mean, std = x.mean(axis=(0, 1, 2)).tolist(), x.std(axis=(0, 1, 2)).tolist()
    torch.manual_seed(a.seed)
    model = model_factory(a.arch, 3, 32, mean, std, a.width)(10)
    t0 = time.perf_counter()
    model = fit(model, view, labels, TrainConfig(epochs=a.epochs, progress=False), seed=a.seed, device=device).model
    train_s = time.perf_counter() - t0

    rows_out, ref = {}, None
    for name in amps:
        t0 = time.perf_counter()
        s = scan_subset(model, view, eps=a.eps / 255, alpha=None, steps=a.steps, backend="auto", batch_size=a.batch,
                        device=device, amp=name)
        seconds = time.perf_counter() - t0
        k = s["k"].astype(np.float64)
        ref = ref or {"k": k}
        score = -(k + 1 / (1 + np.exp(-np.clip(s["margin"], -50, 50))))
        rows_out[name] = {"dtype": str(scan_dtype(name, device)), "samples_per_s": round(len(view) / seconds, 1),
                          "k_agrees_with_float32": round(float((k == ref["k"]).mean()), 4),
                          "mean_abs_k_diff": round(float(np.abs(k - ref["k"]).mean()), 4),
                          "auroc_score": round(roc_auc(score, noisy), 4), "auroc_k": round(roc_auc(-k, noisy), 4),
                          "mean_k": round(float(k.mean()), 3)}
    print(f"CIFAR-10N worse, {len(view)} training images (noise {noisy.mean():.3f}), {a.arch} trained {a.epochs} "
          f"epochs in {train_s:.0f} s, {machine_name(device)}")
    print(f"{'scan_amp':<10} {'k = fp32':>9} {'|dk|':>7} {'AUROC':>7} {'AUROC k':>8} {'samples/s':>10}")
    for name, r in rows_out.items():
        print(f"{name:<10} {r['k_agrees_with_float32']:>9.4f} {r['mean_abs_k_diff']:>7.4f} {r['auroc_score']:>7.4f} "
              f"{r['auroc_k']:>8.4f} {r['samples_per_s']:>10.1f}")
    emit_json({"benchmark": "scan_amp", "setting": "c10n-worse", "train_samples": len(view),
               "noise_rate": round(float(noisy.mean()), 4), "arch": a.arch, "width": a.width, "epochs": a.epochs,
               "steps": a.steps, "eps": a.eps, "device": str(device), "machine": machine_name(device),
               "torch": torch.__version__, "train_seconds": round(train_s, 1), "rows": rows_out}, a.json)


if __name__ == "__main__":
    main()

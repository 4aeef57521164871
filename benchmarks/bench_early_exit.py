"""Early-exit scan (``decide_tau``) against the full fused scan on FER2013 faces, side by side.

Two snapshots of one training run of the pipeline's ``small_cnn`` (width 32, 1×48×48; Adam 1e-3,
batch 128, no augmentation so that it fits quickly) on a seeded subset of ``--train-n`` FER2013
training faces (usage 0 of ``$GAAVE_DATA/fer2013/fer2013.npz``), checked every ``--chunk`` epochs:

* ``base``:   the first snapshot matching ``--base-acc`` (58%) of its training labels, as many as
              the base model of a 10-epoch run on all training faces matches (training that model
              takes hours on this CPU, and early exit depends on the model through this share);
* ``fitted``: the first snapshot matching ``--fit-acc`` (90%).

Each snapshot then scans ``--scan-n`` of its training faces with the full fused scan and with
early exit at tau (default 2, S = 8, eps 1/255), alternating ``--repeats`` times in one process;
the best time of each is kept. The candidate sets ``k <= tau`` are checked equal in the run, and
k wherever the early-exit result is exact.

    GAAVE_DATA=/work/shared/data python benchmarks/bench_early_exit.py --threads 2
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from common import emit_json, machine_name
from torch.utils.data import DataLoader, Subset

from gaave_fast import scan
from gaave_fast.data.arrays import load_fer2013_npz
from gaave_fast.pipeline import TrainConfig, fit, predict
from gaave_fast.pipeline.models import model_factory


def train_accuracy(model, data) -> float:
    _, logits = predict(model, data, device="cpu")
    labels = np.array([data[i][1] for i in range(len(data))])
    return float((logits.argmax(1) == labels).mean())


def timed_scan(model, loader, **kw):
    t0 = time.perf_counter()
    res = scan(model, loader, progress=False, **kw)
    return res, time.perf_counter() - t0


def compare(name: str, model, data, n_scan: int, tau: int, steps: int, repeats: int, batch: int) -> dict:
    sub = Subset(data, list(range(min(n_scan, len(data)))))
    loader = DataLoader(sub, batch_size=batch)
    scan(model, DataLoader(Subset(data, list(range(batch))), batch_size=batch), steps=steps, progress=False)  # warm-up
    full_t, early_t = [], []
    for _ in range(repeats):
        full, t = timed_scan(model, loader, steps=steps)
        full_t.append(t)
        early, t = timed_scan(model, loader, steps=steps, decide_tau=tau)
        early_t.append(t)
    same_candidates = bool(np.array_equal(full.noisy(tau), early.noisy(tau)))
    same_exact_k = bool(np.array_equal(full.k[early.k_exact], early.k[early.k_exact]))
    if not (same_candidates and same_exact_k):
        raise SystemExit(f"{name}: early exit changed the candidates or an exact k")
    n = len(full)
    row = {
        "model": name, "samples": n, "tau": tau, "steps": steps,
        "full_samples_per_s": n / min(full_t), "early_samples_per_s": n / min(early_t),
        "speedup": min(full_t) / min(early_t),
        "mean_steps_run": float(early.steps_run.mean()),
        "attack_work_ratio": float((steps * 2 + 1) / (2 * (early.steps_run + 1)).mean()),
        "k_exact_fraction": float(early.k_exact.mean()), "candidates": len(full.noisy(tau)),
        "candidates_equal": same_candidates, "k_distribution": np.bincount(full.k, minlength=steps + 2).tolist(),
        "full_seconds": full_t, "early_seconds": early_t,
    }
    print(f"{name:7s} n={n} full {row['full_samples_per_s']:.1f}/s  early {row['early_samples_per_s']:.1f}/s  "
          f"speed-up {row['speedup']:.2f}x  mean steps {row['mean_steps_run']:.2f} of {steps}  "
          f"candidates {row['candidates']} equal={same_candidates}")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-n", type=int, default=600, help="faces the models train on (and are scanned on)")
    ap.add_argument("--base-acc", type=float, default=0.58,
                    help="training accuracy of the base-like snapshot (a 10-epoch FER2013 base model's)")
    ap.add_argument("--fit-acc", type=float, default=0.9, help="training accuracy of the fitted snapshot")
    ap.add_argument("--max-epochs", type=int, default=80)
    ap.add_argument("--chunk", type=int, default=3, help="epochs between accuracy checks")
    ap.add_argument("--scan-n", type=int, default=2000)
    ap.add_argument("--tau", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the JSON result here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    root = Path(os.environ.get("GAAVE_DATA", "/work/shared/data"))
    train, _, _ = load_fer2013_npz(root / "fer2013" / "fer2013.npz")
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(train))
    images = np.stack([train[i][0].numpy() for i in order[:2000]])
    mean, std = [float(images.mean())], [float(images.std())]
    make = model_factory("small_cnn", 1, 48, mean, std, width=32)
    rows = []
    ckpt = Path(f"/tmp/bench_early_exit_{os.getpid()}.pt")
    faces = order[: args.train_n]
    data = Subset(train, faces.tolist())
    labels = np.array([train[i][1] for i in faces])
    model, epochs, acc = make(7), 0, 0.0
    t0 = time.perf_counter()
    # One training run, no augmentation (it memorises fastest); each model is a snapshot of it.
    for name, target in (("base", args.base_acc), ("fitted", args.fit_acc)):
        while epochs < args.max_epochs and acc < target:
            epochs = min(args.max_epochs, epochs + args.chunk)
            model = fit(model, data, labels, TrainConfig(epochs=args.max_epochs, flip=False, progress=False),
                        seed=args.seed, device="cpu", stop_at=epochs, checkpoint=ckpt).model
            acc = train_accuracy(model, data)
            print(f"{epochs} epochs on {len(faces)} faces: training accuracy {acc:.3f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
        rows.append(dict(compare(name, model, data, args.scan_n, args.tau, args.steps, args.repeats, args.batch),
                         train_accuracy=acc, train_faces=len(faces), train_epochs=epochs))
    ckpt.unlink(missing_ok=True)
    emit_json({"bench": "early_exit", "machine": machine_name(torch.device("cpu")), "threads": torch.get_num_threads(),
                                   "torch": torch.__version__, "rows": rows}, args.json)


if __name__ == "__main__":
    main()

"""The pipeline's decided record (early-exit scans) against the full record on CIFAR-10N.

One setting (CIFAR-10 with CIFAR-10N ``worse_label`` noise, a seeded ``--train-size`` subset),
three runs that share the split and the base models (the run folder is copied):

* ``full``:           record full, combine mean (the defaults), automatic tau (gmm);
* ``decided given``:  record decided, combine vote, tau = ``--tau`` for both subsets;
* ``decided auto``:   record decided, combine vote, tau chosen by gmm on a ``--pilot-fraction`` pilot
                      (with ``--auto-run``; otherwise its flags are computed from the full record: the
                      same pilot rows, tau and per-scan verdicts, which a decided record reproduces
                      exactly, as the given-tau run checks).

Reported: the wall time of the GAAVE stage (``record:*``: the T' - 1 training epochs plus the T'
scans) per run; whether the given-tau candidates equal the vote over the full record's k at the
same tau (they must: the run stops if not); how many samples the decided auto-tau run flags
differently from the full run's mean rule; and, on the full record, the detection quality
(AUROC, precision, recall, F1 against the true labels) of the mean, vote and min rules.
Annotators and final models train for ``--epochs`` (1 by default: not measured here). Finished
runs in ``--out`` are reused (a pipeline resumes), so an interrupted benchmark continues.

    GAAVE_DATA=/work/shared/data python benchmarks/bench_decided.py --train-size 3000 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from bench_pipeline import load_setting, ranked
from common import emit_json, machine_name

from gaave_fast.pipeline import (
    Pipeline,
    PipelineConfig,
    TrainConfig,
    detection_metrics,
    roc_auc,
)
from gaave_fast.pipeline.criterion import select_tau, vote_candidates
from gaave_fast.pipeline.record import pilot_rows

SEED_OFFSET = {"head": 1, "tail": 2}  # the pipeline's per-subset seeds (pilot rows)


def run(cfg: PipelineConfig, train, test, out: Path, start: str | None = None) -> tuple[pd.DataFrame, dict, float]:
    report = Pipeline(cfg, train, out, test_set=test).run(start)
    timings = json.loads((out / "timings.json").read_text())  # stage key -> wall seconds
    stage = sum(v for key, v in timings.items() if key.startswith("record:"))
    return pd.read_csv(out / "samples.csv"), report, stage


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("GAAVE_DATA", "/work/shared/data")))
    ap.add_argument("--train-size", type=int, default=3000)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--base-epochs", type=int, default=10)
    ap.add_argument("--gaave-epochs", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=1, help="annotator and final epochs (not measured)")
    ap.add_argument("--tau", type=float, default=3.0)
    ap.add_argument("--pilot-fraction", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_decided"))
    ap.add_argument("--json", help="also write the JSON result here")
    ap.add_argument("--auto-run", action="store_true", help="also run the decided record with an automatic tau")
    ap.add_argument("--rounds", type=int, default=1,
                    help="rounds of recomputing the record stage of the full and the given-tau runs alternately "
                         "(best time kept): on a shared machine the runs above may see different loads")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    train, test, _, noisy = load_setting(a.data, "c10n-worse", a.train_size, 1.0, a.seed)
    t = {"batch_size": 128, "flip": True, "crop_padding": 4, "progress": False}
    base = PipelineConfig(seed=a.seed, arch="small_cnn", width=a.width, base=TrainConfig(epochs=a.base_epochs, **t),
                          gaave_epochs=a.gaave_epochs, annotator=TrainConfig(epochs=a.epochs, **t),
                          final=TrainConfig(epochs=a.epochs, **t), baseline=False, device="cpu")
    full_df, full_rep, full_s = run(base, train, test, a.out / "full")
    for name in ("given", "auto") if a.auto_run else ("given",):
        if not (a.out / name).exists():
            shutil.copytree(a.out / "full", a.out / name)
    given_cfg = PipelineConfig.from_dict({**base.to_dict(), "record": "decided", "combine": "vote",
                                          "tau_head": a.tau, "tau_tail": a.tau})
    given_df, _, given_s = run(given_cfg, train, test, a.out / "given")
    for _ in range(a.rounds):
        full_s = min(full_s, run(base, train, test, a.out / "full", start="record")[2])
        given_df, _, t = run(given_cfg, train, test, a.out / "given", start="record")
        given_s = min(given_s, t)
    auto_s = None
    if a.auto_run:
        auto_cfg = PipelineConfig.from_dict({**base.to_dict(), "record": "decided", "combine": "vote",
                                             "pilot_fraction": a.pilot_fraction})
        auto_df, _, auto_s = run(auto_cfg, train, test, a.out / "auto")

    k = full_df[[f"k_e{j}" for j in range(a.gaave_epochs)]].to_numpy()
    tau = int(np.floor(a.tau))
    want = vote_candidates(k.T, tau, "vote")
    same = bool(np.array_equal(given_df["candidate"].to_numpy(), want))
    if not same:
        raise SystemExit("decided record with a given tau changed the candidates")
    mean_k = k.mean(1)
    margin = full_df["margin"].to_numpy()
    full_flag = full_df["candidate"].to_numpy()
    # The rules on the full record: the vote's tau chosen on scan 0 per subset, as a full record with vote does.
    vote_auto = np.zeros(len(k), bool)
    pilot_auto = np.zeros(len(k), bool)  # the decided record's automatic rule: tau on its pilot of scan 0
    pilot_tau = {}
    for s in ("head", "tail"):
        rows = (full_df["subset"] == s).to_numpy()
        t0 = int(np.floor(select_tau(k[rows, 0], "gmm").tau))
        vote_auto[rows] = vote_candidates(k[rows].T, t0, "vote")
        pilot = pilot_rows(int(rows.sum()), a.pilot_fraction, a.seed + SEED_OFFSET[s])
        pilot_tau[s] = int(np.floor(select_tau(k[rows, 0][pilot], "gmm").tau))
        pilot_auto[rows] = vote_candidates(k[rows].T, pilot_tau[s], "vote")
    if a.auto_run and not np.array_equal(auto_df["candidate"].to_numpy(), pilot_auto):
        raise SystemExit("the decided auto-tau run differs from its rule applied to the full record")
    rules = {
        "mean (auto tau)": (ranked(-mean_k, -margin), full_flag),
        "vote (auto tau on scan 0)": (ranked((k <= tau).mean(1), -margin), vote_auto),
        f"vote (tau {tau})": (ranked((k <= tau).mean(1), -margin), want),
        f"min (tau {tau})": (ranked(-k.min(1), -margin), k.min(1) <= tau),
        f"mean (tau {a.tau:g})": (ranked(-mean_k, -margin), mean_k <= a.tau),
        "vote (auto tau on a pilot, decided)": (ranked((k <= tau).mean(1), -margin), pilot_auto),
    }
    detection = {name: {"auroc": roc_auc(score, noisy), **detection_metrics(flag, noisy),
                        "flagged": int(flag.sum())} for name, (score, flag) in rules.items()}
    result = {
        "machine": machine_name(torch.device("cpu")), "torch": torch.__version__, "samples": len(full_df),
        "noise_rate": float(noisy.mean()), "tau": a.tau, "gaave_epochs": a.gaave_epochs,
        "gaave_stage_seconds": {"full": full_s, "decided given": given_s, "decided auto": auto_s},
        "speedup_given": full_s / given_s, "speedup_auto": None if auto_s is None else full_s / auto_s,
        "given_candidates_equal_full_vote": same, "given_candidates": int(want.sum()),
        "given_vs_full_mean_flag_difference": float((given_df["candidate"].to_numpy() != full_flag).mean()),
        "auto_vs_full_mean_flag_difference": float((pilot_auto != full_flag).mean()),
        "auto_tau_on_pilot": pilot_tau,
        "full_tau": {s: full_rep["criterion"]["tau"][s] for s in ("head", "tail")},
        "k_exact_fraction_given": float(given_df["k_exact"].mean()), "detection_on_full_record": detection,
    }
    emit_json(result, a.json)


if __name__ == "__main__":
    main()

"""End to end on a small synthetic problem: long-tailed Gaussian-blob images with pair noise.

Five classes of 16x16 grey images, each a blurred blob at its own position on a ring (jittered,
random amplitude, pixel noise); 720 training images with counts 300/200/120/60/40 and 30% pair
noise (c -> c+1); a clean balanced test set. A small CNN trained on the raw labels memorises
the noise; GAAVE must find it and the retrained model must beat that baseline.
"""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

import gaave_fast.pipeline.run as run_mod
from gaave_fast.data.arrays import ArrayDataset
from gaave_fast.pipeline import Pipeline, PipelineConfig, TrainConfig, detection_metrics

COUNTS = [300, 200, 120, 60, 40]


def blobs(counts, seed, size=16):
    rng = np.random.default_rng(seed)
    c = len(counts)
    ang = 2 * np.pi * np.arange(c) / c
    cy = (size - 1) / 2 + 0.28 * size * np.sin(ang)
    cx = (size - 1) / 2 + 0.28 * size * np.cos(ang)
    labels = rng.permutation(np.concatenate([np.full(n, k) for k, n in enumerate(counts)]))
    yy, xx = np.mgrid[0:size, 0:size]
    py = (cy[labels] + rng.normal(0, 1.5, labels.size))[:, None, None]
    px = (cx[labels] + rng.normal(0, 1.5, labels.size))[:, None, None]
    blob = np.exp(-((yy - py) ** 2 + (xx - px) ** 2) / 8.0)
    img = 0.2 + 0.7 * rng.uniform(0.5, 1.0, labels.size)[:, None, None] * blob + rng.normal(0, 0.15, blob.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8), labels


@pytest.fixture(scope="module")
def problem():
    x, y = blobs(COUNTS, seed=0)
    flip = np.random.default_rng(1).random(y.size) < 0.3
    noisy_labels = np.where(flip, (y + 1) % 5, y)
    xt, yt = blobs([100] * 5, seed=2)
    return ArrayDataset(x, noisy_labels), ArrayDataset(xt, yt), y, noisy_labels != y


def config(**kw):
    t = {"batch_size": 32, "flip": False, "progress": False}
    base = {"seed": 1, "arch": "small_cnn", "width": 8, "base": TrainConfig(epochs=3, **t), "gaave_epochs": 8,
            "annotator": TrainConfig(epochs=10, **t), "final": TrainConfig(epochs=15, **t), "device": "cpu"}
    base.update(kw)
    return PipelineConfig(**base)


@pytest.fixture(scope="module")
def full_run(problem, tmp_path_factory):
    train, test, _, _ = problem
    out = tmp_path_factory.mktemp("full")
    torch.set_num_threads(1)
    report = Pipeline(config(), train, out, test_set=test).run()
    return out, report


def test_finds_noise_and_beats_baseline(problem, full_run):
    _, _, y, noisy = problem
    out, report = full_run
    df = pd.read_csv(out / "samples.csv")
    det = detection_metrics(df["candidate"].to_numpy(), noisy)
    assert det["precision"] > 2 * noisy.mean(), det
    assert det["recall"] > 0.4, det
    relabeled = df["status"] == "relabeled"
    assert (df["new_label"][relabeled] == y[relabeled]).mean() > 0.7  # relabels mostly right
    final, base = report["final_gaave"]["test"], report["baseline"]["test"]
    assert final["accuracy"] > base["accuracy"] + 0.05, (final, base)
    assert final["mean_class_accuracy"] > base["mean_class_accuracy"] + 0.05


def test_outputs(problem, full_run):
    train, _, _, _ = problem
    out, report = full_run
    assert PipelineConfig.load(out / "config.yaml") == config()
    df = pd.read_csv(out / "samples.csv")
    assert list(df.columns[:6]) == ["index", "row", "label", "label_name", "subset", "k_e0"] and len(df) == len(train)
    assert list(df.columns[-7:]) == ["loss", "k", "score", "candidate", "new_label", "new_label_name", "status"]
    np.testing.assert_array_equal(df["label"], train.labels)
    k_cols = df[[f"k_e{j}" for j in range(8)]].to_numpy()
    np.testing.assert_allclose(df["k"], k_cols.mean(1))  # the default combine rule
    # The default tau rule flags, per class, the samples with the highest suspicion score.
    taus = report["criterion"]["tau"]
    assert {taus[s]["rule"] for s in ("head", "tail")} == {"estimate"}
    for (subset, _), g in df.groupby(["subset", "label"]):
        if g["candidate"].any() and (~g["candidate"]).any():
            assert g.loc[g["candidate"], "score"].min() >= g.loc[~g["candidate"], "score"].max()
    for s in ("head", "tail"):
        assert df[df["subset"] == s]["candidate"].sum() == taus[s]["flagged"]
    # Head-class samples are judged by the head model, tail-class ones by the tail model.
    head = set(report["split"]["split"]["head"])
    assert (df["subset"] == np.where(df["label"].isin(head), "head", "tail")).all()
    assert (df["status"] == "clean").sum() == (~df["candidate"]).sum()
    # class_shift: the final training set's class counts against the given ones.
    final = df[df["new_label"] >= 0]
    for c, r in report["class_shift"].items():
        c = int(c)
        assert r["before"] == (df["label"] == c).sum() and r["after"] == (final["new_label"] == c).sum()
        assert r["shift"] == pytest.approx((r["after"] / len(final)) / (r["before"] / len(df)) - 1, abs=1e-6)
    assert report["annotate"]["kept"] == (df["status"] == "kept").sum()
    # The evaluation protocol: test metrics after every epoch; the mean of the last 10 and the best.
    for key in ("final_gaave", "baseline"):
        m = report[key]
        h = m["history"]
        assert len(h) == 15 and m["test"]["accuracy"] == h[-1]["test_acc"]
        assert m["test_last10"]["epochs"] == 10
        assert m["test_last10"]["accuracy"] == pytest.approx(np.mean([e["test_acc"] for e in h[5:]]))
        assert m["test_last10"]["mean_class_accuracy"] == pytest.approx(np.mean([e["test_mca"] for e in h[5:]]))
        best = int(np.argmax([e["test_acc"] for e in h]))
        assert m["test_best"]["epoch"] == best + 1 and m["test_best"]["accuracy"] == h[best]["test_acc"]
    assert report["base"]["head"]["train_acc"] > 0.5 and "train_acc" in report["base"]["tail"]
    assert json.loads((out / "metrics.json").read_text())["baseline"] == report["baseline"]
    sd = torch.load(out / "final_gaave" / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in sd.values())
    stages = {"split", "base:head", "base:tail", "record:head", "record:tail", "criterion", "annotate", "final:gaave",
              "baseline"}
    assert stages <= set(report["timings"]) and all(report["timings"][s] > 0 for s in stages)
    # Outputs are keyed by position: a run on other data in the same folder is refused.
    other = ArrayDataset(train.images[:100], train.labels[:100])
    with pytest.raises(ValueError, match="other data"):
        Pipeline(config(), other, out).run()


def test_resume_after_interruption_and_restart_from_stage(problem, full_run, tmp_path, monkeypatch):
    train, test, _, _ = problem
    out_a, report_a = full_run
    calls = {"n": 0}
    real = run_mod.scan_subset

    def dying(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 11:  # in the tail subset's GAAVE epochs (the head has 8 snapshots)
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(run_mod, "scan_subset", dying)
    with pytest.raises(KeyboardInterrupt):
        Pipeline(config(), train, tmp_path, test_set=test).run()
    assert (tmp_path / "record_head" / "done.json").exists() and not (tmp_path / "record_tail" / "done.json").exists()
    monkeypatch.setattr(run_mod, "scan_subset", real)
    report_b = Pipeline(config(), train, tmp_path, test_set=test).run()
    pd.testing.assert_frame_equal(pd.read_csv(out_a / "samples.csv"), pd.read_csv(tmp_path / "samples.csv"))
    assert report_b["final_gaave"] == report_a["final_gaave"]

    # A new tau re-runs the criterion and what follows; the base models are kept.
    stamp = (tmp_path / "base_head" / "model.pt").stat().st_mtime_ns
    report_c = Pipeline(config(tau_head=4.0, tau_tail=4.0), train, tmp_path, test_set=test).run()
    assert (tmp_path / "base_head" / "model.pt").stat().st_mtime_ns == stamp
    df = pd.read_csv(tmp_path / "samples.csv")
    np.testing.assert_array_equal(df["candidate"], df["k"] <= 4.0)
    assert report_c["criterion"]["tau"]["head"]["rule"] == "given"
    assert report_c["baseline"] == report_a["baseline"]


def test_ablations(problem, full_run, tmp_path):
    train, test, _, noisy = problem
    out, _ = full_run
    pipe = Pipeline(config(), train, out, test_set=test)
    drop = pipe.retrain("drop")
    cand = pd.read_csv(out / "samples.csv")["candidate"].to_numpy()
    assert drop["train_samples"] == (~cand).sum()
    report = Pipeline(config(ablation="no_split", baseline=False), train, tmp_path, test_set=test).run()
    df = pd.read_csv(tmp_path / "samples.csv")
    assert set(df["subset"]) == {"all"} and "annotate" not in report and "final_drop" in report
    assert set(df["status"]) <= {"clean", "discarded"}
    assert detection_metrics(df["candidate"].to_numpy(), noisy)["precision"] > noisy.mean()


def test_paper_preset_and_guard(problem, full_run, tmp_path, caplog):
    # Relabel options only re-run the annotate stage and what follows. A tight cap makes the
    # default preset's guard give relabels back (status kept); the paper preset only warns.
    train, test, _, _ = problem
    out, report = full_run
    shutil.copytree(out, tmp_path / "run")
    r = Pipeline(config(max_class_shift=0.05), train, tmp_path / "run", test_set=test).run()
    df = pd.read_csv(tmp_path / "run" / "samples.csv")
    guarded = r["annotate"]["guarded"]
    assert guarded > 0 and (df["status"] == "kept").sum() == guarded
    assert (df.loc[df["status"] == "kept", "new_label"] == df.loc[df["status"] == "kept", "label"]).all()
    moved_in = {int(c): ((df["status"] == "relabeled") & (df["new_label"] == int(c)) & (df["label"] != int(c))).sum()
                for c in r["class_shift"]}
    assert all(s["shift"] <= 0.05 + 1e-9 or moved_in[int(c)] == 0 for c, s in r["class_shift"].items())
    assert r["base"] == report["base"] and r["baseline"] == report["baseline"]
    caplog.clear()
    # the paper preset with the default's candidates (its own tau rule is gmm)
    p = Pipeline(config(max_class_shift=0.05, preset="paper", tau_rule="estimate"), train, tmp_path / "run",
                 test_set=test).run()
    assert p["annotate"]["guarded"] == 0 and p["annotate"]["relabeled"] == report["annotate"]["relabeled"]
    assert "max_class_shift=0.05" in caplog.text


def test_no_candidates(problem, full_run, tmp_path):
    train, test, _, _ = problem
    out, report = full_run
    shutil.copytree(out, tmp_path / "run")
    r = Pipeline(config(tau_head=-1.0, tau_tail=-1.0), train, tmp_path / "run", test_set=test).run()
    assert r["criterion"]["candidates"] == 0 and r["annotate"]["candidates"] == 0
    assert not (tmp_path / "run" / "annotate" / "annot_head").exists()  # no annotators to train
    assert r["final_gaave"]["train_samples"] == len(train)
    assert r["timings"]["base:head"] == report["timings"]["base:head"]  # kept, not recomputed


def test_decided_record_flags_as_the_full_record(problem, full_run, tmp_path):
    """Early exit changes no verdict: with a given tau, the decided record's vote equals the vote over the
    full record's k (the snapshot models are the same: the scans do not touch training)."""
    train, test, _, _ = problem
    out, _ = full_run
    shutil.copytree(out, tmp_path / "run")
    cfg = config(record="decided", combine="vote", tau_head=2.0, tau_tail=2.0)
    report = Pipeline(cfg, train, tmp_path / "run", test_set=test).run()
    full = pd.read_csv(out / "samples.csv")
    k_full = full[[f"k_e{j}" for j in range(8)]].to_numpy()
    want = 2 * (k_full <= 2).sum(1) >= 8
    df = pd.read_csv(tmp_path / "run" / "samples.csv")
    np.testing.assert_array_equal(df["candidate"], want)
    k_cols = df[[f"k_e{j}" for j in range(8)]].to_numpy()
    exact = df["k_exact"].to_numpy()
    np.testing.assert_array_equal(k_cols[exact], k_full[exact])
    np.testing.assert_array_equal(k_cols <= 2, k_full <= 2)
    assert not exact.all() and report["criterion"]["tau"]["head"]["rule"] == "given"

"""The ``gaave`` command on tiny fixtures: every sub-command, a killed and resumed run, bad arguments.

The data is a small long-tailed folder of synthetic faces (16 px JPEGs) with 20% wrong labels and
two broken files, written by the demo's generator; the models are 4-channel CNNs trained for one
epoch, so a whole run takes seconds. Expectations are recomputed from the files and arrays
themselves (reader output, the scan of the saved model), not taken from the CLI's own summary.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scan_fixture
import torch
from torch.utils.data import DataLoader, Subset

from gaave_fast import ScanResult, scan
from gaave_fast.cli import build_parser, main
from gaave_fast.cli.common import CliError
from gaave_fast.cli.options import build_config
from gaave_fast.data import read_image_folder, read_manifest
from gaave_fast.demo import BROKEN_FILES, DemoSpec, make_demo_dataset
from gaave_fast.pipeline import PipelineConfig, TrainConfig, load_model, model_factory

COUNTS = {"happy": 24, "neutral": 16, "sad": 12, "surprise": 8, "angry": 6}
TINY = ["--arch", "small_cnn", "--width", "4", "--base-epochs", "1", "--gaave-epochs", "2", "--epochs", "1",
        "--steps", "2", "--batch-size", "16", "--scan-batch-size", "64", "--device", "cpu", "--image-size", "16",
        "--threads", "1", "--no-progress", "--tau", "1", "--check-workers", "0"]


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("faces")
    return make_demo_dataset(root, DemoSpec(image_size=16, train_counts=COUNTS, test_per_class=4, seed=3))


def run_args(faces: dict[str, Path], out: Path) -> list[str]:
    return ["run", f"folder:{faces['train']}", "--out", str(out), "--test", f"folder:{faces['test']}",
            "--truth", str(faces["truth"]), *TINY]


@pytest.fixture(scope="module")
def finished(faces, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    assert main(run_args(faces, out)) == 0
    return out


def one_line_error(capsys, code: int, *needles: str) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and lines[0].startswith("gaave")
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


# ----------------------------------------------------------------------------- help
@pytest.mark.parametrize("command", [[], ["validate"], ["scan"], ["run"], ["report"], ["demo"]])
def test_help(command, capsys):
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: gaave")
    if command:
        assert "example: gaave " + command[0] in out


def test_module_entry_point(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "gaave_fast.cli", "run", "imagenet:/x", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=scan_fixture.child_env(), timeout=120, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("gaave run: error: unknown dataset kind 'imagenet' in 'imagenet:/x': use one of "
                                   "rafdb, ferplus, fer2013, affectnet, folder, csv")
    assert proc.stdout == ""


# ----------------------------------------------------------------------------- bad arguments
def test_missing_path(tmp_path, capsys):
    code = main(["run", f"rafdb:{tmp_path / 'nowhere'}", "--out", str(tmp_path / "o")])
    one_line_error(capsys, code, "does not exist", "nowhere")


def test_unknown_kind_and_malformed_spec(tmp_path, capsys):
    one_line_error(capsys, main(["validate", f"imagenet:{tmp_path}"]), "unknown dataset kind 'imagenet'")
    one_line_error(capsys, main(["validate", str(tmp_path)]), "must be KIND:PATH")


def test_argparse_errors_are_one_line(tmp_path, capsys):
    one_line_error(capsys, main(["run", f"folder:{tmp_path}"]), "--out", "see 'gaave run --help'")
    one_line_error(capsys, main(["run", f"folder:{tmp_path}", "--out", "x", "--eps", "abc"]), "--eps")
    one_line_error(capsys, main(["frobnicate"]), "invalid choice")


def test_bad_config_and_split(faces, tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("sead: 3\n")
    code = main(["run", f"folder:{faces['train']}", "--out", str(tmp_path / "o"), "--config", str(cfg)])
    one_line_error(capsys, code, "unknown PipelineConfig keys", "sead")
    code = main(["run", f"folder:{faces['train']}", "--out", str(tmp_path / "o"), "--split", "test"])
    one_line_error(capsys, code, "no splits")
    code = main(["run", f"folder:{faces['train']}", "--out", str(tmp_path / "o"), "--head-classes", "grumpy"])
    one_line_error(capsys, code, "'grumpy' is not a class")


def test_test_set_with_other_classes(faces, tmp_path, capsys):
    other = tmp_path / "other"
    for name in ("cat", "dog"):
        (other / name).mkdir(parents=True)
        (other / name / "a.jpg").write_bytes((faces["test"] / "happy" / "happy_0000.jpg").read_bytes())
    code = main(["run", f"folder:{faces['train']}", "--out", str(tmp_path / "o"), "--test", f"folder:{other}",
                 *TINY])
    one_line_error(capsys, code, "classes ['cat', 'dog'] differ")


def exported(classes: int, path: Path) -> Path:
    """A linear classifier on 3x16x16 images, saved with torch.export (dynamic batch)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, classes))
    prog = torch.export.export(net, (torch.rand(2, 3, 16, 16),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(prog, path)
    return path


def test_scan_labels_outside_the_model(faces, tmp_path, capsys):
    path = exported(3, tmp_path / "three.pt2")  # 3 classes; the data has 5
    code = main(["scan", f"folder:{faces['test']}", "--model", str(path), "--image-size", "16",
                 "--out", str(tmp_path / "s.csv")])
    one_line_error(capsys, code, "outside the 3 classes", "label 3")


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated, still supported here
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_scan_exported_and_torchscript_models_agree(faces, tmp_path):
    prog = exported(5, tmp_path / "five.pt2")
    script = tmp_path / "five.ts"
    torch.jit.save(torch.jit.trace(torch.export.load(prog).module(), torch.rand(2, 3, 16, 16)), str(script))
    results = []
    for model in (prog, script):
        out = tmp_path / f"{model.suffix[1:]}.npz"
        trust = ["--trust-model"] if model.suffix == ".ts" else []  # TorchScript runs code from the file
        assert main(["scan", f"folder:{faces['test']}", "--model", str(model), "--image-size", "16", "--out",
                     str(out), "--eps", "8/255", "--steps", "4", "--no-progress", *trust]) == 0
        results.append(ScanResult.load(out))
    assert len(results[0]) == 20 and results[0].eps == pytest.approx(8 / 255)
    np.testing.assert_array_equal(results[0].k, results[1].k)
    np.testing.assert_allclose(results[0].margin, results[1].margin, rtol=1e-5, atol=1e-5)


def test_scan_decide_tau_keeps_the_candidates(faces, tmp_path, capsys):
    prog = exported(5, tmp_path / "five.pt2")
    common = ["scan", f"folder:{faces['test']}", "--model", str(prog), "--image-size", "16", "--eps", "8/255",
              "--steps", "4", "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "full.npz")]) == 0
    assert main([*common, "--out", str(tmp_path / "early.csv"), "--decide-tau", "1"]) == 0
    assert "early exit at T = 1" in capsys.readouterr().out
    full, early = ScanResult.load(tmp_path / "full.npz"), ScanResult.load(tmp_path / "early.csv")
    np.testing.assert_array_equal(early.noisy(1), full.noisy(1))
    assert "k_exact" in pd.read_csv(tmp_path / "early.csv", comment="#").columns
    one_line_error(capsys, main([*common, "--decide-tau", "9"]), "--decide-tau 9", "0..4")


def test_scan_checkpoint_not_a_model(faces, tmp_path, capsys):
    bad = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2, 2)}, bad)
    code = main(["scan", f"folder:{faces['test']}", "--model", str(bad)])
    one_line_error(capsys, code, "outside a gaave run folder")
    code = main(["scan", f"folder:{faces['test']}", "--model", str(tmp_path / "missing.pt")])
    one_line_error(capsys, code, "model checkpoint not found")


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_config_file_then_flags(tmp_path, suffix):
    saved = PipelineConfig(arch="small_cnn", width=4, steps=2, seed=5, tau_rule="fraction", tau_fraction=0.1,
                           base=TrainConfig(epochs=2, flip=False), final=TrainConfig(epochs=3, lr=0.01))
    saved.save(tmp_path / f"c{suffix}")
    args = build_parser().parse_args(["run", "folder:x", "--out", "o", "--config", str(tmp_path / f"c{suffix}"),
                                      "--steps", "3", "--eps", "2/255", "--batch-size", "7", "--epochs", "4",
                                      "--head-classes", "sad,0"])
    got = build_config(args, ["angry", "happy", "sad"])
    want = PipelineConfig(arch="small_cnn", width=4, steps=3, eps=2 / 255, seed=5, tau_rule="fraction",
                          tau_fraction=0.1, head_classes=[2, 0], base=TrainConfig(epochs=2, flip=False, batch_size=7),
                          annotator=TrainConfig(epochs=4, batch_size=7),
                          final=TrainConfig(epochs=4, lr=0.01, batch_size=7))
    assert got == want
    plain = build_parser().parse_args(["run", "folder:x", "--out", "o"])
    assert build_config(plain, []) == PipelineConfig()


def test_preset_and_relabel_flags(capsys):
    args = build_parser().parse_args(["run", "folder:x", "--out", "o", "--preset", "paper", "--relabel", "confident",
                                      "--relabel-confidence", "0.7", "--uncertain", "keep", "--max-class-shift", "0.3",
                                      "--class-guard"])
    got = build_config(args, [])
    assert got == PipelineConfig(preset="paper", relabel="confident", relabel_confidence=0.7, uncertain="keep",
                                 max_class_shift=0.3, class_guard=True)
    assert got.setting("class_guard") is True and PipelineConfig(preset="paper").setting("class_guard") is False
    bad = build_parser().parse_args(["run", "folder:x", "--out", "o", "--max-class-shift", "0"])
    with pytest.raises(CliError, match="max_class_shift"):
        build_config(bad, [])


# ----------------------------------------------------------------------------- validate
def test_validate(faces, tmp_path, capsys):
    out = tmp_path / "broken.csv"
    assert main(["validate", f"folder:{faces['train']}", "--out", str(out), "--workers", "0"]) == 1
    text = capsys.readouterr().out
    report = pd.read_csv(out)
    assert sorted(Path(p).relative_to(faces["train"]).as_posix() for p in report["path"]) == sorted(BROKEN_FILES)
    assert set(report["problem"]) == {"truncated file", "empty file"}
    n_files = sum(COUNTS.values()) + len(BROKEN_FILES)
    assert f"{n_files} samples checked (decoded), 2 broken" in text
    assert main(["validate", f"folder:{faces['test']}", "--quick", "--workers", "0"]) == 0


# ----------------------------------------------------------------------------- run
def test_run_outputs(faces, finished):
    table = pd.read_csv(finished / "samples.csv")
    pd.testing.assert_frame_equal(table, pd.read_parquet(finished / "samples.parquet"), check_dtype=False)
    ds = read_image_folder(faces["train"], image_size=16)
    good = [i for i, p in enumerate(ds.paths) if Path(p).relative_to(faces["train"]).as_posix() not in BROKEN_FILES]
    # One row per readable image, in reader order, with its folder's label and class name.
    assert table["path"].tolist() == [ds.paths[i] for i in good]
    np.testing.assert_array_equal(table["row"], good)
    np.testing.assert_array_equal(table["label"], ds.labels[good])
    assert (table["label_name"] == [ds.classes[c] for c in ds.labels[good]]).all()
    k_cols = table[["k_e0", "k_e1"]].to_numpy()
    assert k_cols.min() >= 0 and k_cols.max() <= 3  # S = 2: k counts 3 points
    np.testing.assert_allclose(table["k"], k_cols.mean(1))
    np.testing.assert_allclose(table["score"], -(table["k"] + 1 / (1 + np.exp(-table["margin"]))), rtol=1e-6)
    np.testing.assert_array_equal(table["candidate"], table["k"] <= 1)  # --tau 1
    assert set(table["status"]) <= {"clean", "relabeled", "kept", "discarded"}
    assert (table["status"] == "clean").sum() == (~table["candidate"]).sum()
    names = np.array(ds.classes + [""], dtype=object)
    assert (table["new_label_name"].fillna("") == names[table["new_label"]]).all()

    excluded = pd.read_csv(finished / "excluded.csv")
    assert sorted(Path(p).name for p in excluded["path"]) == sorted(Path(b).name for b in BROKEN_FILES)
    metrics = json.loads((finished / "metrics.json").read_text())
    assert {"accuracy", "mean_class_accuracy"} <= set(metrics["final_gaave"]["test"])
    assert {"accuracy", "mean_class_accuracy"} <= set(metrics["baseline"]["test"])
    cfg = PipelineConfig.load(finished / "config.yaml")
    assert (cfg.arch, cfg.width, cfg.steps, cfg.gaave_epochs, cfg.tau_head, cfg.final.epochs) == \
        ("small_cnn", 4, 2, 2, 1.0, 1)
    run = json.loads((finished / "run.json").read_text())
    assert run["dataset"]["classes"] == ds.classes and run["dataset"]["samples"] == len(ds)
    assert len(run["sessions"]) == 1 and run["sessions"][0]["seconds"] > 0
    assert (finished / "report" / "report.html").stat().st_size > 10_000


def test_cleaned_manifest(faces, finished):
    table = pd.read_csv(finished / "samples.csv")
    classes = sorted(COUNTS)
    cleaned = read_manifest(finished / "cleaned" / "labels.csv", classes=classes, image_size=16)
    got = dict(zip(cleaned.paths, cleaned.labels))
    for r in table.itertuples():
        if r.status == "discarded":
            assert r.path not in got
        else:
            assert got[r.path] == (r.new_label if r.status == "relabeled" else r.label)
    for b in BROKEN_FILES:  # broken files keep their folder label, marked "excluded"
        assert got[str(faces["train"] / b)] == classes.index(b.split("/")[0])
    changes = pd.read_csv(finished / "cleaned" / "changes.csv", keep_default_na=False)
    assert len(changes) == (~table["status"].isin(["clean", "kept"])).sum() + len(BROKEN_FILES)
    relabeled = table[table["status"] == "relabeled"]
    assert dict(zip(changes["path"], changes["new_label"])).items() >= \
        {(p, classes[n]) for p, n in zip(relabeled["path"], relabeled["new_label"])}


def test_rerun_is_a_no_op_and_other_data_is_refused(faces, finished, tmp_path, capsys):
    stamp = (finished / "final_gaave" / "model.pt").stat().st_mtime_ns
    before = pd.read_csv(finished / "samples.csv")
    assert main(run_args(faces, finished) + ["--no-report"]) == 0
    assert (finished / "final_gaave" / "model.pt").stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(before, pd.read_csv(finished / "samples.csv"))
    assert len(json.loads((finished / "run.json").read_text())["sessions"]) == 2
    capsys.readouterr()
    code = main(["run", f"folder:{faces['test']}", "--out", str(finished), *TINY])
    one_line_error(capsys, code, "holds a run on other data", "choose another --out")


def test_killed_run_resumes_to_the_same_outputs(faces, finished, tmp_path):
    out = tmp_path / "run"
    marker = out / "record_head" / "snap_000.npz"
    cmd = [sys.executable, "-m", "gaave_fast.cli", *run_args(faces, out), "--no-report"]
    proc = subprocess.Popen(cmd, env=scan_fixture.child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)  # hard: no handlers, no finally blocks
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err.decode()
    assert marker.exists() and not (out / "metrics.json").exists()
    assert json.loads((out / "run.json").read_text())["sessions"][0]["finished"] is None

    assert main(run_args(faces, out) + ["--no-report"]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(finished / "samples.csv").drop(columns="path"),
                                  pd.read_csv(out / "samples.csv").drop(columns="path"))
    for name in ("labels.csv", "changes.csv"):
        assert (finished / "cleaned" / name).read_text() == (out / "cleaned" / name).read_text()
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (finished, out))
    assert a["final_gaave"] == b["final_gaave"] and a["baseline"] == b["baseline"]


# ----------------------------------------------------------------------------- scan and report
def test_scan_with_a_run_model(faces, finished, tmp_path, capsys):
    out = tmp_path / "scan.parquet"
    model_path = finished / "final_gaave" / "model.pt"
    assert main(["scan", f"folder:{faces['train']}", "--model", str(model_path), "--out", str(out), "--steps", "3",
                 "--tau", "1", "--no-progress", "--threads", "1"]) == 0
    assert "k <= 1:" in capsys.readouterr().out
    got = ScanResult.load(out)

    # Independently: rebuild the model from the run's files and scan the readable images directly.
    cfg = PipelineConfig.load(finished / "config.yaml")
    norm = json.loads((finished / "split" / "split.json").read_text())["normalization"]
    model = model_factory(cfg.arch, norm["in_channels"], norm["image_size"], norm["mean"], norm["std"], cfg.width)(5)
    load_model(model, model_path).eval()
    ds = read_image_folder(faces["train"], image_size=16)
    good = [i for i, p in enumerate(ds.paths) if Path(p).relative_to(faces["train"]).as_posix() not in BROKEN_FILES]
    want = scan(model, DataLoader(Subset(ds, good), batch_size=32), eps=1 / 255, steps=3, backend="torch",
                progress=False)
    np.testing.assert_array_equal(got.index, good)
    np.testing.assert_array_equal(got.k, want.k)
    np.testing.assert_array_equal(got.label, ds.labels[good])


def test_report_command(faces, finished, tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["report", str(finished), "--out", str(out), "--top", "5"]) == 0
    html = (out / "report.html").read_text()
    assert html.count('class="thumb"') == 5
    assert "Detection against the true labels" in html  # the --truth of the run is remembered
    for png in ("k_histograms.png", "classes.png", "transitions.png", "accuracy.png", "vulnerable.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    one_line_error(capsys, main(["report", str(tmp_path)]), "no finished run")


def test_demo_smoke(tmp_path, capsys):
    # The real demo with one epoch everywhere: the data writing, reading and reporting path.
    code = main(["demo", "--out", str(tmp_path / "demo"), "--base-epochs", "1", "--gaave-epochs", "1", "--epochs",
                 "1", "--steps", "1", "--width", "4", "--tau", "1"])
    assert code == 0
    out = capsys.readouterr().out
    run = tmp_path / "demo" / "run"
    assert (run / "report" / "report.html").exists() and (run / "cleaned" / "labels.csv").exists()
    assert "2 broken files excluded" in out
    truth = pd.read_csv(tmp_path / "demo" / "data" / "truth.csv")
    assert len(truth) == sum(DemoSpec().train_counts.values())
    assert 0.15 < (truth["label"] != truth["true_label"]).mean() < 0.25

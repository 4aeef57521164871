"""The GPU session script (benchmarks/gpu_session.py, called by run_gpu.sh) rehearsed on the CPU.

The same code path as on the device with ``--device cpu --tiny`` and a tiny CIFAR-10-format
data folder written here (JPEG blob, CIFAR-10N label file): every stage must write its JSON with
successful rows, the pipeline stage its GAAVE, baseline and cleanlab rows. The build stage is
skipped (the tree is built in place); its command is checked instead: no build isolation, no
dependencies, no package index, CUDA forced on.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_session


def tiny_cifar(root: Path, n_train: int = 160, n_test: int = 60, seed: int = 0) -> Path:
    """cifar10/cifar10_jpeg.npz and cifar10n_labels.npz in the shared data's format: ten classes of
    coloured 32-px images, 30% of the CIFAR-10N 'worse' labels wrong."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    label = rng.integers(0, 10, n)
    colours = rng.integers(30, 226, (10, 3))
    blobs, offsets = [], [0]
    for c in label:
        img = np.clip(colours[c] + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=90)
        blobs.append(np.frombuffer(buf.getvalue(), np.uint8))
        offsets.append(offsets[-1] + blobs[-1].size)
    d = root / "cifar10"
    d.mkdir(parents=True)
    split = np.r_[np.zeros(n_train), np.ones(n_test)].astype(np.int8)
    np.savez(d / "cifar10_jpeg.npz", jpeg=np.concatenate(blobs), offsets=np.array(offsets, np.int64),
             label=label.astype(np.int8), split=split)
    worse = np.where(rng.random(n_train) < 0.3, (label[:n_train] + 1) % 10, label[:n_train]).astype(np.int8)
    np.savez(d.parent / "cifar10" / "cifar10n_labels.npz", clean_label=label[:n_train].astype(np.int8),
             worse_label=worse, aggre_label=label[:n_train].astype(np.int8))
    return root


def test_build_uses_the_machines_torch_and_downloads_nothing():
    cmd = gpu_session.build_command("python3")
    assert cmd[:4] == ["python3", "-m", "pip", "install"]
    assert {"--no-build-isolation", "--no-deps", "--no-index"} <= set(cmd) and cmd[-1] == str(ROOT)
    assert gpu_session.build_env("9.0")["FORCE_CUDA"] == "1"
    a = gpu_session.parse(["--out", "o"])
    stages = gpu_session.plan(a, Path("/tmp/w"))
    assert [s.name for s in stages] == ["build", "cuda_tests", "pipeline", "scan", "step"]
    assert a.budget <= 540 and all(s.cap <= 600 for s in stages)
    # After the build every child imports the installed package, not the source tree: -P, or for
    # the bench_*.py scripts their own folder first on sys.path (it has common.py, no gaave_fast).
    for s in stages[1:]:
        for _, argv, cwd, _ in s.commands:
            script = next(x for x in argv[1:] if not x.startswith("-"))
            if Path(script).name.startswith("bench_"):
                assert argv[1] != "-P" and cwd == ROOT / "benchmarks" and not (cwd / "gaave_fast").exists()
            else:
                assert argv[1] == "-P", argv
    scan_rows = {name: argv for name, argv, _, _ in stages[3].commands}
    assert all("--compile" in argv for name, argv in scan_rows.items() if name != "early_exit")
    assert "--compile" in scan_rows["fp32_compiled"] and "resnet18" in scan_rows["fp32_compiled"]
    assert "early-exit-row" in scan_rows["early_exit"]
    pipe = stages[2].commands[0][1]
    assert pipe[pipe.index("--train-size") + 1] == "0" and pipe[pipe.index("--arch") + 1] == "resnet18"


def test_budget_skips_later_stages(tmp_path):
    a = gpu_session.parse(["--out", str(tmp_path / "out"), "--budget", "5", "--skip", "build", "--device", "cpu"])
    assert gpu_session.session(a) == 0
    for name in ("cuda_tests", "step", "scan", "pipeline"):
        assert "skipped" in json.loads((tmp_path / "out" / f"{name}.json").read_text())
    assert "skipped" in (tmp_path / "out" / "session.log").read_text()


def test_pytest_summary():
    assert gpu_session.pytest_summary("....\n3 passed, 2 skipped in 1.20s\n") == {"passed": 3, "skipped": 2}
    assert gpu_session.pytest_summary("no tests ran") == {}


@pytest.mark.filterwarnings("ignore")
def test_cpu_rehearsal_writes_every_stage(tmp_path):
    data = tiny_cifar(tmp_path / "data")
    out = tmp_path / "out"
    code = gpu_session.main(["--out", str(out), "--work", str(tmp_path / "work"), "--device", "cpu", "--tiny",
                             "--skip", "build", "--data", str(data), "--arch", "small_cnn", "--base-epochs", "1",
                             "--gaave-epochs", "1", "--epochs", "1", "--batch-size", "32", "--folds", "2",
                             "--workers", "0", "--scan-compile", "off", "--width", "8", "--threads", "1", "--tests", "tests/test_scan_cuda.py",
                             "--budget", "400"])
    assert code == 0
    log = (out / "session.log").read_text()
    for name in ("cuda_tests", "step", "scan", "pipeline"):
        stage = json.loads((out / f"{name}.json").read_text())
        assert stage["rows"] and all(r.get("rc") == 0 for r in stage["rows"].values()), (name, stage, log[-3000:])
    scan = json.loads((out / "scan.json").read_text())["rows"]
    assert scan["fp32"]["result"]["samples_per_s"]["scan fused"] > 0
    assert "speedup" in scan["early_exit"]["result"] or "skipped" in scan["early_exit"]["result"]
    assert json.loads((out / "step.json").read_text())["rows"]["step"]["result"]
    assert json.loads((out / "cuda_tests.json").read_text())["rows"]["pytest"]["summary"].get("skipped", 0) > 0
    pipe = json.loads((out / "pipeline.json").read_text())["rows"]["pipeline"]["result"]
    assert pipe["train_samples"] == 160 and pipe["test_samples"] == 60
    for row in ("gaave", "baseline", "cleanlab"):
        assert 0 <= pipe[row]["test"]["accuracy"] <= 1, row
    assert 0 < pipe["noise_rate"] < 0.5 and "f1" in pipe["cleanlab"]["detection"]
    summary = json.loads((out / "session.json").read_text())
    assert list(summary["stages"]) == ["cuda_tests", "pipeline", "scan", "step"]

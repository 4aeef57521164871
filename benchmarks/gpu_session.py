"""One GPU session in one call: build, CUDA tests, step and scan rows, and the whole pipeline on
CIFAR-10N ``worse`` against the CE baseline and cleanlab drop-and-retrain, inside a time budget.

    python3 benchmarks/gpu_session.py --out "$OUT"                      # on the GPU (run_gpu.sh)
    python benchmarks/gpu_session.py --out /tmp/rehearsal --device cpu --tiny --skip build

Every stage runs as a child process with its own cap, cut to what is left of ``--budget``; a
stage that would get less than ``--min-stage`` seconds is skipped and says so. As each stage
finishes, ``OUT/<stage>.json`` holds its result (return code, seconds, limit, and the
benchmarks' own JSON) and its output is appended to ``OUT/session.log``; the scan stage rewrites
its JSON after every row and the pipeline stage after each of its parts, so a run cut off by
the budget or the device's limit still returns what it finished. ``OUT/session.json`` sums up
(the device returns at most 8 files: five stage JSONs, the log and the summary).

Stages, in this order (the pipeline before the scan rows: it answers the bigger question):

* ``build``: ``pip install --no-build-isolation --no-deps --no-index .`` with ``FORCE_CUDA=1``
  against the machine's own torch (nothing is fetched), then the build is checked by import;
  later stages then import the installed package (``python -P``), not the source tree.
  Skipped (``--skip build``), the source tree is imported (an in-place build).
* ``cuda_tests``: the op, CUDA-scan and early-exit tests (CUDA variants skip without a GPU).
* ``pipeline``: CIFAR-10N ``worse`` (all 50,000 training images by default, the 10,000 test
  images): the GAAVE pipeline with ResNet-18 and its CE baseline, then cleanlab's
  ``find_label_issues`` on K-fold out-of-fold probabilities, drop, retrain with the same recipe.
  Epochs are scaled to the budget (``--base-epochs``, ``--gaave-epochs``, ``--epochs``).
* ``scan``: benchmarks/bench_scan.py rows (ResNet-18 at 224, batch 256, each with the eager
  rows and the bound beside the compiled one: bf16, float32, bf16 in ``reduce-overhead``
  mode), and an early-exit row when ``gaave_fast.scan`` has ``decide_tau``.
* ``step``: benchmarks/bench_step.py, with what is left.

Data come from ``--data`` (default ``.gpu_data`` when it exists, written by
benchmarks/prepare_gpu_data.sh, else $GAAVE_DATA or ../shared/data). cleanlab is imported from
the environment, else from ``<data>/site`` (prepare_gpu_data.sh copies it there).
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
CUDA_TESTS = ("tests/test_ops.py", "tests/test_scan_cuda.py", "tests/test_early_exit.py")


# ------------------------------------------------------------------------------- stages
@dataclass
class Stage:
    """A named stage: commands run in turn (each a child process), within ``cap`` seconds in all.

    ``commands`` are ``(row name, argv, cwd, json file the command writes or None)``.
    """

    name: str
    cap: float
    commands: list[tuple[str, list[str], Path, Path | None]] = field(default_factory=list)


def build_command(python: str) -> list[str]:
    """The install of the extension against the machine's torch: no build isolation, no downloads."""
    return [python, "-m", "pip", "install", "-v", "--no-build-isolation", "--no-deps", "--no-index", str(ROOT)]


def build_env(arch_list: str) -> dict[str, str]:
    """Environment of the build: CUDA kernels forced on, for the given CUDA architectures."""
    return {"FORCE_CUDA": "1", "TORCH_CUDA_ARCH_LIST": arch_list, "MAX_JOBS": os.environ.get("MAX_JOBS", "16")}


def plan(a: argparse.Namespace, work: Path) -> list[Stage]:
    """The stages of a session with these arguments (commands only; nothing runs here)."""
    py = a.python
    pyp = [py, "-P"] if "build" not in a.skip else [py]  # -P: the installed package, not the tree
    stages = [Stage("build", a.cap_build, [
        ("install", build_command(py), ROOT, None),
        ("check", [*pyp, "-c", "import gaave_fast; print('built:', gaave_fast.build_info())"], ROOT, None)])]
    stages.append(Stage("cuda_tests", a.cap_tests, [
        ("pytest", [*pyp, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *a.tests], ROOT, None)]))
    pipe = [*pyp, str(Path(__file__).resolve()), "pipeline-part", "--device", a.device, "--data", str(a.data),
            "--json", str(a.out / "pipeline.json"), "--work", str(work / "pipeline"),
            "--train-size", str(a.train_size), "--test-size", str(a.test_size), "--arch", a.arch,
            "--base-epochs", str(a.base_epochs), "--gaave-epochs", str(a.gaave_epochs), "--epochs", str(a.epochs),
            "--batch-size", str(a.batch_size), "--folds", str(a.folds), "--workers", str(a.workers),
            "--scan-compile", a.scan_compile, "--width", str(a.width), "--threads", str(a.threads)]
    # The part rewrites OUT/pipeline.json itself after each of its parts; the stage then wraps it.
    stages.append(Stage("pipeline", a.cap_pipeline, [("pipeline", pipe, BENCH, a.out / "pipeline.json")]))
    # The bench_*.py scripts run from benchmarks/ without -P: their folder (common.py) comes first on
    # sys.path, and it holds no gaave_fast, so the installed package is still the one imported.
    stages.append(Stage("scan", a.cap_scan, [(name, [*([py] if argv[0].startswith("bench_") else pyp), *argv],
                                              cwd, out) for name, argv, cwd, out in scan_rows(a, work)]))
    # The step op was measured on an H200 before (benchmarks/RESULTS.md): last, with what is left.
    step = [py, "bench_step.py", "--device", a.device, "--json", str(work / "step.json")]
    if a.tiny:
        step += ["--reps", "1", "--shapes", "8x3x16x16", "--dtypes", "fp32"]
    stages.append(Stage("step", a.cap_step, [("step", step, BENCH, work / "step.json")]))
    return [s for s in stages if s.name not in a.skip]


def scan_rows(a: argparse.Namespace, work: Path) -> list[tuple[str, list[str], Path, Path | None]]:
    """bench_scan.py rows (and the early-exit row) for the device, or tiny ones for a rehearsal."""
    if a.tiny:
        common = ["--model", "cnn48", "--size", "16", "--n", "16", "--batch", "8", "--steps", "2", "--rounds", "1",
                  "--skip", "torchattacks", "--device", a.device]
        rows = {"fp32": common}
        early = ["--model", "cnn48", "--size", "16", "--n", "16", "--batch", "8", "--steps", "2"]
    else:
        common = ["--model", "resnet18", "--size", "224", "--n", "2048", "--batch", "256", "--rounds", "2",
                  "--skip", "torchattacks", "--device", a.device]
        # Each row compiles ResNet-18 once (tens of seconds); the eager rows and the bound are beside it.
        rows = {"bf16_compiled": [*common, "--amp", "bf16", "--compile"],
                "fp32_compiled": [*common, "--compile"],
                "bf16_compiled_reduce_overhead": [*common, "--skip", "torchattacks,torch", "--amp", "bf16",
                                                  "--compile", "reduce-overhead"]}
        early = ["--model", "resnet18", "--size", "224", "--n", "2048", "--batch", "256", "--steps", "8",
                 "--amp", "bf16"]
    out = [(name, ["bench_scan.py", *argv, "--json", str(work / f"scan_{name}.json")], BENCH,
            work / f"scan_{name}.json") for name, argv in rows.items()]
    early_json = work / "scan_early_exit.json"
    out.append(("early_exit", [str(Path(__file__).resolve()), "early-exit-row", "--device", a.device,
                               "--json", str(early_json), *early], BENCH, early_json))
    return out


def package_root() -> Path:
    """The folder holding the gaave_fast this interpreter imports: site-packages after ``pip install .``,
    the source tree for an in-place build (putting the tree first there would hide the installed
    extension behind a tree that has none)."""
    spec = importlib.util.find_spec("gaave_fast")
    return Path(spec.origin).resolve().parents[1] if spec is not None and spec.origin else ROOT


def run_stage(stage: Stage, a: argparse.Namespace, started: float, log) -> dict[str, Any]:
    """Run a stage's commands in turn within its cap and the budget; write OUT/<stage>.json."""
    t0 = time.monotonic()
    result: dict[str, Any] = {"stage": stage.name, "cap_s": stage.cap, "rows": {}}
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if "build" in a.skip:  # no build: the children import the gaave_fast this process finds
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(package_root()), env.get("PYTHONPATH", "")) if p)
    if stage.name == "build":
        env.update(build_env(a.cuda_arch_list))
    for row, argv, cwd, out_json in stage.commands:
        left = min(a.budget - (time.monotonic() - started), stage.cap - (time.monotonic() - t0))
        if left < a.min_stage:
            result["rows"][row] = {"skipped": f"{max(left, 0):.0f} s left"}
            log.write(f"== {stage.name}/{row}: skipped, {max(left, 0):.0f} s left\n")
            continue
        log.write(f"== {time.strftime('%H:%M:%S')} {stage.name}/{row} (limit {left:.0f} s): {' '.join(argv)}\n")
        log.flush()
        r0 = time.monotonic()
        start = log.tell()
        rc = run_child(argv, cwd, env, left, log)
        log.flush()
        with open(log.name) as f:  # this row's output, for the test counts
            f.seek(start)
            text = f.read()
        log.write(f"\n== {stage.name}/{row}: rc={rc} in {time.monotonic() - r0:.1f} s\n")
        log.flush()
        entry: dict[str, Any] = {"rc": rc, "seconds": round(time.monotonic() - r0, 1)}
        if out_json is not None and out_json.exists():
            entry["result"] = json.loads(out_json.read_text())
        if stage.name == "cuda_tests":
            entry["summary"] = pytest_summary(text)
        result["rows"][row] = entry
        result["seconds"] = round(time.monotonic() - t0, 1)
        write_json(a.out / f"{stage.name}.json", result)  # after every row: a cut-off keeps the rows done
        if stage.name == "build" and rc != 0:
            break
    result["seconds"] = round(time.monotonic() - t0, 1)
    write_json(a.out / f"{stage.name}.json", result)
    return result


def run_child(argv: list[str], cwd: Path, env: dict[str, str], timeout: float, log) -> int | str:
    """Run a command with its output streamed into ``log``; on timeout its whole process group
    (data-loader and compile workers too) is killed. Returns the exit code or ``"timeout"``."""
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return "timeout"


def pytest_summary(text: str) -> dict[str, int]:
    """Counts from pytest's last line (``3 passed, 2 skipped in 1.2s``)."""
    lines = [ln for ln in text.strip().splitlines() if re.search(r"\d+ (passed|failed|skipped|error)", ln)]
    return {m.group(2): int(m.group(1)) for m in re.finditer(r"(\d+) (passed|failed|skipped|errors?|xfailed)",
                                                             lines[-1])} if lines else {}


def write_json(path: Path, obj: Any) -> None:
    """Write atomically (a reader never sees half a file)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)


def session(a: argparse.Namespace) -> int:
    a.out.mkdir(parents=True, exist_ok=True)
    work = a.work or Path(os.environ.get("TMPDIR", "/tmp")) / "gaave_gpu_session"
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    summary: dict[str, Any] = {"budget_s": a.budget, "device": a.device, "stages": {}}
    with open(a.out / "session.log", "a") as log:
        log.write(f"== session {time.strftime('%Y-%m-%d %H:%M:%S')} budget {a.budget} s, device {a.device}, "
                  f"python {sys.version.split()[0]}\n")
        for stage in plan(a, work):
            left = a.budget - (time.monotonic() - started)
            if left < a.min_stage:
                summary["stages"][stage.name] = {"skipped": f"{max(left, 0):.0f} s of the budget left"}
                log.write(f"== {stage.name}: skipped, {max(left, 0):.0f} s of the budget left\n")
                write_json(a.out / f"{stage.name}.json", {"stage": stage.name, "skipped": summary["stages"][stage.name]})
                continue
            r = run_stage(stage, a, started, log)
            summary["stages"][stage.name] = {"seconds": r["seconds"],
                                             "rc": {row: e.get("rc", e.get("skipped")) for row, e in r["rows"].items()}}
            summary["elapsed_s"] = round(time.monotonic() - started, 1)
            write_json(a.out / "session.json", summary)
            if stage.name == "build" and any(e.get("rc") != 0 for e in r["rows"].values()):
                log.write("== build failed: the later stages need it, stopping\n")
                break
    summary["elapsed_s"] = round(time.monotonic() - started, 1)
    write_json(a.out / "session.json", summary)
    return 0


# ------------------------------------------------------------------------------- early-exit row
def early_exit_row(argv: list[str]) -> int:
    """Full scan against ``scan(decide_tau=...)`` on the same model and images, when the scan has it."""
    p = argparse.ArgumentParser(prog="gpu_session.py early-exit-row")
    p.add_argument("--device", default="cuda")
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--n", type=int, default=2048)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--amp", default="none")
    p.add_argument("--tau", type=int, default=3)
    a = p.parse_args(argv)
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from gaave_fast import scan

    if "decide_tau" not in inspect.signature(scan).parameters:
        write_json(a.json, {"skipped": "gaave_fast.scan has no decide_tau"})
        print("skipped: gaave_fast.scan has no decide_tau")
        return 0
    sys.path.insert(0, str(BENCH))
    from bench_scan import cnn48, resnet18

    device = torch.device(a.device)
    torch.manual_seed(0)
    model = (cnn48() if a.model == "cnn48" else resnet18()).to(device).eval()
    channels = 1 if a.model == "cnn48" else 3
    data = TensorDataset(torch.rand(a.n, channels, a.size, a.size), torch.randint(0, 7, (a.n,)), torch.arange(a.n))
    amp = {"none": None, "bf16": torch.bfloat16}[a.amp]
    kw = {"eps": 1 / 255, "steps": a.steps, "amp": amp, "progress": False, "device": device}
    scan(model, DataLoader(torch.utils.data.Subset(data, range(a.batch)), batch_size=a.batch), **kw)  # warm-up
    times, res = {}, {}
    for name, extra in (("full", {}), ("early_exit", {"decide_tau": a.tau})):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        res[name] = scan(model, DataLoader(data, batch_size=a.batch), **kw, **extra)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times[name] = time.perf_counter() - t0
    same = (res["full"].k <= a.tau) == (res["early_exit"].k <= a.tau)
    out = {"model": a.model, "image": [channels, a.size, a.size], "n": a.n, "batch": a.batch, "steps": a.steps,
           "amp": a.amp, "decide_tau": a.tau, "samples_per_s": {k: round(a.n / v, 1) for k, v in times.items()},
           "speedup": round(times["full"] / times["early_exit"], 3),
           "verdict_k_le_tau_agrees": round(float(same.mean()), 5), "device": str(device)}
    print(json.dumps(out, indent=2))
    write_json(a.json, out)
    return 0


# ------------------------------------------------------------------------------- pipeline part
def pipeline_part(argv: list[str]) -> int:
    """GAAVE (with its CE baseline) then cleanlab drop-and-retrain on CIFAR-10N worse; JSON after each."""
    p = argparse.ArgumentParser(prog="gpu_session.py pipeline-part")
    p.add_argument("--device", default="cuda")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--train-size", type=int, default=0)
    p.add_argument("--test-size", type=int, default=0)
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--base-epochs", type=int, default=6)
    p.add_argument("--gaave-epochs", type=int, default=3)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--folds", type=int, default=2)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--scan-compile", default="off")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    import numpy as np
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)

    from gaave_fast.data.arrays import ArrayDataset, load_cifar10_npz
    from gaave_fast.pipeline import (
        Pipeline,
        PipelineConfig,
        RemappedDataset,
        TrainConfig,
        detection_metrics,
        fit,
    )

    t_start = time.monotonic()
    train, test, meta = load_cifar10_npz(a.data / "cifar10" / "cifar10_jpeg.npz", noise="worse")
    rng = np.random.default_rng(a.seed)
    rows = np.arange(len(train)) if not 0 < a.train_size < len(train) else \
        np.sort(rng.choice(len(train), a.train_size, replace=False))
    train = ArrayDataset(train.images[rows], train.labels[rows], classes=train.classes)
    noisy, clean = meta["is_noisy"][rows], meta["clean_label"][rows]
    if 0 < a.test_size < len(test):
        keep = np.sort(rng.choice(len(test), a.test_size, replace=False))
        test = ArrayDataset(test.images[keep], test.labels[keep], classes=test.classes)
    t = {"batch_size": a.batch_size, "num_workers": a.workers, "flip": True, "crop_padding": 4, "progress": False}
    compile_mode: bool | str = {"off": False, "on": True}.get(a.scan_compile, a.scan_compile)
    cfg = PipelineConfig(seed=a.seed, arch=a.arch, width=a.width, base=TrainConfig(epochs=a.base_epochs, **t),
                         gaave_epochs=a.gaave_epochs, annotator=TrainConfig(epochs=a.epochs, **t),
                         final=TrainConfig(epochs=a.epochs, **t), scan_compile=compile_mode, device=a.device)
    rep: dict[str, Any] = {"setting": "c10n-worse", "train_samples": len(train), "test_samples": len(test),
                           "noise_rate": round(float(noisy.mean()), 4), "config": cfg.to_dict(),
                           "machine": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
                           "torch": torch.__version__}
    write_json(a.json, rep)

    pipe = Pipeline(cfg, train, a.work / "gaave", test_set=test)
    m = pipe.run()
    table = pipe.store.load_table()
    cand = table["candidate"].to_numpy()
    rel = (table["status"] == "relabeled").to_numpy()
    rep["gaave"] = {"test": _test_row(m["final_gaave"]), "train_samples": m["final_gaave"]["train_samples"],
                    "detection": detection_metrics(cand, noisy, table["score"].to_numpy()),
                    "flagged_share": round(float(cand.mean()), 4),
                    "relabel_precision": float((table["new_label"].to_numpy()[rel] == clean[rel]).mean())
                    if rel.any() else None, "timings_s": pipe.store.timings()}
    rep["baseline"] = {"test": _test_row(m["baseline"])}
    rep["seconds"] = round(time.monotonic() - t_start, 1)
    write_json(a.json, rep)

    try:
        _import_cleanlab(a.data)
    except ImportError as err:
        rep["cleanlab"] = {"skipped": f"cleanlab not importable: {err}"}
        write_json(a.json, rep)
        return 0
    from compare_peers import cleanlab_detect, test_metrics

    t0 = time.monotonic()
    labels = pipe.labels
    issues, _ = cleanlab_detect(pipe, a.folds, a.seed)
    keep = np.flatnonzero(~issues)
    res = fit(pipe.new_model(pipe.num_classes), RemappedDataset(train, keep, labels[keep]), labels[keep], cfg.final,
              seed=a.seed + 6, device=a.device, desc="cleanlab retrain")
    rep["cleanlab"] = {"test": test_metrics(pipe, res.model), "train_samples": int(keep.size),
                       "detection": detection_metrics(issues, noisy), "flagged_share": round(float(issues.mean()), 4),
                       "seconds": round(time.monotonic() - t0, 1)}
    rep["seconds"] = round(time.monotonic() - t_start, 1)
    write_json(a.json, rep)
    print(json.dumps({k: rep[k] for k in ("gaave", "baseline", "cleanlab")}, indent=2, default=str))
    return 0


def _test_row(m: dict[str, Any]) -> dict[str, Any]:
    # The last epoch's test accuracy, and the protocol's last-10 mean and best epoch where the run has them.
    row: dict[str, Any] = {k: m["test"][k] for k in ("accuracy", "mean_class_accuracy")}
    row.update({k: m[k] for k in ("test_last10", "test_best") if k in m})
    return row


def _import_cleanlab(data: Path) -> None:
    """Make cleanlab importable: the installed one, else the copy prepare_gpu_data.sh carries."""
    try:
        import cleanlab
    except ImportError:
        sys.path.append(str(data / "site"))
        import cleanlab  # noqa: F401


# ------------------------------------------------------------------------------- arguments
def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="where the stage JSONs and session.log go ($OUT)")
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default $TMPDIR/gaave_gpu_session)")
    p.add_argument("--budget", type=float, default=540, help="seconds for the whole session (default 9 min)")
    p.add_argument("--min-stage", type=float, default=20, help="skip a stage or row with less time than this")
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="tiny sizes: the CPU rehearsal")
    p.add_argument("--skip", type=lambda s: set(filter(None, s.split(","))), default=set(),
                   help="comma-separated stages to skip: build,cuda_tests,step,scan,pipeline")
    p.add_argument("--python", default=sys.executable, help="interpreter of the child processes")
    p.add_argument("--cuda-arch-list", default=os.environ.get("TORCH_CUDA_ARCH_LIST", "9.0"))
    p.add_argument("--tests", nargs="+", default=list(CUDA_TESTS))
    default_data = ROOT / ".gpu_data" if (ROOT / ".gpu_data").is_dir() else \
        Path(os.environ.get("GAAVE_DATA", ROOT.parent / "shared" / "data"))
    p.add_argument("--data", type=Path, default=default_data)
    p.add_argument("--train-size", type=int, default=0, help="CIFAR-10N training images (0 = all 50,000)")
    p.add_argument("--test-size", type=int, default=0, help="test images (0 = all 10,000)")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--base-epochs", type=int, default=4, help="T")
    p.add_argument("--gaave-epochs", type=int, default=2, help="T'")
    p.add_argument("--epochs", type=int, default=8, help="annotators, final model, baseline, cleanlab retrain")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--folds", type=int, default=2, help="cleanlab's out-of-fold models")
    p.add_argument("--workers", type=int, default=8, help="data-loading processes of every training")
    p.add_argument("--scan-compile", default="off",
                   help="the pipeline's scan_compile: off (default: each model would compile anew), on, or a mode")
    p.add_argument("--width", type=int, default=32, help="small_cnn width (with --arch small_cnn)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads of the pipeline (0 = torch's choice)")
    caps = {"build": 150, "tests": 90, "pipeline": 270, "scan": 150, "step": 30}
    for name, cap in caps.items():
        p.add_argument(f"--cap-{name}", type=float, default=cap, help=f"seconds at most for {name} (default {cap})")
    a = p.parse_args(argv)
    unknown = a.skip - {"build", "cuda_tests", "step", "scan", "pipeline"}
    if unknown:
        p.error(f"--skip: unknown stages {sorted(unknown)}")
    return a


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["pipeline-part"]:
        return pipeline_part(argv[1:])
    if argv[:1] == ["early-exit-row"]:
        return early_exit_row(argv[1:])
    return session(parse(argv))


if __name__ == "__main__":
    sys.exit(main())

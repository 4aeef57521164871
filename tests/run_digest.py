"""A content digest of a run folder, to check that a change leaves a run's outputs as they were.

Each output file maps to a SHA-1 of its content: arrays by dtype, shape and bytes; parquet tables as their CSV text; state dicts and
training checkpoints tensor by tensor; JSON canonically (wall-clock timings dropped); text with the
run folder's own path replaced. Timings and the HTML report are left out (they hold clock times).

``python tests/run_digest.py`` rewrites tests/data/run_digest.json from the current code: do that
only when a change alters the outputs on purpose (a new default), and say so in the commit.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
DIGEST = HERE / "data" / "run_digest.json"
_SKIP = {"timings.json", "checkpoint.pt"}  # checkpoint.pt: its history holds per-epoch wall times


def digest_run(root: Path) -> dict[str, str]:
    """``{relative path: sha1}`` of every output of a run folder (see the module docstring)."""
    out = {}
    for f in sorted(root.rglob("*")):
        if f.is_dir() or f.name in _SKIP or "report" in f.relative_to(root).parts:
            continue
        h = hashlib.sha1()
        if f.suffix == ".npz":
            with np.load(f) as z:
                for k in sorted(z.files):
                    a = z[k]
                    h.update(f"{k}{a.dtype}{a.shape}".encode())
                    h.update(np.ascontiguousarray(a).tobytes())
        elif f.suffix == ".pt":
            _hash_obj(torch.load(f, weights_only=True), h)
        elif f.suffix == ".json":
            obj = json.loads(f.read_text())
            if isinstance(obj, dict):
                obj.pop("timings", None)
            h.update(json.dumps(obj, sort_keys=True).replace(str(root), "<run>").encode())
        elif f.suffix == ".parquet":  # the table, not the writer's metadata
            import pandas as pd

            h.update(pd.read_parquet(f).to_csv(index=False).replace(str(root), "<run>").encode())
        else:
            h.update(f.read_text().replace(str(root), "<run>").encode())
        out[str(f.relative_to(root))] = h.hexdigest()
    return out


def _hash_obj(o: Any, h: Any) -> None:
    if isinstance(o, dict):
        for k in sorted(o):
            h.update(str(k).encode())
            _hash_obj(o[k], h)
    elif isinstance(o, (list, tuple)):
        for v in o:
            _hash_obj(v, h)
    elif isinstance(o, torch.Tensor):
        h.update(f"{o.dtype}{tuple(o.shape)}".encode())
        h.update(o.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes() if o.numel() else b"")
    else:
        h.update(repr(o).encode())


def reference_runs(out: Path) -> dict[str, Path]:
    """Run the reference settings (tiny blobs problem, full method and the no_split ablation) under ``out``."""
    sys.path.insert(0, str(HERE))
    from test_pipeline_e2e import blobs, config

    from gaave_fast.data.arrays import ArrayDataset
    from gaave_fast.pipeline import Pipeline, TrainConfig

    torch.set_num_threads(1)
    x, y = blobs([150, 100, 60, 30, 20], seed=0)
    noisy = np.where(np.random.default_rng(1).random(y.size) < 0.3, (y + 1) % 5, y)
    xt, yt = blobs([30] * 5, seed=2)
    t = {"batch_size": 32, "flip": False, "progress": False}
    runs = {}
    for ablation in ("full", "no_split"):
        cfg = config(ablation=ablation, base=TrainConfig(epochs=2, **t), gaave_epochs=3,
                     annotator=TrainConfig(epochs=2, **t), final=TrainConfig(epochs=2, **t))
        runs[ablation] = out / ablation
        Pipeline(cfg, ArrayDataset(x, noisy), runs[ablation], test_set=ArrayDataset(xt, yt)).run()
    return runs


def environment() -> dict[str, str]:
    """What the digest depends on besides the code: float results differ across torch builds and CPUs."""
    model = next((line.split(":", 1)[1].strip() for line in _cpuinfo().splitlines() if line.startswith("model name")),
                 platform.processor())
    return {"torch": torch.__version__, "machine": platform.machine(), "cpu": model,
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        digests = {name: digest_run(path) for name, path in reference_runs(Path(tmp)).items()}
    DIGEST.write_text(json.dumps({"environment": environment(), "runs": digests}, indent=1, sort_keys=True) + "\n")
    print(f"wrote {DIGEST}")

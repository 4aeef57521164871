"""A deterministic model and dataset shared by the resume and distributed tests
(imported by the child processes those tests start)."""

from __future__ import annotations

import os
import subprocess
import sys

import torch
from torch.utils.data import Dataset


class IndexedImages(Dataset):
    """40 random 3×10×10 images with labels; items are (image, label, index)."""

    def __init__(self, n: int = 40, crash_at: int | None = None):
        gen = torch.Generator().manual_seed(123)
        self.images = torch.rand(n, 3, 10, 10, generator=gen)
        self.labels = torch.randint(0, 4, (n,), generator=gen)
        self.crash_at = crash_at

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        if self.crash_at is not None and i == self.crash_at:
            os._exit(3)  # a hard kill: no exception handlers, no finally blocks run
        return self.images[i], self.labels[i], i


def model() -> torch.nn.Module:
    torch.manual_seed(321)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(24, 4),
    )


SCAN_KWARGS = {"eps": 6 / 255, "alpha": 1 / 255, "steps": 6, "progress": False}


def child_env(**extra: str) -> dict[str, str]:
    """Environment for child Python processes: they import the same gaave_fast as this one."""
    import gaave_fast

    root = os.path.dirname(os.path.dirname(os.path.abspath(gaave_fast.__file__)))
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path, **extra)


# Every torchrun worker script ends with this. Gloo's worker threads can abort the interpreter's
# finalisation on a loaded machine ("terminate called without an active exception", after every
# output is written; pytorch/pytorch#179291), so a worker leaves without finalising once its
# outputs are on disk and the ranks have met.
WORKER_EXIT = """
dist.barrier()
dist.destroy_process_group()
import os, sys
sys.stdout.flush()
os._exit(0)
"""


def torchrun(script: str, tmp_path, nproc: int = 2) -> None:
    """Run a worker script (its text, ending with :data:`WORKER_EXIT`) on ``nproc`` gloo ranks."""
    path = tmp_path / "worker.py"
    path.write_text(script)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", "0",
           "--rdzv_backend", "c10d", "--rdzv_endpoint", "localhost:0", str(path)]
    proc = subprocess.run(cmd, env=child_env(OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

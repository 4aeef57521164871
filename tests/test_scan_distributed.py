"""Two CPU processes (torchrun, gloo) each scan a shard; the gathered result equals one process."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import scan_fixture
from torch.utils.data import DataLoader

from gaave_fast import ScanResult, ops, scan

pytestmark = pytest.mark.skipif(ops.extension_error() is not None, reason="extension not built")
TESTS = Path(__file__).resolve().parent

WORKER = """
import sys
sys.path.insert(0, {tests!r})
import torch, torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler
import scan_fixture
from gaave_fast import scan

dist.init_process_group("gloo")
torch.set_num_threads(1)
dataset = scan_fixture.IndexedImages(n=37)  # 37: DistributedSampler pads one shard
sampler = DistributedSampler(dataset, shuffle=True, seed=5)
result = scan(scan_fixture.model(), DataLoader(dataset, batch_size=5, sampler=sampler),
              checkpoint={ckpt!r}, **scan_fixture.SCAN_KWARGS)
result.save({out!r}.format(rank=dist.get_rank()))
""" + scan_fixture.WORKER_EXIT


def test_two_gloo_ranks_equal_one_process(tmp_path):
    out = str(tmp_path / "result.rank{rank}.npz")
    scan_fixture.torchrun(textwrap.dedent(WORKER).format(tests=str(TESTS), out=out, ckpt=str(tmp_path / "ckpt.npz")),
                          tmp_path)

    single = scan(scan_fixture.model(), DataLoader(scan_fixture.IndexedImages(n=37), batch_size=5),
                  **scan_fixture.SCAN_KWARGS)
    for rank in (0, 1):
        gathered = ScanResult.load(out.format(rank=rank))
        assert len(gathered) == 37
        for name in ("index", "k", "label", "pred", "first_miss"):
            np.testing.assert_array_equal(getattr(gathered, name), getattr(single, name), err_msg=name)
        np.testing.assert_allclose(gathered.margin, single.margin, rtol=1e-5, atol=1e-6)
    assert (tmp_path / "ckpt.rank0.npz").exists() and (tmp_path / "ckpt.rank1.npz").exists()

"""Two CPU processes under torchrun (gloo): DDP training keeps the ranks in step, rank 0 writes the
checkpoint, and a distributed GAAVE scan of a subset equals a single-process scan of the same model."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import scan_fixture
import torch

from gaave_fast.pipeline import RemappedDataset, load_model, scan_subset

TESTS = Path(__file__).resolve().parent

WORKER = """
import sys
sys.path.insert(0, {tests!r})
import numpy as np, torch, torch.distributed as dist
from test_pipeline_distributed import data, model
from gaave_fast.pipeline import RemappedDataset, TrainConfig, fit, save_model, scan_subset

dist.init_process_group("gloo")
torch.set_num_threads(1)
rank = dist.get_rank()
items, labels = data()
cfg = TrainConfig(epochs=2, batch_size=8, crop_padding=1, progress=False)
res = fit(model(), items, labels, cfg, seed=3, device="cpu", checkpoint={ckpt!r})
save_model(res.model, {out!r}.format(rank=rank))
view = RemappedDataset(items, np.arange(len(items)), labels)
snap = scan_subset(res.model, view, eps=4 / 255, alpha=None, steps=4, batch_size=8, device="cpu")
np.savez({snap!r}.format(rank=rank), **snap)
""" + scan_fixture.WORKER_EXIT


def data(n: int = 37):
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (n,), generator=g)
    x = (torch.rand(n, 3, 8, 8, generator=g) * 0.6 + labels.view(-1, 1, 1, 1) * 0.2).clamp(0, 1)
    return [(x[i], int(labels[i]), i) for i in range(n)], labels.numpy()


def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(8, 3))


def test_two_gloo_ranks(tmp_path):
    out, snap = str(tmp_path / "model.rank{rank}.pt"), str(tmp_path / "snap.rank{rank}.npz")
    scan_fixture.torchrun(textwrap.dedent(WORKER).format(tests=str(TESTS), out=out, snap=snap,
                                                         ckpt=str(tmp_path / "ckpt.pt")), tmp_path)

    m0, m1 = (load_model(model(), out.format(rank=r)) for r in (0, 1))
    assert all(torch.equal(a, b) for a, b in zip(m0.state_dict().values(), m1.state_dict().values()))
    assert not torch.equal(m0[0].weight, model()[0].weight)  # it trained
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert state["epoch"] == 2 and len(state["history"]) == 2

    items, labels = data()
    single = scan_subset(m0, RemappedDataset(items, np.arange(len(items)), labels), eps=4 / 255, alpha=None, steps=4,
                      batch_size=8, device="cpu")
    for r in (0, 1):
        got = np.load(snap.format(rank=r))
        np.testing.assert_array_equal(got["index"], np.arange(len(items)))
        for f in ("k", "pred"):
            np.testing.assert_array_equal(got[f], single[f], err_msg=f)
        np.testing.assert_allclose(got["margin"], single["margin"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got["loss"], single["loss"], rtol=1e-5, atol=1e-6)

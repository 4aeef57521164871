"""The compiled scan path (``scan(..., compile=True)``) gives the eager path's results.

float32 on the CPU, a small CNN with batch norm, a batch size that leaves a short last batch
(padded inside the compiled path): k, first_miss and the clean predictions must be equal,
margins and losses equal to float tolerance. The compiled function is made once per model and
reused by a second scan (the pipeline scans the same model T' times).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch._inductor.config
from torch.utils.data import DataLoader, TensorDataset

from gaave_fast import compiled, scan

# One compile worker: the pool of subprocesses costs more than it saves on a small shared machine.
torch._inductor.config.compile_threads = 1


def small_model() -> torch.nn.Module:
    torch.manual_seed(5)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                            torch.nn.MaxPool2d(2), torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(),
                            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 5))
    with torch.no_grad():  # non-trivial running statistics, as a trained model has
        m[1].running_mean.uniform_(-0.2, 0.2)
        m[1].running_var.uniform_(0.5, 2.0)
    return m


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(11)
    x = torch.rand(70, 3, 12, 12, generator=g)
    y = torch.randint(0, 5, (70,), generator=g)
    return TensorDataset(x, y, torch.arange(70))


@pytest.mark.parametrize("backend", ["torch", "fused"])
def test_compiled_k_equals_eager(data, backend):
    torch.set_num_threads(1)
    model = small_model()
    kw = {"eps": 8 / 255, "steps": 6, "progress": False, "device": "cpu", "backend": backend}
    eager = scan(model, DataLoader(data, batch_size=32), **kw)
    fast = scan(model, DataLoader(data, batch_size=32), compile=True, **kw)
    assert 0 < (eager.k < kw["steps"] + 1).sum() < len(data)  # the attack flips some, not all
    np.testing.assert_array_equal(fast.index, eager.index)
    np.testing.assert_array_equal(fast.k, eager.k)
    np.testing.assert_array_equal(fast.first_miss, eager.first_miss)
    np.testing.assert_array_equal(fast.pred, eager.pred)
    np.testing.assert_allclose(fast.margin, eager.margin, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fast.loss, eager.loss, rtol=1e-5, atol=1e-5)
    assert fast.meta["compile"] is True and eager.meta["compile"] is False


def test_compiled_function_is_made_once_per_model(data):
    model = small_model()
    kw = {"eps": 4 / 255, "steps": 2, "progress": False, "device": "cpu", "backend": "torch", "compile": True}
    scan(model, DataLoader(data, batch_size=32), **kw)
    made = compiled.compiled_loss(model)
    scan(model, DataLoader(data, batch_size=32), **kw)
    assert compiled.compiled_loss(model) is made and made.batch == 32


def test_compile_refuses_cuda_graph():
    with pytest.raises(ValueError, match="compile"):
        scan(small_model(), [(torch.rand(2, 3, 8, 8), torch.tensor([0, 1]))], compile=True, cuda_graph=True,
             progress=False, backend="torch")


def test_compiled_early_exit_equals_eager_early_exit(data):
    # The early-exit scan (decide_tau) runs its forward + gradient through the same compiled function.
    model = small_model()
    kw = {"eps": 8 / 255, "steps": 6, "progress": False, "device": "cpu", "backend": "torch", "decide_tau": 3}
    eager = scan(model, DataLoader(data, batch_size=32), **kw)
    fast = scan(model, DataLoader(data, batch_size=32), compile=True, **kw)
    np.testing.assert_array_equal(fast.k, eager.k)
    np.testing.assert_array_equal(fast.first_miss, eager.first_miss)


def test_config_refuses_unknown_compile_mode():
    from gaave_fast.pipeline import PipelineConfig

    assert PipelineConfig(scan_compile="reduce-overhead").scan_compile == "reduce-overhead"
    with pytest.raises(ValueError, match="scan_compile"):
        PipelineConfig(scan_compile="fastest")

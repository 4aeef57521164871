"""scan on CUDA: fused == torch backend, CPU == CUDA, CUDA graphs == eager, bf16 autocast runs.

Skipped without a GPU and the CUDA kernels."""

from __future__ import annotations

import numpy as np
import pytest
import scan_fixture
import torch
from torch.utils.data import DataLoader

from gaave_fast import ops, scan

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and ops.extension_error() is None and ops.cuda_available()),
    reason="needs a CUDA device and the CUDA kernels",
)
COLUMNS = ("index", "k", "label", "pred", "first_miss")


def loader(n=40, batch=8):
    return DataLoader(scan_fixture.IndexedImages(n=n), batch_size=batch, pin_memory=True)


def assert_same(a, b):
    for name in COLUMNS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_cuda_fused_equals_torch_backend():
    model = scan_fixture.model().cuda()
    kw = dict(scan_fixture.SCAN_KWARGS, channels_last=False)
    assert_same(scan(model, loader(), backend="fused", **kw), scan(model, loader(), backend="torch", **kw))


def test_cuda_channels_last_equals_contiguous():
    model = scan_fixture.model().cuda()
    kw = scan_fixture.SCAN_KWARGS
    assert_same(scan(model, loader(), channels_last=True, **kw), scan(model, loader(), channels_last=False, **kw))


def test_cuda_graph_equals_eager():
    model = scan_fixture.model().cuda()
    kw = scan_fixture.SCAN_KWARGS
    # 40 = 5 full batches of 8 (replayed) ; 37 leaves a partial batch (its own graph).
    for n in (40, 37):
        assert_same(scan(model, loader(n), cuda_graph=True, **kw), scan(model, loader(n), **kw))


def test_cuda_agrees_with_cpu():
    """Convolutions differ in rounding between devices, so compare k on a model whose
    decisions are far from ties: the closed-form linear case of test_scan."""
    from test_scan import linear_case

    model, images, labels, k, miss = linear_case(8, 2.0 ** -9, 5)
    data = DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=5)
    result = scan(model.cuda(), data, eps=5 * 2.0 ** -9, alpha=2.0 ** -9, steps=8, progress=False)
    np.testing.assert_array_equal(result.k, k)
    np.testing.assert_array_equal(result.first_miss, miss)


def test_cuda_bf16_autocast_runs_and_counts_in_range():
    model = scan_fixture.model().cuda()
    result = scan(model, loader(), amp=torch.bfloat16, **scan_fixture.SCAN_KWARGS)
    steps = scan_fixture.SCAN_KWARGS["steps"]
    assert len(result) == 40 and result.k.min() >= 0 and result.k.max() <= steps + 1


def test_cuda_label_out_of_range_with_graph():
    model = scan_fixture.model().cuda()
    images = torch.rand(16, 3, 10, 10)
    labels = torch.zeros(16, dtype=torch.long)
    labels[12] = 9
    data = DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=8)
    with pytest.raises(ValueError, match="label 9 is outside the model's 4 outputs"):
        scan(model, data, cuda_graph=True, **scan_fixture.SCAN_KWARGS)

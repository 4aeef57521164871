"""scan consumes the data layer's loaders (torch and DALI CPU) as they are."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures_data import face_like, write_image

from gaave_fast import ops, scan
from gaave_fast.data import dali_available, make_loader, read_image_folder

pytestmark = pytest.mark.skipif(ops.extension_error() is not None, reason="extension not built")


def small_model() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(4, 3))


@pytest.fixture()
def folder(tmp_path):
    for i in range(14):
        write_image(tmp_path / f"class{i % 3}" / f"img{i:02d}.jpg", face_like(32, 32, seed=i))
    return read_image_folder(tmp_path, image_size=32)


def test_scan_over_torch_loader_matches_direct_tensors(folder):
    loader = make_loader(folder, "torch", batch_size=4, shuffle=True, workers=0)
    result = scan(small_model(), loader, eps=4 / 255, steps=4, progress=False)
    assert sorted(result.index.tolist()) == list(range(len(folder)))
    items = [folder[i] for i in range(len(folder))]
    images = torch.stack([torch.as_tensor(it[0]) for it in items])
    labels = torch.tensor([int(it[1]) for it in items])
    direct = scan(small_model(), [(images, labels, torch.arange(len(items)))], eps=4 / 255, steps=4, progress=False)
    np.testing.assert_array_equal(result.k, direct.k)
    np.testing.assert_array_equal(result.label, labels.numpy())


@pytest.mark.skipif(not dali_available(), reason="DALI not installed")
def test_scan_over_dali_cpu_loader_matches_torch_loader(folder):
    """At native size both decode bit-identically on the CPU, so k must agree exactly."""
    dali = make_loader(folder, "dali", batch_size=4, device="cpu", workers=1)
    plain = make_loader(folder, "torch", batch_size=4, workers=0)
    a = scan(small_model(), dali, eps=4 / 255, steps=4, progress=False)
    b = scan(small_model(), plain, eps=4 / 255, steps=4, progress=False)
    for name in ("index", "k", "label", "pred", "first_miss"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)

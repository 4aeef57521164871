"""DALI pipeline and torch fallback: same tensors, same rows, each row once per epoch.

Agreement tolerance (stated in docs/datasets.md), in [0, 1] pixel units: both backends decode
with libjpeg-turbo on the CPU (bit-identical here) and resize with an antialiased bilinear
filter; the filters treat the image edge differently when shrinking, so the outermost pixel
ring may differ by up to 0.05 (about 13/255) while all inner pixels agree to 1e-3 and the mean
|diff| is below 1e-3. Enlarged or unresized images agree to 1e-4 everywhere.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures_data import make_affectnet, make_ferplus, make_rafdb

from gaave_fast.data import (
    ArrayDataset,
    make_loader,
    read_affectnet,
    read_ferplus,
    read_rafdb,
)
from gaave_fast.data.dali import dali_available, resolve_device

needs_dali = pytest.mark.skipif(not dali_available(), reason="nvidia.dali is not importable")
BACKENDS = ["torch", pytest.param("dali", marks=needs_dali)]
EDGE_TOL, INNER_TOL, MEAN_TOL = 0.05, 1e-3, 1e-3


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """AffectNet layout, 8 classes: 23 usable rows of 96×128 JPEGs with face boxes."""
    root = tmp_path_factory.mktemp("affectnet")
    make_affectnet(root, n=26, seed=1)
    return root


def _epoch(loader) -> dict[int, tuple[torch.Tensor, int]]:
    """{index: (image, label)} of one epoch; fails if a row comes twice."""
    out: dict[int, tuple[torch.Tensor, int]] = {}
    for batch in loader:
        assert set(batch) == {"image", "label", "index"}
        assert batch["label"].dtype == torch.int64 and batch["index"].dtype == torch.int64
        assert batch["image"].dtype == torch.float32 and batch["image"].ndim == 4
        for image, label, index in zip(batch["image"], batch["label"].tolist(), batch["index"].tolist()):
            assert index not in out, f"row {index} twice in one epoch"
            out[index] = (image.cpu(), label)
    return out


def _agree(a: dict, b: dict, edge_tol: float = EDGE_TOL) -> None:
    assert a.keys() == b.keys()
    diffs = torch.stack([(a[k][0] - b[k][0]).abs() for k in a])
    inner = diffs[..., 1:-1, 1:-1]
    assert diffs.max() <= edge_tol and inner.max() <= INNER_TOL and diffs.mean() <= MEAN_TOL, \
        (diffs.max(), inner.max(), diffs.mean())
    assert all(a[k][1] == b[k][1] for k in a)


@needs_dali
@pytest.mark.parametrize("norm", [None, ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
def test_dali_matches_torch_with_boxes(faces, norm):
    mean, std = norm or (None, None)
    data = read_affectnet(faces, "train", 8, image_size=(28, 36), mean=mean, std=std)
    dali = _epoch(make_loader(data, "dali", batch_size=5, workers=2, device="cpu"))  # 5 does not divide 23
    torch_ = _epoch(make_loader(data, "torch", batch_size=5, workers=0))
    assert sorted(dali) == list(range(len(data)))
    # normalized outputs: compare in pixel units
    scale = min(std) if std else 1.0
    _agree({k: (v[0] * scale, v[1]) for k, v in dali.items()}, {k: (v[0] * scale, v[1]) for k, v in torch_.items()})
    for k, (image, label) in dali.items():
        assert label == data.labels[k] and image.shape == (3, 28, 36)
    if mean is None:  # the crop is the box: compare with a crop cut here from the decoded file
        crop = torch.from_numpy(np.array(data.read_crop(4))).permute(2, 0, 1).float()[None] / 255
        ref = torch.nn.functional.interpolate(crop, size=(28, 36), mode="bilinear", antialias=True)[0]
        assert (dali[4][0] - ref).abs().mean() < MEAN_TOL


@needs_dali
def test_dali_matches_torch_enlarging_and_grayscale_png(tmp_path):
    make_rafdb(tmp_path / "raf", 5, 2)
    raf = read_rafdb(tmp_path / "raf", "all", image_size=112)  # 100×100 aligned faces, enlarged
    _agree(_epoch(make_loader(raf, "dali", batch_size=3, workers=1, device="cpu")),
           _epoch(make_loader(raf, "torch", batch_size=3, workers=0)), edge_tol=1e-4)
    make_ferplus(tmp_path / "fer")
    fer = read_ferplus(tmp_path / "fer", "train", image_size=48)  # grayscale PNG, no resize
    _agree(_epoch(make_loader(fer, "dali", batch_size=4, workers=1, device="cpu")),
           _epoch(make_loader(fer, "torch", batch_size=4, workers=0)), edge_tol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shuffle", [False, True])
def test_shards_partition_every_epoch(faces, backend, shuffle):
    data = read_affectnet(faces, "train", 8, image_size=16)
    loaders = [make_loader(data, backend, batch_size=4, workers=1 if backend == "dali" else 0, device="cpu",
                           shard_id=s, num_shards=2, shuffle=shuffle, seed=7) for s in range(2)]
    orders = []
    for _ in range(2):  # two epochs
        parts = [[i for b in loader for i in b["index"].tolist()] for loader in loaders]
        assert not set(parts[0]) & set(parts[1])
        assert sorted(parts[0] + parts[1]) == list(range(len(data)))
        assert abs(len(parts[0]) - len(parts[1])) <= 1
        orders.append(parts[0] + parts[1])
    if shuffle:
        assert orders[0] != list(range(len(data))) and orders[0] != orders[1]
    else:
        assert orders[0] == list(range(len(data))) or backend == "dali"  # DALI rotates shards per epoch


@pytest.mark.parametrize("backend", BACKENDS)
def test_len_and_rows_subset(faces, backend):
    data = read_affectnet(faces, "train", 8, image_size=16)
    rows = [3, 1, 4, 15, 9, 2, 6]
    loader = make_loader(data, backend, batch_size=3, workers=1 if backend == "dali" else 0, device="cpu", rows=rows)
    batches = list(loader)
    assert len(loader) == len(batches) == 3
    assert [i for b in batches for i in b["index"].tolist()] == rows  # unshuffled: the given order


@pytest.mark.parametrize("backend", BACKENDS)
def test_flip_mirrors_some_images(faces, backend):
    data = read_affectnet(faces, "train", 8, image_size=20)
    plain = _epoch(make_loader(data, "torch", batch_size=8, workers=0))
    flipped = _epoch(make_loader(data, backend, batch_size=8, workers=1 if backend == "dali" else 0, device="cpu",
                                 flip=True, seed=3))
    n_flipped = 0
    for k, (image, _) in flipped.items():
        same = (image - plain[k][0])[:, 1:-1, 1:-1].abs().max() <= INNER_TOL
        mirrored = (image - plain[k][0].flip(-1))[:, 1:-1, 1:-1].abs().max() <= INNER_TOL
        assert same or mirrored
        n_flipped += bool(mirrored and not same)
    assert 0 < n_flipped < len(flipped)


def test_balanced_torch_loader_equalizes_classes():
    labels = np.array([0] * 300 + [1] * 30 + [2] * 6)
    data = ArrayDataset(np.zeros((len(labels), 2, 2), np.uint8), labels)
    loader = make_loader(data, batch_size=64, workers=0, balance=True, seed=1)
    seen = torch.cat([b["label"] for b in loader]).numpy()
    assert len(seen) == len(labels)
    np.testing.assert_allclose(np.bincount(seen) / len(seen), 1 / 3, atol=0.08)


def test_gpu_selected_when_cuda_is_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "gpu" and resolve_device("cuda") == "gpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu" and resolve_device("gpu") == "gpu"
    with pytest.raises(ValueError, match="device"):
        resolve_device("tpu")


@needs_dali
def test_auto_backend_is_dali_for_files(faces):
    data = read_affectnet(faces, "train", 8, image_size=16)
    assert make_loader(data, batch_size=4, workers=1, device="cpu").backend == "dali"
    assert make_loader(ArrayDataset(np.zeros((3, 2, 2), np.uint8), [0, 1, 0]), workers=0).backend == "torch"

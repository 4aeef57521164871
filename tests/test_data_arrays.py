"""In-memory datasets, and the shared real npz files (skipped when GAAVE_DATA is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from gaave_fast.data import (
    CIFAR10_CLASSES,
    FER2013_CLASSES,
    ArrayDataset,
    load_cifar10_npz,
    load_fer2013_npz,
    make_loader,
)

DATA = Path(os.environ.get("GAAVE_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
FER = DATA / "fer2013" / "fer2013.npz"
CIFAR = DATA / "cifar10" / "cifar10_jpeg.npz"


def test_array_dataset_items_and_loader():
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (7, 5, 4), dtype=np.uint8)
    data = ArrayDataset(gray, np.arange(7) % 3, indices=np.arange(100, 107))
    image, label, index = data[3]
    assert image.shape == (1, 5, 4) and image.dtype == torch.float32
    np.testing.assert_allclose(image[0].numpy(), gray[3] / 255.0, rtol=1e-6)
    assert (label, index) == (0, 103)
    rgb = ArrayDataset(rng.integers(0, 256, (4, 5, 4, 3), dtype=np.uint8), [0, 1, 2, 3])
    np.testing.assert_allclose(rgb[1][0][2].numpy(), rgb.images[1, :, :, 2] / 255.0, rtol=1e-6)
    batches = list(make_loader(data, batch_size=3, workers=0))
    assert [len(b["index"]) for b in batches] == [3, 3, 1]
    assert torch.cat([b["index"] for b in batches]).tolist() == list(range(100, 107))
    with pytest.raises(ValueError, match="in memory"):
        make_loader(data, "dali")
    with pytest.raises(ValueError, match="uint8"):
        ArrayDataset(gray.astype(np.float32), np.zeros(7))


@pytest.mark.data
@pytest.mark.skipif(not FER.exists(), reason=f"no FER2013 npz at {FER} (set GAAVE_DATA)")
def test_fer2013_npz_real():
    train, test, meta = load_fer2013_npz(FER)
    assert len(train) == 28457 and len(test) == 3575 + 3568  # counts from shared/data/README.md
    assert train.classes == list(FER2013_CLASSES) and meta["classes"][3] == "happy"
    assert train[0][0].shape == (1, 48, 48)
    assert sorted(set(meta["test_usage"])) == ["PrivateTest", "PublicTest"]
    assert (np.diff(meta["train_rows"]) > 0).all() and meta["train_rows"].max() < 35887
    counts = np.bincount(train.labels, minlength=7)
    # README's per-class counts (they sum to 28,558, not 28,457): agree within 1.5 %
    readme = np.array([3966, 435, 4074, 7186, 4802, 3162, 4933])
    np.testing.assert_allclose(counts, readme, rtol=0.015)
    _, private, _ = load_fer2013_npz(FER, test_usage=["PrivateTest"])
    assert len(private) == 3568


@pytest.mark.data
@pytest.mark.skipif(not CIFAR.exists(), reason=f"no CIFAR-10 npz at {CIFAR} (set GAAVE_DATA)")
def test_cifar10_npz_real_human_noise():
    train, test, meta = load_cifar10_npz(CIFAR, noise="worse")
    assert (len(train), len(test)) == (50000, 10000)
    assert train.images.shape == (50000, 32, 32, 3) and train.classes == list(CIFAR10_CLASSES)
    assert meta["is_noisy"].mean() == pytest.approx(0.402, abs=0.005)  # CIFAR-10N "worse": 40.2 %
    clean = ~meta["is_noisy"]
    np.testing.assert_array_equal(train.labels[clean], meta["clean_label"][clean])
    assert np.bincount(meta["clean_label"]).tolist() == [5000] * 10
    image = train[0][0]
    assert image.shape == (3, 32, 32) and 0.1 < image.mean() < 0.9


@pytest.mark.data
@pytest.mark.skipif(not CIFAR.exists(), reason=f"no CIFAR-10 npz at {CIFAR} (set GAAVE_DATA)")
def test_cifar10_npz_real_long_tail_pair_noise():
    train, _, meta = load_cifar10_npz(CIFAR, noise="pair", rate=0.2, imbalance_ratio=50, seed=0)
    counts = np.bincount(meta["clean_label"], minlength=10)
    assert counts.tolist() == [int(5000 * 50 ** (-c / 9)) for c in range(10)]  # the paper's CIFAR-10-LT
    noisy = meta["is_noisy"]
    assert noisy.mean() == pytest.approx(0.2, abs=0.002)
    np.testing.assert_array_equal(train.labels[noisy], (meta["clean_label"][noisy] + 1) % 10)
    assert (train.samples["row"].to_numpy() == meta["train_rows"]).all() and meta["train_rows"].max() < 50000

"""Training: resume gives bit-identical weights, augmentation, sampling, accuracy, models."""

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score
from torch import nn

from gaave_fast.pipeline.models import model_factory
from gaave_fast.pipeline.train import (
    TrainConfig,
    accuracy,
    augment,
    epoch_rows,
    fit,
    load_model,
    predict,
    save_model,
)


class Killed(RuntimeError):
    pass


def toy_data(n=96, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, c, (n,), generator=g)
    x = torch.rand(n, 3, 8, 8, generator=g) * 0.5 + labels.view(-1, 1, 1, 1) * 0.2
    return [(x[i], int(labels[i]), i) for i in range(n)], labels.numpy()


def toy_model(seed=0):
    torch.manual_seed(seed)
    # Dropout makes the global RNG matter, BatchNorm the running statistics.
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.3),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))


CFG = TrainConfig(epochs=4, batch_size=16, crop_padding=2, flip=True, oversample=True, progress=False,
                  schedule="cosine")


def same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_resume_after_kill_is_bit_identical(tmp_path):
    data, labels = toy_data()
    ref = fit(toy_model(), data, labels, CFG, seed=5, device="cpu", checkpoint=tmp_path / "ref.pt")

    def die(epoch, model):
        if epoch == 3:
            raise Killed  # dies after training epoch 3, before its checkpoint is written
    with pytest.raises(Killed):
        fit(toy_model(), data, labels, CFG, seed=5, device="cpu", checkpoint=tmp_path / "run.pt", on_epoch_end=die)
    assert torch.load(tmp_path / "run.pt", weights_only=True)["epoch"] == 2
    # Resume into a differently initialised model: everything must come from the checkpoint.
    torch.manual_seed(123)
    resumed = fit(toy_model(seed=9), data, labels, CFG, seed=5, device="cpu", checkpoint=tmp_path / "run.pt")
    assert same_state(ref.model, resumed.model)
    assert ref.history == resumed.history and len(ref.history) == 4
    # A different seed gives different weights (the comparison above can fail).
    other = fit(toy_model(), data, labels, CFG, seed=6, device="cpu")
    assert not same_state(ref.model, other.model)


def test_stop_and_continue_from_another_checkpoint(tmp_path):
    data, labels = toy_data()
    ref = fit(toy_model(), data, labels, CFG, seed=1, device="cpu")
    fit(toy_model(), data, labels, CFG, seed=1, device="cpu", stop_at=2, checkpoint=tmp_path / "a.pt")
    cont = fit(toy_model(), data, labels, CFG, seed=1, device="cpu", checkpoint=tmp_path / "b.pt",
               init_checkpoint=tmp_path / "a.pt")
    assert same_state(ref.model, cont.model)
    assert [h["epoch"] for h in cont.history] == [1, 2, 3, 4]


def test_augment_matches_per_sample_reference():
    x = torch.rand(6, 2, 5, 7)
    got = augment(x, True, 2, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    flip = torch.rand(6, generator=g) < 0.5
    oy = torch.randint(0, 5, (6,), generator=g)
    ox = torch.randint(0, 5, (6,), generator=g)
    for i in range(6):
        xi = x[i].flip(2) if flip[i] else x[i]
        padded = torch.zeros(2, 9, 11)
        padded[:, 2:7, 2:9] = xi
        torch.testing.assert_close(got[i], padded[:, oy[i]:oy[i] + 5, ox[i]:ox[i] + 7], rtol=0, atol=0)


def test_epoch_rows():
    labels = np.array([0] * 90 + [1] * 10)
    perm = epoch_rows(labels, 0, 0, False)
    assert sorted(perm.tolist()) == list(range(100))
    np.testing.assert_array_equal(perm, epoch_rows(labels, 0, 0, False))
    assert not np.array_equal(perm, epoch_rows(labels, 0, 1, False))
    drawn = np.concatenate([epoch_rows(labels, 0, e, True) for e in range(50)])
    assert abs((labels[drawn] == 1).mean() - 0.5) < 0.03  # class-balanced draws


def test_accuracy_against_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 500)
    p = np.where(rng.random(500) < 0.6, y, rng.integers(0, 4, 500))
    a = accuracy(p, y, 5)
    assert a["accuracy"] == pytest.approx((p == y).mean())
    assert a["mean_class_accuracy"] == pytest.approx(balanced_accuracy_score(y, p))
    assert a["class_accuracy"][4] is None


@pytest.mark.parametrize("arch, channels, size", [("small_cnn", 1, 16), ("resnet18", 1, 32), ("resnet18", 3, 96)])
def test_models_shapes_and_save_load(tmp_path, arch, channels, size):
    make = model_factory(arch, channels, size, [0.5] * channels, [0.25] * channels, width=8)
    m = make(5).eval()
    x = torch.rand(2, channels, size, size)
    assert m(x).shape == (2, 5)
    # The first layer normalises: feeding a pre-normalised image to the body gives the same logits.
    torch.testing.assert_close(m(x), m[1]((x - 0.5) / 0.25))
    if arch == "resnet18" and size <= 64:
        assert m[1].conv1.stride == (1, 1) and isinstance(m[1].maxpool, nn.Identity)
    save_model(m, tmp_path / "m.pt")
    m2 = load_model(make(5), tmp_path / "m.pt").eval()
    torch.testing.assert_close(m2(x), m(x), rtol=0, atol=0)


def test_predict_and_bad_input():
    data, labels = toy_data(20)
    idx, logits = predict(toy_model(), data, batch_size=7, device="cpu")
    np.testing.assert_array_equal(idx, np.arange(20))
    assert logits.shape == (20, 3)
    with pytest.raises(ValueError, match="labels"):
        fit(toy_model(), data, labels[:5], CFG, seed=0, device="cpu")
    with pytest.raises(ValueError, match="stop_at"):
        fit(toy_model(), data, labels, CFG, seed=0, device="cpu", stop_at=9)

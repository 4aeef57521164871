"""gaave_fast.scan: backends agree, a closed-form linear case, a peer cross-check, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

import gaave_fast
from gaave_fast import ScanResult, ops, scan

needs_ext = pytest.mark.skipif(ops.extension_error() is not None, reason="extension not built")


class Indexed(Dataset):
    """(image, label, index) items over tensors."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], self.labels[i], i


def small_cnn(seed: int, channels: int = 3, classes: int = 5) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(channels, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1, stride=2), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(32, classes),
    )


def data(seed: int, n: int = 60, channels: int = 3, size: int = 12, classes: int = 5):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, channels, size, size, generator=gen), torch.randint(0, classes, (n,), generator=gen)


def columns_equal(a: ScanResult, b: ScanResult, margin_exact: bool = True):
    for name in ("index", "k", "label", "pred", "first_miss"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    if margin_exact:
        np.testing.assert_array_equal(a.margin, b.margin)
        np.testing.assert_array_equal(a.loss, b.loss)


@needs_ext
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("batch_size", [1, 7, 32])
def test_fused_equals_torch_backend(seed, batch_size):
    model = small_cnn(seed)
    images, labels = data(seed)
    loader = DataLoader(Indexed(images, labels), batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    kwargs = {"eps": 4 / 255, "steps": 6, "progress": False}
    fused = scan(model, loader, backend="fused", **kwargs)
    ref = scan(model, loader, backend="torch", **kwargs)
    columns_equal(fused, ref)
    assert len(fused) == 60 and set(fused.index) == set(range(60))
    assert len(set(fused.k.tolist())) > 1, "degenerate test: every sample got the same k"


@needs_ext
def test_loader_order_does_not_change_results():
    model = small_cnn(3)
    images, labels = data(3)
    ds = Indexed(images, labels)
    seq = scan(model, DataLoader(ds, batch_size=16), eps=4 / 255, progress=False)
    shuf = scan(model, DataLoader(ds, batch_size=16, shuffle=True), eps=4 / 255, progress=False)
    np.testing.assert_array_equal(seq.k, shuf.k)
    np.testing.assert_array_equal(seq.first_miss, shuf.first_miss)


def linear_case(steps: int, alpha: float, ball_steps: int, mean=None, std=None):
    """A linear 2-class model whose crossing step is known in closed form.

    Logit difference m(x) = w.x + c with w = ±1 per element and c = -w.(0.5), so at
    x = 0.5 + d*sign(w) the margin is d*D. Every PGD step moves every element by alpha
    against the label, so m(s) = m0 - s*alpha*D until the ball (eps = ball_steps*alpha)
    stops it. With m0 = (t - 0.5)*alpha*D the prediction leaves the label exactly at
    step t; it never does if t > min(S, ball_steps).
    """
    c, h, w_ = 3, 4, 4
    d = c * h * w_
    gen = torch.Generator().manual_seed(5)
    w = torch.where(torch.rand(d, generator=gen) < 0.5, -1.0, 1.0)
    crossing = torch.arange(0, steps + 4).repeat(2)  # t = 0 .. S+3, for both labels
    labels = torch.cat([torch.ones(len(crossing) // 2), torch.zeros(len(crossing) // 2)]).long()
    sign_y = torch.where(labels == 1, 1.0, -1.0)
    m0 = (crossing.float() - 0.5) * alpha * d * sign_y  # margin of class 1 over class 0
    x0 = 0.5 + (m0 / d)[:, None] * w[None, :]
    images = x0.view(-1, c, h, w_)

    lin = torch.nn.Linear(d, 2)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[1] = w
        lin.bias.zero_()
        lin.bias[1] = -0.5 * w.sum()
    m = torch.tensor(mean if mean is not None else [0.0] * c).view(1, c, 1, 1)
    s = torch.tensor(std if std is not None else [1.0] * c).view(1, c, 1, 1)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lin
            # Buffers, so that .cuda() moves them with the weights.
            self.register_buffer("mean", m)
            self.register_buffer("std", s)

        def forward(self, x):  # takes normalized images, classifies in pixel space
            return self.lin((x * self.std + self.mean).flatten(1))

    bound = min(steps, ball_steps)
    expected_k = torch.where(crossing > bound, steps + 1, crossing).numpy()
    expected_miss = torch.where(crossing > bound, -1, crossing).numpy()
    normalized = (images - m) / s
    return Model(), normalized, labels, expected_k, expected_miss


@needs_ext
@pytest.mark.parametrize("backend", ["fused", "torch"])
@pytest.mark.parametrize("normalize", [False, True])
def test_closed_form_linear_classifier(backend, normalize):
    steps, alpha, ball = 8, 2.0 ** -9, 5
    mean, std = ([0.5, 0.4, 0.3], [0.25, 0.5, 2.0]) if normalize else (None, None)
    model, images, labels, k, miss = linear_case(steps, alpha, ball, mean, std)
    loader = DataLoader(TensorDataset(images, labels), batch_size=5)
    result = scan(model, loader, eps=ball * alpha, alpha=alpha, steps=steps, mean=mean, std=std,
                  backend=backend, progress=False)
    np.testing.assert_array_equal(result.k, k)
    np.testing.assert_array_equal(result.first_miss, miss)
    assert result.k.min() == 0 and result.k.max() == steps + 1


@needs_ext
def test_matches_torchattacks_pgd():
    torchattacks = pytest.importorskip("torchattacks")
    model = small_cnn(11).eval()
    images, labels = data(11, n=40)
    eps, alpha, steps = 8 / 255, 2 / 255, 6

    k = torch.zeros(len(labels), dtype=torch.int64)
    points = []

    class Counting(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            out = self.inner(x)
            k.add_((out.argmax(1) == labels).long())
            points.append(x.detach().clone())
            return out

    attack = torchattacks.PGD(Counting(model), eps=eps, alpha=alpha, steps=steps, random_start=False)
    adv = attack(images, labels)  # forwards at x(0)..x(S-1)
    with torch.no_grad():
        Counting(model)(adv)  # and x(S)
    assert len(points) == steps + 1

    result = scan(model, DataLoader(TensorDataset(images, labels), batch_size=40), eps=eps, alpha=alpha,
                  steps=steps, progress=False)
    np.testing.assert_array_equal(result.k, k.numpy())
    assert 0 < result.k.mean() < steps + 1


@needs_ext
def test_uint8_images_equal_float_images():
    model = small_cnn(4)
    gen = torch.Generator().manual_seed(4)
    raw = torch.randint(0, 256, (20, 3, 12, 12), generator=gen, dtype=torch.uint8)
    labels = torch.randint(0, 5, (20,), generator=gen)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.3, 0.4]
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    as_float = (raw.float() / 255 - m) / s
    a = scan(model, DataLoader(TensorDataset(raw, labels), batch_size=8), mean=mean, std=std, progress=False)
    b = scan(model, DataLoader(TensorDataset(as_float, labels), batch_size=8), mean=mean, std=std,
             progress=False)
    columns_equal(a, b, margin_exact=False)


@needs_ext
def test_model_state_restored():
    model = small_cnn(5)
    model.train()
    model[0].weight.requires_grad_(False)
    images, labels = data(5, n=8)
    scan(model, DataLoader(TensorDataset(images, labels), batch_size=4), progress=False)
    assert model.training
    assert not model[0].weight.requires_grad and model[0].bias.requires_grad


@needs_ext
def test_steps_zero_counts_clean_point():
    model = small_cnn(6)
    images, labels = data(6, n=30)
    result = scan(model, DataLoader(TensorDataset(images, labels), batch_size=8), steps=0, progress=False)
    with torch.no_grad():
        pred = model(images).argmax(1)
    np.testing.assert_array_equal(result.k, (pred == labels).numpy().astype(np.int16))
    np.testing.assert_array_equal(result.pred, pred.numpy())
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(model(images), labels, reduction="none")
    np.testing.assert_allclose(result.loss, loss.numpy(), rtol=1e-5, atol=1e-6)


def test_result_round_trip(tmp_path):
    gen = np.random.default_rng(0)
    n = 25
    result = ScanResult(index=gen.permutation(100)[:n], k=gen.integers(0, 10, n), label=gen.integers(0, 7, n),
                        pred=gen.integers(0, 7, n), first_miss=gen.integers(-1, 9, n),
                        margin=gen.normal(size=n).astype(np.float32), loss=gen.exponential(size=n),
                        eps=1 / 255, alpha=1 / 2040, steps=8,
                        meta={"backend": "fused"})
    assert np.all(np.diff(result.index) > 0)
    for suffix in (".npz", ".parquet", ".csv"):
        back = ScanResult.load(result.save(tmp_path / f"r{suffix}"))
        columns_equal(result, back)
        assert (back.eps, back.alpha, back.steps, back.meta) == (result.eps, result.alpha, 8, {"backend": "fused"})
    frame = result.to_pandas()
    assert list(frame.index) == list(result.index)
    np.testing.assert_array_equal(result.noisy(3), frame.index[frame.k <= 3].to_numpy())
    # The score orders by k first, then by margin.
    order = np.argsort(-result.score, kind="stable")
    ks = result.k[order]
    assert np.all(np.diff(ks) >= 0)
    with pytest.raises(ValueError, match="use a .npz, .parquet or .csv suffix"):
        result.save(tmp_path / "r.txt")
    with pytest.raises(ValueError, match="appears more than once"):
        ScanResult(index=[1, 1], k=[0, 0], label=[0, 0], pred=[0, 0], first_miss=[0, 0], margin=[0, 0],
                   loss=[0, 0], eps=0.1, alpha=0.1, steps=1)


# --- bad input ------------------------------------------------------------------------


def _loader(images, labels, **kw):
    return DataLoader(TensorDataset(images, labels), batch_size=4, **kw)


@needs_ext
@pytest.mark.parametrize(
    "make, message",
    [
        (lambda im, lb: _loader(im, lb + 10), "label 1[0-4] is outside the model's 5 outputs"),
        (lambda im, lb: _loader(im, lb - 10), "negative label"),
        (lambda im, lb: _loader(im[:, 0], lb), r"images must be 4-D \[N, C, H, W\]"),
        (lambda im, lb: _loader(im[:0], lb[:0]), "yielded no samples"),
        (lambda im, lb: _loader(im, lb, shuffle=True), "shuffles .* but yields no dataset indices"),
        (lambda im, lb: _loader(im.index_put((torch.tensor([6]),), torch.tensor(float("nan"))), lb),
         "dataset index 6 holds NaN or Inf"),
        (lambda im, lb: DataLoader(TensorDataset(im, lb, torch.zeros(len(lb), dtype=torch.long)), batch_size=4),
         "dataset index 0 appears more than once"),
        (lambda im, lb: [{"img": im}], "no images in the batch dict"),
        (lambda im, lb: [(im, lb.float())], "labels must be integers"),
        (lambda im, lb: [(im, lb[:3])], r"labels must have shape \[12\]"),
    ],
)
def test_bad_input(make, message):
    images, labels = data(7, n=12)
    with pytest.raises(ValueError, match=message):
        scan(small_cnn(7), make(images, labels), progress=False)


@needs_ext
def test_bad_arguments():
    images, labels = data(8, n=4)
    loader = _loader(images, labels)
    model = small_cnn(8)
    with pytest.raises(ValueError, match="backend must be one of"):
        scan(model, loader, backend="jax", progress=False)
    with pytest.raises(ValueError, match="steps must be a non-negative int"):
        scan(model, loader, steps=-1, progress=False)
    with pytest.raises(ValueError, match="eps and alpha must be >= 0"):
        scan(model, loader, eps=-0.1, progress=False)
    with pytest.raises(ValueError, match="mean has 2 values but the images have 3 channels"):
        scan(model, loader, mean=[0.5, 0.5], std=[0.2, 0.2], progress=False)
    with pytest.raises(ValueError, match="must return logits of shape"):
        scan(torch.nn.Identity(), loader, progress=False)


def test_public_api():
    assert gaave_fast.scan is scan
    assert isinstance(gaave_fast.cuda_available(), bool) or ops.extension_error() is not None

"""The fused ops against their pure-PyTorch references, opcheck, and argument errors."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

from gaave_fast import ops

pytestmark = pytest.mark.skipif(ops.extension_error() is not None, reason="extension not built")

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
SHAPES = [(1, 1, 1, 1), (5, 3, 7, 9), (4, 3, 16, 16), (3, 1, 48, 48), (2, 3, 33, 5), (6, 2, 11)]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() and ops.cuda_available() else [])


def fresh_seed() -> int:
    """A new seed on every run (reported in failures) so that runs explore new inputs."""
    return int.from_bytes(os.urandom(4), "little")


def make_batch(shape, dtype, device, seed, num_classes=7, channels_last=False, normalized=True):
    gen = torch.Generator().manual_seed(seed)
    n, c = shape[0], shape[1]
    mean = torch.rand(c, generator=gen).tolist() if normalized else None
    std = (0.1 + torch.rand(c, generator=gen)).tolist() if normalized else None
    eps, alpha, lo, hi = ops.channel_bounds(4 / 255, 1 / 255, c, mean, std, device)
    view = (1, c) + (1,) * (len(shape) - 2)
    lo4, hi4 = lo.view(view).cpu(), hi.view(view).cpu()
    x0 = (lo4 + (hi4 - lo4) * torch.rand(shape, generator=gen)).to(dtype)
    # x somewhere inside and outside the ball and the range, so every clamp acts.
    x = (x0.float() + 3 * eps.view(view).cpu() * torch.randn(shape, generator=gen)).to(dtype)
    grad = torch.randn(shape, generator=gen)
    grad[torch.rand(shape, generator=gen) < 0.05] = float("nan")
    grad[torch.rand(shape, generator=gen) < 0.05] = 0.0
    grad = grad.to(dtype)
    logits = torch.randn(n, num_classes, generator=gen)
    labels = torch.randint(0, num_classes, (n,), generator=gen)
    tensors = [x, x0, grad]
    if channels_last:
        tensors = [t.contiguous(memory_format=torch.channels_last) for t in tensors]
    x, x0, grad = (t.to(device) for t in tensors)
    state = {
        "k": torch.randint(0, 3, (n,), generator=gen, dtype=torch.int32).to(device),
        "first_miss": torch.where(torch.rand(n, generator=gen) < 0.5, -1, 1).to(torch.int32).to(device),
    }
    return dict(x=x, x0=x0, grad=grad, logits=logits.to(device), labels=labels.to(device),
                eps=eps, alpha=alpha, lo=lo, hi=hi, **state)


def run_both(b, step=2, logits_dtype=None):
    logits = b["logits"] if logits_dtype is None else b["logits"].to(logits_dtype)
    ref = {name: b[name].clone() for name in ("x", "k", "first_miss")}
    out = {name: b[name].clone(memory_format=torch.preserve_format) for name in ("x", "k", "first_miss")}
    args = lambda s: (s["x"], b["x0"], b["grad"], logits, b["labels"], s["k"], s["first_miss"], step,
                      b["eps"], b["alpha"], b["lo"], b["hi"])
    ops.pgd_step_(*args(out))
    ops.pgd_step_reference_(*args(ref))
    return out, ref


def assert_same(out, ref, seed):
    for name in ref:
        assert torch.equal(out[name], ref[name]), f"{name} differs from the reference (seed {seed})"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_step_equals_reference(device, dtype, shape):
    seed = fresh_seed()
    b = make_batch(shape, dtype, device, seed)
    out, ref = run_both(b)
    assert_same(out, ref, seed)
    assert not torch.equal(out["x"], b["x"]) or b["x"].numel() < 4, "the step moved nothing"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_channels_last_equals_reference(device, dtype):
    seed = fresh_seed()
    b = make_batch((4, 3, 10, 13), dtype, device, seed, channels_last=True)
    out, ref = run_both(b)
    assert_same(out, ref, seed)
    assert out["x"].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("device", DEVICES)
def test_mixed_layouts(device):
    """x0 and grad in another layout than x are read correctly."""
    seed = fresh_seed()
    b = make_batch((3, 3, 8, 8), torch.float32, device, seed, channels_last=True)
    b["grad"] = b["grad"].contiguous()
    out, ref = run_both(b)
    assert_same(out, ref, seed)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("logits_dtype", DTYPES)
def test_logits_dtypes(device, logits_dtype):
    seed = fresh_seed()
    b = make_batch((9, 3, 4, 4), torch.float32, device, seed, num_classes=5)
    out, ref = run_both(b, logits_dtype=logits_dtype)
    assert_same(out, ref, seed)


@pytest.mark.parametrize("device", DEVICES)
def test_ties_and_nan_logits(device):
    """Ties go to the first index (as torch.argmax); a row with NaN never matches."""
    logits = torch.tensor(
        [[1.0, 3.0, 3.0, 0.0],   # tie between 1 and 2: predicts 1
         [1.0, 3.0, 3.0, 0.0],   # same row, label 2: no match
         [2.0, 2.0, 2.0, 2.0],   # all equal: predicts 0
         [float("nan"), 1.0, 0.0, 0.0],  # NaN at the label: no match
         [5.0, float("nan"), 0.0, 0.0],  # NaN elsewhere: no match
         [0.0, 0.0, 0.0, 9.0]],
        device=device,
    )
    labels = torch.tensor([1, 2, 0, 0, 0, 3], device=device)
    k = torch.zeros(6, dtype=torch.int32, device=device)
    first_miss = torch.full((6,), -1, dtype=torch.int32, device=device)
    ops.count_k_(logits, labels, k, first_miss, 4)
    assert k.tolist() == [1, 0, 1, 0, 0, 1]
    assert first_miss.tolist() == [-1, 4, -1, 4, 4, -1]
    ref_k, ref_miss = torch.zeros_like(k), torch.full_like(first_miss, -1)
    ops.count_k_reference_(logits, labels, ref_k, ref_miss, 4)
    assert torch.equal(k, ref_k) and torch.equal(first_miss, ref_miss)


@pytest.mark.parametrize("device", DEVICES)
def test_nan_grad_moves_nothing(device):
    x0 = torch.full((2, 3, 4, 4), 0.5, device=device)
    x = x0.clone()
    grad = torch.full_like(x, float("nan"))
    grad[1] = 1.0
    eps, alpha, lo, hi = ops.channel_bounds(0.1, 0.05, 3, device=device)
    k = torch.zeros(2, dtype=torch.int32, device=device)
    miss = torch.full((2,), -1, dtype=torch.int32, device=device)
    logits = torch.zeros(2, 3, device=device)
    ops.pgd_step_(x, x0, grad, logits, torch.zeros(2, dtype=torch.long, device=device), k, miss, 0,
                  eps, alpha, lo, hi)
    assert torch.equal(x[0], x0[0])
    assert torch.allclose(x[1], torch.full_like(x[1], 0.55))


@pytest.mark.parametrize("device", DEVICES)
def test_closed_form_projection(device):
    """Many steps of +alpha end at min(x0 + eps, hi): the ball and range both bind."""
    x0 = torch.tensor([0.2, 0.97], device=device).view(1, 2, 1, 1).repeat(1, 1, 2, 2)
    x = x0.clone()
    grad = torch.ones_like(x)
    eps, alpha, lo, hi = ops.channel_bounds(0.05, 0.02, 2, device=device)
    k = torch.zeros(1, dtype=torch.int32, device=device)
    miss = torch.full((1,), -1, dtype=torch.int32, device=device)
    logits = torch.tensor([[0.0, 1.0]], device=device)
    for s in range(5):
        ops.pgd_step_(x, x0, grad, logits, torch.ones(1, dtype=torch.long, device=device), k, miss, s,
                      eps, alpha, lo, hi)
    assert torch.allclose(x[0, 0], torch.full((2, 2), 0.25, device=device))
    assert torch.equal(x[0, 1], torch.ones(2, 2, device=device))
    assert k.item() == 5 and miss.item() == -1


@pytest.mark.parametrize("device", DEVICES)
def test_many_steps_equal_reference(device):
    """S chained steps (the scan's inner loop) stay identical to the reference."""
    seed = fresh_seed()
    b = make_batch((6, 3, 12, 12), torch.float32, device, seed)
    out = {name: b[name].clone() for name in ("x", "k", "first_miss")}
    ref = {name: b[name].clone() for name in ("x", "k", "first_miss")}
    gen = torch.Generator().manual_seed(seed)
    for s in range(8):
        grad = torch.randn(b["x"].shape, generator=gen).to(device)
        logits = torch.randn(6, 7, generator=gen).to(device)
        for fn, st in ((ops.pgd_step_, out), (ops.pgd_step_reference_, ref)):
            fn(st["x"], b["x0"], grad, logits, b["labels"], st["k"], st["first_miss"], s,
               b["eps"], b["alpha"], b["lo"], b["hi"])
    assert_same(out, ref, seed)
    # Inside the ball up to the rounding of x0 ± eps in float32.
    ball = (out["x"] - b["x0"]).abs() <= b["eps"].view(1, -1, 1, 1) + 1e-6
    assert bool(ball.all())


@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch_is_noop(device):
    b = make_batch((1, 3, 4, 4), torch.float32, device, 0)
    empty = {k: (v[:0] if k not in ("eps", "alpha", "lo", "hi") else v) for k, v in b.items()}
    out, _ref = run_both(empty)
    assert out["x"].shape == (0, 3, 4, 4) and out["k"].shape == (0,)
    ops.count_k_(empty["logits"], empty["labels"], empty["k"], empty["first_miss"], 0)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    b = make_batch((3, 3, 5, 6), torch.float32, device, 1)
    torch.library.opcheck(
        torch.ops.gaave_fast.pgd_step_.default,
        (b["x"], b["x0"], b["grad"], b["logits"], b["labels"], b["k"], b["first_miss"], 1,
         b["eps"], b["alpha"], b["lo"], b["hi"]),
    )
    torch.library.opcheck(
        torch.ops.gaave_fast.count_k_.default,
        (b["logits"], b["labels"], b["k"], b["first_miss"], 3),
    )


def _bad(**changes):
    b = make_batch((2, 3, 4, 4), torch.float32, "cpu", 0)
    b.update(changes)
    return (b["x"], b["x0"], b["grad"], b["logits"], b["labels"], b["k"], b["first_miss"], 0,
            b["eps"], b["alpha"], b["lo"], b["hi"])


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"x0": torch.zeros(2, 3, 4, 5)}, "x0 must have x's shape [2, 3, 4, 4], got [2, 3, 4, 5]"),
        ({"grad": torch.zeros(2, 3, 4)}, "grad must have x's shape [2, 3, 4, 4], got [2, 3, 4]"),
        ({"x0": torch.zeros(2, 3, 4, 4, dtype=torch.float64)}, "x0 must have x's dtype"),
        ({"grad": torch.zeros(2, 3, 4, 4, dtype=torch.float16)}, "grad must have x's dtype"),
        ({"x": torch.zeros(2, 3, 4, 4, dtype=torch.float64)}, "x must be float32, bfloat16 or float16"),
        ({"x": torch.zeros(2)}, "at least 2-D), got shape [2]"),
        ({"x": torch.zeros(2, 3, 4, 8)[..., ::2]}, "x must be contiguous or channels_last"),
        ({"logits": torch.zeros(2)}, "logits must"),
        ({"logits": torch.zeros(3, 7)}, "logits must have shape [N, K] with N = 2"),
        ({"logits": torch.zeros(2, 1)}, "at least 2 classes (K >= 2), got K = 1"),
        ({"logits": torch.zeros(2, 7, dtype=torch.float64)}, "logits must be float32"),
        ({"labels": torch.zeros(2, dtype=torch.int32)}, "labels must be int64"),
        ({"labels": torch.zeros(3, dtype=torch.long)}, "labels must have shape [2] to match logits, got [3]"),
        ({"k": torch.zeros(2, dtype=torch.int64)}, "k must be int32"),
        ({"k": torch.zeros(4, dtype=torch.int32)[::2]}, "k must be contiguous"),
        ({"first_miss": torch.zeros(3, dtype=torch.int32)}, "first_miss must have shape [2] to match logits, got [3]"),
        ({"first_miss": torch.zeros(2, dtype=torch.float32)}, "first_miss must be int32"),
        ({"eps": torch.zeros(2)}, "eps must be a per-channel tensor of shape [3], got [2]"),
        ({"alpha": torch.zeros(3, dtype=torch.float64)}, "alpha must be float32"),
        ({"lo": torch.zeros(1, 3)}, "lo must be a per-channel tensor"),
        ({"hi": torch.zeros(4)}, "hi must be a per-channel tensor of shape [3], got [4]"),
    ],
)
def test_bad_arguments(changes, message):
    # Messages are matched up to the numbers they print: an extension that carries its
    # own uninitialised copy of the C++ streams cuts them short there (or crashes).
    with pytest.raises(RuntimeError, match=re.escape(message)):
        ops.pgd_step_(*_bad(**changes))


@pytest.mark.skipif(shutil.which("nm") is None or not sys.platform.startswith("linux"), reason="needs nm (binutils) on Linux")
def test_extension_links_the_shared_libstdcxx():
    """The extension must use the process's libstdc++, not a static copy linked into it."""
    from gaave_fast import _C

    symbols = subprocess.run(["nm", "-D", "--defined-only", _C.__file__], capture_output=True, text=True,
                             check=True).stdout
    own = [line.split()[-1] for line in symbols.splitlines() if "_ZNSo9_M_insert" in line]
    assert not own, f"{_C.__file__} defines std::ostream members itself (static libstdc++): {own[:3]}"


def test_count_k_bad_arguments():
    with pytest.raises(RuntimeError, match="k must be int32"):
        ops.count_k_(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), torch.zeros(2),
                        torch.zeros(2, dtype=torch.int32), 0)


@pytest.mark.skipif("cuda" not in DEVICES, reason="needs CUDA and the CUDA kernels")
def test_cuda_device_mismatch():
    b = make_batch((2, 3, 4, 4), torch.float32, "cuda", 0)
    with pytest.raises(RuntimeError, match="x0 is on cpu but x is on cuda"):
        ops.pgd_step_(*_bad(x=b["x"]))


@pytest.mark.skipif("cuda" not in DEVICES, reason="needs CUDA and the CUDA kernels")
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_equals_cpu_kernel(dtype):
    """The GPU and CPU kernels agree bit for bit (they share csrc/pgd_step.h)."""
    seed = fresh_seed()
    cpu = make_batch((16, 3, 31, 29), dtype, "cpu", seed)
    gpu = {k: v.cuda() for k, v in cpu.items()}
    out_cpu, _ = run_both(cpu)
    out_gpu, _ = run_both(gpu)
    for k in out_cpu:
        assert torch.equal(out_cpu[k], out_gpu[k].cpu()), f"{k} differs (seed {seed})"


def test_channel_bounds():
    eps, _alpha, lo, hi = ops.channel_bounds(1 / 255, 1 / 2040, 3, [0.5, 0.4, 0.3], [0.2, 0.25, 0.5])
    assert torch.allclose(eps, torch.tensor([1 / 255 / 0.2, 1 / 255 / 0.25, 1 / 255 / 0.5]))
    assert torch.allclose(lo, torch.tensor([-2.5, -1.6, -0.6]))
    assert torch.allclose(hi, torch.tensor([2.5, 2.4, 1.4]))
    with pytest.raises(ValueError, match="std has 2 values but the images have 3 channels"):
        ops.channel_bounds(0.1, 0.1, 3, [0.5] * 3, [0.2, 0.2])
    with pytest.raises(ValueError, match="mean and std must be given together"):
        ops.channel_bounds(0.1, 0.1, 3, [0.5] * 3, None)
    with pytest.raises(ValueError, match="std must be positive"):
        ops.channel_bounds(0.1, 0.1, 1, [0.5], [0.0])

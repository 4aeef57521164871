"""Early-exit scan (decide_tau): the op against its reference, a closed-form exit step, random
models against the full scan, resume and sharding."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import scan_fixture
import torch
from test_scan import Indexed, data, small_cnn
from torch.utils.data import DataLoader

from gaave_fast import ScanResult, ops, scan

pytestmark = pytest.mark.skipif(ops.extension_error() is not None, reason="extension not built")
TESTS = Path(__file__).resolve().parent
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() and ops.cuda_available() else [])


# --- the op ---------------------------------------------------------------------------


def decide_batch(device, seed, n=64, steps=8, tau=2, dtype=torch.float32, channels_last=False):
    gen = torch.Generator().manual_seed(seed)
    eps, alpha, lo, hi = ops.channel_bounds(4 / 255, 1 / 255, 3, device=device)
    x0 = torch.rand(n, 3, 5, 7, generator=gen)
    x = (x0 + 0.02 * torch.randn(n, 3, 5, 7, generator=gen)).to(dtype)
    grad = torch.randn(n, 3, 5, 7, generator=gen).to(dtype)
    x0 = x0.to(dtype)
    if channels_last:
        x, x0, grad = (t.contiguous(memory_format=torch.channels_last) for t in (x, x0, grad))
    logits = torch.randn(n, 4, generator=gen)
    logits[::7, 1] = float("nan")
    labels = torch.randint(0, 4, (n,), generator=gen)
    step = torch.randint(0, steps + 1, (n,), generator=gen, dtype=torch.int32)
    # A consistent state: k matches among the `step` points counted so far.
    k = (torch.rand(n, generator=gen) * (step + 1)).floor().to(torch.int32).clamp(max=step)
    first_miss = torch.where(k < step, step - 1, -1).to(torch.int32)
    decided = torch.rand(n, generator=gen) < 0.2
    t = {"x": x, "x0": x0, "grad": grad, "logits": logits, "labels": labels, "k": k, "first_miss": first_miss, "step": step,
         "decided": decided}
    t = {name: v.to(device) for name, v in t.items()}
    return t, (steps, tau, eps, alpha, lo, hi)


def call(fn, t, rest):
    steps, tau, eps, alpha, lo, hi = rest
    fn(t["x"], t["x0"], t["grad"], t["logits"], t["labels"], t["k"], t["first_miss"], t["step"], t["decided"],
       steps, tau, eps, alpha, lo, hi)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("tau", [0, 2, 8])
def test_decide_step_equals_reference(device, dtype, channels_last, tau):
    t, rest = decide_batch(device, seed=tau, dtype=dtype, channels_last=channels_last, tau=tau)
    rest = (rest[0], tau, *rest[2:])
    out = {name: v.clone(memory_format=torch.preserve_format) for name, v in t.items()}
    ref = {name: v.clone(memory_format=torch.preserve_format) for name, v in t.items()}
    call(ops.pgd_decide_step_, out, rest)
    call(ops.pgd_decide_step_reference_, ref, rest)
    for name in ("x", "k", "first_miss", "step", "decided"):
        assert torch.equal(out[name], ref[name]), name
    frozen = t["decided"]
    for name in ("k", "first_miss", "step"):
        assert torch.equal(out[name][frozen], t[name][frozen]), f"{name} of a decided sample changed"
    assert torch.equal(out["step"][~frozen], t["step"][~frozen] + 1)
    # Every sample at its last point (step == S) is decided there.
    assert bool(out["decided"][t["step"] == rest[0]].all())


def test_decide_step_matches_pgd_step_move():
    """The move is pgd_step_'s, bit for bit."""
    t, rest = decide_batch("cpu", seed=5)
    eps, alpha, lo, hi = rest[2:]
    x = t["x"].clone()
    ops.pgd_step_(x, t["x0"], t["grad"], t["logits"], t["labels"], t["k"].clone(), t["first_miss"].clone(), 0,
                  eps, alpha, lo, hi)
    call(ops.pgd_decide_step_, t, rest)
    assert torch.equal(t["x"], x)


@pytest.mark.parametrize("device", DEVICES)
def test_decide_step_opcheck(device):
    t, rest = decide_batch(device, seed=3, n=6)
    steps, tau, eps, alpha, lo, hi = rest
    torch.library.opcheck(
        torch.ops.gaave_fast.pgd_decide_step_.default,
        (t["x"], t["x0"], t["grad"], t["logits"], t["labels"], t["k"], t["first_miss"], t["step"], t["decided"],
         steps, tau, eps, alpha, lo, hi),
    )


def test_decide_step_bad_arguments():
    t, rest = decide_batch("cpu", seed=1, n=4)
    bad = dict(t, decided=t["decided"].to(torch.int32))
    with pytest.raises(RuntimeError, match="decided must be bool"):
        call(ops.pgd_decide_step_, bad, rest)
    bad = dict(t, step=t["step"][:3])
    with pytest.raises(RuntimeError, match=r"step must have shape \[4\]"):
        call(ops.pgd_decide_step_, bad, rest)
    with pytest.raises(RuntimeError, match="tau must be in"):
        call(ops.pgd_decide_step_, t, (8, 10, *rest[2:]))


# --- a closed-form case ------------------------------------------------------------------


class OnePixel(torch.nn.Module):
    """Logits [x - 0.5, 0] of a one-pixel image: label 0 holds while x > 0.5."""

    def forward(self, x):
        z = x.flatten(1)[:, :1] - 0.5
        return torch.cat([z, torch.zeros_like(z)], dim=1)


@pytest.mark.parametrize("tau", [0, 1, 2, 5, 8])
def test_closed_form_exit_step(tau):
    """The attack lowers x by alpha per step, so sample j (x0 = 0.5 + (j + 1/2) alpha) matches at the
    points s <= j: k = j + 1. Its verdict is certain at step tau when j >= tau (k > tau after tau + 1
    matches), and at step S + j + 1 - tau when j < tau (k = j + 1 plus S - s more points <= tau)."""
    steps, alpha = 8, 1 / 255
    j = np.arange(-1, steps + 1)
    x0 = torch.tensor(0.5 + (j + 0.5) * alpha, dtype=torch.float32).view(-1, 1, 1, 1)
    labels = torch.zeros(len(j), dtype=torch.int64)
    loader = DataLoader(Indexed(x0, labels), batch_size=4)
    kwargs = {"eps": steps * alpha, "alpha": alpha, "steps": steps, "progress": False}
    full = scan(OnePixel(), loader, **kwargs)
    np.testing.assert_array_equal(full.k, j + 1)
    early = scan(OnePixel(), loader, decide_tau=tau, **kwargs)
    want_steps = np.where(j >= tau, tau, steps + j + 1 - tau)
    np.testing.assert_array_equal(early.steps_run, want_steps)
    np.testing.assert_array_equal(early.k, np.minimum(j + 1, want_steps + 1))
    np.testing.assert_array_equal(early.k_exact, want_steps == steps)
    np.testing.assert_array_equal(early.noisy(tau), full.noisy(tau))
    assert early.decide_tau == tau


# --- random models against the full scan -------------------------------------------------


def partly_learned(seed, n=60):
    """A random CNN and labels that follow its predictions for 70% of the samples, so k spreads over 0..S+1."""
    model = small_cnn(seed)
    images, labels = data(seed, n=n)
    with torch.no_grad():
        pred = model(images).argmax(1)
    keep = torch.rand(n, generator=torch.Generator().manual_seed(seed)) < 0.7
    return model, images, torch.where(keep, pred, labels)


@pytest.mark.parametrize(("eps", "batch_size", "backend"),
                         [(8, 5, "fused"), (16, 16, "fused"), (16, 7, "torch")])
def test_random_models_decide_as_the_full_scan(eps, batch_size, backend):
    seed = 0  # the seed whose random CNN yields k across 0..S+1 at both radii
    model, images, labels = partly_learned(seed)
    loader = DataLoader(Indexed(images, labels), batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(eps))
    kwargs = {"eps": eps / 255, "alpha": eps / 4 / 255, "steps": 6, "progress": False, "backend": backend}
    full = scan(model, loader, **kwargs)
    assert len(np.unique(full.k)) >= 4, "the test needs a spread of k"
    for tau in (0, 2, 5):
        early = scan(model, loader, decide_tau=tau, **kwargs)
        np.testing.assert_array_equal(early.index, full.index)
        np.testing.assert_array_equal(early.noisy(tau), full.noisy(tau))
        exact = early.k_exact
        np.testing.assert_array_equal(early.k[exact], full.k[exact])
        assert np.all(early.k <= full.k) and np.all(full.k <= early.k_max)
        assert np.all((early.k > tau) | (early.k_max <= tau)), "an undecided verdict was returned"
        for name in ("label", "pred", "margin", "loss"):
            np.testing.assert_array_equal(getattr(early, name), getattr(full, name), err_msg=name)
        missed = early.first_miss >= 0
        np.testing.assert_array_equal(early.first_miss[missed], full.first_miss[missed])
        assert early.steps_run.max() <= 6 and early.steps_run.mean() < 6


def test_censored_result_refuses_other_thresholds_and_round_trips(tmp_path):
    model, images, labels = partly_learned(0)
    loader = DataLoader(Indexed(images, labels), batch_size=16)
    early = scan(model, loader, decide_tau=2, eps=8 / 255, steps=6, progress=False)
    assert not early.k_exact.all()
    with pytest.raises(ValueError, match="decided k <= 2 only"):
        early.noisy(4)
    for suffix in (".npz", ".csv", ".parquet"):
        back = ScanResult.load(early.save(tmp_path / f"r{suffix}"))
        assert back.decide_tau == 2
        for name in ("index", "k", "steps_run", "k_exact"):
            np.testing.assert_array_equal(getattr(back, name), getattr(early, name), err_msg=f"{suffix} {name}")
    assert "k_exact" in early.to_pandas().columns


def test_decide_tau_errors():
    model, images, labels = partly_learned(0, n=8)
    loader = DataLoader(Indexed(images, labels), batch_size=4)
    with pytest.raises(ValueError, match="decide_tau must be an int"):
        scan(model, loader, decide_tau=9, steps=6, progress=False)
    with pytest.raises(ValueError, match="decide_tau must be an int"):
        scan(model, loader, decide_tau=1.5, steps=6, progress=False)


# --- resume and sharding ------------------------------------------------------------------


def run_child(checkpoint: Path, crash_at: int) -> int:
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        from torch.utils.data import DataLoader
        import scan_fixture
        from gaave_fast import scan
        loader = DataLoader(scan_fixture.IndexedImages(crash_at={crash_at}), batch_size=6)
        scan(scan_fixture.model(), loader, checkpoint={str(checkpoint)!r}, checkpoint_every=0, decide_tau=2,
             **scan_fixture.SCAN_KWARGS)
    """)
    return subprocess.run([sys.executable, "-c", code], env=scan_fixture.child_env(), cwd=checkpoint.parent,
                          timeout=300, check=False).returncode


def test_resume_after_hard_kill_is_identical(tmp_path):
    ckpt = tmp_path / "scan.npz"
    assert run_child(ckpt, crash_at=27) == 3
    partial = np.load(ckpt)
    assert 0 < len(partial["index"]) < 40
    loader = DataLoader(scan_fixture.IndexedImages(), batch_size=6)
    resumed = scan(scan_fixture.model(), loader, checkpoint=ckpt, decide_tau=2, **scan_fixture.SCAN_KWARGS)
    fresh = scan(scan_fixture.model(), loader, decide_tau=2, **scan_fixture.SCAN_KWARGS)
    assert len(resumed) == 40
    for name in ("index", "k", "label", "pred", "first_miss", "margin", "loss", "steps_run", "k_exact"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(fresh, name), err_msg=name)
    with pytest.raises(ValueError, match="different scan .*decide_tau"):
        scan(scan_fixture.model(), loader, checkpoint=ckpt, decide_tau=3, **scan_fixture.SCAN_KWARGS)


WORKER = """
import sys
sys.path.insert(0, {tests!r})
import torch, torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler
import scan_fixture
from gaave_fast import scan

dist.init_process_group("gloo")
torch.set_num_threads(1)
dataset = scan_fixture.IndexedImages(n=37)
sampler = DistributedSampler(dataset, shuffle=True, seed=5)
result = scan(scan_fixture.model(), DataLoader(dataset, batch_size=5, sampler=sampler), decide_tau=2,
              **scan_fixture.SCAN_KWARGS)
result.save({out!r}.format(rank=dist.get_rank()))
""" + scan_fixture.WORKER_EXIT


def test_two_gloo_ranks_decide_as_one_process(tmp_path):
    out = str(tmp_path / "result.rank{rank}.npz")
    scan_fixture.torchrun(textwrap.dedent(WORKER).format(tests=str(TESTS), out=out), tmp_path)
    loader = DataLoader(scan_fixture.IndexedImages(n=37), batch_size=5)
    single = scan(scan_fixture.model(), loader, decide_tau=2, **scan_fixture.SCAN_KWARGS)
    full = scan(scan_fixture.model(), loader, **scan_fixture.SCAN_KWARGS)
    gathered = ScanResult.load(out.format(rank=1))
    assert len(gathered) == 37 and gathered.decide_tau == 2
    for name in ("index", "k", "steps_run", "k_exact"):
        np.testing.assert_array_equal(getattr(gathered, name), getattr(single, name), err_msg=name)
    np.testing.assert_array_equal(gathered.noisy(2), full.noisy(2))

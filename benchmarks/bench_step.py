"""Fused PGD step (gaave_fast.ops.pgd_step_) against the same step in eager PyTorch.

The fused step moves 4 tensor passes (reads x, x0, grad; writes x). Eager PyTorch
runs about 8 ops (sign, mul, add, two clamps with per-channel tensors, argmax,
compare, add), each allocating a temporary. Both run on identical tensors; the
table shows milliseconds per step, the speedup, and the fused op's bandwidth
against the machine's own device-to-device copy bandwidth.

    python benchmarks/bench_step.py                       # CPU (and CUDA when present)
    python benchmarks/bench_step.py --device cpu --json step.json
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from common import emit_json, machine_name

from gaave_fast import ops

SHAPES = [(256, 3, 112, 112), (256, 3, 224, 224)]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
NUM_CLASSES = 8


def _time_once(fn: Callable[[], None], device: torch.device) -> float:
    """Milliseconds of one call, synchronised on CUDA."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end)
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def time_interleaved(fns: dict[str, Callable[[], None]], device: torch.device, reps: int) -> dict[str, dict]:
    """Best and median milliseconds of each function, run in turn `reps` times.

    Interleaving exposes every candidate to the same background load; the best time
    is the least disturbed run, which is what the hardware can do.
    """
    for fn in fns.values():
        fn()  # warm-up: allocator, caches, lazy init
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            times[name].append(_time_once(fn, device))
    return {name: {"best": min(t), "median": statistics.median(t)} for name, t in times.items()}


def eager_step(x, x0, grad, logits, labels, k, eps, alpha, lo, hi):
    """The step as one would write it in PyTorch (what the fused op replaces)."""
    k += (logits.argmax(dim=1) == labels).to(k.dtype)
    x = x + alpha * grad.sign()
    x = torch.min(torch.max(x, x0 - eps), x0 + eps)
    return torch.min(torch.max(x, lo), hi)


def bench_case(shape, dtype_name: str, device: torch.device, reps: int) -> dict:
    dtype = DTYPES[dtype_name]
    gen = torch.Generator().manual_seed(0)
    n, c = shape[0], shape[1]
    x0 = torch.rand(shape, generator=gen).to(device=device, dtype=dtype)
    grad = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
    x = x0.clone()
    logits = torch.randn(n, NUM_CLASSES, generator=gen).to(device)
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=gen).to(device)
    k = torch.zeros(n, dtype=torch.int32, device=device)
    first_miss = torch.full((n,), -1, dtype=torch.int32, device=device)
    mean, std = [0.485, 0.456, 0.406][:c], [0.229, 0.224, 0.225][:c]
    eps, alpha, lo, hi = ops.channel_bounds(1 / 255, 1 / 2040, c, mean, std, device)
    view = (1, c, 1, 1)
    e4, a4, l4, h4 = (t.view(view).to(dtype) for t in (eps, alpha, lo, hi))
    # x0 is rescaled into the valid range of the normalized inputs.
    x0.mul_(h4 - l4).add_(l4)
    x.copy_(x0)
    out = torch.empty_like(x)
    t = time_interleaved(
        {
            "fused": lambda: ops.pgd_step_(x, x0, grad, logits, labels, k, first_miss, 0, eps, alpha, lo, hi),
            "eager": lambda: eager_step(x, x0, grad, logits, labels, k, e4, a4, l4, h4),
            "copy": lambda: out.copy_(x),
        },
        device,
        reps,
    )
    fused_ms, eager_ms, copy_ms = t["fused"]["best"], t["eager"]["best"], t["copy"]["best"]

    nbytes = x.numel() * x.element_size()
    copy_gbs = 2 * nbytes / copy_ms / 1e6
    fused_gbs = 4 * nbytes / fused_ms / 1e6
    return {
        "shape": "x".join(map(str, shape)),
        "dtype": dtype_name,
        "device": str(device),
        "fused_ms": round(fused_ms, 3),
        "eager_ms": round(eager_ms, 3),
        "copy_ms": round(copy_ms, 3),
        "median_ms": {name: round(v["median"], 3) for name, v in t.items()},
        "speedup": round(eager_ms / fused_ms, 2),
        "fused_GBps": round(fused_gbs, 1),
        "copy_GBps": round(copy_gbs, 1),
        "fraction_of_copy_bw": round(fused_gbs / copy_gbs, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--reps", type=int, default=None, help="timed rounds per case (default: 15 CPU, 50 CUDA); the best is reported")
    parser.add_argument("--shapes", default=None, help="e.g. 256x3x112x112,64x3x224x224")
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()

    devices = []
    if args.device in ("cpu", "all"):
        devices.append(torch.device("cpu"))
    if args.device in ("cuda", "all") and torch.cuda.is_available() and ops.cuda_available():
        devices.append(torch.device("cuda"))
    shapes = SHAPES if args.shapes is None else [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]

    rows = []
    header = f"{'device':<6} {'shape':<18} {'dtype':<5} {'fused ms':>9} {'eager ms':>9} {'speedup':>8} {'fused GB/s':>11} {'copy GB/s':>10} {'of copy':>8}"
    print(header)
    for device in devices:
        reps = args.reps or (50 if device.type == "cuda" else 15)
        for shape in shapes:
            for dtype_name in args.dtypes.split(","):
                r = bench_case(shape, dtype_name, device, reps)
                rows.append(r)
                print(
                    f"{device.type:<6} {r['shape']:<18} {r['dtype']:<5} {r['fused_ms']:>9.2f} {r['eager_ms']:>9.2f} "
                    f"{r['speedup']:>7.1f}x {r['fused_GBps']:>11.1f} {r['copy_GBps']:>10.1f} {r['fraction_of_copy_bw']:>7.0%}"
                )
    result = {
        "benchmark": "pgd_step",
        "torch": torch.__version__,
        "build": ops.build_info(),
        "machines": {str(d): machine_name(d) for d in devices},
        "results": rows,
    }
    emit_json(result, args.json)


if __name__ == "__main__":
    main()

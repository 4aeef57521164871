"""Throughput of gaave_fast.scan against plain PyTorch, torchattacks, and the model's own bound.

All rows run on the same model, images and device in one process:

* ``scan fused``   gaave_fast.scan(backend="fused"): one compiled op launch per step;
* ``scan torch``   gaave_fast.scan(backend="torch"): the same scan, step in eager PyTorch;
* ``torchattacks`` torchattacks.PGD (no random start) with a forward hook counting k the same way;
* ``scan graph``   (with --cuda-graph) the fused scan with its S-step loop captured as a CUDA graph;
* ``scan compiled`` (with --compile [MODE]) the fused scan with the model's forward, loss and input
                   gradient through torch.compile (compiled before timing; the JSON gives the share
                   of samples whose k equals the fused scan's and the compile seconds);
* ``bound``        S+1 forward and S input-gradient backward passes of the model alone:
                   no scan can beat it, so fused / bound says how much overhead is left.

With --amp the scan rows and the bound run under autocast; torchattacks has no autocast,
so its row stays float32 (what a torchattacks user gets) and the JSON gives the fraction
of samples whose k agrees with it instead of claiming equality.

    python benchmarks/bench_scan.py --model cnn48              # small FER-like CNN, 1×48×48 (CPU)
    python benchmarks/bench_scan.py --model resnet18 --size 224 --n 32 --batch 16
    python benchmarks/bench_scan.py --device cuda --model resnet18 --n 4096 --batch 256 --amp bf16
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from common import emit_json, machine_name
from torch.utils.data import DataLoader, TensorDataset

from gaave_fast import ops, scan

AFFECTNET_TRAIN = 287_651  # manually annotated training images of AffectNet


def cnn48(classes: int = 7) -> torch.nn.Module:
    """A 4-block CNN for 1×48×48 faces (FER2013-sized)."""
    layers, cin = [], 1
    for cout in (32, 64, 128, 256):
        layers += [torch.nn.Conv2d(cin, cout, 3, padding=1), torch.nn.BatchNorm2d(cout), torch.nn.ReLU(),
                   torch.nn.MaxPool2d(2)]
        cin = cout
    return torch.nn.Sequential(*layers, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(cin, classes))


def resnet18(classes: int = 7) -> torch.nn.Module:
    import torchvision

    return torchvision.models.resnet18(num_classes=classes)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bound_loop(model, loader, device, steps, amp, channels_last):
    """S+1 forwards and S input-gradient backwards per batch: the model's own cost."""
    for p in model.parameters():
        p.requires_grad_(False)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    ctx = (lambda: torch.autocast(device.type, dtype=amp)) if amp else (lambda: torch.autocast(device.type, enabled=False))
    for images, labels in loader:
        x = images.to(device, non_blocking=True).contiguous(memory_format=fmt)
        labels = labels.to(device, non_blocking=True)
        for _ in range(steps):
            x.requires_grad_(True)
            with ctx():
                logits = model(x)
            (grad,) = torch.autograd.grad(F.cross_entropy(logits.float(), labels, reduction="sum"), x)
            x = (x.detach() + 1e-4 * grad.sign())
        with torch.no_grad(), ctx():
            model(x)
    for p in model.parameters():
        p.requires_grad_(True)


def torchattacks_loop(model, loader, device, eps, alpha, steps):
    """torchattacks' PGD, counting k with a forward hook (S forwards inside, one after)."""
    import torchattacks

    counts = []
    state = {}

    def hook(_module, _inputs, out):
        state["k"] += (out.argmax(1) == state["labels"]).int()

    handle = model.register_forward_hook(hook)
    attack = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=False)
    try:
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            state.update(k=torch.zeros(len(labels), dtype=torch.int32, device=device), labels=labels)
            adv = attack(images, labels)
            with torch.no_grad():
                model(adv)
            counts.append(state["k"].cpu())
    finally:
        handle.remove()
    return torch.cat(counts)


def timed(fn, device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["cnn48", "resnet18"], default="cnn48")
    parser.add_argument("--size", type=int, default=None, help="image side (default 48 for cnn48, 224 for resnet18)")
    parser.add_argument("--n", type=int, default=512, help="images scanned per row")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none")
    parser.add_argument("--cuda-graph", action="store_true")
    parser.add_argument("--compile", nargs="?", const="default", default=None, metavar="MODE",
                        help="add the compiled row (torch.compile mode: default, reduce-overhead, max-autotune)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--eps", type=float, default=1 / 255)
    parser.add_argument("--skip", default="", help="comma-separated rows to skip: torch,torchattacks,bound")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of all rows; the best time per row counts")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    device = torch.device(args.device)
    size = args.size or (48 if args.model == "cnn48" else 224)
    channels = 1 if args.model == "cnn48" else 3
    torch.manual_seed(0)
    model = (cnn48() if args.model == "cnn48" else resnet18()).to(device).eval()
    amp = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.amp]
    channels_last = device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    images = torch.rand(args.n, channels, size, size)
    labels = torch.randint(0, 7, (args.n,))
    loader = DataLoader(TensorDataset(images, labels), batch_size=args.batch, pin_memory=device.type == "cuda")
    alpha = args.eps / 8
    skip = set(filter(None, args.skip.split(",")))

    # Warm-up: cuDNN autotuning, allocator, lazy init.
    warm = DataLoader(TensorDataset(images[: args.batch], labels[: args.batch]), batch_size=args.batch)
    scan(model, warm, eps=args.eps, steps=args.steps, amp=amp, progress=False, device=device)

    kw = {"eps": args.eps, "alpha": alpha, "steps": args.steps, "amp": amp, "progress": False, "device": device,
          "channels_last": channels_last}
    compile_mode = True if args.compile == "default" else args.compile
    compile_s = None
    if args.compile:
        compile_s = timed(lambda: scan(model, warm, backend="fused", compile=compile_mode, **kw), device)
    results = {}
    candidates = {
        "scan fused": lambda: results.__setitem__("fused", scan(model, loader, backend="fused", **kw)),
        "scan graph": lambda: results.__setitem__("graph", scan(model, loader, backend="fused", cuda_graph=True, **kw)),
        "scan compiled": lambda: results.__setitem__(
            "compiled", scan(model, loader, backend="fused", compile=compile_mode, **kw)),
        "scan torch": lambda: results.__setitem__("torch", scan(model, loader, backend="torch", **kw)),
        "torchattacks": lambda: results.__setitem__(
            "ta", torchattacks_loop(model, loader, device, args.eps, alpha, args.steps)),
        "bound": lambda: bound_loop(model, loader, device, args.steps, amp, channels_last),
    }
    skip = {"scan torch" if s == "torch" else s for s in skip}
    if not args.cuda_graph:
        skip.add("scan graph")
    if not args.compile:
        skip.add("scan compiled")
    candidates = {name: fn for name, fn in candidates.items() if name not in skip}
    # Rounds in turn, best time per row: every row meets the same background load.
    rows = {name: float("inf") for name in candidates}
    for _ in range(args.rounds):
        for name, fn in candidates.items():
            rows[name] = min(rows[name], timed(fn, device))

    rates = {name: args.n / seconds for name, seconds in rows.items()}
    machine = machine_name(device)
    agree = {}
    if "torch" in results:
        agree["fused_k_equals_torch_k"] = bool((results["fused"].k == results["torch"].k).all())
    if "graph" in results:
        agree["graph_k_equals_fused_k"] = bool((results["graph"].k == results["fused"].k).all())
    if "compiled" in results:
        same = results["compiled"].k == results["fused"].k
        agree["compiled_k_equals_fused_k"] = bool(same.all())
        agree["fraction_k_compiled_agrees_with_fused"] = round(float(same.mean()), 5)
    if "ta" in results:
        same = results["fused"].k == results["ta"].numpy()
        agree["fused_k_equals_torchattacks_k"] = bool(same.all())
        agree["fraction_k_agrees_with_torchattacks"] = round(float(same.mean()), 4)

    print(f"{args.model} {channels}x{size}x{size}, batch {args.batch}, n {args.n}, S {args.steps}, "
          f"amp {args.amp}, {machine}" + (" (torchattacks row: float32)" if amp is not None else ""))
    print(f"{'row':<14} {'samples/s':>10} {'vs torchattacks':>16} {'of bound':>9}")
    for name, rate in rates.items():
        vs = f"{rate / rates['torchattacks']:.2f}x" if "torchattacks" in rates else "-"
        of = f"{rate / rates['bound']:.0%}" if "bound" in rates else "-"
        print(f"{name:<14} {rate:>10.1f} {vs:>16} {of:>9}")
    best = max((name for name in rates if name.startswith("scan ") and name != "scan torch"), key=rates.get)
    projected_h = AFFECTNET_TRAIN / rates[best] / 3600
    print(f"projected wall time for {AFFECTNET_TRAIN:,} images ({best}): {projected_h:.2f} h")
    out = {
        "benchmark": "scan", "model": args.model, "image": [channels, size, size], "batch": args.batch, "n": args.n,
        "steps": args.steps, "rounds": args.rounds, "amp": args.amp, "cuda_graph": args.cuda_graph,
        "compile": args.compile, "compile_seconds": None if compile_s is None else round(compile_s, 2), "device": str(device),
        "machine": machine, "torch": torch.__version__, "build": ops.build_info(),
        "samples_per_s": {k: round(v, 2) for k, v in rates.items()},
        "best_scan_row": best,
        "speedup_vs_torchattacks": round(rates[best] / rates["torchattacks"], 3) if "torchattacks" in rates else None,
        "fraction_of_bound": round(rates[best] / rates["bound"], 3) if "bound" in rates else None,
        "projected_hours_affectnet": round(projected_h, 3), **agree,
    }
    emit_json(out, args.json)


if __name__ == "__main__":
    main()

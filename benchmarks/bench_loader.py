"""Images/s of the DALI pipeline against the torch DataLoader on the same JPEG files.

Two sets of files are written to a temporary folder:

* ``cifar``: the first ``--cifar`` CIFAR-10 JPEGs (32×32) from the shared data, as shipped
  bytes, in an image-folder layout; loaded at their own size.
* ``faces``: ``--faces`` synthetic 640×480 face-like JPEGs with a face box each (a CSV
  manifest); the box is cropped and resized to ``--size`` (224), as for AffectNet.

Each backend reads each set for ``--epochs`` timed epochs after one warm-up epoch, with equal
worker counts (DALI threads = DataLoader worker processes). DALI runs on the CPU, and also
with GPU decode (``device="mixed"``) when CUDA is available.

    python benchmarks/bench_loader.py --cifar 5000 --faces 300 --workers 2 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import machine_name

from gaave_fast.data import (
    dali_available,
    make_loader,
    read_image_folder,
    read_manifest,
)


def write_cifar(npz: Path, n: int, out: Path) -> Path:
    """The first n CIFAR-10 JPEG files, bytes unchanged, as ``out/<label>/<i>.jpg``."""
    with np.load(npz) as z:
        blob, offsets, labels = z["jpeg"], z["offsets"], z["label"]
    for i in range(n):
        path = out / f"{labels[i]}" / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob[offsets[i]:offsets[i + 1]].tobytes())
    return out


def write_faces(n: int, out: Path, seed: int = 0) -> Path:
    """n smooth 640×480 JPEGs (quality 90) with an elliptic face and its box; returns the manifest."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:480, 0:640].astype(np.float32)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["path,label,x,y,w,h"]
    for i in range(n):
        img = rng.uniform(40, 200, 3) + rng.uniform(-0.2, 0.2, 3) * xx[..., None] + rng.uniform(-0.2, 0.2, 3) * yy[..., None]
        w, h = int(rng.integers(160, 320)), int(rng.integers(200, 400))
        x, y = int(rng.integers(0, 640 - w)), int(rng.integers(0, 480 - h))
        face = ((xx - x - w / 2) / (w / 2)) ** 2 + ((yy - y - h / 2) / (h / 2)) ** 2 < 1
        img[face] = rng.uniform(120, 230, 3)
        img += rng.normal(0, 6, img.shape)  # sensor noise: JPEGs of realistic size
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(out / f"{i:05d}.jpg", quality=90)
        lines.append(f"{i:05d}.jpg,{i % 7},{x},{y},{w},{h}")
    manifest = out / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def time_loader(dataset, backend: str, device: str, args) -> dict:
    """Build time and steady images/s (mean of the timed epochs) of one backend on one dataset."""
    start = time.perf_counter()
    loader = make_loader(dataset, backend, batch_size=args.batch_size, workers=args.workers, device=device,
                         check="none", shuffle=True)
    built = time.perf_counter() - start

    def epoch() -> int:
        count = 0
        for batch in loader:
            image = batch["image"]
            if image.is_cuda:
                torch.cuda.synchronize()
            count += len(batch["index"])
        return count

    warm = time.perf_counter()
    seen = epoch()
    first = time.perf_counter() - warm
    times = []
    for _ in range(args.epochs):
        t = time.perf_counter()
        assert epoch() == seen == len(dataset)
        times.append(time.perf_counter() - t)
    return {"backend": backend, "device": device, "images": seen, "build_s": round(built, 3),
            "first_epoch_s": round(first, 3), "epoch_s": [round(t, 3) for t in times],
            "images_per_s": round(seen / float(np.mean(times)), 1)}


def machine() -> dict:
    info = {"cpu": machine_name(torch.device("cpu")), "cpus": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__,
            "gpu": machine_name(torch.device("cuda")) if torch.cuda.is_available() else None}
    if dali_available():
        import nvidia.dali

        info["dali"] = nvidia.dali.__version__
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_data = os.environ.get("GAAVE_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--data", default=default_data, help="shared data folder (GAAVE_DATA)")
    parser.add_argument("--cifar", type=int, default=5000, help="CIFAR-10 JPEGs to read (0 = skip)")
    parser.add_argument("--faces", type=int, default=300, help="synthetic 640x480 faces to read (0 = skip)")
    parser.add_argument("--size", type=int, default=224, help="face output size")
    parser.add_argument("--workers", type=int, default=2, help="DALI threads = DataLoader workers")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs after one warm-up")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the work belongs to the loaders' own workers

    devices = ["cpu"] + (["gpu"] if torch.cuda.is_available() else [])
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        sets = {}
        npz = Path(args.data) / "cifar10" / "cifar10_jpeg.npz"
        if args.cifar and npz.exists():
            sets["cifar 32x32"] = read_image_folder(write_cifar(npz, args.cifar, Path(tmp) / "cifar"), image_size=32)
        elif args.cifar:
            print(f"skipping CIFAR-10: no {npz}")
        if args.faces:
            sets[f"faces 640x480 -> {args.size}"] = read_manifest(write_faces(args.faces, Path(tmp) / "faces"),
                                                                   image_size=args.size)
        for name, dataset in sets.items():
            runs = [("torch", "cpu")] + ([("dali", d) for d in devices] if dali_available() else [])
            for backend, device in runs:
                result = {"dataset": name, **time_loader(dataset, backend, device, args)}
                results.append(result)
                print(f"{name:24s} {backend:5s} {device:3s} workers={args.workers} "
                      f"{result['images_per_s']:9.1f} img/s  (build {result['build_s']:.2f} s, "
                      f"first epoch {result['first_epoch_s']:.2f} s)", flush=True)
    report = {"machine": machine(), "workers": args.workers, "batch_size": args.batch_size, "results": results}
    print()
    print(f"{'dataset':24s} {'backend':12s} {'images':>7s} {'img/s':>9s}")
    for r in results:
        print(f"{r['dataset']:24s} {r['backend'] + '/' + r['device']:12s} {r['images']:7d} {r['images_per_s']:9.1f}")
    print(f"machine: {report['machine']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

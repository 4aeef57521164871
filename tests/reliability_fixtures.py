"""Tiny data and models shared by the reliability tests (tests/test_reliability_*.py)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: tiny models run ~100x slower with oversubscribed threads on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


SCAN = {"eps": 4 / 255, "alpha": 1 / 255, "steps": 3, "progress": False}


class TinyImages(Dataset):
    """``n`` random 3×8×8 images in [0, 0.8] with labels 0..2; items are (image, label, index).

    ``with_labels`` exposes a ``labels`` attribute (as the package's datasets do); without it
    a scan can only tell the data apart by what the loader yields.
    """

    def __init__(self, n: int = 12, seed: int = 0, with_labels: bool = True, labels: torch.Tensor | None = None):
        gen = torch.Generator().manual_seed(seed)
        self.images = torch.rand(n, 3, 8, 8, generator=gen) * 0.8
        self._labels = torch.randint(0, 3, (n,), generator=gen) if labels is None else labels
        if with_labels:
            self.labels = self._labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], int(self._labels[i]), i


def tiny_model(channels: int = 3, seed: int = 0) -> torch.nn.Module:
    """Conv + BatchNorm + linear classifier of 3 classes on 8×8 images."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(channels, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(16, 3)).eval()


def write_rgb(path: Path, rgb: np.ndarray, **save) -> Path:
    """Write a uint8 H×W×3 array as an image file (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, **save)
    return path


def smooth_rgb(seed: int, size: int = 16) -> np.ndarray:
    """A smooth random uint8 size×size×3 image (survives JPEG)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = rng.uniform(40, 200, 3)
    return np.clip(base + (xx[..., None] * rng.uniform(-3, 3, 3)) + yy[..., None] * rng.uniform(-3, 3, 3),
                   0, 255).astype(np.uint8)


def image_folder(root: Path, per_class: int = 4, classes: tuple[str, ...] = ("happy", "sad"), size: int = 16) -> Path:
    """``root/<class>/<i>.png`` smooth images; returns ``root``."""
    for c, name in enumerate(classes):
        for i in range(per_class):
            write_rgb(root / name / f"{i}.png", smooth_rgb(100 * c + i, size))
    return root


def export_model(model: torch.nn.Module, path: Path, channels: int = 3, dynamic: bool = True) -> Path:
    """``torch.export.save`` of ``model`` on 8×8 images (batch dimension dynamic unless told)."""
    x = torch.rand(2, channels, 8, 8)
    shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    torch.export.save(torch.export.export(model, (x,), dynamic_shapes=shapes), path)
    return path


def rewrite_member(path: Path, suffix: str, change) -> None:
    """Replace the archive member whose name ends with ``suffix`` by ``change(old_bytes)``."""
    with zipfile.ZipFile(path) as z:
        members = [(info, z.read(info)) for info in z.infolist()]
    with zipfile.ZipFile(path, "w") as z:
        for info, data in members:
            z.writestr(info, change(data) if info.filename.endswith(suffix) else data)


class Payload:
    """Unpickling this runs ``exec`` of code that writes ``marker``: a stand-in for malware."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


def payload_bytes(marker: Path) -> bytes:
    """A ``torch.save`` file whose loading (weights_only=False) runs :class:`Payload`."""
    buffer = io.BytesIO()
    torch.save((Payload(marker),), buffer)
    return buffer.getvalue()


def corrupt_pixels(path: Path) -> None:
    """Mangle a PNG's compressed pixel data, keeping its header and end: only a full decode notices."""
    data = bytearray(path.read_bytes())
    start = data.index(b"IDAT") + 8
    for k in range(start, min(start + 40, len(data) - 16)):
        data[k] ^= 0x5A
    path.write_bytes(bytes(data))


# A gaave run small enough for a test: 1 epoch per model, 1 attack step, 8×8 images.
TINY_RUN = ["--arch", "small_cnn", "--width", "4", "--base-epochs", "1", "--gaave-epochs", "1", "--epochs", "1",
            "--steps", "1", "--batch-size", "4", "--scan-batch-size", "16", "--device", "cpu", "--image-size", "8",
            "--threads", "1", "--no-progress", "--tau", "1", "--check-workers", "0", "--test", "none", "--no-report",
            "--no-baseline"]

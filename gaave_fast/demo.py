"""The embedded demo: a small noisy, long-tailed set of synthetic faces written as JPEG files.

``gaave demo`` needs no external data. :func:`make_demo_dataset` draws cartoon faces whose
expression (eyebrows, eyes, mouth) is the class, with random face position, size, tilt, skin
and background colours and pixel noise, and writes them in the image-folder layout
(``<root>/train/<class>/<file>.jpg``), so the demo reads them through the same reader,
validation and decoding path as real data. The training folders hold *noisy* labels (a
known fraction of each class is filed under another class); ``truth.csv`` records every
training image's true class so the report can score the detection. Two deliberately broken
files (one truncated, one empty) show the validation step excluding them.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from gaave_fast.data.noise import pair_noise, symmetric_noise
from gaave_fast.pipeline import PipelineConfig, TrainConfig

# Sorted, so the image-folder reader gives them ids 0..4 in this order.
DEMO_CLASSES = ("angry", "happy", "neutral", "sad", "surprise")
# Long tail: the common expressions of in-the-wild FER data first (imbalance ratio 7.5).
DEMO_TRAIN_COUNTS = {"happy": 600, "neutral": 400, "sad": 240, "surprise": 140, "angry": 80}
BROKEN_FILES = ("happy/broken_truncated.jpg", "sad/broken_empty.jpg")
_SUPERSAMPLE = 4  # draw at 4x and shrink: smooth features on a 32-pixel face


@dataclass(frozen=True)
class DemoSpec:
    """What :func:`make_demo_dataset` writes.

    Attributes:
        image_size: side of the square JPEGs in pixels.
        train_counts: true training images per class name.
        test_per_class: clean test images per class.
        noise: ``"symmetric"`` (filed under a uniformly drawn other class) or ``"pair"``
            (class c under class c + 1).
        noise_rate: fraction of each class's training images filed under a wrong class.
        broken: also write the two broken files of :data:`BROKEN_FILES`.
        seed: seeds the drawings and the noise.
    """

    image_size: int = 32
    train_counts: dict[str, int] = field(default_factory=lambda: dict(DEMO_TRAIN_COUNTS))
    test_per_class: int = 100
    noise: str = "symmetric"
    noise_rate: float = 0.2
    broken: bool = True
    seed: int = 0


def draw_face(expression: str, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """One cartoon face showing ``expression`` (one of :data:`DEMO_CLASSES`), uint8 size×size×3."""
    if expression not in DEMO_CLASSES:
        raise ValueError(f"expression must be one of {DEMO_CLASSES}, got {expression!r}")
    s = size * _SUPERSAMPLE
    bg = rng.uniform(30, 220, 3)
    img = Image.new("RGB", (s, s), tuple(int(v) for v in bg))
    d = ImageDraw.Draw(img)
    cx, cy = s * (0.5 + rng.uniform(-0.06, 0.06)), s * (0.5 + rng.uniform(-0.06, 0.06))
    rx, ry = s * rng.uniform(0.30, 0.36), s * rng.uniform(0.38, 0.44)
    skin = np.array([225, 180, 150]) * rng.uniform(0.55, 1.1) + rng.normal(0, 12, 3)
    d.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=_rgb(skin))
    dark = _rgb(rng.uniform(10, 60, 3))
    lw = max(2, round(s * rng.uniform(0.035, 0.05)))

    # Eyes: wide open for surprise.
    ex, ey = rx * rng.uniform(0.36, 0.46), cy - ry * rng.uniform(0.12, 0.22)
    er = s * (rng.uniform(0.05, 0.06) if expression == "surprise" else rng.uniform(0.03, 0.042))
    for side in (-1, 1):
        d.ellipse([cx + side * ex - er, ey - er, cx + side * ex + er, ey + er], fill=dark)

    # Eyebrows: (inner end height, outer end height) above the eye, in units of the face height.
    brow = {"angry": (0.06, 0.17), "sad": (0.20, 0.10), "surprise": (0.27, 0.25)}.get(expression, (0.14, 0.14))
    jitter = rng.normal(0, 0.015, 2)
    for side in (-1, 1):
        inner = (cx + side * ex * 0.35, ey - ry * (brow[0] + jitter[0]))
        outer = (cx + side * ex * 1.55, ey - ry * (brow[1] + jitter[1]))
        d.line([inner, outer], fill=dark, width=lw)

    # Mouth.
    my, mw = cy + ry * rng.uniform(0.40, 0.52), rx * rng.uniform(0.40, 0.58)
    curve = ry * rng.uniform(0.12, 0.2)
    if expression == "happy":
        d.arc([cx - mw, my - curve, cx + mw, my + curve], 10, 170, fill=dark, width=lw)
    elif expression == "sad":
        d.arc([cx - mw, my, cx + mw, my + 2 * curve], 190, 350, fill=dark, width=lw)
    elif expression == "surprise":
        mo = mw * rng.uniform(0.35, 0.5)
        d.ellipse([cx - mo, my - mo * 0.9, cx + mo, my + mo * 1.3], fill=dark)
    else:  # neutral and angry: a straight, slightly tilted line (anger is in the brows)
        tilt = rng.normal(0, 0.03) * s
        d.line([(cx - mw * 0.8, my - tilt), (cx + mw * 0.8, my + tilt)], fill=dark, width=lw)

    img = img.rotate(float(rng.uniform(-8, 8)), resample=Image.BILINEAR, fillcolor=tuple(int(v) for v in bg))
    img = img.resize((size, size), Image.LANCZOS)
    pixels = np.asarray(img, dtype=np.float64) + rng.normal(0, rng.uniform(2, 8), (size, size, 3))
    return np.clip(pixels, 0, 255).round().astype(np.uint8)


def make_demo_dataset(root: str | Path, spec: DemoSpec = DemoSpec()) -> dict[str, Path]:
    """Write the demo dataset under ``root`` (kept as it is when ``root/spec.json`` matches).

    Layout::

        <root>/train/<class>/<class>_<i>.jpg   training images, filed under their noisy label
        <root>/test/<class>/<class>_<i>.jpg    clean test images
        <root>/truth.csv                       path,label,true_label for every training image
        <root>/spec.json                       the DemoSpec

    Returns:
        ``{"train": ..., "test": ..., "truth": ...}`` paths.
    """
    import json

    root = Path(root)
    paths = {"train": root / "train", "test": root / "test", "truth": root / "truth.csv"}
    spec_path = root / "spec.json"
    text = json.dumps(asdict(spec), sort_keys=True)
    if spec_path.exists() and spec_path.read_text() == text and paths["truth"].exists():
        return paths  # written before by the same spec: a resumed demo reuses it
    if spec.noise not in ("pair", "symmetric"):
        raise ValueError(f"noise must be 'pair' or 'symmetric', got {spec.noise!r}")
    unknown = set(spec.train_counts) - set(DEMO_CLASSES)
    if unknown:
        raise ValueError(f"train_counts has unknown classes {sorted(unknown)}; classes are {DEMO_CLASSES}")
    rng = np.random.default_rng(spec.seed)

    true = np.concatenate([np.full(spec.train_counts.get(c, 0), k) for k, c in enumerate(DEMO_CLASSES)])
    flip = pair_noise if spec.noise == "pair" else symmetric_noise
    noisy, _ = flip(true, spec.noise_rate, len(DEMO_CLASSES), spec.seed)
    rows = []
    for i, (t, n) in enumerate(zip(true, noisy)):
        rel = Path(DEMO_CLASSES[n]) / f"{DEMO_CLASSES[n]}_{i:04d}.jpg"
        _write_jpeg(paths["train"] / rel, draw_face(DEMO_CLASSES[t], rng, spec.image_size))
        rows.append((str(Path("train") / rel), DEMO_CLASSES[n], DEMO_CLASSES[t]))
    for c in DEMO_CLASSES:
        for i in range(spec.test_per_class):
            _write_jpeg(paths["test"] / c / f"{c}_{i:04d}.jpg", draw_face(c, rng, spec.image_size))
    if spec.broken:
        good = (paths["train"] / rows[0][0].split("/", 1)[1]).read_bytes()
        for rel, data in zip(BROKEN_FILES, (good[: len(good) // 2], b"")):
            target = paths["train"] / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    with open(paths["truth"], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "true_label"])
        w.writerows(rows)
    spec_path.write_text(text)
    return paths


def demo_config(seed: int = 0) -> PipelineConfig:
    """The pipeline settings of the demo: a small CNN on 32-pixel faces, a few minutes on one CPU core.

    A cosine schedule for the annotators, the final model and the baseline makes the test
    accuracy of the last epoch stable (with a constant rate it swings by 10 points between
    epochs on this data, which would decide the comparison by chance).
    """
    train = {"batch_size": 32, "progress": False}
    return PipelineConfig(
        seed=seed, arch="small_cnn", width=16,
        base=TrainConfig(epochs=6, **train), gaave_epochs=4,
        annotator=TrainConfig(epochs=10, schedule="cosine", **train),
        final=TrainConfig(epochs=15, schedule="cosine", **train),
        device="cpu", scan_backend="fused", scan_batch_size=128)


def _rgb(v: np.ndarray) -> tuple[int, int, int]:
    r, g, b = (int(min(255, max(0, round(x)))) for x in v)
    return r, g, b


def _write_jpeg(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, quality=90)


__all__ = ["BROKEN_FILES", "DEMO_CLASSES", "DEMO_TRAIN_COUNTS", "DemoSpec", "demo_config", "draw_face",
           "make_demo_dataset"]

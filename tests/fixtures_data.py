"""Tiny on-disk datasets in each publisher's exact layout, for the data-layer tests.

Each builder writes into a folder (pytest's ``tmp_path``) and returns what it wrote, so tests
compare the readers against the fixture's own record rather than against the code under test.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image


def face_like(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth RGB image with an elliptic "face", uint8 H×W×3 (JPEG-friendly, seed-dependent)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    base = rng.uniform(40, 200, 3)
    slope = rng.uniform(-0.6, 0.6, (3, 2))
    img = base + slope[:, 0] * xx[..., None] + slope[:, 1] * yy[..., None]
    cy, cx = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width
    inside = ((yy - cy) / (0.3 * height)) ** 2 + ((xx - cx) / (0.22 * width)) ** 2 < 1
    img[inside] = rng.uniform(120, 230, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def coordinate_image(height: int, width: int) -> np.ndarray:
    """uint8 H×W×3 with R = x, G = y, B = 7: a crop's corner pixel tells where it was cut."""
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx, yy, np.full_like(xx, 7)], axis=-1).astype(np.uint8)


def write_image(path: Path, rgb: np.ndarray, quality: int = 92) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, quality=quality) if path.suffix.lower() in (".jpg", ".jpeg") \
        else Image.fromarray(rgb).save(path)
    return path


def truncate(path: Path, keep: float = 0.5) -> None:
    """Cut a file to a fraction of its bytes (a crawl interrupted mid-download)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def corrupt_scan(path: Path) -> None:
    """Overwrite bytes inside the JPEG scan, keeping header and end marker (decoders disagree on these)."""
    data = bytearray(path.read_bytes())
    for k in range(len(data) // 3, len(data) - 4, 53):
        data[k] = (data[k] * 7 + 13) % 256
    path.write_bytes(bytes(data))


# RAF-DB -------------------------------------------------------------------------------------

def make_rafdb(root: Path, n_train: int = 6, n_test: int = 4, seed: int = 0) -> list[tuple[str, int]]:
    """``EmoLabel/list_patition_label.txt`` + ``Image/aligned/*_aligned.jpg`` (100×100).

    Returns the (name, code 1..7) lines in file order.
    """
    rng = np.random.default_rng(seed)
    lines = [(f"train_{i:05d}.jpg", int(rng.integers(1, 8))) for i in range(1, n_train + 1)]
    lines += [(f"test_{i:04d}.jpg", int(rng.integers(1, 8))) for i in range(1, n_test + 1)]
    (root / "EmoLabel").mkdir(parents=True, exist_ok=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("".join(f"{n} {c}\n" for n, c in lines))
    for k, (name, _) in enumerate(lines):
        write_image(root / "Image" / "aligned" / name.replace(".jpg", "_aligned.jpg"), face_like(100, 100, k))
    return lines


# FERPlus / FER2013 --------------------------------------------------------------------------

FERPLUS_HEADER = ["Usage", "Image name", "neutral", "happiness", "surprise", "sadness", "anger", "disgust",
                  "fear", "contempt", "unknown", "NF"]

# (votes, kept by "majority" with this label, kept by "distribution" with this distribution over the
# 8 emotions): worked out by hand from FERPlus's rules (stray single votes dropped, majority when the
# top count > half of the votes; distribution: up to 3 top emotions covering 75% of the votes).
FERPLUS_CASES = [
    ([0, 8, 1, 1, 0, 0, 0, 0, 0, 0], 1, [0, 1, 0, 0, 0, 0, 0, 0]),          # strays removed: happiness 8/8
    ([4, 4, 2, 0, 0, 0, 0, 0, 0, 0], None, [.5, .5, 0, 0, 0, 0, 0, 0]),     # tie: no majority; 8/10 covered
    ([1, 1, 1, 1, 1, 1, 1, 1, 1, 1], None, None),                            # all strays
    ([0, 0, 0, 0, 0, 0, 0, 0, 10, 0], None, None),                           # unknown
    ([0, 0, 0, 0, 0, 0, 0, 0, 0, 10], None, None),                           # not a face
    ([6, 0, 0, 0, 0, 0, 0, 0, 4, 0], 0, [1, 0, 0, 0, 0, 0, 0, 0]),           # unknown votes ignored after neutral
    ([3, 3, 2, 2, 0, 0, 0, 0, 0, 0], None, None),                            # 4 emotions needed: discarded
    ([0, 2, 0, 0, 0, 0, 0, 0, 0, 0], 1, [0, 1, 0, 0, 0, 0, 0, 0]),           # two votes
    ([5, 3, 2, 0, 0, 0, 0, 0, 0, 0], None, [5 / 8, 3 / 8, 0, 0, 0, 0, 0, 0]),  # 5 is not > 5
    ([0, 0, 0, 0, 0, 0, 0, 7, 3, 0], 7, [0, 0, 0, 0, 0, 0, 0, 1]),           # contempt
]


def make_ferplus(root: Path, seed: int = 0) -> dict:
    """``fer2013new.csv`` + ``FER2013Train|Valid|Test/*.png`` + the original ``fer2013.csv``.

    Rows: the FERPLUS_CASES as Training rows, then one row with an empty image name (not a
    face), then one PublicTest and one PrivateTest row. Returns the pixels and rows written.
    """
    rng = np.random.default_rng(seed)
    rows = [("Training", f"fer{i:07d}.png", votes) for i, (votes, _, _) in enumerate(FERPLUS_CASES)]
    rows.append(("Training", "", [10, 0, 0, 0, 0, 0, 0, 0, 0, 0]))
    rows.append(("PublicTest", f"fer{len(rows):07d}.png", [0, 0, 9, 0, 0, 0, 0, 0, 1, 0]))
    rows.append(("PrivateTest", f"fer{len(rows):07d}.png", [0, 0, 0, 10, 0, 0, 0, 0, 0, 0]))
    folders = {"Training": "FER2013Train", "PublicTest": "FER2013Valid", "PrivateTest": "FER2013Test"}
    pixels = rng.integers(0, 256, (len(rows), 48, 48)).astype(np.uint8)
    emotions = rng.integers(0, 7, len(rows))
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "fer2013new.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(FERPLUS_HEADER)
        for usage, name, votes in rows:
            w.writerow([usage, name, *votes])
    with open(root / "fer2013.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["emotion", "pixels", "Usage"])
        for k, (usage, _, _) in enumerate(rows):
            w.writerow([int(emotions[k]), " ".join(map(str, pixels[k].ravel())), usage])
    for k, (usage, name, _) in enumerate(rows):
        if name:
            path = root / folders[usage] / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels[k], mode="L").save(path)
    return {"rows": rows, "pixels": pixels, "emotions": emotions}


# AffectNet ----------------------------------------------------------------------------------

AFFECTNET_HEADER = ["subDirectory_filePath", "face_x", "face_y", "face_width", "face_height",
                    "facial_landmarks", "expression", "valence", "arousal"]


def make_affectnet(root: Path, n: int = 24, height: int = 96, width: int = 128, seed: int = 0,
                   header: bool = True, split_file: str = "training.csv") -> list[dict]:
    """``Manually_Annotated_file_lists/<split_file>`` + ``Manually_Annotated_Images/<dir>/<hash>.jpg``.

    Expression codes cycle through 0..10 so every code appears (8, 9, 10 and, in 7-class mode, 7
    must be dropped); boxes lie inside the image except where a test damages them. Returns one
    dict per csv row (path relative to the image folder, box, code).
    """
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        rel = f"{100 + i % 3}/{rng.bytes(8).hex()}.jpg"
        w, h = int(rng.integers(24, width // 2)), int(rng.integers(24, height // 2))
        x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        landmarks = ";".join(f"{v:.2f}" for v in rng.uniform(0, 90, 136))
        records.append({"rel": rel, "box": (x, y, w, h), "code": i % 11, "landmarks": landmarks,
                        "valence": round(float(rng.uniform(-1, 1)), 3), "arousal": round(float(rng.uniform(-1, 1)), 3)})
        write_image(root / "Manually_Annotated_Images" / rel, face_like(height, width, 1000 + i))
    write_affectnet_csv(root / "Manually_Annotated_file_lists" / split_file, records, header)
    return records


def write_affectnet_csv(path: Path, records: list[dict], header: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        if header:
            w.writerow(AFFECTNET_HEADER)
        for r in records:
            w.writerow([r["rel"], *r["box"], r["landmarks"], r["code"], r["valence"], r["arousal"]])

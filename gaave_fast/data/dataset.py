"""The common record type of all file-based readers: :class:`FaceDataset`.

Every reader (RAF-DB, FERPlus, AffectNet, image folder, CSV manifest) returns a
``FaceDataset`` whose ``samples`` table has one row per usable sample:

========  ========  ==========================================================
column    dtype     meaning
========  ========  ==========================================================
path      str       absolute path of the image file
label     int64     class index into ``dataset.classes``
row       int64     the sample's row in the publisher's label file (0-based)
x,y,w,h   float64   face box in pixels (only when the format has boxes; NaN = whole image)
========  ========  ==========================================================

Items are ``(image, label, index)``: ``image`` float32 C×H×W (C = 3, RGB), in [0, 1]
pixel units or normalized ``(x - mean_c) / std_c``; ``label`` int; ``index`` the position of
the sample in ``samples`` (the "dataset row" of the loader contract).

Decoding here (PIL) and in the DALI pipeline (:mod:`gaave_fast.data.dali`) follow the same
recipe so the two backends agree: decode to RGB without EXIF rotation (boxes refer to the
stored pixel grid), crop the box clipped to the image, resize with an antialiased bilinear
filter in float (no rounding to uint8), divide by 255, normalize.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

BOX_COLUMNS = ("x", "y", "w", "h")
_REQUIRED = ("path", "label", "row")


def clip_box(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int] | None:
    """Round a face box to whole pixels and clip it to the image.

    Args:
        box: ``(x, y, w, h)`` in pixels; all NaN means "no box" (the whole image).
        width, height: image size in pixels.

    Returns:
        ``(x0, y0, x1, y1)`` with ``0 <= x0 < x1 <= width`` and ``0 <= y0 < y1 <= height``,
        or ``None`` for a bad box (partly NaN, non-positive size, or no overlap with the image).
        Boxes that stick out of the image are clipped rather than rejected, as crawled
        detections often touch the border.
    """
    x, y, w, h = (float(v) for v in box)
    finite = [math.isfinite(v) for v in (x, y, w, h)]
    if not any(finite):
        return 0, 0, int(width), int(height)
    if not all(finite) or w <= 0 or h <= 0:
        return None
    x0, y0 = max(round(x), 0), max(round(y), 0)
    x1, y1 = min(round(x + w), int(width)), min(round(y + h), int(height))
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


# Pixel modes whose scale is ambiguous (32-bit integers, floats): refused rather than guessed.
UNSUPPORTED_MODES = {"I": "32-bit integer", "F": "32-bit float"}


def unsupported_mode(mode: str) -> str | None:
    """Why an image of this PIL mode is not read (None when it is), for :func:`validate`'s table."""
    if mode in UNSUPPORTED_MODES:
        return (f"unsupported pixel mode {mode} ({UNSUPPORTED_MODES[mode]} values have no known 0..255 scale); "
                "save it as 8- or 16-bit")
    return None


def to_rgb(im: Image.Image) -> np.ndarray:
    """A decoded PIL image as RGB, uint8 H×W×3 (writable).

    16-bit images (modes ``I;16*``) are scaled to 8 bits (value / 257, rounded), not clipped;
    alpha and palette transparency are dropped (as DALI does); CMYK, LA, P, 1, YCbCr go through
    PIL's conversion. Modes of :data:`UNSUPPORTED_MODES` raise ValueError.
    """
    problem = unsupported_mode(im.mode)
    if problem is not None:
        raise ValueError(problem)
    if im.mode.startswith("I;16"):
        gray = (np.asarray(im, dtype=np.uint32) * 255 + 32767) // 65535
        return np.repeat(gray.astype(np.uint8)[..., None], 3, axis=2)
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")  # PIL warns on P -> RGB with byte transparency
    return np.array(im.convert("RGB"))  # writable: torch.from_numpy warns on read-only arrays


def read_rgb(path: str) -> np.ndarray:
    """Fully decode an image file to RGB, uint8 H×W×3 (no EXIF rotation, like DALI here; see :func:`to_rgb`)."""
    with Image.open(path) as im:
        return to_rgb(im)


def to_unit_tensor(rgb: np.ndarray, image_size: tuple[int, int] | None) -> torch.Tensor:
    """uint8 H×W×C -> float32 C×h×w in [0, 1], resized with an antialiased bilinear filter.

    The resize runs in float on 0..255 values (no rounding back to uint8), as DALI's
    ``fn.resize(..., dtype=FLOAT)`` does. ``image_size`` is ``(height, width)`` or ``None``.
    """
    x = torch.from_numpy(np.ascontiguousarray(rgb))
    x = (x[..., None] if x.ndim == 2 else x).permute(2, 0, 1).float()
    if image_size is not None and tuple(x.shape[1:]) != tuple(image_size):
        # antialias=True follows PIL's (and DALI's) triangle filter when shrinking.
        x = F.interpolate(x[None], size=image_size, mode="bilinear", antialias=True, align_corners=False)[0]
    return x / 255.0


def normalize(x: torch.Tensor, mean: Sequence[float] | None, std: Sequence[float] | None) -> torch.Tensor:
    """``(x - mean_c) / std_c`` on a float C×H×W tensor; ``None`` means 0 (mean) or 1 (std)."""
    if mean is None and std is None:
        return x
    c = x.shape[0]
    m = torch.tensor(mean if mean is not None else [0.0] * c, dtype=x.dtype).view(-1, 1, 1)
    s = torch.tensor(std if std is not None else [1.0] * c, dtype=x.dtype).view(-1, 1, 1)
    return (x - m) / s


def as_size(image_size: int | Sequence[int] | None) -> tuple[int, int] | None:
    """``224`` -> ``(224, 224)``; ``(h, w)`` kept; ``None`` kept. Raises ValueError otherwise."""
    if image_size is None:
        return None
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    size = tuple(int(v) for v in image_size)
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"image_size must be a positive int or (height, width), got {image_size!r}")
    return size  # type: ignore[return-value]


class FaceDataset(torch.utils.data.Dataset):
    """Image files with labels, optional face boxes and the publisher's row of each sample.

    Args:
        samples: table with columns ``path``, ``label``, ``row`` and optionally ``x, y, w, h``
            (see the module docstring); extra columns are kept as metadata. It is read once
            here: build a new dataset rather than editing ``samples`` afterwards.
        classes: class names, ``classes[label]``.
        image_size: output size, an int (square) or ``(height, width)``; ``None`` keeps each
            crop's own size (only usable with batch size 1).
        mean, std: per-channel normalization in [0, 1] units; ``None`` leaves [0, 1] pixels.
        transform: optional callable applied to the float32 3×H×W tensor in [0, 1], before
            normalization (e.g. augmentation).
        name: a short description for messages (e.g. ``"RAF-DB train"``).
    """

    def __init__(
        self,
        samples: pd.DataFrame,
        classes: Sequence[str],
        *,
        image_size: int | Sequence[int] | None = 224,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        name: str = "",
    ) -> None:
        missing = [c for c in _REQUIRED if c not in samples.columns]
        if missing:
            raise ValueError(f"samples table lacks columns {missing}")
        has_box = [c in samples.columns for c in BOX_COLUMNS]
        if any(has_box) and not all(has_box):
            raise ValueError(f"samples table needs all of {BOX_COLUMNS} or none, got {list(samples.columns)}")
        for arg, value in (("mean", mean), ("std", std)):
            if value is not None and len(value) != 3:
                raise ValueError(f"{arg} must have 3 values (RGB), got {value!r}")
        self.samples = samples.reset_index(drop=True)
        self.samples["label"] = self.samples["label"].astype(np.int64)
        self.samples["row"] = self.samples["row"].astype(np.int64)
        self.classes = list(classes)
        self.image_size = as_size(image_size)
        self.mean = None if mean is None else tuple(float(v) for v in mean)
        self.std = None if std is None else tuple(float(v) for v in std)
        self.transform = transform
        self.name = name
        # Per-item lookups go through these arrays: pandas indexing costs microseconds per call.
        self._paths = self.samples["path"].astype(str).tolist()
        self._labels = self.samples["label"].to_numpy()
        self._boxes = self.samples[list(BOX_COLUMNS)].to_numpy(dtype=np.float64) if all(has_box) else None
        labels = self._labels
        if len(labels) and (labels.min() < 0 or labels.max() >= len(self.classes)):
            raise ValueError(f"{name or 'dataset'}: labels must lie in 0..{len(self.classes) - 1}")

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return f"FaceDataset({self.name!r}, {len(self)} samples, {len(self.classes)} classes)"

    @property
    def labels(self) -> np.ndarray:
        """int64 [N] class of each sample."""
        return self._labels

    @property
    def paths(self) -> list[str]:
        """Absolute image path of each sample, [N]."""
        return list(self._paths)

    @property
    def boxes(self) -> np.ndarray | None:
        """float64 [N, 4] ``(x, y, w, h)`` in pixels, NaN rows = whole image; ``None`` if no boxes."""
        return self._boxes

    def read_crop(self, index: int) -> np.ndarray:
        """The face crop of sample ``index``, uint8 h×w×3, before resizing.

        Raises:
            OSError: the file is missing, unreadable or truncated.
            ValueError: the box is bad (see :func:`clip_box`).
        """
        path = self._paths[index]
        rgb = read_rgb(path)
        boxes = self._boxes
        if boxes is None:
            return rgb
        crop = clip_box(boxes[index], rgb.shape[1], rgb.shape[0])
        if crop is None:
            raise ValueError(f"bad box {tuple(float(v) for v in boxes[index])} for {path} ({rgb.shape[1]}x{rgb.shape[0]})")
        x0, y0, x1, y1 = crop
        return rgb[y0:y1, x0:x1]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        index = int(index)
        x = to_unit_tensor(self.read_crop(index), self.image_size)
        if self.transform is not None:
            x = self.transform(x)
        return normalize(x, self.mean, self.std), int(self._labels[index]), index

    def metadata(self, index: int) -> dict[str, Any]:
        """The samples-table row of ``index`` as a dict (path, label, row, box, extras)."""
        return self.samples.iloc[int(index)].to_dict()


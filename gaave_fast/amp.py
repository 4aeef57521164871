"""Which low-precision dtype autocast uses on a device (one rule for training and scanning)."""

from __future__ import annotations

import torch


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bfloat16 on a CUDA device that supports it, float16 on other CUDA devices, None (float32) elsewhere."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


SCAN_AMP = ("auto", "float32", "bfloat16", "float16")
"""Names of the scan's autocast choices (``PipelineConfig.scan_amp``, ``--scan-amp``)."""


def scan_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """The scan's autocast dtype for a ``scan_amp`` name; None = float32 (no autocast).

    ``"auto"`` is bfloat16 on a CUDA device that supports it and float32 elsewhere (on a CPU,
    float32 keeps k exactly equal to every reference; the measurement behind the choice is in
    docs/pipeline.md, "The scan's precision and compilation").
    """
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    dtypes = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in dtypes:
        raise ValueError(f"scan_amp must be one of {SCAN_AMP}, got {name!r}")
    return dtypes[name]

"""Which low-precision dtype autocast uses on a device (one rule for training and scanning)."""

from __future__ import annotations

import torch


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bfloat16 on a CUDA device that supports it, float16 on other CUDA devices, None (float32) elsewhere."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

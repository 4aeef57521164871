"""What the benchmarks ran on, in words (CPU model and threads, or the GPU's name)."""

from __future__ import annotations

import platform

import torch


def machine_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model} CPU, {torch.get_num_threads()} threads"

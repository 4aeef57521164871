"""Shared by the benchmarks: what they ran on, and how they hand their numbers over."""

from __future__ import annotations

import json
import platform
from typing import Any

import torch


def machine_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model with the number of threads torch uses."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model} CPU, {torch.get_num_threads()} threads"


def emit_json(result: dict[str, Any], path: str | None) -> None:
    """Print the result as JSON, and write it to `path` when given."""
    print(json.dumps(result, indent=2))
    if path:
        with open(path, "w") as f:
            json.dump(result, f, indent=2)

"""Resumable progress for long scans: periodic, atomic checkpoints with a fingerprint.

A checkpoint holds the per-sample results finished so far and a fingerprint of
what produced them (model weights, attack settings, data size). Resuming with a
different fingerprint is refused, since mixing results of two settings would
silently corrupt the scan.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gaave_fast import files
from gaave_fast.result import COLUMNS


def model_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 (hex, 16 chars) of the model's state dict: names, dtypes, shapes and values."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


class ScanCheckpoint:
    """Reads and writes one checkpoint file (npz) for a scan with the given fingerprint."""

    def __init__(self, path: str | os.PathLike, fingerprint: dict[str, Any], columns: tuple[str, ...] = COLUMNS):
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.columns = columns

    def load(self) -> dict[str, np.ndarray] | None:
        """The finished columns, or None when there is no checkpoint yet.

        Raises ValueError when the checkpoint comes from another model, data size
        or attack setting, naming what differs.
        """
        if not self.path.exists():
            return None
        try:
            with np.load(self.path) as data:
                saved = json.loads(str(data["fingerprint"]))
                columns = {name: data[name] for name in self.columns}
        except (KeyError, ValueError, OSError) as err:
            raise ValueError(f"checkpoint {self.path} is unreadable or not a gaave_fast scan checkpoint: {err}") from err
        differs = {
            key: (saved.get(key), value) for key, value in self.fingerprint.items() if saved.get(key) != value
        }
        if differs:
            detail = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in differs.items())
            raise ValueError(
                f"checkpoint {self.path} was written by a different scan ({detail}). "
                "Use another checkpoint path, or delete this one to start over."
            )
        return columns

    def save(self, columns: dict[str, np.ndarray]) -> None:
        """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
        files.write_npz(self.path, fingerprint=np.array(json.dumps(self.fingerprint)), **columns)

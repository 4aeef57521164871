"""Atomic file writes: every output goes to a temporary file that replaces the target in one step.

A run killed mid-write (kill -9, power loss) then leaves either the old file or the new one,
never half a file, so resuming reads only complete outputs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` (parents created).

    The temporary name keeps the suffix (``x.tmp.npz``) so writers that add one (numpy) or pick a
    format from it (pandas, torch) see the right extension.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.tmp{path.suffix}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # on disk before the rename, so a power loss keeps old or new
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_with(path: str | os.PathLike, writer: Callable[[Path], Any]) -> Path:
    """Call ``writer(tmp_path)`` and move the result to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return write_with(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (numpy scalars and arrays, dataclasses allowed)."""
    return write_text(path, json.dumps(obj, indent=2, default=jsonable))


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; a damaged one raises ValueError naming the file (not a bare parser message)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is damaged ({type(err).__name__}: {err}); delete it to recompute it") from None


def write_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """Write ``arrays`` with ``numpy.savez`` atomically."""
    return write_with(path, lambda tmp: np.savez(tmp, **arrays))


def torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically."""
    import torch

    return write_with(path, lambda tmp: torch.save(obj, tmp))


def jsonable(o: Any) -> Any:
    """JSON form of numpy scalars/arrays, dataclasses and paths (``json.dumps(default=...)``)."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if hasattr(o, "__dataclass_fields__"):
        return asdict(o)
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")

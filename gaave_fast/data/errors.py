"""Errors raised by the dataset readers.

Both subclass a builtin (``ValueError`` / ``FileNotFoundError``) so callers can catch either
the precise class or the builtin one; messages always name the file and, where it applies,
the row or line that is wrong.
"""

from __future__ import annotations

from pathlib import Path


class DatasetFormatError(ValueError):
    """A label file or manifest has wrong columns, unknown label codes or malformed rows."""


class DatasetNotFoundError(FileNotFoundError):
    """A file or folder the publisher's layout requires is missing."""


def require_file(path: str | Path, what: str, layout_hint: str = "") -> None:
    """Raise :class:`DatasetNotFoundError` naming ``path`` unless it is an existing file."""
    p = Path(path)
    if not p.is_file():
        hint = f" (expected layout: {layout_hint})" if layout_hint else ""
        raise DatasetNotFoundError(f"{what} not found: {p}{hint}")

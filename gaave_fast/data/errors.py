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


class UnreadableSampleError(RuntimeError):
    """A sample's file could not be read while a run was using it (the message names its position and error)."""


def read_label_text(path: str | Path) -> str:
    """A label file's text: UTF-8 (with or without a byte-order mark) or UTF-16 with its byte-order mark.

    Raises:
        DatasetFormatError: other encodings, naming the file and the first undecodable byte.
    """
    data = Path(path).read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding = "utf-16"
    else:
        encoding = "utf-8-sig"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as err:
        raise DatasetFormatError(f"{path}: not {encoding.upper().replace('-SIG', '')} text (byte {err.start}: "
                                 f"{err.reason}); save it as UTF-8") from None


def require_file(path: str | Path, what: str, layout_hint: str = "") -> None:
    """Raise :class:`DatasetNotFoundError` naming ``path`` unless it is an existing file."""
    p = Path(path)
    if not p.is_file():
        hint = f" (expected layout: {layout_hint})" if layout_hint else ""
        raise DatasetNotFoundError(f"{what} not found: {p}{hint}")

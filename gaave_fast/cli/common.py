"""Shared pieces of the ``gaave`` command: its error type, argument parser and small helpers."""

from __future__ import annotations

import argparse
import math
import os
import sys
from fractions import Fraction
from pathlib import Path
from typing import NoReturn

USAGE_ERROR = 2  # exit code of every mistake the user can fix (argparse uses 2 too)


class CliError(Exception):
    """A problem the user can fix (bad argument, missing file, mismatching data): exit code 2, one line."""


class Parser(argparse.ArgumentParser):
    """``argparse`` parser whose errors are one line on stderr (no usage block) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``<prog>: error: <message> (see <prog> --help)`` and exit with code 2."""
        sys.stderr.write(f"{self.prog}: error: {one_line(message)} (see '{self.prog} --help')\n")
        raise SystemExit(USAGE_ERROR)


def one_line(text: str) -> str:
    """Collapse a possibly multi-line message to one line."""
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())


def pixel_value(text: str) -> float:
    """An epsilon or step in [0, 1] pixel units: ``0.0039``, ``1/255`` or ``2/255``."""
    try:
        value = float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a number or a fraction like 1/255, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def _int_at_least(minimum: int, description: str):
    """An argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = parse.__qualname__ = description  # argparse names the type in its messages
    parse.__doc__ = f"An integer >= {minimum}."
    return parse


positive_int = _int_at_least(1, "positive_int")
non_negative_int = _int_at_least(0, "non_negative_int")
image_side = _int_at_least(8, "image_side")  # below 8 px the networks' pooling has nothing left


def set_threads(threads: int | None) -> None:
    """Limit torch's CPU threads (None = torch's default).

    On a machine shared with other jobs, one thread per process avoids the large slowdowns of
    oversubscribed OpenMP thread pools.
    """
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def finite_float(text: str) -> float:
    """An argparse type: a finite number (``nan`` and ``inf`` are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    value = finite_float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def check_device(text: str | None, flag: str = "--device") -> str | None:
    """A ``--device`` value torch accepts and this machine has (None stays None: the default).

    Raises:
        CliError: an unknown device, or a CUDA device without CUDA (or beyond the GPU count).
    """
    if text is None:
        return None
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise CliError(f"{flag} {text!r} is not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CliError(f"{flag} {text}: no CUDA GPU is available here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CliError(f"{flag} {text}: this machine has {torch.cuda.device_count()} GPUs (cuda:0.."
                           f"cuda:{torch.cuda.device_count() - 1})")
    elif device.type != "cpu":
        raise CliError(f"{flag} {text!r}: use cpu, cuda or cuda:N")
    return text


def check_output_file(path: Path, flag: str = "--out") -> None:
    """Refuse an output file that cannot be written (a folder, under a file, or not writable), before any work."""
    if path.is_dir():
        raise CliError(f"{flag} {path} is a folder; give a file name")
    _check_folder(path.parent, flag, path)


def check_output_folder(path: Path, flag: str = "--out") -> None:
    """Refuse an output folder that is a file or cannot be created or written, before any work."""
    if path.exists() and not path.is_dir():
        raise CliError(f"{flag} {path} is a file; give a folder")
    _check_folder(path, flag, path)


def _check_folder(folder: Path, flag: str, given: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CliError(f"{flag} {given}: cannot create {folder} ({err.strerror or err})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CliError(f"{flag} {given}: {folder} is not writable")

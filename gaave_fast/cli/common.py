"""Shared pieces of the ``gaave`` command: its error type, argument parser and small helpers."""

from __future__ import annotations

import argparse
import sys
from fractions import Fraction
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


def set_threads(threads: int | None) -> None:
    """Limit torch's CPU threads (None = torch's default).

    On a machine shared with other jobs, one thread per process avoids the large slowdowns of
    oversubscribed OpenMP thread pools.
    """
    if threads is not None:
        import torch

        torch.set_num_threads(threads)

"""The ``gaave`` command: validate, scan, run, report, demo (see docs/cli.md).

Entry point ``gaave = "gaave_fast.cli:main"``; ``python -m gaave_fast.cli`` does the same.
Exit codes: 0 success; 1 ``validate`` found broken files; 2 a mistake the user can fix (bad
argument, missing or malformed data, labels outside the model's classes), reported as one line
on stderr without a traceback; 130 interrupted (re-run ``gaave run`` to continue).
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Sequence

from gaave_fast.data import DatasetFormatError, DatasetNotFoundError

from . import cmd_demo, cmd_report, cmd_run, cmd_scan, cmd_validate
from .common import USAGE_ERROR, CliError, Parser, one_line

__all__ = ["CliError", "build_parser", "main"]

_COMMANDS = (cmd_validate, cmd_scan, cmd_run, cmd_report, cmd_demo)


def build_parser() -> Parser:
    """The argument parser with every sub-command."""
    from gaave_fast import __version__

    parser = Parser(prog="gaave", description="Find and fix mislabeled samples in facial-expression datasets "
                    "with GAAVE (\"Attack Can Benefit\", AAAI 2023). DATASET arguments are KIND:PATH, e.g. "
                    "rafdb:/data/RAF-DB, ferplus:/data/FERPlus, fer2013:/data/fer2013.csv, "
                    "affectnet:/data/AffectNet, folder:/data/faces, csv:/data/faces.csv.",
                    epilog="start with: gaave demo")
    parser.add_argument("--version", action="version", version=f"gaave_fast {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in _COMMANDS:
        cmd.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version and argument errors
        return int(exit_.code or 0)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    # Per-file warnings of the data layer repeat what the run reports in excluded.csv.
    warnings.filterwarnings("ignore", message=r".*excluding \d+ samples")
    try:
        return args.func(args)
    except (CliError, DatasetFormatError, DatasetNotFoundError) as err:
        sys.stderr.write(f"gaave {args.command}: error: {one_line(str(err))}\n")
        return USAGE_ERROR
    except KeyboardInterrupt:
        sys.stderr.write(f"gaave {args.command}: interrupted; re-run the same command to continue\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""``gaave report DIR``: (re)write the HTML report of a finished run."""

from __future__ import annotations

import argparse
from pathlib import Path

from gaave_fast.pipeline import RunStore
from gaave_fast.report import write_report

from .common import CliError, check_output_folder, one_line, positive_int
from .runner import open_saved_run

HELP = "write the HTML report (and PNG plots) of a finished run folder"
EXAMPLE = "example: gaave report runs/raf   (then open runs/raf/report/report.html)"


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    p = sub.add_parser("report", help=HELP, description=f"{HELP.capitalize()}: one self-contained HTML file "
                       "(no script, images embedded) that opens offline.", epilog=EXAMPLE)
    p.add_argument("dir", type=Path, metavar="DIR", help="the --out folder of 'gaave run'")
    p.add_argument("--out", type=Path, metavar="FOLDER", help="where to write (default DIR/report)")
    p.add_argument("--top", type=positive_int, default=48, help="most vulnerable samples shown (default 48)")
    p.add_argument("--truth", type=Path, metavar="CSV", help="csv path,true_label to score the detection")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the report and print its path."""
    if not args.dir.is_dir():
        raise CliError(f"run folder not found: {args.dir}")
    if not RunStore(args.dir).file("metrics").exists():
        raise CliError(f"{args.dir} holds no finished run (no metrics.json): run or resume 'gaave run' first")
    check_output_folder(args.out or RunStore(args.dir).file("report"))
    if args.truth is not None and not args.truth.is_file():
        raise CliError(f"--truth file not found: {args.truth}")
    try:
        images = open_saved_run(args.dir).train
    except (CliError, OSError, ValueError) as err:
        # The dataset moved or changed: draw thumbnails from the files the table names instead.
        print(f"note: thumbnails from the table's file paths ({err})")
        images = None
    try:
        path = write_report(args.dir, args.out, images=images, truth=args.truth, top=args.top)
    except ValueError as err:  # a damaged metrics.json, config.yaml or table names itself
        raise CliError(f"{args.dir}: {one_line(err)}") from None
    print(f"wrote {path}")
    return 0

"""``gaave validate DATASET``: find missing, empty, truncated and corrupt files and bad face boxes."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from .common import non_negative_int
from .datasets import (
    SPEC_HELP,
    SPLITS,
    check_split,
    find_broken,
    open_dataset,
    parse_spec,
)

HELP = "check every image of a dataset (broken files and face boxes)"
EXAMPLE = "example: gaave validate rafdb:/data/RAF-DB --out broken.csv"
_SHOWN = 20


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    p = sub.add_parser("validate", help=HELP, description=f"{HELP.capitalize()}. Exit code 0 when every file is "
                       "fine, 1 when some are broken (listed, and written with --out).", epilog=EXAMPLE)
    p.add_argument("dataset", metavar="DATASET", help=SPEC_HELP)
    p.add_argument("--split", help="one split (default: every split of the kind)")
    p.add_argument("--quick", action="store_true",
                   help="read headers and file ends only (fast; misses corrupt pixel data)")
    p.add_argument("--workers", type=non_negative_int, help="worker processes (default: all CPUs)")
    p.add_argument("--out", type=Path, metavar="CSV", help="write the problems as csv (split,row,path,problem)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Validate and print the problems; returns 0 (all fine) or 1 (problems found)."""
    spec = parse_spec(args.dataset)
    if args.split is not None:
        splits = [check_split(spec, args.split)]
    else:
        # One pass over everything: the "all" split where the reader has one, else each split.
        splits = ["all"] if "all" in SPLITS[spec.kind] else list(SPLITS[spec.kind]) or [None]
    reports, checked = [], 0
    for split in splits:
        data = open_dataset(spec, split, None)
        checked += len(data)
        found = find_broken(data, "quick" if args.quick else "full", args.workers)
        found.insert(0, "split", split or "")
        reports.append(found)
    report = pd.concat(reports, ignore_index=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        report.to_csv(args.out, index=False)
    mode = "headers" if args.quick else "decoded"
    print(f"{spec}: {checked} samples checked ({mode}), {len(report)} broken")
    for r in report.head(_SHOWN).itertuples(index=False):
        print(f"  {r.split + ' ' if r.split else ''}row {r.row}  {r.path}: {r.problem}")
    if len(report) > _SHOWN:
        print(f"  ... and {len(report) - _SHOWN} more" + (f" (all in {args.out})" if args.out else " (use --out)"))
    return 1 if len(report) else 0

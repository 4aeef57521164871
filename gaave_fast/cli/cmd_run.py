"""``gaave run DATASET --out DIR``: the whole GAAVE pipeline, resumable."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from gaave_fast.data.describe import dataset_classes
from gaave_fast.pipeline import STAGES

from .common import CliError, image_side, non_negative_int, positive_int, set_threads
from .datasets import SPEC_HELP, DatasetSpec, open_dataset, parse_spec
from .options import add_pipeline_options, build_config
from .runner import RunRequest, execute_run

HELP = "run the whole pipeline (resumable), then write the cleaned labels and the report"
EXAMPLE = ("example: gaave run rafdb:/data/RAF-DB --out runs/raf --device cuda --workers 8\n"
           "re-running the same command after an interruption continues where it stopped")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    p = sub.add_parser("run", help=HELP, description=f"{HELP.capitalize()}. Outputs are described in "
                       "docs/outputs.md.", epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_options(p)
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="run folder (created; resumed if it exists)")
    p.add_argument("--start", choices=STAGES, help="recompute this stage and the ones after it")
    p.add_argument("--truth", type=Path, metavar="CSV",
                   help="csv with path,true_label (known true labels): the report scores the detection")
    p.add_argument("--no-report", dest="report", action="store_false", help="skip the HTML report")
    p.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's choice)")
    add_pipeline_options(p)
    p.set_defaults(func=run)


def add_data_options(p: argparse.ArgumentParser) -> None:
    """The dataset arguments shared by ``run`` and ``demo``-like commands."""
    p.add_argument("dataset", metavar="DATASET", help=SPEC_HELP)
    p.add_argument("--split", help="training split (default train; folder and csv have none)")
    p.add_argument("--test", default="auto", metavar="SPLIT|KIND:PATH|none",
                   help="test set for the baseline and final accuracy: a split of DATASET, another dataset, "
                        "or none (default auto: the kind's test split, none for folder/csv)")
    p.add_argument("--image-size", type=image_side,
                   help="input side in pixels (default rafdb 100, ferplus/fer2013 48, affectnet 224, else 112)")
    p.add_argument("--affectnet-classes", type=int, default=7, choices=(7, 8), help="7 or 8 (with contempt)")
    p.add_argument("--check", choices=("full", "quick", "none"), default="full",
                   help="broken-file check before training: full decode (default), headers only, or none")
    p.add_argument("--check-workers", type=non_negative_int, help="processes of that check (default all CPUs)")


def run(args: argparse.Namespace) -> int:
    """Build the request from the flags, run it and print the summary."""
    set_threads(args.threads)
    spec = parse_spec(args.dataset)
    if args.truth is not None and not args.truth.is_file():
        raise CliError(f"--truth file not found: {args.truth}")
    # Class names are needed for --head-classes given by name.
    classes = _classes(spec, args)
    req = RunRequest(dataset=spec, split=args.split, out=args.out, config=build_config(args, classes),
                     test=args.test, image_size=args.image_size, check=args.check, check_workers=args.check_workers,
                     start=args.start, truth=args.truth, report=args.report, affectnet_classes=args.affectnet_classes,
                     command=shlex.join(["gaave", *sys.argv[1:]]))
    print_summary(execute_run(req))
    return 0


def print_summary(s: dict[str, Any]) -> None:
    """The end-of-run lines: counts, accuracies and where the outputs are."""
    print(f"{s['samples']} samples ({s['excluded']} broken files excluded): {s['candidates']} noise candidates, "
          f"{s['relabeled']} relabeled, {s['discarded']} discarded")
    for name in ("baseline", "final"):
        if name in s:
            m = s[name]
            last = (f" (mean of the last {m['last10']['epochs']} epochs {m['last10']['accuracy']:.4f}, "
                    f"{m['last10']['mean_class_accuracy']:.4f})") if "last10" in m else ""
            print(f"{name:>8} test accuracy {m['accuracy']:.4f}, mean class accuracy {m['mean_class_accuracy']:.4f}{last}")
    labels = {"table_csv": "per-sample table", "table_parquet": "per-sample table", "cleaned": "cleaned labels",
              "changes": "changed rows", "report": "report"}
    for key, path in s["paths"].items():
        print(f"{labels.get(key, key):>16}: {path}")


def _classes(spec: DatasetSpec, args: argparse.Namespace) -> list[str]:
    if args.head_classes is None:
        return []
    return dataset_classes(open_dataset(spec, args.split, args.image_size, args.affectnet_classes))

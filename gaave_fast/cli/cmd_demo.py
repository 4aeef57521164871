"""``gaave demo``: the whole job on an embedded synthetic dataset, on the CPU, in a few minutes."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from gaave_fast.demo import DEMO_CLASSES, DemoSpec, demo_config, make_demo_dataset

from .cmd_run import print_summary
from .common import CliError, positive_int, set_threads
from .datasets import parse_spec
from .options import add_pipeline_options, build_config
from .runner import RunRequest, execute_run

HELP = "run GAAVE end to end on a built-in noisy, long-tailed set of synthetic faces"
EXAMPLE = "example: gaave demo --out runs/demo   (then open runs/demo/report/report.html)"


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    p = sub.add_parser("demo", help=HELP, description=(
        f"{HELP.capitalize()}: writes about 2,000 cartoon faces of {len(DEMO_CLASSES)} expressions as JPEGs in an "
        "image-folder layout (20%% of the training labels wrong, a 7.5x long tail, two broken files), runs the "
        "pipeline with a small CNN on the CPU, and writes the cleaned labels and the report. Re-running "
        "continues an interrupted demo. Pipeline flags override the demo's settings."), epilog=EXAMPLE)
    p.add_argument("--out", type=Path, default=Path("runs/demo"), metavar="DIR",
                   help="where the data and the run go (default runs/demo)")
    p.add_argument("--noise-rate", type=float, default=DemoSpec.noise_rate,
                   help=f"share of wrong training labels (default {DemoSpec.noise_rate})")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="torch CPU threads (default 1: robust on machines shared with other jobs)")
    add_pipeline_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the data (once), run the pipeline and print where the report is."""
    started = time.time()
    set_threads(args.threads)
    seed = 0 if args.seed is None else args.seed
    if not 0 <= args.noise_rate < 1:
        raise CliError(f"--noise-rate must lie in [0, 1), got {args.noise_rate}")
    paths = make_demo_dataset(args.out / "data", DemoSpec(noise_rate=args.noise_rate, seed=seed))
    print(f"demo data: {paths['train']} (training, noisy labels), {paths['test']} (test), {paths['truth']}")
    req = RunRequest(dataset=parse_spec(f"folder:{paths['train']}"), split=None, out=args.out / "run",
                     config=build_config(args, list(DEMO_CLASSES), base=demo_config(seed)),
                     test=f"folder:{paths['test']}", image_size=DemoSpec.image_size, truth=paths["truth"],
                     command="gaave demo")
    print_summary(execute_run(req))
    print(f"demo finished in {time.time() - started:.0f} s; open {args.out / 'run' / 'report' / 'report.html'}")
    return 0

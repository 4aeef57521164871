"""``gaave scan DATASET --model CHECKPOINT``: k per sample with an already trained model."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from gaave_fast import attack
from gaave_fast.data import make_loader
from gaave_fast.data.describe import dataset_classes
from gaave_fast.scan import scan

from .common import (
    CliError,
    check_device,
    check_output_file,
    finite_float,
    image_side,
    non_negative_int,
    one_line,
    pixel_value,
    positive_float,
    positive_int,
    set_threads,
)
from .datasets import SPEC_HELP, check_labels, open_dataset, parse_spec
from .models import LoadedModel, load_checkpoint, num_outputs

HELP = "attack every sample with a trained model and write k per sample"
EXAMPLE = ("example: gaave scan rafdb:/data/RAF-DB --model runs/raf/final_gaave/model.pt --out scan.parquet "
           "--tau 2")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    p = sub.add_parser("scan", help=HELP, description=f"{HELP.capitalize()} (the ScanResult of gaave_fast.scan; "
                       "columns in docs/outputs.md). The model is a torch.export archive (.pt2) or a model.pt of a "
                       "'gaave run' folder; TorchScript archives and pickled models only load with --trust-model.",
                       epilog=EXAMPLE)
    p.add_argument("dataset", metavar="DATASET", help=SPEC_HELP)
    p.add_argument("--model", required=True, type=Path, metavar="CHECKPOINT",
                   help="torch.export archive (.pt2), or RUN/<stage>/model.pt of a gaave run")
    p.add_argument("--trust-model", action="store_true",
                   help="also load TorchScript archives, pickled models and .pt2 files with pickled parts; RISK: "
                        "loading these runs whatever code the file holds, so use it only for files you trust")
    p.add_argument("--out", type=Path, default=Path("scan.csv"), metavar="FILE",
                   help="result file: .csv, .parquet or .npz (default scan.csv)")
    p.add_argument("--split", help="split to scan (default train)")
    p.add_argument("--image-size", type=image_side,
                   help="input side in pixels (default: the run's, else the kind's default)")
    p.add_argument("--eps", type=pixel_value, default=attack.EPS, help="PGD radius in pixel units (default 1/255)")
    p.add_argument("--alpha", type=pixel_value, help="PGD step (default eps/8)")
    p.add_argument("--steps", type=positive_int, default=attack.STEPS, help=f"PGD steps S (default {attack.STEPS})")
    p.add_argument("--tau", type=finite_float, help="also report how many samples have k <= tau")
    p.add_argument("--decide-tau", type=int, metavar="T",
                   help="early exit: stop attacking a sample once k <= T or k > T is certain (same candidates "
                        "k <= T as the full scan, far fewer steps; k is censored where k_exact is false)")
    p.add_argument("--mean", type=finite_float, nargs="+", help="per-channel mean if the model expects normalised input")
    p.add_argument("--std", type=positive_float, nargs="+", help="per-channel std, with --mean")
    p.add_argument("--batch-size", type=positive_int, default=256, help="samples per batch (default 256)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--workers", type=non_negative_int, default=0, help="data-loading workers (default 0)")
    p.add_argument("--loader", choices=("auto", "torch", "dali"), default="torch",
                   help="decoding backend (default torch; dali decodes JPEGs on the GPU)")
    p.add_argument("--backend", choices=("fused", "torch"), default="fused",
                   help="attack step: the compiled fused op (default) or plain PyTorch")
    p.add_argument("--checkpoint", type=Path, metavar="NPZ", help="progress file: a re-run resumes from it")
    p.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Scan and write the result; prints the most suspicious samples."""
    set_threads(args.threads)
    if args.out.suffix.lower() not in (".csv", ".parquet", ".npz"):
        raise CliError(f"--out {args.out}: use a .csv, .parquet or .npz file name")
    if (args.mean is None) != (args.std is None):
        raise CliError("--mean and --std go together")
    if args.decide_tau is not None and not 0 <= args.decide_tau <= args.steps:
        raise CliError(f"--decide-tau {args.decide_tau}: use a threshold in 0..S = 0..{args.steps}")
    if args.decide_tau is not None and args.tau is not None and args.tau != args.decide_tau:
        raise CliError(f"--tau {args.tau:g} with --decide-tau {args.decide_tau}: an early-exit scan decides "
                       "k <= T for its own T only; drop --tau or give the same value")
    check_output_file(args.out)
    spec = parse_spec(args.dataset)
    device = torch.device(check_device(args.device) or ("cuda" if torch.cuda.is_available() else "cpu"))
    loaded = load_checkpoint(args.model, trust=args.trust_model)
    data = open_dataset(spec, args.split, args.image_size or _run_image_size(spec.kind, loaded))
    classes = dataset_classes(data)
    outputs = _check_model(loaded, _first_image(data), args)
    check_labels(data, outputs, f"{spec} against the model's {outputs} outputs")
    loader = make_loader(data, args.loader, batch_size=args.batch_size, workers=args.workers, device="auto")
    try:
        result = scan(loaded.model.to(device), loader, eps=args.eps, alpha=args.alpha, steps=args.steps,
                      mean=args.mean, std=args.std, device=device, backend=args.backend, checkpoint=args.checkpoint,
                      progress=args.progress, num_samples=len(loader.rows), decide_tau=args.decide_tau)
    except ValueError as err:  # the scan's messages name the batch, index or checkpoint at fault
        raise CliError(one_line(err)) from None
    result.meta.update(dataset=str(spec), split=args.split, model=str(args.model))
    _save(result, args.out)
    print(f"{spec}: {len(result)} samples scanned ({len(data) - len(result)} broken files skipped), "
          f"mean k {result.k.mean():.2f} of {args.steps + 1}; wrote {args.out}")
    if args.decide_tau is not None:
        print(f"early exit at T = {args.decide_tau}: {result.steps_run.mean():.2f} of {args.steps} steps per sample; "
              f"k <= {args.decide_tau}: {len(result.noisy(args.decide_tau))} samples; k censored for "
              f"{int((~result.k_exact).sum())}")
    elif args.tau is not None:
        print(f"k <= {args.tau:g}: {len(result.noisy(args.tau))} samples")
    paths = getattr(data, "paths", None)
    for i in np.argsort(-result.score, kind="stable")[:10]:
        idx = int(result.index[i])
        where = paths[idx] if paths else f"sample {idx}"
        pred = int(result.pred[i])
        k = int(result.k[i])
        if not result.k_exact[i]:  # censored by early exit: only the side of T is known
            k = f">{args.decide_tau}" if k > args.decide_tau else f"<={args.decide_tau}"
        print(f"  k {k}  {classes[int(result.label[i])]} -> predicted "
              f"{classes[pred] if pred < len(classes) else pred}  {where}")
    return 0


def _run_image_size(kind: str, loaded: LoadedModel) -> int | None:
    # fer2013.csv holds 48 px faces only: a run model of another size is scanned on them as they are.
    if kind == "fer2013" and loaded.image_size not in (None, 48):
        print(f"note: the model was trained on {loaded.image_size} px images; fer2013 faces are 48 px")
        return None
    return loaded.image_size


def _check_model(loaded: LoadedModel, image: torch.Tensor, args: argparse.Namespace) -> int:
    """The model's number of outputs on one image, or a one-line error saying what does not fit."""
    shape = "x".join(str(v) for v in (1, *image.shape))
    try:
        return num_outputs(loaded.model, image)
    except CliError:
        raise
    except Exception as err:  # the model's own error: shapes, channels, batch size, dtypes  # noqa: BLE001
        hint = (" (an exported model needs a dynamic batch dimension: torch.export.Dim)"
                if loaded.source == "export" else "")
        raise CliError(f"the model fails on one image of the data, shape {shape}{hint}: {type(err).__name__}: "
                       f"{one_line(err)[:300]}") from None


def _save(result, out: Path) -> None:
    """Write the result; if --out fails now, keep the work in a temporary file and say where."""
    try:
        result.save(out)
    except OSError as err:
        import tempfile

        rescue = Path(tempfile.mkstemp(prefix="gaave-scan-", suffix=".npz")[1])
        result.save(rescue)
        raise CliError(f"--out {out}: cannot write ({err.strerror or err}); the result was saved to {rescue}") from None


def _first_image(data: Dataset) -> torch.Tensor:
    # The first readable image tells the model's output width (broken files are skipped later).
    for i in range(len(data)):
        try:
            return data[i][0]
        except (OSError, ValueError):
            continue
    raise CliError("no image of the dataset can be read: run 'gaave validate' on it")

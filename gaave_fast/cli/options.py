"""Pipeline options of ``gaave run``: command-line flags and config files to a PipelineConfig.

Precedence: the PipelineConfig defaults, then ``--config FILE`` (YAML or JSON in the format
``PipelineConfig.save`` writes, e.g. a run's ``config.yaml``), then each flag that is given.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gaave_fast.amp import SCAN_AMP
from gaave_fast.compiled import COMPILE_MODES
from gaave_fast.pipeline import ABLATIONS, PipelineConfig
from gaave_fast.pipeline.annotate import RELABEL_RULES, UNCERTAIN_RULES
from gaave_fast.pipeline.config import MAX_CLASS_SHIFT, PRESETS, RECORDS
from gaave_fast.pipeline.criterion import COMBINE_RULES, TAU_RULES, VOTE_RULES
from gaave_fast.pipeline.models import ARCHS, check_arch

from .common import (
    CliError,
    check_device,
    finite_float,
    non_negative_int,
    pixel_value,
    positive_float,
    positive_int,
)

_TRAINERS = ("base", "annotator", "final")


def add_pipeline_options(parser: argparse.ArgumentParser) -> None:
    """Add the flags that set PipelineConfig fields (all default to "not given")."""
    g = parser.add_argument_group("pipeline (override --config; see docs/pipeline.md)")
    g.add_argument("--config", type=Path, metavar="FILE",
                   help="PipelineConfig as YAML or JSON (a run's config.yaml works); flags override it")
    g.add_argument("--preset", choices=tuple(PRESETS),
                   help="default (the library's variant, with the class-shift guard) or paper (the paper's method "
                        "exactly); it sets the options below that are not given")
    g.add_argument("--arch", type=arch_name, metavar="|".join(ARCHS) + "|torchvision:NAME",
                   help="network of every model (default resnet18); torchvision:NAME = any torchvision "
                        "classification architecture (resnet50, convnext_tiny, ...), from scratch")
    g.add_argument("--width", type=positive_int, help="base width of small_cnn")
    g.add_argument("--pretrained", type=Path, metavar="FILE",
                   help="backbone state dict loaded into every model before its classifier is built "
                        "(prefixes module./backbone./model. stripped; listed in pretrained.json)")
    g.add_argument("--eps", type=pixel_value, help="PGD radius in [0,1] pixel units, e.g. 1/255 (default)")
    g.add_argument("--alpha", type=pixel_value, help="PGD step in pixel units (default eps/8)")
    g.add_argument("--steps", type=positive_int, help="PGD steps S; k runs 0..S+1 (default 8)")
    g.add_argument("--tau", type=finite_float, help="threshold k <= tau for both subsets (default: chosen by --tau-rule)")
    g.add_argument("--tau-head", type=finite_float, help="threshold of the head subset")
    g.add_argument("--tau-tail", type=finite_float, help="threshold of the tail subset")
    g.add_argument("--tau-rule", choices=TAU_RULES, help="automatic threshold: estimate (default preset: flag each class's estimated noise), gmm (paper "
                        "preset: a mixture of k) or fraction")
    g.add_argument("--tau-fraction", type=finite_float, help="share of each subset flagged with --tau-rule fraction")
    g.add_argument("--combine", choices=COMBINE_RULES,
                   help="how k is combined over the scans (default mean; vote with --record decided)")
    g.add_argument("--record", choices=RECORDS,
                   help="full (default): every scan runs all S steps; decided: early exit once k <= tau is "
                        "certain (same candidates for a given tau; needs --combine vote or min)")
    g.add_argument("--pilot-fraction", type=finite_float,
                   help="with --record decided and an automatic tau: share of each subset scanned fully to "
                        "choose tau (default 0.05)")
    g.add_argument("--base-epochs", type=non_negative_int, help="epochs T before the first scan (default 10)")
    g.add_argument("--gaave-epochs", type=positive_int, help="scans T' (default 8)")
    g.add_argument("--epochs", type=non_negative_int,
                   help="epochs of the annotators, the final model and the baseline (default 30)")
    g.add_argument("--batch-size", type=positive_int, help="training batch size of every model (default 128)")
    g.add_argument("--lr", type=positive_float, help="learning rate of every model (default 1e-3, Adam)")
    g.add_argument("--scan-batch-size", type=positive_int, help="batch size of the attack (default 256)")
    g.add_argument("--scan-backend", choices=("auto", "fused", "torch"),
                   help="fused op, plain PyTorch step, or auto (default: fused when built)")
    g.add_argument("--scan-amp", choices=SCAN_AMP,
                   help="autocast dtype of the scan (default auto: bfloat16 on CUDA, float32 on CPU)")
    g.add_argument("--scan-compile", nargs="?", const=True, default=None, choices=(True, *COMPILE_MODES),
                   metavar="MODE", help="torch.compile the scan's forward + input gradient (optional mode: "
                   + ", ".join(COMPILE_MODES) + ")")
    g.add_argument("--relabel", choices=RELABEL_RULES,
                   help="eq5 (the paper's rule) or confident (Eq. 5 only where the annotators agree with "
                        "probability >= --relabel-confidence); default: the preset's")
    g.add_argument("--relabel-confidence", type=finite_float,
                   help=f"agreement --relabel confident needs (default {PipelineConfig().relabel_confidence})")
    g.add_argument("--uncertain", choices=UNCERTAIN_RULES,
                   help="candidates left without a new label: drop (the paper) or keep their label")
    g.add_argument("--max-class-shift", type=finite_float,
                   help=f"warn when cleaning changes a class's share by more than this relative amount "
                        f"(default {MAX_CLASS_SHIFT}: 20%% -> 10%% or 30%%); the cap of the class-shift guard")
    g.add_argument("--class-guard", dest="class_guard", action="store_true", default=None,
                   help="give candidates back their label to keep every class within --max-class-shift "
                        "(on in the default preset)")
    g.add_argument("--no-class-guard", dest="class_guard", action="store_false",
                   help="no class-shift guard, only the warning (the paper preset)")
    g.add_argument("--ablation", choices=ABLATIONS, help="full (default), no_split or no_annotator")
    g.add_argument("--head-classes", metavar="A,B,...",
                   help="head classes by name or id (default: the automatic split)")
    g.add_argument("--no-baseline", dest="baseline", action="store_false", default=None,
                   help="skip the baseline trained on the raw labels")
    g.add_argument("--seed", type=int, help="seed of every random choice (default 0)")
    g.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    g.add_argument("--workers", type=non_negative_int, help="data-loading worker processes (default 0)")
    g.add_argument("--progress", dest="progress", action="store_true", default=None, help="show progress bars")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")


def build_config(args: argparse.Namespace, classes: list[str], base: PipelineConfig | None = None) -> PipelineConfig:
    """The PipelineConfig of ``args`` (see the module docstring for the precedence).

    Args:
        args: parsed flags of :func:`add_pipeline_options`.
        classes: the dataset's class names (for ``--head-classes`` given by name).
        base: defaults to start from instead of ``PipelineConfig()`` (the demo's settings).

    Raises:
        CliError: an unreadable config file or an invalid value, naming the field.
    """
    cfg = base.to_dict() if base is not None else PipelineConfig().to_dict()
    if args.config is not None:
        cfg = _load(args.config).to_dict()
    direct = {"arch": args.arch, "width": args.width, "eps": args.eps, "alpha": args.alpha, "steps": args.steps,
              "tau_rule": args.tau_rule, "tau_fraction": args.tau_fraction, "combine": args.combine,
              "record": args.record, "pilot_fraction": args.pilot_fraction,
              "gaave_epochs": args.gaave_epochs, "scan_batch_size": args.scan_batch_size,
              "scan_backend": args.scan_backend, "scan_amp": args.scan_amp, "scan_compile": args.scan_compile,
              "ablation": args.ablation, "baseline": args.baseline,
              "seed": args.seed, "device": check_device(args.device), "preset": args.preset, "relabel": args.relabel,
              "relabel_confidence": args.relabel_confidence, "uncertain": args.uncertain,
              "max_class_shift": args.max_class_shift, "class_guard": args.class_guard}
    cfg.update({k: v for k, v in direct.items() if v is not None})
    if args.device is None:  # a device from --config is checked too
        check_device(cfg.get("device"), "device (from --config)")
    if args.record == "decided" and args.combine is None and cfg["combine"] not in VOTE_RULES:
        cfg["combine"] = "vote"  # the decided record's default rule (docs/pipeline.md)
    if args.pretrained is not None:
        if not args.pretrained.is_file():
            raise CliError(f"--pretrained file not found: {args.pretrained}")
        cfg["pretrained"] = str(args.pretrained)
    if args.tau is not None:
        cfg["tau_head"] = cfg["tau_tail"] = args.tau
    for name in ("tau_head", "tau_tail"):
        if getattr(args, name) is not None:
            cfg[name] = getattr(args, name)
    if args.head_classes is not None:
        cfg["head_classes"] = parse_classes(args.head_classes, classes)
        if classes and len(set(cfg["head_classes"])) >= len(classes):
            raise CliError(f"--head-classes names every class ({', '.join(classes)}); the tail needs at least one: "
                           "leave one out, or omit --head-classes for the automatic split")
    trained = {"batch_size": args.batch_size, "lr": args.lr, "num_workers": args.workers, "progress": args.progress}
    for name in _TRAINERS:
        cfg[name].update({k: v for k, v in trained.items() if v is not None})
    if args.base_epochs is not None:
        cfg["base"]["epochs"] = args.base_epochs
    if args.epochs is not None:
        cfg["annotator"]["epochs"] = cfg["final"]["epochs"] = args.epochs
    try:
        return PipelineConfig.from_dict(cfg)
    except (TypeError, ValueError) as err:
        raise CliError(f"invalid pipeline setting: {err}") from None


def arch_name(text: str) -> str:
    """``--arch`` value: a built-in architecture or ``torchvision:NAME`` (argparse type)."""
    try:
        check_arch(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def parse_classes(text: str, classes: list[str]) -> list[int]:
    """``"happy,sad"`` or ``"3,4"`` to class ids of ``classes``.

    Raises:
        CliError: a name or id that is not a class.
    """
    out = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        if item in classes:
            out.append(classes.index(item))
        elif item.isdigit() and int(item) < len(classes):
            out.append(int(item))
        else:
            raise CliError(f"--head-classes: {item!r} is not a class; classes are {classes}")
    return out


def _load(path: Path) -> PipelineConfig:
    if not path.is_file():
        raise CliError(f"config file not found: {path}")
    try:
        return PipelineConfig.load(path)
    except Exception as err:  # YAML/JSON syntax errors and unknown keys alike: the file needs fixing  # noqa: BLE001
        raise CliError(f"config file {path}: {type(err).__name__}: {err}") from None


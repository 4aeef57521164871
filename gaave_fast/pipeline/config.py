"""The pipeline's configuration: a dataclass saved as YAML or JSON beside the outputs."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from gaave_fast import attack, files
from gaave_fast.amp import SCAN_AMP
from gaave_fast.compiled import COMPILE_MODES

from .annotate import RELABEL_RULES, UNCERTAIN_RULES
from .criterion import COMBINE_RULES, TAU_RULES, VOTE_RULES
from .models import check_arch
from .train import TrainConfig

ABLATIONS = ("full", "no_split", "no_annotator")
RECORDS = ("full", "decided")
MAX_CLASS_SHIFT = 0.5
PRESETS: dict[str, dict[str, Any]] = {
    # The paper's method exactly: Eq. 5 relabels every candidate it can, the rest are discarded;
    # tau from a mixture of k (the paper sets tau by hand per dataset).
    "paper": {"tau_rule": "gmm", "relabel": "eq5", "uncertain": "drop", "class_guard": False},
    # The library's variant: tau from an estimate of the noise, Eq. 5 with the class-shift guard
    # (docs/pipeline.md, "Presets").
    "default": {"tau_rule": "estimate", "relabel": "eq5", "uncertain": "drop", "class_guard": True},
}
"""The value of each preset-dependent field (a field left None takes its preset's value)."""


def _base() -> TrainConfig:
    # T = 10: the detection AUROC of every score peaks before the base model memorises the noisy
    # labels (docs/pipeline.md, "Measurements").
    return TrainConfig(epochs=10)


@dataclass
class PipelineConfig:
    """Everything that determines a GAAVE run (with the seed, the outputs are reproducible).

    Attributes:
        preset: ``"default"`` (the library's evidence-backed variant) or ``"paper"`` (the
            paper's method exactly); it sets every field below that is left None (:data:`PRESETS`).
        seed: seeds the refactoring draw, model initialisation, epoch orders and augmentation.
        ablation: ``"full"`` (the method), ``"no_split"`` (no splitting/refactoring: one model
            and one scan on all classes; candidates are dropped since Eq. 5 needs both
            annotators), ``"no_annotator"`` (split and scan, candidates dropped).
        head_classes: head classes; None = the automatic rule of :mod:`.split`.
        arch: ``"resnet18"``, ``"small_cnn"`` or ``"torchvision:NAME"`` (any torchvision
            classification architecture, from scratch); ignored when a ``make_model`` is passed.
        width: base width of ``small_cnn``.
        pretrained: a backbone state dict file loaded into every model before its classifier is
            built (:mod:`.pretrained`); None = every model starts from the seed alone.
        base: training of the base models; ``base.epochs`` is T, the epochs before the first scan.
        gaave_epochs: T', the number of recorded scans: the first scans the base model, each
            further one follows one more epoch of training (Algorithm 1).
        eps, alpha, steps: the PGD attack (pixel units; alpha None = eps / 8).
        scan_backend: ``gaave_fast.scan`` backend; ``"auto"`` = ``"fused"`` when built, else
            ``"torch"`` (identical k). scan_batch_size: its batch size.
        scan_amp: the scan's autocast dtype: ``"auto"`` (bfloat16 on CUDA, float32 elsewhere),
            ``"float32"`` (no autocast), ``"bfloat16"`` or ``"float16"``.
        scan_compile: run the scan's forward, loss and input gradient through ``torch.compile``
            (:mod:`gaave_fast.compiled`): False, True (default mode) or a mode name
            (``"reduce-overhead"``, ``"max-autotune"``, ``"max-autotune-no-cudagraphs"``).
        combine: how k is combined over the T' scans (:func:`.criterion.combine_k`), or a
            per-scan vote (``"vote"``: k_t <= tau in at least half the scans; ``"min"``: in any),
            which the decided record computes exactly.
        record: ``"full"`` (every scan attacks every sample for all S steps) or ``"decided"``
            (early exit: each sample's attack stops once k_t <= tau is certain; needs combine
            ``"vote"`` or ``"min"``; k is censored, the candidates are those of the full record).
        pilot_fraction: with ``record="decided"`` and an automatic tau, the seeded random share of
            each subset scanned fully by the base model to choose tau (the rest is decided).
        tau_head, tau_tail: thresholds of ``k <= tau``; None = chosen by ``tau_rule``.
        tau_rule: ``"estimate"`` (a noise estimate per class), ``"gmm"`` or ``"fraction"`` (with
            ``tau_fraction``), see :mod:`.criterion`; None = preset (``"estimate"`` in
            ``default``, ``"gmm"`` in ``paper``; ``"gmm"`` with a decided record, which needs a tau
            before it scans).
        annotator: training of the two self-annotators.
        relabel: ``"eq5"`` (the paper) or ``"confident"`` (Eq. 5 only where the annotators agree
            with probability >= ``relabel_confidence``), see :mod:`.annotate`; None = preset.
        relabel_confidence: the agreement ``"confident"`` needs.
        uncertain: ``"drop"`` or ``"keep"`` (own label) for candidates left without a new label;
            None = preset.
        max_class_shift: the largest relative change of a class's share (``0.5`` = from 20%
            to 10% or 30%) that cleaning may cause before the run warns; with the guard on, the
            cap it enforces.
        class_guard: keep every class's shift within ``max_class_shift`` by giving candidates
            back their own label (:mod:`.guard`); None = preset (on in ``default``, off in ``paper``).
        final: training of the final model and of the baseline (same settings for both).
        baseline: also train and evaluate the baseline on the raw labels.
        device: None = CUDA if available, else CPU.
    """

    preset: str = "default"
    seed: int = 0
    ablation: str = "full"
    head_classes: list[int] | None = None
    arch: str = "resnet18"
    width: int = 32
    pretrained: str | None = None
    base: TrainConfig = field(default_factory=_base)
    gaave_epochs: int = 8
    eps: float = attack.EPS
    alpha: float | None = None
    steps: int = attack.STEPS
    scan_backend: str = "auto"
    scan_batch_size: int = 256
    scan_amp: str = "auto"
    scan_compile: bool | str = False
    combine: str = "mean"
    record: str = "full"
    pilot_fraction: float = 0.05
    tau_head: float | None = None
    tau_tail: float | None = None
    tau_rule: str | None = None
    tau_fraction: float | None = None
    annotator: TrainConfig = field(default_factory=TrainConfig)
    relabel: str | None = None
    relabel_confidence: float = 0.5
    uncertain: str | None = None
    max_class_shift: float = MAX_CLASS_SHIFT
    class_guard: bool | None = None
    final: TrainConfig = field(default_factory=TrainConfig)
    baseline: bool = True
    device: str | None = None

    def __post_init__(self) -> None:
        for name in ("base", "annotator", "final"):
            v = getattr(self, name)
            if isinstance(v, dict):
                unknown = sorted(set(v) - {f.name for f in fields(TrainConfig)})
                if unknown:
                    raise ValueError(f"unknown {name} (TrainConfig) keys: {unknown}")
                setattr(self, name, TrainConfig(**v))
            elif not isinstance(v, TrainConfig):
                raise TypeError(f"{name} must be a TrainConfig or dict, got {type(v).__name__}")
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {tuple(PRESETS)}, got {self.preset!r}")
        if self.relabel is not None and self.relabel not in RELABEL_RULES:
            raise ValueError(f"relabel must be one of {RELABEL_RULES} or None, got {self.relabel!r}")
        if self.uncertain is not None and self.uncertain not in UNCERTAIN_RULES:
            raise ValueError(f"uncertain must be one of {UNCERTAIN_RULES} or None, got {self.uncertain!r}")
        if not 0 <= self.relabel_confidence <= 1:
            raise ValueError(f"relabel_confidence must be in [0, 1], got {self.relabel_confidence}")
        if not self.max_class_shift > 0:
            raise ValueError(f"max_class_shift must be > 0, got {self.max_class_shift}")
        if self.ablation not in ABLATIONS:
            raise ValueError(f"ablation must be one of {ABLATIONS}, got {self.ablation!r}")
        check_arch(self.arch)
        if self.pretrained is not None:
            self.pretrained = str(self.pretrained)
        if self.gaave_epochs < 1:
            raise ValueError(f"gaave_epochs must be >= 1 (the first scan is of the base model), got {self.gaave_epochs}")
        if not self.eps > 0 or self.steps < 1:
            raise ValueError(f"eps must be > 0 and steps >= 1, got eps={self.eps}, steps={self.steps}")
        if self.alpha is not None and not self.alpha > 0:
            raise ValueError(f"alpha must be > 0 or None, got {self.alpha}")
        if self.scan_backend not in ("auto", "fused", "torch"):
            raise ValueError(f"scan_backend must be 'auto', 'fused' or 'torch', got {self.scan_backend!r}")
        if self.scan_amp not in SCAN_AMP:
            raise ValueError(f"scan_amp must be one of {SCAN_AMP}, got {self.scan_amp!r}")
        if not isinstance(self.scan_compile, bool) and self.scan_compile not in COMPILE_MODES:
            raise ValueError(f"scan_compile must be true, false or one of {COMPILE_MODES}, got {self.scan_compile!r}")
        if self.combine not in COMBINE_RULES:
            raise ValueError(f"combine must be one of {COMBINE_RULES}, got {self.combine!r}")
        if self.record not in RECORDS:
            raise ValueError(f"record must be one of {RECORDS}, got {self.record!r}")
        if self.record == "decided" and self.combine not in VOTE_RULES:
            raise ValueError(f"record 'decided' needs combine {' or '.join(map(repr, VOTE_RULES))} (rules that "
                             f"use only k <= tau per scan), got {self.combine!r}")
        if not 0 < self.pilot_fraction <= 1:
            raise ValueError(f"pilot_fraction must be in (0, 1], got {self.pilot_fraction}")
        for name in ("tau_head", "tau_tail"):
            if getattr(self, name) is not None and not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number or None, got {getattr(self, name)}")
        if self.tau_rule is not None and self.tau_rule not in TAU_RULES:
            raise ValueError(f"tau_rule must be one of {TAU_RULES} or None, got {self.tau_rule!r}")
        if self.tau_rule == "estimate" and self.tau_before_scan:
            raise ValueError(f"tau_rule 'estimate' ranks samples after the scans; record {self.record!r} with combine "
                             f"{self.combine!r} needs a tau before: use tau_rule 'gmm' or 'fraction', or give tau")
        if self.tau_rule == "fraction" and (self.tau_fraction is None or not 0 <= self.tau_fraction <= 1):
            raise ValueError(f"tau_fraction must be in [0, 1] with tau_rule='fraction', got {self.tau_fraction}")
        if self.head_classes is not None:
            self.head_classes = [int(c) for c in self.head_classes]

    @property
    def splits(self) -> bool:
        """Whether the classes are split into head and tail subsets."""
        return self.ablation != "no_split"

    @property
    def tau_before_scan(self) -> bool:
        """Whether tau must be an integer known before the scans (a decided record, or a per-scan vote)."""
        return self.record == "decided" or self.combine == "vote"

    @property
    def relabels(self) -> bool:
        """Whether candidates are relabelled by the self-annotators (else dropped)."""
        return self.ablation == "full"

    def setting(self, name: str) -> Any:
        """A preset-dependent field's value: the field itself, or its preset's value when None."""
        if name not in PRESETS[self.preset]:
            raise ValueError(f"{name!r} is not a preset-dependent field; they are {sorted(PRESETS[self.preset])}")
        v = getattr(self, name)
        if v is None and name == "tau_rule" and self.tau_before_scan:
            return "gmm"  # "estimate" ranks after the scans
        return PRESETS[self.preset][name] if v is None else v

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON/YAML-ready)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PipelineConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown PipelineConfig keys: {unknown}")
        return cls(**d)

    def save(self, path: str | Path) -> None:
        """Write to ``path``: YAML for ``.yaml``/``.yml``, else JSON."""
        path = Path(path)
        if path.suffix in (".yaml", ".yml"):
            import yaml

            text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        else:
            text = json.dumps(self.to_dict(), indent=2)
        files.write_text(path, text)

    @classmethod
    def load(cls, path: str | Path) -> PipelineConfig:
        """Read a file written by :meth:`save`.

        Raises:
            ValueError: a damaged file (naming it), unknown keys or invalid values.
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
            if path.suffix in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text)
            else:
                data = json.loads(text)
        except Exception as err:  # YAML/JSON syntax or encoding errors: name the file  # noqa: BLE001
            raise ValueError(f"{path} is damaged ({type(err).__name__}: {err})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path} is damaged: it holds no settings (a {type(data).__name__})")  # noqa: TRY004 (callers turn ValueError into the one-line error)
        return cls.from_dict(data)

"""The GAAVE pipeline (Zheng et al., "Attack Can Benefit", AAAI 2023): split, refactor, base
models, GAAVE scans, criterion, self-annotators and retraining. See docs/pipeline.md."""

from .annotate import DISCARDED, relabel
from .config import ABLATIONS, PipelineConfig
from .criterion import (
    Criterion,
    TauChoice,
    combine_k,
    fit_gmm,
    select_candidates,
    select_tau,
)
from .metrics import detection_metrics, roc_auc
from .models import model_factory, resnet18, small_cnn
from .record import record_k, scan_subset
from .refactor import (
    RefactoredSubset,
    RemappedDataset,
    Subsets,
    make_subsets,
    proportional_quotas,
    refactor,
    whole_set,
)
from .retrain import final_training_set
from .run import Pipeline
from .split import ClassSplit, class_counts, split_classes
from .store import STAGES, RunStore, stale_stages
from .table import sample_table
from .train import (
    TrainConfig,
    TrainResult,
    accuracy,
    fit,
    load_model,
    predict,
    save_model,
)

__all__ = [
    "ABLATIONS", "DISCARDED", "STAGES", "ClassSplit", "Criterion", "Pipeline", "PipelineConfig", "RefactoredSubset",
    "RemappedDataset", "RunStore", "Subsets", "TauChoice", "TrainConfig", "TrainResult", "accuracy", "class_counts",
    "combine_k", "detection_metrics", "final_training_set", "fit", "fit_gmm", "load_model", "make_subsets",
    "model_factory", "predict", "proportional_quotas", "record_k", "refactor", "relabel", "resnet18", "roc_auc",
    "sample_table", "save_model", "scan_subset", "select_candidates", "select_tau", "small_cnn", "split_classes",
    "stale_stages", "whole_set",
]

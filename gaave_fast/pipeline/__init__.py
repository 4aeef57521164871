"""The GAAVE pipeline (Zheng et al., "Attack Can Benefit", AAAI 2023): split, refactor, base
models, GAAVE scans, criterion, self-annotators and retraining. See docs/pipeline.md."""

from .annotate import DISCARDED, relabel
from .config import ABLATIONS, PipelineConfig
from .criterion import TauChoice, combine_k, fit_gmm, select_tau
from .gaave import snapshot
from .metrics import detection_metrics, roc_auc
from .models import model_factory, resnet18, small_cnn
from .refactor import (
    RefactoredSubset,
    RemappedDataset,
    proportional_quotas,
    refactor,
    whole_set,
)
from .run import STAGES, Pipeline, dataset_labels, stale_stages
from .split import ClassSplit, class_counts, split_classes
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
    "ABLATIONS", "DISCARDED", "STAGES", "ClassSplit", "Pipeline", "PipelineConfig", "RefactoredSubset",
    "RemappedDataset", "TauChoice", "TrainConfig", "TrainResult", "accuracy", "class_counts", "combine_k",
    "dataset_labels", "detection_metrics", "fit", "fit_gmm", "load_model", "model_factory", "predict",
    "proportional_quotas", "refactor", "relabel", "resnet18", "roc_auc", "save_model", "select_tau",
    "small_cnn", "snapshot", "split_classes", "stale_stages", "whole_set",
]

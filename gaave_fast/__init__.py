"""gaave_fast: find and fix mislabeled samples in facial-expression datasets with GAAVE.

Main entry point: :func:`gaave_fast.scan` (the GAAVE vulnerability scan).
"""

from gaave_fast.data import (
    ArrayDataset,
    DatasetFormatError,
    DatasetNotFoundError,
    FaceDataset,
    balanced_sampler,
    load_cifar10_npz,
    load_fer2013_npz,
    long_tail_indices,
    make_loader,
    pair_noise,
    read_affectnet,
    read_fer2013_csv,
    read_ferplus,
    read_image_folder,
    read_manifest,
    read_rafdb,
    symmetric_noise,
    validate,
)
from gaave_fast.ops import build_info, cuda_available
from gaave_fast.pipeline import Pipeline, PipelineConfig, TrainConfig, detection_metrics
from gaave_fast.result import ScanResult
from gaave_fast.scan import scan

__version__ = "0.1.0"

__all__ = [
    "ArrayDataset",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "FaceDataset",
    "Pipeline",
    "PipelineConfig",
    "ScanResult",
    "TrainConfig",
    "__version__",
    "balanced_sampler",
    "build_info",
    "cuda_available",
    "detection_metrics",
    "load_cifar10_npz",
    "load_fer2013_npz",
    "long_tail_indices",
    "make_loader",
    "pair_noise",
    "read_affectnet",
    "read_fer2013_csv",
    "read_ferplus",
    "read_image_folder",
    "read_manifest",
    "read_rafdb",
    "scan",
    "symmetric_noise",
    "validate",
]

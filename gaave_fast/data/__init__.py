"""Data layer of gaave_fast: publisher-format readers, DALI / torch loaders, validation, noise tools.

Readers return a :class:`FaceDataset` (files) or :class:`ArrayDataset` (memory) whose items are
``(image float32 C×H×W, label, index)``; :func:`make_loader` turns either into batches of the
loader contract (dicts ``image``, ``label``, ``index``). DALI is imported only when a DALI
loader is built.
"""

from .affectnet import AFFECTNET_CLASSES, read_affectnet
from .arrays import (
    CIFAR10_CLASSES,
    CIFAR10N_LABELS,
    FER2013_CLASSES,
    ArrayDataset,
    load_cifar10_npz,
    load_fer2013_npz,
)
from .dali import DaliLoader, build_dali_pipeline, dali_available
from .dataset import FaceDataset, clip_box
from .errors import DatasetFormatError, DatasetNotFoundError, UnreadableSampleError
from .ferplus import FERPLUS_CLASSES, ferplus_targets, read_fer2013_csv, read_ferplus
from .folder import read_image_folder, read_manifest
from .loader import TorchLoader, make_loader
from .noise import long_tail_counts, long_tail_indices, pair_noise, symmetric_noise
from .rafdb import RAFDB_CLASSES, read_rafdb
from .sampling import balanced_rows, balanced_sampler, class_weights
from .validation import validate

__all__ = [
    "AFFECTNET_CLASSES",
    "CIFAR10N_LABELS",
    "CIFAR10_CLASSES",
    "FER2013_CLASSES",
    "FERPLUS_CLASSES",
    "RAFDB_CLASSES",
    "ArrayDataset",
    "DaliLoader",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "FaceDataset",
    "TorchLoader",
    "UnreadableSampleError",
    "balanced_rows",
    "balanced_sampler",
    "build_dali_pipeline",
    "class_weights",
    "clip_box",
    "dali_available",
    "ferplus_targets",
    "load_cifar10_npz",
    "load_fer2013_npz",
    "long_tail_counts",
    "long_tail_indices",
    "make_loader",
    "pair_noise",
    "read_affectnet",
    "read_fer2013_csv",
    "read_ferplus",
    "read_image_folder",
    "read_manifest",
    "read_rafdb",
    "symmetric_noise",
    "validate",
]

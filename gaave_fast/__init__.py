"""gaave_fast: find and fix mislabeled samples in facial-expression datasets with GAAVE.

Main entry point: :func:`gaave_fast.scan` (the GAAVE vulnerability scan).
"""

from gaave_fast.ops import build_info, cuda_available
from gaave_fast.result import ScanResult
from gaave_fast.scan import scan

__version__ = "0.1.0"

__all__ = ["ScanResult", "__version__", "build_info", "cuda_available", "scan"]

"""The run report: one self-contained HTML file plus its PNG plots.

``write_report(run_dir)`` reads a finished run folder (``gaave run``'s ``--out``) and writes
``<run_dir>/report/report.html`` with k histograms per subset (tau marked), candidates and
relabels per class with the old-to-new transition matrix, the most vulnerable samples as
thumbnails (old -> new label, k, score), baseline and final test accuracy, detection scores
against known true labels (optional), the broken files left out, the config and the timings.
The PNGs (``k_histograms.png``, ``classes.png``, ``transitions.png``, ``accuracy.png``,
``vulnerable.png``) are written beside it. The HTML embeds them as base64 and has no script.
"""

from .build import write_report
from .data import load_run

__all__ = ["load_run", "write_report"]

"""The report's PNG plots, drawn with matplotlib's object API (no pyplot state, no display).

Every function returns PNG bytes. Text from the dataset (class names, captions) has its ``$``
escaped, so matplotlib shows it as it is instead of parsing it as math.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_CLEAN, _FLAGGED, _FINAL, _BASE = "#4c72b0", "#dd8452", "#55a868", "#8c8c8c"


def k_histograms(table: pd.DataFrame, taus: dict[str, float], steps: int, scans: int) -> bytes:
    """One histogram of the combined k per subset, candidates (k <= tau) in orange, tau dashed.

    A decided (early-exit) record knows k exactly only where ``k_exact``; its other samples are
    drawn as two hatched bars right of S+1, "> τ" (kept) and "≤ τ" (candidates), since only that
    side of τ is known for them.

    Args:
        table: per-sample table (``subset``, ``k``; ``candidate`` and ``k_exact`` when decided).
        taus: threshold per subset.
        steps: S (k runs 0..S+1). scans: T' (a mean over T' scans moves in steps of 1/T').
    """
    subsets = [s for s in taus if (table["subset"] == s).any()] or sorted(set(table["subset"]) - {""})
    fig = Figure(figsize=(5.2 * max(len(subsets), 1), 3.4), layout="constrained")
    width = 1.0 / max(scans, 1)
    edges = np.arange(-width / 2, steps + 1 + width, width)
    for j, name in enumerate(subsets):
        ax = fig.add_subplot(1, max(len(subsets), 1), j + 1)
        rows = table.loc[table["subset"] == name]
        k = rows["k"].to_numpy(np.float64)
        tau = taus.get(name, -1.0)
        flagged = rows["candidate"].to_numpy(bool) if "k_exact" in rows else k <= tau
        exact = rows["k_exact"].to_numpy(bool) if "k_exact" in rows else np.ones(len(k), bool)
        keep = np.isfinite(k)
        k, flagged, exact = k[keep], flagged[keep], exact[keep]
        ax.hist([k[exact & ~flagged], k[exact & flagged]], bins=edges, stacked=True, color=[_CLEAN, _FLAGGED],
                label=["kept (k > τ)", "candidates (k ≤ τ)"])
        if not exact.all():
            censored = [int((~exact & ~flagged).sum()), int((~exact & flagged).sum())]
            ax.bar([steps + 2, steps + 3], censored, width=0.8, color="none", edgecolor=[_CLEAN, _FLAGGED],
                   hatch="//", label="k censored by early exit")
            ax.set_xticks([*range(0, steps + 2, max(1, (steps + 1) // 4)), steps + 2, steps + 3],
                          [*map(str, range(0, steps + 2, max(1, (steps + 1) // 4))), f"> {tau:g}", f"≤ {tau:g}"])
        if tau >= 0:
            ax.axvline(tau + width / 2, color="black", linestyle="--", linewidth=1.2, label=f"τ = {tau:g}")
        ax.set_title(f"{name}: {len(k)} samples, {int(flagged.sum())} candidates", fontsize=10)
        ax.set_xlabel(f"k (mean over {scans} scans; 0..{steps + 1})")
        ax.set_ylabel("samples")
        ax.legend(fontsize=8)
    return _png(fig)


def class_bars(summary: pd.DataFrame) -> bytes:
    """Per class: samples, candidates, relabeled away, discarded and relabeled into (grouped bars)."""
    cols = [("samples", _CLEAN), ("candidates", _FLAGGED), ("relabeled_away", "#c44e52"),
            ("discarded", _BASE), ("relabeled_into", _FINAL)]
    n = len(summary)
    fig = Figure(figsize=(max(6.0, 1.1 * n + 2), 3.6), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(n)
    w = 0.8 / len(cols)
    for j, (col, color) in enumerate(cols):
        ax.bar(x + (j - (len(cols) - 1) / 2) * w, summary[col], w, color=color, label=col.replace("_", " "))
    _class_ticks(ax.xaxis, x, summary["class"])
    ax.set_ylabel("samples")
    ax.set_yscale("log")
    fig.legend(fontsize=8, ncols=len(cols), loc="outside upper center")
    return _png(fig)


def transition_heatmap(matrix: np.ndarray, classes: Sequence[str]) -> bytes:
    """Candidates from their label (rows) to their new label or "discarded" (last column)."""
    c = len(classes)
    fig = Figure(figsize=(max(4.5, 0.7 * c + 2.5), max(3.5, 0.6 * c + 1.5)), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(matrix, cmap="Blues", aspect="auto")
    fig.colorbar(im, ax=ax, shrink=0.8, label="candidates")
    _class_ticks(ax.xaxis, np.arange(c + 1), [*classes, "discarded"])
    _class_ticks(ax.yaxis, np.arange(c), classes, rotate=False)
    ax.set_xlabel("new label")
    ax.set_ylabel("original label")
    top = matrix.max() if matrix.size else 0
    for (i, j), v in np.ndenumerate(matrix):
        if v:
            ax.text(j, i, str(v), ha="center", va="center", fontsize=8, color="white" if v > top / 2 else "black")
    return _png(fig)


def accuracy_bars(rows: dict[str, dict], classes: Sequence[str]) -> bytes:
    """Test accuracy per class of each model (e.g. baseline and final), with the overall values in the legend."""
    fig = Figure(figsize=(max(6.0, 0.9 * len(classes) + 2.5), 3.4), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(classes))
    w = 0.8 / max(len(rows), 1)
    colors = [_BASE, _FINAL, _CLEAN, _FLAGGED]
    for j, (name, m) in enumerate(rows.items()):
        per = [np.nan if v is None else v for v in m.get("class_accuracy", [])][: len(classes)]
        per += [np.nan] * (len(classes) - len(per))
        ax.bar(x + (j - (len(rows) - 1) / 2) * w, per, w, color=colors[j % len(colors)],
               label=f"{name}: accuracy {m['accuracy']:.3f}, mean class {m['mean_class_accuracy']:.3f}")
    _class_ticks(ax.xaxis, x, classes)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test accuracy")
    fig.legend(fontsize=8, loc="outside upper center")
    return _png(fig)


def thumbnail_sheet(images: Sequence[np.ndarray], captions: Sequence[str], columns: int = 8) -> bytes:
    """A contact sheet of uint8 H×W×3 thumbnails with a caption under each."""
    n = max(len(images), 1)
    rows = -(-n // columns)
    fig = Figure(figsize=(1.45 * columns, 1.75 * rows), layout="constrained")
    for i, (img, cap) in enumerate(zip(images, captions)):
        ax = fig.add_subplot(rows, columns, i + 1)
        ax.imshow(img, interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(_plain(cap), fontsize=6.5)
    return _png(fig)


def _class_ticks(axis, positions: np.ndarray, names: Sequence[str], rotate: bool = True) -> None:
    axis.set_ticks(positions)
    axis.set_ticklabels([_plain(str(n)) for n in names], rotation=30 if rotate else 0,
                        ha="right" if rotate else "center", fontsize=8)


def _plain(text: str) -> str:
    return text.replace("$", r"\$")


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    FigureCanvasAgg(fig)
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


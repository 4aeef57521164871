"""Step 7: the final model's training set (clean + relabelled samples)."""

from __future__ import annotations

import numpy as np

RETRAIN_MODES = ("gaave", "drop")


def final_training_set(labels: np.ndarray, candidate: np.ndarray, annotations: dict[str, np.ndarray] | None,
                       mode: str) -> tuple[np.ndarray, np.ndarray]:
    """The samples and labels the final model trains on.

    Args:
        labels: int64 [N] the given labels.
        candidate: bool [N] the noise candidates of step 5.
        annotations: step 6's ``{"index", "new_label"}`` (needed for ``"gaave"``).
        mode: ``"gaave"`` (clean samples + candidates with a new label) or ``"drop"`` (clean only:
            the "without self-annotator" ablation).

    Returns:
        ``(positions int64 [m], labels int64 [m])``.
    """
    if mode not in RETRAIN_MODES:
        raise ValueError(f"mode must be one of {RETRAIN_MODES}, got {mode!r}")
    lab = np.asarray(labels, dtype=np.int64).copy()
    keep = ~candidate
    if mode == "gaave":
        if annotations is None:
            raise ValueError("mode 'gaave' needs the self-annotators' labels")
        lab[annotations["index"]] = annotations["new_label"]
        keep = keep | (lab >= 0) & candidate
    pos = np.flatnonzero(keep)
    return pos, lab[pos]

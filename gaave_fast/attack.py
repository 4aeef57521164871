"""The GAAVE attack's defaults (the paper's best setting on RAF-DB, its Fig. 4), in [0, 1] pixel units."""

from __future__ import annotations

EPS = 1 / 255
"""L-inf radius ε: one grey level."""

STEPS = 8
"""PGD steps S; k counts the points x(0)..x(S), so it runs 0..S+1."""

ALPHA_PER_EPS = 1 / 8
"""Step size α as a fraction of ε."""


def default_alpha(eps: float, alpha: float | None = None) -> float:
    """``alpha`` when given, else ε/8."""
    return eps * ALPHA_PER_EPS if alpha is None else alpha

"""ScanResult: the per-sample outcome of a GAAVE scan, indexed by dataset index."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

COLUMNS = ("index", "k", "label", "pred", "first_miss", "margin", "loss")
# Columns of an early-exit scan (``scan(..., decide_tau=tau)``); a full scan has steps_run = S
# and k_exact = True everywhere and does not write them.
DECIDE_COLUMNS = ("steps_run", "k_exact")
_DTYPES = {
    "index": np.int64,
    "k": np.int16,
    "label": np.int64,
    "pred": np.int64,
    "first_miss": np.int16,
    "margin": np.float32,
    "loss": np.float32,
    "steps_run": np.int16,
    "k_exact": np.bool_,
}


def suspicion_score(k: np.ndarray, margin: np.ndarray) -> np.ndarray:
    """Suspicion score of each sample (float64 [N]); higher = more likely mislabeled.

    -(k + sigmoid(margin)): ordered by k first (k may be a mean over scans), and among equal k
    by the clean logit margin (a sample the model barely assigns to its label ranks higher).

    Args:
        k: [N] attack counts (int, or float when combined over scans).
        margin: [N] clean logit of the label minus the largest other logit.
    """
    k = np.asarray(k, dtype=np.float64)
    margin = np.asarray(margin, dtype=np.float64)
    return -(k + 1.0 / (1.0 + np.exp(-margin)))


@dataclass
class ScanResult:
    """Per-sample scan results, as numpy arrays of length N sorted by dataset index.

    Attributes:
        index: dataset index of each sample (int64, unique, ascending).
        k: number of points x(0)..x(S) still classified as the label (int16, 0..S+1);
            k_i of the paper. Small k = the label is easy to attack away = suspicious.
        label: the given (possibly noisy) label.
        pred: the model's prediction on the clean image x(0).
        first_miss: first step s whose prediction differs from the label; -1 if none.
        margin: clean logit of the label minus the largest other logit (logit units).
        loss: clean cross-entropy of the label (nats), the small-loss criterion's score.
        eps, alpha: the attack's radius and step in [0,1] pixel units; steps: S.
        meta: free-form settings of the run (model fingerprint, backend, ...).
        steps_run: PGD steps actually run per sample (int16, 0..S): S for a full scan; an
            early-exit scan stops at the step where the verdict ``k <= decide_tau`` became certain.
        k_exact: whether k is the exact count (bool): always for a full scan; for an early-exit
            scan only where the attack ran to the end (steps_run == S). Elsewhere k is censored:
            k counts the points 0..steps_run, and the true k lies in [k, :attr:`k_max`], which is
            entirely above decide_tau or entirely at or below it.
        decide_tau: the tau of an early-exit scan, None for a full scan.
    """

    index: np.ndarray
    k: np.ndarray
    label: np.ndarray
    pred: np.ndarray
    first_miss: np.ndarray
    margin: np.ndarray
    loss: np.ndarray
    eps: float
    alpha: float
    steps: int
    meta: dict[str, Any] = field(default_factory=dict)
    steps_run: np.ndarray | None = None
    k_exact: np.ndarray | None = None
    decide_tau: int | None = None

    def __post_init__(self) -> None:
        n = len(np.asarray(self.index))
        if self.steps_run is None:
            self.steps_run = np.full(n, self.steps)
        if self.k_exact is None:
            self.k_exact = np.asarray(self.steps_run) == self.steps
        if self.decide_tau is not None:
            self.decide_tau = int(self.decide_tau)
        arrays = {name: np.asarray(getattr(self, name), dtype=_DTYPES[name]) for name in (*COLUMNS, *DECIDE_COLUMNS)}
        n = len(arrays["index"])
        for name, values in arrays.items():
            if values.shape != (n,):
                raise ValueError(f"ScanResult.{name} must have shape ({n},), got {values.shape}")
        order = np.argsort(arrays["index"], kind="stable")
        for name, values in arrays.items():
            setattr(self, name, values[order])
        if n and np.any(np.diff(self.index) == 0):
            dup = self.index[np.flatnonzero(np.diff(self.index) == 0)[0]]
            raise ValueError(f"dataset index {dup} appears more than once in the scan")

    @property
    def columns(self) -> tuple[str, ...]:
        """The per-sample columns this result writes: COLUMNS, plus DECIDE_COLUMNS for early exit."""
        return COLUMNS if self.decide_tau is None else (*COLUMNS, *DECIDE_COLUMNS)

    @property
    def k_max(self) -> np.ndarray:
        """Upper bound of each sample's k (int16 [N]): k + (S - steps_run); equals k where k_exact."""
        return (self.k + (self.steps - self.steps_run)).astype(np.int16)

    def __len__(self) -> int:
        return len(self.index)

    def __repr__(self) -> str:
        return (
            f"ScanResult(n={len(self)}, eps={self.eps:.6g}, alpha={self.alpha:.6g}, steps={self.steps}, "
            f"mean k={self.k.mean() if len(self) else float('nan'):.3f})"
        )

    @property
    def score(self) -> np.ndarray:
        """Suspicion score (float64 [N]); higher = more likely mislabeled.

        See :func:`suspicion_score`.
        """
        return suspicion_score(self.k, self.margin)

    def noisy(self, tau: int) -> np.ndarray:
        """Dataset indices of the noise candidates, k <= tau (int64, ascending).

        Raises ValueError when censored k leave the verdict open for some sample (possible for an
        early-exit scan asked about another tau than its ``decide_tau``).
        """
        return self.index[self._at_most(tau)]

    def clean(self, tau: int) -> np.ndarray:
        """Dataset indices with k > tau (int64, ascending); ValueError as :meth:`noisy`."""
        return self.index[~self._at_most(tau)]

    def _at_most(self, tau: float) -> np.ndarray:
        """k <= tau per sample, from the bounds [k, k_max] (equal where k is exact)."""
        low, high = self.k <= tau, self.k_max <= tau
        if np.any(low != high):
            raise ValueError(
                f"k <= {tau} is unknown for {int((low != high).sum())} samples: this early-exit scan "
                f"decided k <= {self.decide_tau} only; scan fully (decide_tau=None) for other thresholds"
            )
        return low

    def to_pandas(self):
        """A DataFrame indexed by dataset index with k, label, pred, first_miss, margin, loss, score."""
        import pandas as pd

        frame = pd.DataFrame({name: getattr(self, name) for name in self.columns[1:]}, index=self.index)
        frame.index.name = "index"
        frame["score"] = self.score
        return frame

    def _settings(self) -> dict[str, Any]:
        settings = {"eps": self.eps, "alpha": self.alpha, "steps": self.steps, "meta": self.meta}
        if self.decide_tau is not None:
            settings["decide_tau"] = self.decide_tau
        return settings

    def save(self, path: str | Path) -> Path:
        """Write to ``.npz``, ``.parquet`` or ``.csv`` (chosen by the suffix); returns the path."""
        path = Path(path)
        suffix = path.suffix.lower()
        settings = json.dumps(self._settings())
        if suffix == ".npz":
            np.savez(path, settings=np.array(settings), **{name: getattr(self, name) for name in self.columns})
        elif suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.table({name: getattr(self, name) for name in self.columns})
            table = table.replace_schema_metadata({b"gaave_fast": settings.encode()})
            pq.write_table(table, path)
        elif suffix == ".csv":
            with open(path, "w", newline="") as f:
                f.write(f"# gaave_fast {settings}\n")
                self.to_pandas().drop(columns="score").to_csv(f)
        else:
            raise ValueError(f"save path {path}: use a .npz, .parquet or .csv suffix")
        return path

    @classmethod
    def load(cls, path: str | Path) -> ScanResult:
        """Read a file written by :meth:`save`."""
        path = Path(path)
        suffix = path.suffix.lower()
        if not path.exists():
            raise FileNotFoundError(f"scan result file {path} does not exist")
        if suffix == ".npz":
            with np.load(path) as data:
                missing = [c for c in (*COLUMNS, "settings") if c not in data]
                if missing:
                    raise ValueError(f"{path}: not a gaave_fast scan result (missing {missing})")
                settings = json.loads(str(data["settings"]))
                columns = {name: data[name] for name in (*COLUMNS, *DECIDE_COLUMNS) if name in data}
        elif suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            raw = (table.schema.metadata or {}).get(b"gaave_fast")
            if raw is None:
                raise ValueError(f"{path}: not a gaave_fast scan result (no settings in its metadata)")
            settings = json.loads(raw)
            columns = {name: table.column(name).to_numpy() for name in (*COLUMNS, *DECIDE_COLUMNS)
                       if name in table.column_names}
        elif suffix == ".csv":
            import pandas as pd

            with open(path) as f:
                first = f.readline()
            if not first.startswith("# gaave_fast "):
                raise ValueError(f"{path}: not a gaave_fast scan result (first line is not its header)")
            settings = json.loads(first[len("# gaave_fast "):])
            frame = pd.read_csv(path, comment="#")
            columns = {name: frame[name].to_numpy() for name in (*COLUMNS, *DECIDE_COLUMNS) if name in frame}
        else:
            raise ValueError(f"load path {path}: use a .npz, .parquet or .csv suffix")
        return cls(**columns, eps=settings["eps"], alpha=settings["alpha"], steps=settings["steps"],
                   meta=settings.get("meta", {}), decide_tau=settings.get("decide_tau"))

    @classmethod
    def concatenate(cls, parts: list[ScanResult]) -> ScanResult:
        """One result from several (e.g. one per rank), dropping repeated indices.

        DistributedSampler pads shards by repeating samples; a repeated index keeps
        its first occurrence.
        """
        if not parts:
            raise ValueError("concatenate needs at least one ScanResult")
        joined = {name: np.concatenate([getattr(p, name) for p in parts]) for name in (*COLUMNS, *DECIDE_COLUMNS)}
        _, first = np.unique(joined["index"], return_index=True)
        first.sort()
        head = parts[0]
        return cls(**{name: values[first] for name, values in joined.items()}, eps=head.eps,
                   alpha=head.alpha, steps=head.steps, meta=head.meta, decide_tau=head.decide_tau)

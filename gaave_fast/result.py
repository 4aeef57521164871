"""ScanResult: the per-sample outcome of a GAAVE scan, indexed by dataset index."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

COLUMNS = ("index", "k", "label", "pred", "first_miss", "margin", "loss")
_DTYPES = {
    "index": np.int64,
    "k": np.int16,
    "label": np.int64,
    "pred": np.int64,
    "first_miss": np.int16,
    "margin": np.float32,
    "loss": np.float32,
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

    def __post_init__(self) -> None:
        arrays = {name: np.asarray(getattr(self, name), dtype=_DTYPES[name]) for name in COLUMNS}
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
        """Dataset indices of the noise candidates, k <= tau (int64, ascending)."""
        return self.index[self.k <= tau]

    def clean(self, tau: int) -> np.ndarray:
        """Dataset indices with k > tau (int64, ascending)."""
        return self.index[self.k > tau]

    def to_pandas(self):
        """A DataFrame indexed by dataset index with k, label, pred, first_miss, margin, loss, score."""
        import pandas as pd

        frame = pd.DataFrame({name: getattr(self, name) for name in COLUMNS[1:]}, index=self.index)
        frame.index.name = "index"
        frame["score"] = self.score
        return frame

    def _settings(self) -> dict[str, Any]:
        return {"eps": self.eps, "alpha": self.alpha, "steps": self.steps, "meta": self.meta}

    def save(self, path: str | Path) -> Path:
        """Write to ``.npz``, ``.parquet`` or ``.csv`` (chosen by the suffix); returns the path."""
        path = Path(path)
        suffix = path.suffix.lower()
        settings = json.dumps(self._settings())
        if suffix == ".npz":
            np.savez(path, settings=np.array(settings), **{name: getattr(self, name) for name in COLUMNS})
        elif suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.table({name: getattr(self, name) for name in COLUMNS})
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
                columns = {name: data[name] for name in COLUMNS}
        elif suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            raw = (table.schema.metadata or {}).get(b"gaave_fast")
            if raw is None:
                raise ValueError(f"{path}: not a gaave_fast scan result (no settings in its metadata)")
            settings = json.loads(raw)
            columns = {name: table.column(name).to_numpy() for name in COLUMNS}
        elif suffix == ".csv":
            import pandas as pd

            with open(path) as f:
                first = f.readline()
            if not first.startswith("# gaave_fast "):
                raise ValueError(f"{path}: not a gaave_fast scan result (first line is not its header)")
            settings = json.loads(first[len("# gaave_fast "):])
            frame = pd.read_csv(path, comment="#")
            columns = {name: frame[name].to_numpy() for name in COLUMNS}
        else:
            raise ValueError(f"load path {path}: use a .npz, .parquet or .csv suffix")
        return cls(**columns, eps=settings["eps"], alpha=settings["alpha"], steps=settings["steps"],
                   meta=settings.get("meta", {}))

    @classmethod
    def concatenate(cls, parts: list[ScanResult]) -> ScanResult:
        """One result from several (e.g. one per rank), dropping repeated indices.

        DistributedSampler pads shards by repeating samples; a repeated index keeps
        its first occurrence.
        """
        if not parts:
            raise ValueError("concatenate needs at least one ScanResult")
        joined = {name: np.concatenate([getattr(p, name) for p in parts]) for name in COLUMNS}
        _, first = np.unique(joined["index"], return_index=True)
        first.sort()
        head = parts[0]
        return cls(**{name: values[first] for name, values in joined.items()}, eps=head.eps,
                   alpha=head.alpha, steps=head.steps, meta=head.meta)

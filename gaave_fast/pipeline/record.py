"""Step 4, the GAAVE scan as Algorithm 1 records it: k, clean margin and clean loss of every sample
of a subset, scanned with the base model and again after each of T' - 1 further training epochs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from gaave_fast.amp import scan_dtype
from gaave_fast.distributed import rank_world

from .refactor import RemappedDataset
from .train import TrainConfig, fit, resolve_device

SCAN_FIELDS = ("index", "k", "margin", "loss", "pred")
"""The arrays of one scan of a subset (see :func:`scan_subset`)."""
DECIDED_FIELDS = ("k_exact", "decide_tau")
"""The further arrays of one scan of a decided (early-exit) record (see :func:`scan_decided`)."""

Snapshots = tuple[Callable[[int], dict[str, np.ndarray] | None], Callable[[int, dict[str, np.ndarray]], None]]
"""``(load, save)``: ``load(j)`` returns saved scan ``j`` or None; ``save(j, arrays)`` keeps it."""


def resolve_backend(backend: str, device: torch.device) -> str:
    """``"auto"``: the compiled ``"fused"`` scan step when this build has it for ``device``, else ``"torch"``."""
    if backend != "auto":
        return backend
    from gaave_fast import ops

    ok = ops.extension_error() is None and (device.type != "cuda" or ops.cuda_available())
    return "fused" if ok else "torch"


def scan_subset(model: nn.Module, view: RemappedDataset, *, eps: float, alpha: float | None, steps: int,
                backend: str = "auto", batch_size: int = 256, device: str | torch.device | None = None,
                amp: str = "auto", compile: bool | str = False, progress: bool = False,
                positions: np.ndarray | None = None, decide_tau: int | None = None) -> dict[str, np.ndarray]:
    """Scan ``view`` once with :func:`gaave_fast.scan`: k, clean margin, clean loss and prediction per sample.

    Under torch.distributed each process scans every world-th sample and the results are
    gathered, so every process returns the full arrays. The view must list its positions in
    increasing order (as :class:`~.refactor.RefactoredSubset` does).

    Args:
        model: the network (the scan runs it in eval mode and restores its mode).
        view: the samples with their (remapped) labels; items ``(image in [0,1], label, position)``.
        eps, alpha, steps: the L-inf PGD attack in pixel units (alpha None = eps / 8).
        backend: scan backend, or ``"auto"`` (see :func:`resolve_backend`).
        amp: the model's autocast dtype by name (:func:`gaave_fast.amp.scan_dtype`; ``"auto"`` =
            bfloat16 on CUDA, float32 on CPU). The adversarial images stay float32.
        compile: ``torch.compile`` the model's side of the scan (see :func:`gaave_fast.scan`).
        batch_size, device, progress: passed to the scan.
        positions: scan only these rows of ``view`` (int, increasing); None = all.
        decide_tau: early exit at the verdict k <= decide_tau (``gaave_fast.scan``); the result
            then also holds ``k_exact`` bool [n].

    Returns:
        dict of arrays sorted by dataset position: ``index`` int64 [n], ``k`` int16 [n] in
        0..steps+1, ``margin`` float32 [n] (label logit minus the largest other), ``loss``
        float32 [n] (cross-entropy of the label, nats), ``pred`` int64 [n] (clean argmax).
    """
    from gaave_fast.scan import scan

    rank, world = rank_world()
    rows = np.arange(len(view)) if positions is None else np.asarray(positions, np.int64)
    sub = Subset(view, rows[rank::world].tolist())
    dev = resolve_device(device)
    backend = resolve_backend(backend, dev)
    # Under torch.distributed the scan gathers every rank's shard itself.
    res = scan(model, DataLoader(sub, batch_size=batch_size, shuffle=False), eps=eps, alpha=alpha, steps=steps,
               device=dev, amp=scan_dtype(amp, dev), backend=backend, compile=compile, progress=progress,
               num_samples=len(sub), decide_tau=decide_tau)
    out = {"index": res.index, "k": res.k, "margin": res.margin, "loss": res.loss, "pred": res.pred}
    if decide_tau is not None:
        out["k_exact"] = res.k_exact
    return out


def pilot_rows(n: int, fraction: float, seed: int) -> np.ndarray:
    """The seeded random pilot of a decided record: ``ceil(fraction * n)`` of the rows 0..n-1, sorted (int64)."""
    size = min(n, int(np.ceil(fraction * n)))
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False)).astype(np.int64)


def scan_decided(scan: Callable[..., dict[str, np.ndarray]], n: int, *, tau: int | None, pilot: np.ndarray,
                 choose: Callable[[np.ndarray], int]) -> dict[str, np.ndarray]:
    """One scan of a decided record: early exit at tau, after a full scan of the pilot when tau is not known yet.

    Args:
        scan: ``scan(positions=..., decide_tau=...)``, :func:`scan_subset` of the view with the
            run's settings.
        n: rows of the view.
        tau: the verdict's threshold, or None to choose it on the pilot with ``choose``.
        pilot: rows scanned fully when tau is chosen (see :func:`pilot_rows`).
        choose: ``choose(k of the pilot) -> tau``.

    Returns:
        The :data:`SCAN_FIELDS` arrays of all n rows, plus ``k_exact`` bool [n] and ``decide_tau``
        int16 [n] (the same tau on every row).
    """
    parts = []
    if tau is None:
        full = scan(positions=pilot, decide_tau=None)
        full["k_exact"] = np.ones(len(full["index"]), bool)
        tau = int(choose(full["k"]))
        parts.append(full)
        rest = np.setdiff1d(np.arange(n), pilot)
    else:
        rest = np.arange(n)
    if rest.size:
        parts.append(scan(positions=rest, decide_tau=tau))
    out = {f: np.concatenate([p[f] for p in parts]) for f in (*SCAN_FIELDS, "k_exact")}
    order = np.argsort(out["index"], kind="stable")
    out = {f: v[order] for f, v in out.items()}
    out["decide_tau"] = np.full(len(order), tau, np.int16)
    return out


def record_k(model: nn.Module, train_view: RemappedDataset, train_labels: np.ndarray, scan_view: RemappedDataset,
             config: TrainConfig, *, scans: int, base_epochs: int, seed: int, snapshots: Snapshots,
             base_checkpoint: Path, checkpoint: Path, device: str | torch.device | None,
             scan: Callable[[nn.Module, RemappedDataset], dict[str, np.ndarray]], desc: str = "record"
             ) -> dict[str, np.ndarray]:
    """Algorithm 1: scan the base model, then train one more epoch and scan again, ``scans`` times in all.

    Training continues the base model's run (same optimizer state and schedule, read from
    ``base_checkpoint``) on the whole subset; only ``scan_view`` (the samples of the subset's
    real classes) is scanned. Each scan is kept through ``snapshots`` as soon as it is done, and
    a saved scan is not recomputed, so an interrupted recording resumes where it stopped.

    Args:
        model: the base model with its trained weights.
        train_view, train_labels: the subset the model trains on and its labels, int64 [m].
        scan_view: the samples to scan.
        config: the base models' training settings.
        scans: T'.
        base_epochs: T, the epochs the base model was trained for.
        seed: the base model's training seed.
        snapshots: where scans are kept (see :data:`Snapshots`).
        base_checkpoint, checkpoint: the base run's training state; this stage's own.
        device: training device.
        scan: ``scan(model, view)`` returning one scan's arrays (:func:`scan_subset` with the
            run's attack settings).
        desc: progress-bar label.

    Returns:
        ``index`` int64 [n] and ``k``, ``margin``, ``loss``, ``pred`` (and a decided record's
        ``k_exact``, ``decide_tau``) stacked over the scans, [T', n].
    """
    load, save = snapshots

    def record(epoch: int, m: nn.Module) -> dict:
        j = epoch - base_epochs
        snap = load(j)
        if snap is None:
            snap = scan(m, scan_view)
            save(j, snap)
        return {"snapshot": j, "k_mean": float(np.asarray(snap["k"]).mean())}

    record(base_epochs, model)
    if scans > 1:
        fit(model, train_view, train_labels, config, seed=seed, device=device, epochs=base_epochs + scans - 1,
            checkpoint=checkpoint, init_checkpoint=base_checkpoint, on_epoch_end=record, desc=desc)
    snaps = [load(j) for j in range(scans)]
    out = {"index": snaps[0]["index"]}
    for f in snaps[0]:
        if f != "index":
            out[f] = np.stack([s[f] for s in snaps])
    return out

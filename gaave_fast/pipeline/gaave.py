"""One GAAVE snapshot: the attack count k, clean margin and clean loss of every sample of a view."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from .refactor import RemappedDataset
from .train import dist_info, resolve_device

SNAPSHOT_FIELDS = ("index", "k", "margin", "loss", "pred")


def resolve_backend(backend: str, device: torch.device) -> str:
    """``"auto"``: the compiled ``"fused"`` scan step when this build has it for ``device``, else ``"torch"``."""
    if backend != "auto":
        return backend
    from gaave_fast import ops

    ok = ops.extension_error() is None and (device.type != "cuda" or ops.cuda_available())
    return "fused" if ok else "torch"


def snapshot(model: nn.Module, view: RemappedDataset, *, eps: float, alpha: float | None, steps: int,
             backend: str = "auto", batch_size: int = 256, device: str | torch.device | None = None,
             progress: bool = False) -> dict[str, np.ndarray]:
    """Scan ``view`` with ``gaave_fast.scan``: k, clean margin, clean loss and prediction per sample.

    Under torch.distributed each process scans every world-th sample and the results are
    gathered, so every process returns the full arrays. The view must list its positions in
    increasing order (as :class:`~.refactor.RefactoredSubset` does).

    Args:
        model: the network (the scan runs it in eval mode and restores its mode).
        view: the samples with their (remapped) labels; items ``(image in [0,1], label, position)``.
        eps, alpha, steps: the L-inf PGD attack in pixel units (alpha None = eps / 8).
        backend: scan backend, or ``"auto"`` (see :func:`resolve_backend`).
        batch_size, device, progress: passed to the scan.

    Returns:
        dict of arrays sorted by dataset position: ``index`` int64 [n], ``k`` int16 [n] in
        0..steps+1, ``margin`` float32 [n] (label logit minus the largest other), ``loss``
        float32 [n] (cross-entropy of the label, nats), ``pred`` int64 [n] (clean argmax).
    """
    from gaave_fast.scan import scan

    rank, world = dist_info()
    sub = Subset(view, np.arange(len(view))[rank::world].tolist())
    dev = resolve_device(device)
    backend = resolve_backend(backend, dev)
    # bf16 autocast on CUDA as in training; the adversarial images stay float32 inside the scan.
    amp = torch.bfloat16 if dev.type == "cuda" and torch.cuda.is_bf16_supported() else None
    # Under torch.distributed the scan gathers every rank's shard itself.
    res = scan(model, DataLoader(sub, batch_size=batch_size, shuffle=False), eps=eps, alpha=alpha, steps=steps,
               device=dev, amp=amp, backend=backend, progress=progress, num_samples=len(sub))
    return {"index": res.index, "k": res.k, "margin": res.margin, "loss": res.loss, "pred": res.pred}

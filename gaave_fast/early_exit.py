"""The early-exit scan: stop attacking a sample once its verdict ``k <= tau`` is certain.

``scan(..., decide_tau=tau)`` runs this loop instead of the full one. After the points
x(0)..x(s) of a sample are counted with m matches, ``k <= tau`` is already settled when
m > tau (k never falls) or when m + (S - s) <= tau (even matching at every remaining point
keeps k <= tau); see :func:`gaave_fast.ops.verdict_certain`. The fused op
``pgd_decide_step_`` decides this per sample in the same launch as the step and freezes
decided samples, so k, first_miss and the step of the decision do not depend on how long a
sample stays in the batch, nor on what else is in it: the candidate set ``k <= tau`` is the
one of the full scan, and k itself is exact wherever the attack ran to the end.

The batch is an active set: every sample carries its own step. Decided samples leave it and
samples from the loader take their slots, so the model keeps working on full batches.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from gaave_fast import ops
from gaave_fast.batches import parse_batch, refuses_positions, samples_to_scan
from gaave_fast.checkpoint import ScanCheckpoint, image_checksums, joined, resume_from
from gaave_fast.result import COLUMNS, DECIDE_COLUMNS

__all__ = ["run_decided"]

_DECIDE_BACKENDS = {"fused": ops.pgd_decide_step_, "torch": ops.pgd_decide_step_reference_}


def _refill_every(device: torch.device) -> int:
    """Steps between refills of the active set.

    A refill reads ``decided`` on the host. On the CPU the kernels are synchronous, so reading
    it costs nothing and the batch is refilled after every step. On a GPU the read waits for the
    device to finish the step, which empties its queue of launches until the host has rebuilt the
    batch and launched the next forward pass; refilling every other step halves those waits, at
    the price of at most one step spent on a sample that was decided between two refills.
    """
    return 1 if device.type == "cpu" else 2


@dataclass
class _Queued:
    """Prepared samples from the loader waiting for a slot in the active set."""

    number: int  # loader batch number, for messages
    x0: torch.Tensor  # n×C×H×W on the device
    labels: torch.Tensor  # n int64 on the device
    index: np.ndarray  # n int64 dataset indices
    label: np.ndarray  # n int64
    checksum: np.ndarray  # n float32 image checksums, for the checkpoint

    def split(self, n: int) -> tuple[_Queued, _Queued]:
        """The first n samples and the rest."""
        head = _Queued(self.number, self.x0[:n], self.labels[:n], self.index[:n], self.label[:n], self.checksum[:n])
        tail = _Queued(self.number, self.x0[n:], self.labels[n:], self.index[n:], self.label[n:], self.checksum[n:])
        return head, tail


class _ActiveSet:
    """The samples under attack: device tensors plus their dataset indices on the host."""

    def __init__(self, memory_format: torch.memory_format) -> None:
        self.memory_format = memory_format  # the scan's layout, kept through index_select and cat
        # Host copies per slot: dataset index, label, loader batch number (for messages), checksum.
        self.index = np.zeros(0, np.int64)
        self.label = np.zeros(0, np.int64)
        self.number = np.zeros(0, np.int64)
        self.checksum = np.zeros(0, np.float32)
        self.x0: torch.Tensor | None = None
        self.x: torch.Tensor | None = None
        self.labels: torch.Tensor | None = None
        self.state: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.index)

    def keep(self, rows: np.ndarray) -> None:
        """Keep only these rows (host int64 positions, in order)."""
        if len(rows) == len(self):
            return
        self.index, self.label = self.index[rows], self.label[rows]
        self.number, self.checksum = self.number[rows], self.checksum[rows]
        if len(rows) == 0:
            self.x0 = self.x = self.labels = None
            self.state = {}
            return
        pick = torch.from_numpy(rows).to(self.x0.device)
        self.x0, self.x = (t.index_select(0, pick).contiguous(memory_format=self.memory_format)
                           for t in (self.x0, self.x))
        self.labels = self.labels.index_select(0, pick)
        self.state = {name: t.index_select(0, pick) for name, t in self.state.items()}

    def add(self, q: _Queued) -> None:
        """Append fresh samples at step 0."""
        n, dev = len(q.index), q.x0.device
        fresh = {
            "k": torch.zeros(n, dtype=torch.int32, device=dev),
            "first_miss": torch.full((n,), -1, dtype=torch.int32, device=dev),
            "step": torch.zeros(n, dtype=torch.int32, device=dev),
            "decided": torch.zeros(n, dtype=torch.bool, device=dev),
            "pred": torch.zeros(n, dtype=torch.int64, device=dev),
            "margin": torch.zeros(n, dtype=torch.float32, device=dev),
            "loss": torch.zeros(n, dtype=torch.float32, device=dev),
            "finite_logits": torch.ones(n, dtype=torch.bool, device=dev),
        }
        self.index = np.concatenate([self.index, q.index])
        self.label = np.concatenate([self.label, q.label])
        self.number = np.concatenate([self.number, np.full(n, q.number)])
        self.checksum = np.concatenate([self.checksum, q.checksum])
        if self.x0 is None:
            self.x0, self.x, self.labels, self.state = q.x0, q.x0.clone(), q.labels, fresh
            return
        fmt = self.memory_format
        self.x0 = torch.cat([self.x0, q.x0]).contiguous(memory_format=fmt)
        self.x = torch.cat([self.x, q.x0]).contiguous(memory_format=fmt)
        self.labels = torch.cat([self.labels, q.labels])
        self.state = {name: torch.cat([t, fresh[name]]) for name, t in self.state.items()}


def run_decided(loader, attack, tau: int, backend: str, store: ScanCheckpoint | None, checkpoint_every: float,
                progress: bool, num_samples: int | None) -> dict[str, np.ndarray]:
    """Scan ``loader`` with early exit at the verdict ``k <= tau``; returns the per-sample columns.

    Args:
        loader: as :func:`gaave_fast.scan.scan`.
        attack: the scan's ``_Attack`` (model, device, bounds, autocast, label checks).
        tau: the threshold whose verdict ends a sample's attack.
        backend: ``"fused"`` or ``"torch"`` (:func:`gaave_fast.ops.pgd_decide_step_reference_`).
        store, checkpoint_every, progress, num_samples: as the full scan's loop. A checkpoint
            holds the finished samples; samples still under attack are attacked again on resume,
            which gives the same values since a sample's attack does not depend on its batch.

    Returns:
        ``{column: array}`` for COLUMNS and DECIDE_COLUMNS, in the order samples finished.
    """
    from gaave_fast.scan import _loader_size, _progress

    names = (*COLUMNS, *DECIDE_COLUMNS)
    done, finished, verify_finished = resume_from(store, names)

    step_fn = _DECIDE_BACKENDS[backend]
    steps = attack.steps
    device = attack.device
    total = num_samples if num_samples is not None else _loader_size(loader)
    bar = _progress(total, progress, initial=len(finished))
    positions_refused = refuses_positions(loader)
    batches = iter(enumerate(loader))
    queue: deque[_Queued] = deque()
    queued = 0
    capacity = 0
    position = 0
    seen: set[int] = set(finished)
    active = _ActiveSet(torch.channels_last if attack.channels_last else torch.contiguous_format)
    last_save = time.monotonic()
    every = _refill_every(device)

    def pull() -> bool:
        """Prepare the loader's next batch into the queue; False when the loader is exhausted."""
        nonlocal position, capacity, queued
        try:
            number, raw = next(batches)
        except StopIteration:
            return False
        batch = parse_batch(raw, number)
        n = batch.images.shape[0]
        capacity = max(capacity, n)
        taken = samples_to_scan(batch, number, position, finished=finished, seen=seen,
                                positions_refused=positions_refused, verify_finished=verify_finished)
        position += n
        if taken is None:  # finished before a resume
            return True
        indices, images, labels = taken
        x0 = attack.prepare(images)
        finite = torch.isfinite(x0).flatten(1).all(dim=1).cpu()
        if not bool(finite.all()):
            bad = indices[int((~finite).nonzero()[0, 0])]
            raise ValueError(f"batch {number}: the image at dataset index {bad} holds NaN or Inf values")
        checksum = image_checksums(images).cpu().numpy().astype(np.float32)
        queue.append(_Queued(number, x0, labels.to(device, non_blocking=True), indices, labels.numpy(), checksum))
        queued += len(labels)
        return True

    def retire() -> None:
        """Move decided samples out of the active set into the results (one host sync)."""
        if not len(active):
            return
        state = {name: t.cpu().numpy() for name, t in active.state.items()}
        out = state["decided"]
        if not out.any():
            return
        if not state["finite_logits"][out].all():
            bad = int(np.flatnonzero(out & ~state["finite_logits"])[0])
            raise ValueError(f"batch {active.number[bad]}: the model's logits for dataset index {active.index[bad]} "
                             "are NaN or Inf, so k would be meaningless; check the model (and --mean/--std) on that "
                             "image")
        steps_run = state["step"][out].astype(np.int16) - 1  # step was advanced past the decision
        done["index"].append(active.index[out])
        done["label"].append(active.label[out])
        done["k"].append(state["k"][out].astype(np.int16))
        done["first_miss"].append(state["first_miss"][out].astype(np.int16))
        done["pred"].append(state["pred"][out].astype(np.int64))
        done["margin"].append(state["margin"][out].astype(np.float32))
        done["loss"].append(state["loss"][out].astype(np.float32))
        done["steps_run"].append(steps_run)
        done["k_exact"].append(steps_run == steps)
        done["checksum"].append(active.checksum[out])
        bar.update(int(out.sum()))
        active.keep(np.flatnonzero(~out))

    def refill() -> None:
        nonlocal queued
        while len(active) + queued < max(capacity, 1) and pull():
            pass
        while queue and len(active) < max(capacity, 1):
            q = queue[0]
            room = capacity - len(active)
            if len(q.index) <= room:
                queue.popleft()
                take = q
            else:  # split the queued batch: the rest waits for the next free slots
                take, queue[0] = q.split(room)
            queued -= len(take.index)
            active.add(take)

    try:
        iteration = 0
        refill()
        while len(active):
            _attack_step(attack, active, step_fn, steps, tau)
            iteration += 1
            if iteration % every == 0 or len(active) < capacity:
                retire()
                if store is not None and time.monotonic() - last_save >= checkpoint_every:
                    store.save(joined(done))
                    last_save = time.monotonic()
                refill()
    finally:
        bar.close()
    if store is not None:
        store.save(joined(done))
    return joined(done, names)


def _attack_step(attack, active: _ActiveSet, step_fn, steps: int, tau: int) -> None:
    """One forward/backward pass over the active set and one decide-step (no host sync)."""
    from gaave_fast.scan import _margin

    n = len(active)
    eps, alpha, lo, hi = attack.bounds(active.x0.shape[1])
    label_max = int(active.label.max())
    st = active.state
    x = active.x.requires_grad_(True)
    # The logits and the summed cross-entropy, as in the full scan (compiled when the scan is).
    logits, loss = attack._loss(x, active.labels, n, label_max)
    clean = logits.detach()
    # Non-finite logits stop the scan (as in the full scan) once the sample retires; decided rows are ignored.
    st["finite_logits"] &= torch.isfinite(clean).all(dim=1) | st["decided"]
    fresh = st["step"] == 0  # samples at x(0): their clean statistics are these logits
    st["pred"] = torch.where(fresh, clean.argmax(dim=1), st["pred"])
    st["margin"] = torch.where(fresh, _margin(clean, active.labels), st["margin"])
    st["loss"] = torch.where(fresh, F.cross_entropy(clean.float(), active.labels, reduction="none"), st["loss"])
    (grad,) = torch.autograd.grad(loss, x)
    x = x.detach()
    step_fn(x, active.x0, grad, clean, active.labels, st["k"], st["first_miss"], st["step"], st["decided"],
            steps, tau, eps, alpha, lo, hi)
    active.x = x

"""gaave_fast.scan: the GAAVE vulnerability scan (Eq. 3 of "Attack Can Benefit").

For every sample the scan runs untargeted L-inf PGD from the clean image x(0),

    x(s+1) = Proj_{x0, eps}( x(s) + alpha * sign(grad_x L(theta, x(s), y)) ),  clipped to [0, 1],

and counts k = #{s in 0..S : argmax f(x(s)) = y}. Mislabeled samples sit close to
the decision boundary of their (wrong) label and lose it within a few steps, so
small k marks noise candidates.

Per batch the scan computes only input gradients (parameters are frozen for the
scan), launches one fused op per step (count + sign step + projection + clamp),
and synchronises with the host once per batch, one batch late, so the GPU never
waits for Python.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gaave_fast import ops
from gaave_fast.attack import EPS, STEPS, default_alpha
from gaave_fast.batches import parse_batch, refuses_positions, samples_to_scan
from gaave_fast.checkpoint import (
    ScanCheckpoint,
    data_fingerprint,
    image_checksums,
    joined,
    model_fingerprint,
    resume_from,
)
from gaave_fast.distributed import rank_world
from gaave_fast.early_exit import run_decided
from gaave_fast.result import COLUMNS, DECIDE_COLUMNS, ScanResult

__all__ = ["scan"]

StepFn = Callable[..., None]
CountFn = Callable[..., None]
_BACKENDS: dict[str, tuple[StepFn, CountFn]] = {
    "fused": (ops.pgd_step_, ops.count_k_),
    "torch": (ops.pgd_step_reference_, ops.count_k_reference_),
}


def scan(
    model: torch.nn.Module,
    loader: Iterable,
    *,
    eps: float = EPS,
    alpha: float | None = None,
    steps: int = STEPS,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    device: torch.device | str | None = None,
    amp: torch.dtype | None = None,
    channels_last: bool | None = None,
    backend: str = "fused",
    cuda_graph: bool = False,
    compile: bool | str = False,
    checkpoint: str | Path | None = None,
    checkpoint_every: float = 60.0,
    progress: bool = True,
    num_samples: int | None = None,
    decide_tau: int | None = None,
) -> ScanResult:
    """Attack every sample of ``loader`` with L-inf PGD and count k per sample.

    Args:
        model: classifier returning logits [N, K]. It is put in eval mode with its
            parameters' ``requires_grad`` off during the scan; both are restored after.
        loader: yields batches ``(images, labels[, indices])`` or dicts with
            ``image``/``label``/``index`` keys (DALI iterators' output too). Images are
            N×C×H×W: float in [0,1], float normalized with ``mean``/``std``, or uint8
            0..255 (converted to [0,1], then normalized when mean/std are given).
            Without indices, positions in the loader are used (refused for shuffling
            loaders).
        eps: L-inf radius in [0,1] pixel units (default 1/255).
        alpha: step size in pixel units (default eps / 8).
        steps: number of PGD steps S; k counts the S + 1 points x(0)..x(S).
        mean, std: per-channel normalization of the images the model takes; eps,
            alpha and the valid range [0,1] are mapped through it per channel.
        device: where to attack (default: the model's device).
        amp: autocast dtype for the model (e.g. ``torch.bfloat16``), or None for none.
            The adversarial images themselves stay float32.
        channels_last: use channels_last memory (default: on for CUDA).
        backend: ``"fused"`` (the compiled op) or ``"torch"`` (the same step in plain
            PyTorch; the reference and benchmark baseline). Both give identical k in
            float32.
        cuda_graph: capture the S-step loop as a CUDA graph per batch shape (CUDA only;
            speeds up small images where launch overhead dominates).
        compile: run the model's forward, the loss and the input gradient through
            ``torch.compile`` (:mod:`gaave_fast.compiled`): True for the default mode, or a
            mode name (``"reduce-overhead"`` adds CUDA graphs, ``"max-autotune"``). Compiled
            once per model and kept while the model lives; k equals the eager path's in
            float32 up to the rare gradient sign that rounding flips.
        checkpoint: file (.npz) to save progress to; a rerun with the same arguments
            resumes from it and ends with the same result. A checkpoint of another model,
            setting or data (other labels or images at the same dataset indices) is refused
            with a ValueError. Under torch.distributed each rank writes ``<stem>.rank<r>.npz``.
        checkpoint_every: seconds between checkpoint writes (0 = after every batch).
        progress: show a progress bar with samples/s and ETA.
        num_samples: total number of samples, for the progress bar when the loader
            has no length.
        decide_tau: early exit (:mod:`gaave_fast.early_exit`): stop attacking a sample as soon
            as the verdict ``k <= decide_tau`` is certain, and refill the batch from the loader.
            The candidates ``k <= decide_tau`` are exactly those of the full scan; k is exact
            where ``result.k_exact`` (the attack ran to the end) and censored elsewhere, and
            ``result.steps_run`` holds the steps each sample took. Not with ``cuda_graph``.

    Returns:
        A :class:`ScanResult` sorted by dataset index. Under torch.distributed every
        rank returns the complete result gathered from all ranks.
    """
    alpha = default_alpha(eps, alpha)
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative int, got {steps!r}")
    if not (eps >= 0 and alpha >= 0):
        raise ValueError(f"eps and alpha must be >= 0 (pixel units), got eps={eps}, alpha={alpha}")
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {sorted(_BACKENDS)}, got {backend!r}")
    if backend == "fused" and ops.extension_error() is not None:
        raise RuntimeError(ops.extension_error())
    device = torch.device(device) if device is not None else _model_device(model)
    if backend == "fused" and device.type == "cuda" and not ops.cuda_available():
        raise RuntimeError(
            "backend='fused' on CUDA needs the CUDA kernels, but this build has only "
            f"{ops.build_info()!r}: reinstall with nvcc available (FORCE_CUDA=1), or use backend='torch'"
        )
    if compile and cuda_graph:
        raise ValueError("compile and cuda_graph exclude each other: use compile='reduce-overhead' for CUDA graphs")
    if cuda_graph and device.type != "cuda":
        raise ValueError("cuda_graph=True needs a CUDA device")
    if decide_tau is not None:
        if isinstance(decide_tau, bool) or not isinstance(decide_tau, (int, np.integer)) \
                or not -1 <= decide_tau <= steps + 1:
            raise ValueError(f"decide_tau must be an int in [-1, steps + 1] = [-1, {steps + 1}], got {decide_tau!r}")
        if cuda_graph:
            raise ValueError("decide_tau (early exit) cannot run in a CUDA graph: the batch changes every refill")
        decide_tau = int(decide_tau)
    if channels_last is None:
        channels_last = device.type == "cuda"

    rank, world = rank_world()
    settings = {"eps": float(eps), "alpha": float(alpha), "steps": steps,
                "mean": None if mean is None else [float(v) for v in mean],
                "std": None if std is None else [float(v) for v in std],
                "amp": None if amp is None else str(amp), "decide_tau": decide_tau}
    store = None
    if checkpoint is not None:
        path = Path(checkpoint)
        if world > 1:
            path = path.with_name(f"{path.stem}.rank{rank}{path.suffix or '.npz'}")
        fingerprint = dict(settings, model=model_fingerprint(model), num_samples=_dataset_size(loader, num_samples),
                           data=data_fingerprint(loader), rank=rank, world=world)
        store = ScanCheckpoint(path, fingerprint, COLUMNS if decide_tau is None else (*COLUMNS, *DECIDE_COLUMNS))

    attack = _Attack(model, device, steps, eps, alpha, mean, std, amp, channels_last, backend, cuda_graph, compile)
    with _frozen(model):
        if decide_tau is None:
            columns = _run(loader, attack, store, checkpoint_every, progress, num_samples)
        else:
            columns = run_decided(loader, attack, decide_tau, backend, store, checkpoint_every, progress,
                                  num_samples)
    if len(columns["index"]) == 0 and world == 1:
        raise ValueError("the loader yielded no samples: nothing to scan")
    meta = dict(settings, backend=backend, device=str(device), compile=compile)
    result = ScanResult(**columns, eps=float(eps), alpha=float(alpha), steps=steps, meta=meta,
                        decide_tau=decide_tau)
    if world > 1:
        result = _gather(result)
    return result


# --- the attack on one batch -----------------------------------------------------------


class _Attack:
    """Everything needed to attack one batch, resolved once per scan."""

    def __init__(self, model, device, steps, eps, alpha, mean, std, amp, channels_last, backend, cuda_graph,
                 compile=False):
        self.model = model
        self.compiled = None
        if compile:
            from gaave_fast.compiled import compiled_loss

            self.compiled = compiled_loss(model, None if compile in (True, "default") else compile)
        self.device = device
        self.steps = steps
        self.eps, self.alpha, self.mean, self.std = eps, alpha, mean, std
        self.amp = amp
        self.channels_last = channels_last
        self.step_fn, self.count_fn = _BACKENDS[backend]
        self._bounds: dict[int, tuple[torch.Tensor, ...]] = {}
        self._norm: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._graphs: dict[tuple, _Graph] | None = {} if cuda_graph else None
        self.num_classes: int | None = None  # the model's output width, once seen

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Images as float32 on the device, normalized, in the chosen memory layout."""
        if images.device.type == "cpu" and self.device.type == "cuda" and not images.is_pinned():
            images = images.pin_memory()
        x0 = images.to(self.device, non_blocking=True)
        if x0.dtype == torch.uint8:
            x0 = x0.float().div_(255)
            if self.mean is not None:
                m, s = self._normalization(x0.shape[1])
                x0 = x0.sub_(m).div_(s)
        else:
            x0 = x0.float()
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return x0.contiguous(memory_format=fmt)

    def _normalization(self, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
        if channels not in self._norm:
            _, _, lo, hi = self.bounds(channels)
            # lo = -mean/std and hi - lo = 1/std, so (x - mean)/std = (x + lo*std)/std.
            std = 1.0 / (hi - lo)
            self._norm[channels] = ((-lo * std).view(1, -1, 1, 1), std.view(1, -1, 1, 1))
        return self._norm[channels]

    def bounds(self, channels: int) -> tuple[torch.Tensor, ...]:
        if channels not in self._bounds:
            self._bounds[channels] = ops.channel_bounds(
                self.eps, self.alpha, channels, self.mean, self.std, self.device
            )
        return self._bounds[channels]

    def __call__(self, x0: torch.Tensor, labels: torch.Tensor, label_max: int) -> dict[str, torch.Tensor]:
        if self._graphs is None:
            return self.run(x0, labels, label_max)
        if self.num_classes is not None:
            # A replayed graph runs no Python: check the labels against the width seen before.
            self._check_labels(label_max, self.num_classes)
        key = (tuple(x0.shape), x0.stride())
        graph = self._graphs.get(key)
        if graph is None:
            try:
                graph = self._graphs[key] = _Graph(self, x0, labels, label_max)
            except RuntimeError as err:  # capture unsupported for this model: run eagerly
                warnings.warn(f"CUDA graph capture failed ({err}); scanning this batch shape eagerly", stacklevel=3)
                self._graphs[key] = graph = None  # type: ignore[assignment]
        if graph is None:
            return self.run(x0, labels, label_max)
        return graph.replay(x0, labels)

    def run(self, x0: torch.Tensor, labels: torch.Tensor, label_max: int) -> dict[str, torch.Tensor]:
        """Attack one batch; returns device tensors (no host synchronisation)."""
        n = x0.shape[0]
        eps, alpha, lo, hi = self.bounds(x0.shape[1])
        k = torch.zeros(n, dtype=torch.int32, device=self.device)
        first_miss = torch.full((n,), -1, dtype=torch.int32, device=self.device)
        x = x0.clone()
        clean = None
        finite_logits = torch.ones(n, dtype=torch.bool, device=self.device)
        for s in range(self.steps):
            x.requires_grad_(True)
            logits, loss = self._loss(x, labels, n, label_max)
            if s == 0:
                clean = logits.detach()
            finite_logits &= torch.isfinite(logits.detach()).all(dim=1)
            (grad,) = torch.autograd.grad(loss, x)
            x = x.detach()
            self.step_fn(x, x0, grad, logits.detach(), labels, k, first_miss, s, eps, alpha, lo, hi)
        # The last point needs no gradient: one eager forward (a compiled one would be a third graph).
        with torch.no_grad(), self._autocast():
            logits = self._logits(x, n, label_max)
        self.count_fn(logits, labels, k, first_miss, self.steps)
        finite_logits &= torch.isfinite(logits).all(dim=1)
        clean = logits if clean is None else clean
        return {"k": k, "first_miss": first_miss, "pred": clean.argmax(dim=1), "margin": _margin(clean, labels),
                "loss": F.cross_entropy(clean.float(), labels, reduction="none"),
                "finite": torch.isfinite(x0).flatten(1).all(dim=1), "finite_logits": finite_logits}

    def _loss(self, x: torch.Tensor, labels: torch.Tensor, n: int, label_max: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits [N, K] at x and their cross-entropy summed over the batch (float32)."""
        if self.compiled is None:
            with self._autocast():
                logits = self._logits(x, n, label_max)
            # Summed, not averaged: only the sign of each sample's gradient matters,
            # and a 1/N factor can underflow in low-precision backward passes.
            return logits, F.cross_entropy(logits.float(), labels, reduction="sum")
        if self.num_classes is None:
            # One eager forward checks the model's output before anything is compiled.
            with torch.no_grad(), self._autocast():
                self._logits(x, n, label_max)
        self._check_labels(label_max, self.num_classes)
        with self._autocast():
            return self.compiled(x, labels)

    def _autocast(self):
        if self.amp is None:
            return contextlib.nullcontext()
        # The autocast weight cache must stay off while a CUDA graph is captured.
        return torch.autocast(device_type=self.device.type, dtype=self.amp, cache_enabled=self._graphs is None)

    def _logits(self, x: torch.Tensor, n: int, label_max: int) -> torch.Tensor:
        logits = self.model(x)
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != n:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"the model must return logits of shape [N, K] = [{n}, K], got {shape}")
        if logits.dtype == torch.float64:  # the attack ops take float32 (and lower-precision autocast) logits
            logits = logits.float()
        if logits.shape[1] < 2:
            raise ValueError(f"the model must output at least 2 classes, got {logits.shape[1]}")
        self.num_classes = logits.shape[1]
        self._check_labels(label_max, self.num_classes)
        return logits

    @staticmethod
    def _check_labels(label_max: int, num_classes: int) -> None:
        if label_max >= num_classes:
            raise ValueError(
                f"label {label_max} is outside the model's {num_classes} outputs (labels must be "
                f"0..{num_classes - 1})"
            )


class _Graph:
    """The S-step attack of one batch shape captured as a CUDA graph, replayed per batch."""

    def __init__(self, attack: _Attack, x0: torch.Tensor, labels: torch.Tensor, label_max: int):
        self.x0 = x0.clone()
        self.labels = labels.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up outside the capture (cuDNN autotuning, allocator)
            for _ in range(2):
                attack.run(self.x0, self.labels, label_max)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = attack.run(self.x0, self.labels, label_max)

    def replay(self, x0: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        self.x0.copy_(x0)
        self.labels.copy_(labels)
        self.graph.replay()
        return {k: v.clone() for k, v in self.outputs.items()}


def _margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Logit of the label minus the largest other logit, per row (float32 [N])."""
    values = logits.float()
    own = values.gather(1, labels[:, None])[:, 0]
    others = values.scatter(1, labels[:, None], float("-inf")).amax(dim=1)
    return own - others


# --- the loop over the loader -----------------------------------------------------------


@dataclass
class _Pending:
    number: int
    indices: np.ndarray
    labels: np.ndarray
    out: dict[str, torch.Tensor]


def _run(loader, attack: _Attack, store: ScanCheckpoint | None, checkpoint_every: float, progress: bool,
         num_samples: int | None) -> dict[str, np.ndarray]:
    done, finished, verify_finished = resume_from(store, COLUMNS)

    total = num_samples if num_samples is not None else _loader_size(loader)
    bar = _progress(total, progress, initial=len(finished))
    positions_refused = refuses_positions(loader)
    position = 0
    pending: _Pending | None = None
    last_save = time.monotonic()
    seen: set[int] = set(finished)

    def collect(p: _Pending) -> None:
        out = {k: v.cpu() for k, v in p.out.items()}  # the one host sync per batch
        if not bool(out["finite"].all()):
            bad = p.indices[int((~out["finite"]).nonzero()[0, 0])]
            raise ValueError(f"batch {p.number}: the image at dataset index {bad} holds NaN or Inf values")
        if not bool(out["finite_logits"].all()):
            bad = p.indices[int((~out["finite_logits"]).nonzero()[0, 0])]
            raise ValueError(f"batch {p.number}: the model's logits for dataset index {bad} are NaN or Inf, so k "
                             "would be meaningless; check the model (and --mean/--std) on that image")
        done["index"].append(p.indices)
        done["label"].append(p.labels)
        done["k"].append(out["k"].numpy().astype(np.int16))
        done["first_miss"].append(out["first_miss"].numpy().astype(np.int16))
        done["pred"].append(out["pred"].numpy().astype(np.int64))
        done["margin"].append(out["margin"].numpy().astype(np.float32))
        done["loss"].append(out["loss"].numpy().astype(np.float32))
        done["checksum"].append(out["checksum"].numpy().astype(np.float32))
        bar.update(len(p.indices))

    try:
        for number, raw in enumerate(loader):
            batch = parse_batch(raw, number)
            taken = samples_to_scan(batch, number, position, finished=finished, seen=seen,
                                    positions_refused=positions_refused, verify_finished=verify_finished)
            position += batch.images.shape[0]
            if taken is None:  # finished before a resume
                continue
            indices, images, labels = taken
            label_max = int(labels.max()) if len(labels) else 0
            x0 = attack.prepare(images)
            out = attack(x0, labels.to(attack.device, non_blocking=True), label_max)
            out["checksum"] = image_checksums(images)
            current = _Pending(number, indices, labels.numpy(), out)
            if pending is not None:
                collect(pending)  # the previous batch: finished on the device by now
            pending = current
            if store is not None and time.monotonic() - last_save >= checkpoint_every:
                collect(pending)
                pending = None
                store.save(joined(done))
                last_save = time.monotonic()
        if pending is not None:
            collect(pending)
            pending = None
    finally:
        bar.close()
    if store is not None:
        store.save(joined(done))
    return joined(done, COLUMNS)


# --- helpers ---------------------------------------------------------------------------


@contextlib.contextmanager
def _frozen(model: torch.nn.Module):
    """Eval mode and no parameter gradients for the scan; restored afterwards (every submodule's own mode)."""
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(modes[0][1])  # the root's own train() (it may do more than set flags) ...
        for m, mode in modes:  # ... then each submodule's flag as it was
            m.training = mode


def _model_device(model: torch.nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def _loader_size(loader) -> int | None:
    for attr in ("sampler", "dataset"):
        inner = getattr(loader, attr, None)
        if inner is not None:
            try:
                return len(inner)
            except TypeError:
                pass
    return None


def _dataset_size(loader, num_samples: int | None) -> int | None:
    if num_samples is not None:
        return num_samples
    dataset = getattr(loader, "dataset", None)
    try:
        return len(dataset) if dataset is not None else None
    except TypeError:
        return None


def _progress(total: int | None, enabled: bool, initial: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="img", desc="GAAVE scan", disable=not enabled,
                dynamic_ncols=True, smoothing=0.1)


def _gather(local: ScanResult) -> ScanResult:
    """Every rank's shard, joined into one result on every rank."""
    parts: list = [None] * torch.distributed.get_world_size()
    payload = {name: getattr(local, name) for name in (*COLUMNS, *DECIDE_COLUMNS)}
    torch.distributed.all_gather_object(parts, payload)
    results = [
        ScanResult(**p, eps=local.eps, alpha=local.alpha, steps=local.steps, meta=local.meta,
                   decide_tau=local.decide_tau)
        for p in parts
    ]
    merged = ScanResult.concatenate(results)
    if len(merged) == 0:
        raise ValueError("the loaders of all ranks yielded no samples: nothing to scan")
    return merged

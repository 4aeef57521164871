"""Training and prediction for the pipeline's models (base models, annotators, final model).

* Optimiser defaults follow the paper: Adam, lr 1e-3, weight decay 1e-5, constant lr.
* Determinism: the order of an epoch's samples and its augmentation draws come from a generator
  seeded by ``(seed, epoch)``; the global torch RNG (dropout and the like) is seeded once at the
  start and saved in every checkpoint. A run resumed from the checkpoint of epoch e therefore
  replays epochs e+1.. exactly as the uninterrupted run (bit-identical on CPU).
* Checkpoints (one file, overwritten atomically after each epoch) hold the model, optimizer,
  scheduler, AMP scaler, RNG states, completed epochs and history; they load with
  ``torch.load(weights_only=True)``.
* CUDA: AMP (bf16 where supported, else fp16 with a gradient scaler) and channels_last by
  default. Under ``torchrun`` (torch.distributed initialised) the model is wrapped in
  DistributedDataParallel and each process takes every world-th sample of the epoch's order;
  ``batch_size`` is per process. Only rank 0 writes checkpoints.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from gaave_fast import files
from gaave_fast.amp import autocast_dtype
from gaave_fast.distributed import rank_world

SCHEDULES = ("constant", "cosine", "step")
OPTIMIZERS = ("adam", "sgd")


@dataclass
class TrainConfig:
    """How one model is trained.

    Attributes:
        epochs: training epochs (base models: epochs before the GAAVE scans start).
        batch_size: samples per step (per process under DDP).
        optimizer: ``"adam"`` or ``"sgd"`` (momentum ``momentum``, Nesterov off).
        lr: learning rate. weight_decay: L2 coefficient (coupled, as in torch's Adam).
        schedule: ``"constant"``, ``"cosine"`` (to 0 over all epochs) or ``"step"`` (x
            ``lr_gamma`` every ``lr_step`` epochs).
        flip: random horizontal flips. crop_padding: random crops after zero padding by this
            many pixels (0 = off).
        oversample: draw each epoch's samples class-balanced with replacement (for long tails).
        amp, channels_last: None = on when training on CUDA.
        num_workers: DataLoader workers. eval_batch_size: batch size of prediction passes.
        progress: tqdm progress bars.
    """

    epochs: int = 30
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 1e-5
    momentum: float = 0.9
    schedule: str = "constant"
    lr_step: int = 30
    lr_gamma: float = 0.1
    flip: bool = True
    crop_padding: int = 0
    oversample: bool = False
    amp: bool | None = None
    channels_last: bool | None = None
    num_workers: int = 0
    eval_batch_size: int = 512
    progress: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError(f"batch_size and eval_batch_size must be >= 1, got {self.batch_size}, "
                             f"{self.eval_batch_size}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)) or not self.weight_decay >= 0:
            raise ValueError(f"lr must be > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}")
        if self.crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {self.crop_padding}")


@dataclass
class TrainResult:
    """What :func:`fit` returns: the trained (unwrapped) model and per-epoch history."""

    model: nn.Module
    history: list[dict] = field(default_factory=list)


EpochCallback = Callable[[int, nn.Module], "dict | None"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` or, when None, the local CUDA device if available, else the CPU."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def epoch_rows(labels: np.ndarray, seed: int, epoch: int, oversample: bool) -> np.ndarray:
    """The order in which one epoch visits the rows of a dataset (before DDP sharding).

    Args:
        labels: int [n] labels (used for class-balanced oversampling).
        seed, epoch: seed the draw (0-based epoch).
        oversample: draw n rows with replacement, each class equally likely; else a permutation.

    Returns:
        int64 [n] row numbers.
    """
    g = torch.Generator().manual_seed(_mix(seed, epoch, 0))
    n = len(labels)
    if not oversample:
        return torch.randperm(n, generator=g).numpy()
    labels = np.asarray(labels, dtype=np.int64)
    w = 1.0 / np.bincount(labels)[labels]
    return torch.multinomial(torch.as_tensor(w), n, replacement=True, generator=g).numpy()


def augment(x: torch.Tensor, flip: bool, crop_padding: int, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and padded random crop of a batch.

    Args:
        x: [N, C, H, W] images (any device).
        flip: flip each image with probability 1/2.
        crop_padding: zero-pad by this many pixels and crop back to H x W at a random offset.
        generator: CPU generator for the draws (so results do not depend on the device).
    """
    n, _, h, w = x.shape
    if flip:
        m = (torch.rand(n, generator=generator) < 0.5).to(x.device)
        x = torch.where(m.view(-1, 1, 1, 1), x.flip(3), x)
    if crop_padding > 0:
        p = crop_padding
        oy = torch.randint(0, 2 * p + 1, (n,), generator=generator).to(x.device)
        ox = torch.randint(0, 2 * p + 1, (n,), generator=generator).to(x.device)
        xp = F.pad(x, (p, p, p, p))
        rows = (oy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # [N, H, 1]
        cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, :]  # [N, 1, W]
        x = xp.permute(0, 2, 3, 1)[torch.arange(n, device=x.device)[:, None, None], rows, cols]
        x = x.permute(0, 3, 1, 2).contiguous()
    return x


def fit(model: nn.Module, dataset: Dataset, labels: np.ndarray, config: TrainConfig, *, seed: int,
        device: str | torch.device | None = None, epochs: int | None = None, stop_at: int | None = None,
        checkpoint: str | Path | None = None, init_checkpoint: str | Path | None = None,
        on_epoch_end: EpochCallback | None = None, desc: str = "train",
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> TrainResult:
    """Train ``model`` with cross-entropy (or ``loss_fn``) on ``dataset``, resuming from ``checkpoint`` if present.

    Args:
        model: the network (freshly initialised unless resuming); moved to ``device``.
        dataset: map-style dataset of ``(image float [C,H,W] in [0,1], label, index)``.
        labels: int [n] labels of ``dataset`` rows (for oversampling and accuracy); must match
            the labels the dataset returns.
        config: the :class:`TrainConfig`.
        seed: seeds initial RNG state, epoch orders and augmentation.
        device: None = CUDA if available.
        epochs: length of the schedule (default ``config.epochs``).
        stop_at: stop after this many completed epochs (default ``epochs``); a later call with
            a larger ``stop_at`` and the same checkpoint continues the same run.
        checkpoint: file for the per-epoch training state; an existing one is resumed.
        init_checkpoint: start from this training state when ``checkpoint`` does not exist yet
            (to continue another stage's run, e.g. the GAAVE epochs after the base model).
        on_epoch_end: called as ``f(completed_epochs, model)`` after each epoch, before the
            checkpoint is written; a returned dict is merged into that epoch's history entry.
        desc: progress-bar label.
        loss_fn: ``loss_fn(logits float32 [B, C], labels int64 [B])`` -> scalar loss to minimise
            instead of the cross-entropy (e.g. a noise-robust loss).

    Returns:
        :class:`TrainResult` with the unwrapped model (on ``device``) and the history, one dict
        per completed epoch (``epoch``, ``loss``, ``train_acc`` on the augmented batches, ``lr``).
    """
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(dataset):
        raise ValueError(f"labels has {len(labels)} entries for a dataset of {len(dataset)}")
    if len(dataset) == 0:
        raise ValueError(f"{desc}: no samples to train on")
    if len(dataset) == 1 and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise ValueError(f"{desc}: a single training sample, and BatchNorm needs at least two per batch; the data is "
                         "too small for this model")
    epochs = config.epochs if epochs is None else int(epochs)
    stop_at = epochs if stop_at is None else int(stop_at)
    if not 0 <= stop_at <= epochs:
        raise ValueError(f"stop_at must be in 0..epochs={epochs}, got {stop_at}")
    dev = resolve_device(device)
    amp = dev.type == "cuda" if config.amp is None else (config.amp and dev.type == "cuda")
    cl = dev.type == "cuda" if config.channels_last is None else config.channels_last
    rank, world = rank_world()

    model = model.to(dev)
    if cl:
        model = model.to(memory_format=torch.channels_last)
    opt = _optimizer(model, config)
    sched = _scheduler(opt, config, epochs)
    amp_dtype = autocast_dtype(dev) or torch.float16  # unused (autocast disabled) off CUDA
    scaler = torch.amp.GradScaler("cuda", enabled=amp and amp_dtype == torch.float16)

    torch.manual_seed(_mix(seed, 0, 1))
    history: list[dict] = []
    start = 0
    src = checkpoint if checkpoint is not None and Path(checkpoint).exists() else init_checkpoint
    if src is not None and Path(src).exists():
        state = torch.load(src, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if sched is not None and state["scheduler"] is not None:
            sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng_cpu"])
        if dev.type == "cuda" and state["rng_cuda"]:
            torch.cuda.set_rng_state(state["rng_cuda"], dev)
        start, history = int(state["epoch"]), list(state["history"])
        if start > epochs:
            raise ValueError(f"checkpoint {src} has {start} epochs, more than epochs={epochs}")

    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)

    for epoch in range(start, stop_at):
        net.train()
        g = torch.Generator().manual_seed(_mix(seed, epoch, 2))
        rows = _shard(epoch_rows(labels, seed, epoch, config.oversample), rank, world)
        tot_loss, tot_ok, tot_n = (torch.zeros((), device=dev) for _ in range(3))
        bar = tqdm(_batches(dataset, rows, config.batch_size, config.num_workers, dev), total=math.ceil(len(rows) / config.batch_size),
                   desc=f"{desc} {epoch + 1}/{epochs}", disable=not config.progress or rank != 0, leave=False)
        for x, y in bar:
            x = augment(x, config.flip, config.crop_padding, g)
            if cl:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp):
                out = net(x)
                loss = (F.cross_entropy if loss_fn is None else loss_fn)(out.float(), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            tot_loss += loss.detach() * len(y)
            tot_ok += (out.argmax(1) == y).sum()
            tot_n += len(y)
        if world > 1:
            for t in (tot_loss, tot_ok, tot_n):
                dist.all_reduce(t)
        lr = opt.param_groups[0]["lr"]
        if sched is not None:
            sched.step()
        entry = {"epoch": epoch + 1, "loss": float(tot_loss / tot_n), "train_acc": float(tot_ok / tot_n), "lr": lr}
        if on_epoch_end is not None:
            entry.update(on_epoch_end(epoch + 1, model) or {})
        history.append(entry)
        if checkpoint is not None and rank == 0:
            _save_state(checkpoint, model, opt, sched, scaler, dev, epoch + 1, history)
        if world > 1:
            dist.barrier()
    return TrainResult(model, history)


@torch.no_grad()
def predict(model: nn.Module, dataset: Dataset, *, batch_size: int = 512, device: str | torch.device | None = None,
            amp: bool | None = None, num_workers: int = 0, progress: bool = False,
            desc: str = "predict") -> tuple[np.ndarray, np.ndarray]:
    """Logits of every sample (eval mode, no augmentation).

    Args:
        model: the network; dataset: map-style ``(image, label, index)`` items.
        batch_size, device, amp (None = on for CUDA), num_workers, progress: as in :func:`fit`.

    Returns:
        ``(index int64 [n], logits float32 [n, K])`` in dataset row order, where ``index`` is
        each item's third element; ``(int64 [0], float32 [0, 0])`` for an empty dataset.
    """
    dev = resolve_device(device)
    amp = dev.type == "cuda" if amp is None else (amp and dev.type == "cuda")
    amp_dtype = autocast_dtype(dev) or torch.float16  # unused (autocast disabled) off CUDA
    was_training = model.training
    model.eval().to(dev)
    idx, outs = [], []
    rows = np.arange(len(dataset))
    loader = _loader(dataset, rows, batch_size, num_workers, dev)
    for x, _, i in tqdm(loader, total=len(loader), desc=desc, disable=not progress, leave=False):
        with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp):
            outs.append(model(x.to(dev, non_blocking=True)).float().cpu())
        idx.append(torch.as_tensor(i))
    model.train(was_training)
    if not outs:  # an empty dataset: the number of classes is unknown without a forward pass
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    return torch.cat(idx).numpy().astype(np.int64), torch.cat(outs).numpy()


def accuracy(pred: np.ndarray, labels: np.ndarray, num_classes: int | None = None) -> dict:
    """Accuracy and mean class accuracy (the mean over classes present in ``labels`` of their recall).

    Args:
        pred, labels: int [n] predicted and true classes.
        num_classes: C (inferred when None).

    Returns:
        ``{"accuracy": float, "mean_class_accuracy": float, "class_accuracy": list[float | None]}``
        (None for classes absent from ``labels``).
    """
    pred, labels = np.asarray(pred, np.int64), np.asarray(labels, np.int64)
    if pred.shape != labels.shape:
        raise ValueError(f"pred {pred.shape} and labels {labels.shape} differ")
    c = int(max(labels.max(), pred.max()) + 1) if num_classes is None else num_classes
    per = []
    for k in range(c):
        m = labels == k
        per.append(float((pred[m] == k).mean()) if m.any() else None)
    present = [p for p in per if p is not None]
    return {"accuracy": float((pred == labels).mean()), "mean_class_accuracy": float(np.mean(present)),
            "class_accuracy": per}


def save_model(model: nn.Module, path: str | Path) -> None:
    """Write the model's state dict (CPU tensors) atomically with ``torch.save``."""
    files.torch_save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)


def load_model(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a state dict written by :func:`save_model` (``weights_only=True``) into ``model``."""
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model


def _mix(seed: int, epoch: int, stream: int) -> int:
    # Distinct, reproducible seeds per (run seed, epoch, purpose); fits in 63 bits.
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, epoch, stream]).generate_state(2, np.uint32).view(np.uint64)[0] >> 1)


def _shard(rows: np.ndarray, rank: int, world: int) -> np.ndarray:
    if world == 1:
        return rows
    pad = (-len(rows)) % world  # equal shard sizes keep the DDP collectives in step
    rows = np.concatenate([rows, rows[:pad]])
    return rows[rank::world]


def _loader(dataset: Dataset, rows: np.ndarray, batch_size: int, num_workers: int, dev: torch.device) -> DataLoader:
    batches = [rows[i:i + batch_size].tolist() for i in range(0, len(rows), batch_size)]
    if len(batches) > 1 and len(batches[-1]) == 1:
        # BatchNorm cannot train on a batch of one: a lone last sample joins the batch before it.
        batches[-2].extend(batches.pop())
    return DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, pin_memory=dev.type == "cuda",
                      persistent_workers=False)


def _batches(dataset: Dataset, rows: np.ndarray, batch_size: int, num_workers: int,
             dev: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for x, y, _ in _loader(dataset, rows, batch_size, num_workers, dev):
        yield x.to(dev, non_blocking=True).float(), torch.as_tensor(y).to(dev, non_blocking=True).long()


def _optimizer(model: nn.Module, c: TrainConfig) -> torch.optim.Optimizer:
    if c.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)


def _scheduler(opt: torch.optim.Optimizer, c: TrainConfig, epochs: int):
    if c.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))
    if c.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=c.lr_step, gamma=c.lr_gamma)
    return None


def _save_state(path: str | Path, model: nn.Module, opt: torch.optim.Optimizer, sched, scaler,
                dev: torch.device, epoch: int, history: Sequence[dict]) -> None:
    state = {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict() if sched is not None else None,
        "scaler": scaler.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
        "epoch": epoch,
        "history": list(history),
    }
    files.torch_save(state, path)


"""The scan's model side through ``torch.compile``: forward, summed cross-entropy and, through
AOTAutograd, the backward pass to the input, compiled once per model and reused by every scan.

The attack step itself stays the fused op (or its PyTorch reference); what is compiled is the
model's part of each step, which dominates the scan (the eager forward+backward bound in
benchmarks/RESULTS.md). Compilation is keyed by model object, autocast dtype, batch shape and
mode, and kept as long as the model lives, so the T' scans of a pipeline run compile once. A
short last batch is padded to the compiled batch size with copies of its first image (in eval
mode samples do not interact, and the padded rows' k is dropped), so it needs no second graph.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["COMPILE_MODES", "CompiledLoss", "compiled_loss"]

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
"""``torch.compile`` modes the scan accepts by name (``compile=True`` is ``"default"``)."""
_CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # the modes that replay CUDA graphs

_CACHE: weakref.WeakKeyDictionary[torch.nn.Module, dict[str | None, CompiledLoss]] = weakref.WeakKeyDictionary()


class CompiledLoss:
    """``(logits [N, K], summed cross-entropy) = f(x [N, C, H, W], labels [N])`` compiled.

    ``torch.autograd.grad(loss, x)`` then runs the compiled backward. Batches smaller than the
    largest seen are padded up to it (see the module docstring).

    Args:
        model: the classifier (left unchanged; scanned in eval mode with frozen parameters).
        mode: ``torch.compile`` mode (None = default; ``"reduce-overhead"`` adds CUDA graphs,
            ``"max-autotune"`` searches kernels).
    """

    def __init__(self, model: torch.nn.Module, mode: str | None = None):
        self.model = model
        self.mode = mode
        self.batch = 0
        if mode is not None and mode not in COMPILE_MODES:
            raise ValueError(f"compile mode must be one of {COMPILE_MODES}, got {mode!r}")
        self._fn: Callable = torch.compile(self._loss, mode=mode, dynamic=False)

    def _loss(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(x)
        # Summed, as in the eager scan: only the sign of each sample's gradient is used.
        return logits, F.cross_entropy(logits.float(), labels, reduction="sum")

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = x.shape[0]
        self.batch = max(self.batch, n)
        if self.mode in _CUDA_GRAPH_MODES:
            # A replay overwrites the previous call's outputs, and the scan keeps the clean logits
            # of step 0 through the later steps: each call is a new step, its logits a copy.
            torch.compiler.cudagraph_mark_step_begin()
            logits, loss = self._call(x, labels, n)
            return logits.clone(), loss
        return self._call(x, labels, n)

    def _call(self, x: torch.Tensor, labels: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        if n == self.batch:
            return self._fn(x, labels)
        pad = self.batch - n
        xp = torch.cat([x, x[:1].expand(pad, *x.shape[1:])]).contiguous(memory_format=_layout(x))
        lp = torch.cat([labels, labels[:1].expand(pad)])
        logits, _ = self._fn(xp, lp)
        logits = logits[:n]
        # The loss of the real rows alone, so that its gradient reaches only them.
        return logits, F.cross_entropy(logits.float(), labels, reduction="sum")


def compiled_loss(model: torch.nn.Module, mode: str | None = None) -> CompiledLoss:
    """The :class:`CompiledLoss` of ``model`` and ``mode``, made once and kept while the model lives."""
    per_model = _CACHE.setdefault(model, {})
    if mode not in per_model:
        per_model[mode] = CompiledLoss(model, mode)
    return per_model[mode]


def _layout(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
        and not x.is_contiguous() else torch.contiguous_format

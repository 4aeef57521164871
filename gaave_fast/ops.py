"""The compiled PGD-step ops: typed wrappers, fake kernels and pure-PyTorch references.

Two in-place ops, declared in csrc/ops.cpp and implemented for CPU (csrc/cpu) and
CUDA (csrc/cuda):

* ``pgd_step_``: at the current adversarial batch x(s), count per sample whether the
  logits f(x(s)) still predict the label (k_i += 1), record the first step whose
  prediction left the label, then move x to x(s+1) =
  clamp(clamp(x + alpha*sign(grad), x0 - eps, x0 + eps), lo, hi). One launch.
* ``count_k_``: the counting half alone, for the last point x(S).
* ``pgd_decide_step_``: ``pgd_step_`` for the early-exit scan: every sample has its own
  current step, and a flag set (in the same launch) once its verdict k <= tau is certain.

Each op has a reference here (``*_reference_``) written in plain PyTorch; the tests
require the kernels to equal them exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = [
    "build_info",
    "channel_bounds",
    "count_k_",
    "count_k_reference_",
    "cuda_available",
    "extension_error",
    "pgd_decide_step_",
    "pgd_decide_step_reference_",
    "pgd_step_",
    "pgd_step_reference_",
    "verdict_certain",
]

_LOAD_ERROR: BaseException | None = None
try:
    from gaave_fast import _C  # noqa: F401  (registers torch.ops.gaave_fast.*)
except ImportError as err:  # pragma: no cover - exercised only on broken installs
    _LOAD_ERROR = err


def extension_error() -> str | None:
    """Why the compiled extension could not be loaded, or None when it is loaded."""
    if _LOAD_ERROR is None:
        return None
    from pathlib import Path

    package = Path(__file__).resolve().parent
    if not any(package.glob("_C*.so")) and not any(package.glob("_C*.pyd")):
        return (
            f"gaave_fast's compiled ops are missing: gaave_fast was imported from {package}, which holds "
            "no built extension. If this is the source tree, either run from another directory so that the "
            "installed package is used, or build in place with `python setup.py build_ext --inplace`. "
            'backend="torch" works without them.'
        )
    return (
        f"gaave_fast's compiled ops could not be loaded ({_LOAD_ERROR}). Rebuild them against "
        f"the installed torch {torch.__version__}: `pip install --no-build-isolation .` in the "
        "source tree (or `python setup.py build_ext --inplace` for a development checkout). "
        'backend="torch" works without them.'
    )


def _require_extension() -> None:
    message = extension_error()
    if message is not None:
        raise RuntimeError(message)


def build_info() -> str:
    """Which kernels the compiled extension holds, e.g. ``"cpu"`` or ``"cpu,cuda 13.0"``."""
    _require_extension()
    return torch.ops.gaave_fast.build_info()


def cuda_available() -> bool:
    """True when the CUDA kernels were built (whether or not a GPU is present now)."""
    return extension_error() is None and "cuda" in build_info()


def pgd_step_(
    x: torch.Tensor,
    x0: torch.Tensor,
    grad: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    k: torch.Tensor,
    first_miss: torch.Tensor,
    step: int,
    eps: torch.Tensor,
    alpha: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
) -> None:
    """One fused PGD step, in place on ``x``, ``k`` and ``first_miss``.

    Args:
        x: adversarial batch x(s), N×C×H×W (or N×C×...), float32/bfloat16/float16,
            contiguous or channels_last; overwritten with x(s+1).
        x0: clean batch, x's shape and dtype.
        grad: ∇x of the loss at x(s), x's shape and dtype. NaN entries move nothing.
        logits: N×K model output at x(s) (K ≥ 2), float32/bfloat16/float16.
        labels: N int64 labels.
        k: N int32 counters; ``k[i] += argmax(logits[i]) == labels[i]`` (first
            index wins ties; a row holding NaN never matches).
        first_miss: N int32; set to ``step`` where the prediction differs from the label
            and it is still negative.
        step: index s of the current point.
        eps, alpha, lo, hi: float32 tensors of shape [C]: the ball radius, the step size
            and the valid range per channel, in the units of x (see :func:`channel_bounds`).
    """
    _require_extension()
    torch.ops.gaave_fast.pgd_step_(
        x, x0, grad, logits, labels, k, first_miss, step, eps, alpha, lo, hi
    )


def pgd_decide_step_(
    x: torch.Tensor,
    x0: torch.Tensor,
    grad: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    k: torch.Tensor,
    first_miss: torch.Tensor,
    step: torch.Tensor,
    decided: torch.Tensor,
    steps: int,
    tau: int,
    eps: torch.Tensor,
    alpha: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
) -> None:
    """One fused early-exit PGD step, in place on ``x``, ``k``, ``first_miss``, ``step``, ``decided``.

    For every sample not yet decided: count whether ``logits`` (computed at its current point
    x(step[i])) predict the label as :func:`pgd_step_` does, set ``decided[i]`` when the verdict
    ``k <= tau`` has become certain (:func:`verdict_certain`) and advance ``step[i]`` by one.
    Decided samples are frozen (k, first_miss and step keep their values). Then every sample's x
    moves one step as in :func:`pgd_step_` (a decided sample's x is not used again).

    Args:
        x, x0, grad, logits, labels, k, first_miss, eps, alpha, lo, hi: as :func:`pgd_step_`.
        step: N int32, the index s of each sample's current point (0..S).
        decided: N bool.
        steps: S, the attack's number of steps (k counts the points 0..S).
        tau: the threshold of the verdict ``k <= tau``, in [-1, S + 1].
    """
    _require_extension()
    torch.ops.gaave_fast.pgd_decide_step_(
        x, x0, grad, logits, labels, k, first_miss, step, decided, steps, tau, eps, alpha, lo, hi
    )


def verdict_certain(k, step, steps: int, tau: int):
    """Whether ``k <= tau`` is certain after counting points 0..step with k matches (arrays or ints).

    k never falls, so ``k > tau`` is certain once it holds; ``k <= tau`` is certain once even
    matching at all ``steps - step`` remaining points keeps ``k + (steps - step) <= tau``.
    """
    return (k > tau) | (k + (steps - step) <= tau)


def count_k_(
    logits: torch.Tensor,
    labels: torch.Tensor,
    k: torch.Tensor,
    first_miss: torch.Tensor,
    step: int,
) -> None:
    """The counting half of :func:`pgd_step_` alone (for the last point x(S)).

    Shapes: logits N×K, labels N int64, k and first_miss N int32 (updated in place).
    """
    _require_extension()
    torch.ops.gaave_fast.count_k_(logits, labels, k, first_miss, step)


def channel_bounds(
    eps: float,
    alpha: float,
    channels: int,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-channel (eps, alpha, lo, hi) float32 tensors of shape [C] for the ops.

    ``eps`` and ``alpha`` are in [0,1] pixel units. Inputs normalized as
    (x - mean_c) / std_c see a ball of radius eps / std_c, steps of alpha / std_c and
    the valid range [(0 - mean_c) / std_c, (1 - mean_c) / std_c]; without mean/std the
    inputs are taken to be in [0,1].
    """
    if eps < 0 or alpha < 0:
        raise ValueError(f"eps and alpha must be >= 0, got eps={eps}, alpha={alpha}")
    if (mean is None) != (std is None):
        raise ValueError("mean and std must be given together (both or neither)")
    m = torch.zeros(channels, dtype=torch.float64) if mean is None else _per_channel(mean, channels, "mean")
    s = torch.ones(channels, dtype=torch.float64) if std is None else _per_channel(std, channels, "std")
    if bool((s <= 0).any()):
        raise ValueError(f"std must be positive in every channel, got {s.tolist()}")
    out = (eps / s, alpha / s, (0.0 - m) / s, (1.0 - m) / s)
    return tuple(t.to(torch.float32).to(device) for t in out)  # type: ignore[return-value]


def _per_channel(values: Sequence[float], channels: int, name: str) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=torch.float64).flatten()
    if t.numel() == 1:
        t = t.expand(channels).clone()
    if t.numel() != channels:
        raise ValueError(f"{name} has {t.numel()} values but the images have {channels} channels")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, got {t.tolist()}")
    return t


# --- pure-PyTorch references --------------------------------------------------------


def count_k_reference_(
    logits: torch.Tensor,
    labels: torch.Tensor,
    k: torch.Tensor,
    first_miss: torch.Tensor,
    step: int,
) -> None:
    """Reference of :func:`count_k_` in plain PyTorch (same arguments)."""
    values = logits.float()
    match = (values.argmax(dim=1) == labels) & ~torch.isnan(values).any(dim=1)
    k.add_(match.to(k.dtype))
    first_miss.copy_(torch.where(~match & (first_miss < 0), step, first_miss))


def pgd_step_reference_(
    x: torch.Tensor,
    x0: torch.Tensor,
    grad: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    k: torch.Tensor,
    first_miss: torch.Tensor,
    step: int,
    eps: torch.Tensor,
    alpha: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
) -> None:
    """Reference of :func:`pgd_step_` in plain PyTorch (same arguments), float32 math."""
    count_k_reference_(logits, labels, k, first_miss, step)
    _move_reference_(x, x0, grad, eps, alpha, lo, hi)


def _move_reference_(x, x0, grad, eps, alpha, lo, hi) -> None:
    """x = clamp(clamp(x + alpha*sign(grad), x0 - eps, x0 + eps), lo, hi) per channel, in place."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    e, a, l, h = (t.view(shape) for t in (eps, alpha, lo, hi))
    direction = torch.sign(grad.float())
    direction = torch.where(torch.isnan(direction), 0.0, direction)
    y = x.float() + a * direction
    x0f = x0.float()
    y = _clamp_to(y, x0f - e, x0f + e)
    x.copy_(_clamp_to(y, l, h))


def pgd_decide_step_reference_(
    x: torch.Tensor,
    x0: torch.Tensor,
    grad: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    k: torch.Tensor,
    first_miss: torch.Tensor,
    step: torch.Tensor,
    decided: torch.Tensor,
    steps: int,
    tau: int,
    eps: torch.Tensor,
    alpha: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
) -> None:
    """Reference of :func:`pgd_decide_step_` in plain PyTorch (same arguments), float32 math."""
    values = logits.float()
    match = (values.argmax(dim=1) == labels) & ~torch.isnan(values).any(dim=1)
    live = ~decided
    new_k = k + (match & live).to(k.dtype)
    first_miss.copy_(torch.where(live & ~match & (first_miss < 0), step, first_miss))
    decided.copy_(decided | verdict_certain(new_k, step, steps, tau))
    k.copy_(new_k)
    step.add_(live.to(step.dtype))
    _move_reference_(x, x0, grad, eps, alpha, lo, hi)


def _clamp_to(y: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """clamp as the kernels do it: two selects, so a NaN in y stays NaN."""
    y = torch.where(y < lo, lo, y)
    return torch.where(y > hi, hi, y)


# --- fake kernels (shape checks for torch.compile / meta tensors) ---------------------

if _LOAD_ERROR is None:

    @torch.library.register_fake("gaave_fast::pgd_step_")
    def _pgd_step_fake(x, x0, grad, logits, labels, k, first_miss, step, eps, alpha, lo, hi):
        torch._check(x.dim() >= 2, lambda: f"pgd_step_: x must be at least 2-D, got {x.shape}")
        torch._check(x0.shape == x.shape, lambda: f"pgd_step_: x0 {x0.shape} != x {x.shape}")
        torch._check(grad.shape == x.shape, lambda: f"pgd_step_: grad {grad.shape} != x {x.shape}")
        torch._check(logits.dim() == 2, lambda: "pgd_step_: logits must be 2-D [N, K]")
        torch._check(logits.shape[0] == x.shape[0], lambda: "pgd_step_: logits must have N rows")
        for name, t in (("eps", eps), ("alpha", alpha), ("lo", lo), ("hi", hi)):
            torch._check(
                t.dim() == 1 and t.shape[0] == x.shape[1],
                lambda name=name: f"pgd_step_: {name} must have shape [C]",
            )

    @torch.library.register_fake("gaave_fast::pgd_decide_step_")
    def _pgd_decide_step_fake(x, x0, grad, logits, labels, k, first_miss, step, decided, steps, tau, eps, alpha,
                              lo, hi):
        _pgd_step_fake(x, x0, grad, logits, labels, k, first_miss, 0, eps, alpha, lo, hi)
        for name, t in (("step", step), ("decided", decided)):
            torch._check(
                t.dim() == 1 and t.shape[0] == x.shape[0],
                lambda name=name: f"pgd_decide_step_: {name} must have shape [N]",
            )

    @torch.library.register_fake("gaave_fast::count_k_")
    def _count_k_fake(logits, labels, k, first_miss, step):
        torch._check(logits.dim() == 2, lambda: "count_k_: logits must be 2-D [N, K]")
        torch._check(labels.shape[0] == logits.shape[0], lambda: "count_k_: labels must be [N]")

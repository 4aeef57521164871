"""The process's place in a ``torch.distributed`` job (one process when none is initialised)."""

from __future__ import annotations

import torch.distributed as dist


def rank_world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """Whether this process writes the shared outputs (rank 0)."""
    return rank_world()[0] == 0


def barrier() -> None:
    """Wait for every process of the job (no-op in a single process)."""
    if rank_world()[1] > 1:
        dist.barrier()

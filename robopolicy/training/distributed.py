"""torchrun integration: which rank this process is, process-group setup, and metric reduction."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Rank and world size of this process (1 process when not launched by torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed() -> DistInfo:
    """Join the process group torchrun describes in the environment: gloo for CPU tensors, nccl for GPU ones."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(hours=2))  # rank 0 may run long evaluations
    return info


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def reduce_mean(total: float, count: int, info: DistInfo) -> float:
    """Mean over all ranks of values that sum to `total` over `count` items on this rank."""
    if not info.enabled:
        return total / max(count, 1)
    values = torch.tensor([total, float(count)], dtype=torch.float64)
    dist.all_reduce(values)
    return float(values[0] / values[1].clamp_min(1.0))


def rank0_decides(flag: bool, info: DistInfo) -> bool:
    """Rank 0's value of `flag` on every rank, so that a decision taken from a local clock (the time budget) stops
    all ranks at the same step instead of leaving one waiting in a collective."""
    if not info.enabled:
        return flag
    value = torch.tensor([float(flag)])
    dist.broadcast(value, src=0)
    return bool(value.item())


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()

"""torch.distributed glue: the same training command on one process or under torchrun.

Under ``torchrun`` (WORLD_SIZE > 1 in the environment) the process group is initialised with
gloo for a run on the CPU and NCCL for one on CUDA (each process on its LOCAL_RANK GPU); only
rank 0 logs, draws and writes checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "cpu") -> DistInfo:
    """Join the process group that torchrun describes in the environment, or run alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if world <= 1:
        return DistInfo()
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local)


def all_reduce_sum(values: list[float], info: DistInfo, device: torch.device | str = "cpu") -> list[float]:
    """Sum floats over ranks (loss totals); ``device``: where the process group's tensors live."""
    if not info.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def average_buffers(model: torch.nn.Module, info: DistInfo) -> None:
    """Set every rank's floating-point buffers (BatchNorm running mean and variance) to their
    mean over the ranks, in place.

    Why: each rank updates its running statistics from its own batches. DDP broadcasts rank 0's
    at the start of each training forward, so during training they agree, but after an epoch's
    last step each rank holds its own. Validation runs on every rank with its own copy and rank 0
    saves its own, so the validation loss (which picks ``best.pt``) was that of a mixture of
    models, not of the one saved. Integer buffers (``num_batches_tracked``) agree already: every
    rank takes the same number of steps."""
    if not info.enabled:
        return
    for buf in model.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf)
            buf.div_(info.world_size)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    """Leave the process group once every rank has got here.

    Why the barrier: rank 0 still writes the run's result files after the last epoch while the
    other ranks are done; a rank that destroyed its gloo group then could abort the whole run
    ("terminate called without an active exception", seen once in CI on the 2-rank test)."""
    if info.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()

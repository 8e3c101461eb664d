"""Running one analysis across processes started by ``torchrun`` (gloo on CPU, nccl on GPU).

Outside torchrun everything here is a no-op: rank 0 of a world of 1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist


def world_size() -> int:
    """The number of processes torchrun started (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's rank in a torchrun launch (0 outside torchrun)."""
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """True unless this is a non-zero rank of a torchrun launch (only rank 0 writes results)."""
    return rank() == 0


@dataclass
class ProcessGroup:
    """This process's place in a torchrun launch; joins the process group on creation."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    _owns_group: bool = False

    @classmethod
    def join(cls, device: torch.device) -> ProcessGroup:
        """This process's place in the launch, joining the process group (nccl on ``device``'s GPU
        of this rank, gloo on CPU); outside torchrun it joins nothing."""
        world = world_size()
        if world <= 1:
            return cls(0, 1, device)
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        owns = False
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
            owns = True
        return cls(dist.get_rank(), dist.get_world_size(), device, owns)

    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's copy of ``tensor`` (same shape on all ranks), in rank order."""
        if self.world == 1:
            return [tensor]
        local = tensor.to(self.device).contiguous()
        gathered = [torch.empty_like(local) for _ in range(self.world)]
        dist.all_gather(gathered, local)
        return [g.cpu() for g in gathered]

    def barrier(self) -> None:
        """Wait for every rank (a no-op in a single process)."""
        if self.world > 1 and dist.is_initialized():
            dist.barrier()

    def close(self) -> None:
        """Leave the process group if this object joined it, after a last barrier so that no rank
        leaves while another still waits."""
        if self._owns_group and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
            self._owns_group = False

"""Where training runs: one process, or one of several under `torchrun` (DDP: gloo on CPU,
nccl on CUDA), each on its device with its share of the CPU's threads."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from training.config import TrainConfig


@dataclass(frozen=True)
class Processes:
    """This process's place among those training together."""

    rank: int  # 0 writes checkpoints and logs
    world: int  # processes training together; each takes batch_size / world unique examples
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but torch sees no CUDA device")
    return torch.device(name)


def start_processes(config: TrainConfig) -> Processes:
    """Join the process group when torchrun started several processes (WORLD_SIZE > 1)."""
    device = resolve_device(config.device)
    rank, world = 0, 1
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
    torch.set_num_threads(config.threads or max(1, (os.cpu_count() or 1) // world))
    return Processes(rank, world, device)


def parallel(model: torch.nn.Module, processes: Processes) -> torch.nn.Module:
    """What a step calls: the model itself, or under torchrun the model wrapped so that the
    backward pass averages the gradients of all processes."""
    if not processes.distributed:
        return model
    device = processes.device
    return DistributedDataParallel(model, device_ids=[device.index] if device.index else None)


def stop_processes(processes: Processes) -> None:
    if processes.distributed:
        dist.barrier()
        dist.destroy_process_group()

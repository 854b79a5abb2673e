"""Several processes through torchrun: DistributedDataParallel, NCCL on GPUs and gloo on CPUs.

`torchrun --nproc_per_node=N -m speedrun.train ...`: each rank holds the dataset in its own device
memory, trains on its slice of every global batch (see train.make_batcher), and sums evaluation
results across ranks. Batch norm is synchronised, so N processes compute what one would.
"""
import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist
from torch.nn.parallel import DistributedDataParallel


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device | None = None  # None: a single process picks its own

    @property
    def is_main(self):
        return self.rank == 0


def launched_world():
    """(rank, world size, local rank) that torchrun put in the environment; (0, 1, 0) otherwise."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def setup(device_choice, batch_size):
    rank, world, local_rank = launched_world()
    if world == 1:
        return Dist()
    if batch_size % world:
        raise ValueError(f"batch size {batch_size} is not divisible by the {world} processes; "
                         f"use a multiple of {world}")
    use_cuda = device_choice != "cpu" and torch.cuda.is_available()
    if not torch_dist.is_initialized():
        torch_dist.init_process_group("nccl" if use_cuda else "gloo")
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    return Dist(rank, world, device)


def wrap(model, dist):
    """The module the train step calls: the model itself, or DDP around it with synchronised BN."""
    if dist.world == 1:
        return model
    torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # swaps the BN layers in place
    ids = [dist.device.index] if dist.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def shard(images, labels, dist):
    """This rank's contiguous part of an evaluation set."""
    size = -(-len(images) // dist.world)
    part = slice(dist.rank * size, (dist.rank + 1) * size)
    return images[part], labels[part]


def all_reduce_sum(tensor, dist):
    if dist.world > 1:
        tensor = tensor.clone()
        torch_dist.all_reduce(tensor)
    return tensor

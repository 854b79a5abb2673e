"""Several processes through torchrun: DistributedDataParallel, NCCL on GPUs and gloo on CPUs.

`torchrun --nproc_per_node=N -m speedrun.train ...`: each rank holds the dataset in its own device
memory, trains on its slice of every global batch (see loader.Loader), and sums evaluation
results across ranks. Batch norm is synchronised, so N processes compute what one would.

Nothing here breaks a compiled graph: batch norm sums its statistics across ranks with torch's
functional collectives, which torch.compile traces like any other op, and DDP wraps the compiled
net, so DDP's own Python stays outside the graph. Batch-norm buffers are never broadcast: every rank
updates its running statistics from the same global ones, so they stay equal by construction. A whole
step compiled as one graph runs without DDP and averages its gradients itself (step.averaging).
"""

import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist
import torch.distributed._functional_collectives as funcol
from torch import nn
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
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0)))


def rank_device(local_rank, choice, cuda_available, cuda_count):
    """The device of the process with this local rank under torchrun: its own GPU, or the CPU.

    Every process must use its own GPU (and make it current, for Triton launches and allocations that
    name no device), so a node needs as many GPUs as processes.
    """
    if choice == "cpu" or (choice == "auto" and not cuda_available):
        return torch.device("cpu")
    if not cuda_available:
        raise ValueError("device cuda was asked for, but torch sees no CUDA device")
    if local_rank >= cuda_count:
        raise ValueError(
            f"process {local_rank} on this node has no GPU of its own (torch sees {cuda_count}): "
            f"start at most {cuda_count} processes per node"
        )
    return torch.device("cuda", local_rank)


def setup(device_choice, batch_size, independent=False):
    """Join the process group torchrun set up; `independent` runs (a seed sweep) only take their device."""
    rank, world, local_rank = launched_world()
    if world == 1:
        return Dist()
    available = torch.cuda.is_available()
    device = rank_device(local_rank, device_choice, available, torch.cuda.device_count() if available else 0)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if independent:
        return Dist(device=device)
    if batch_size % world:
        raise ValueError(
            f"batch size {batch_size} is not divisible by the {world} processes; use a multiple of {world}"
        )
    if not torch_dist.is_initialized():
        torch_dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, device)


class SumOverRanks(torch.autograd.Function):
    """The sum of a tensor over every rank, differentiable: the gradient of each rank's input is the sum
    of the ranks' output gradients. Both ways a functional all-reduce, which torch.compile traces into
    the graph (torch.distributed.nn's autograd all-reduce is skipped by it, breaking the graph)."""

    @staticmethod
    def forward(ctx, tensor):
        return funcol.all_reduce(tensor, "sum", torch_dist.group.WORLD)

    @staticmethod
    def backward(ctx, grad):
        return funcol.all_reduce(grad.contiguous(), "sum", torch_dist.group.WORLD)


class GlobalBatchNorm(nn.BatchNorm2d):
    """Batch norm over the whole global batch, on any device, compiling without a graph break (torch's
    SyncBatchNorm runs on GPUs only and breaks the graph around each layer).

    Two all-reduces per call: the mean first, then the variance about it (one pass with E[x^2] - E[x]^2
    would lose float32 precision on activations with a large mean). Statistics are taken in float32 at
    least (bf16 activations under autocast), the output has the input's dtype. Every rank updates its
    running statistics from the same global ones, so they stay equal without a broadcast.
    """

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        wide = x.to(torch.promote_types(x.dtype, torch.float32))
        count = torch.full((1,), x.numel() / x.shape[1], dtype=wide.dtype, device=x.device)
        totals = SumOverRanks.apply(torch.cat([wide.sum((0, 2, 3)), count]))
        n = totals[-1]
        mean = totals[:-1] / n
        centred = wide - mean.view(1, -1, 1, 1)
        var = SumOverRanks.apply(centred.square().sum((0, 2, 3))) / n
        with torch.no_grad():
            self.running_mean.lerp_(mean.to(self.running_mean.dtype), self.momentum)
            self.running_var.lerp_((var * n / (n - 1)).to(self.running_var.dtype), self.momentum)
            self.num_batches_tracked += 1
        scale = self.weight * torch.rsqrt(var + self.eps)
        return (centred * scale.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)).to(x.dtype)


def synchronise_batch_norm(module):
    """Swap every BatchNorm2d for a GlobalBatchNorm, in place, keeping the same parameters and buffers."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, GlobalBatchNorm):
            synced = GlobalBatchNorm(child.num_features, child.eps, child.momentum)
            synced.weight, synced.bias = child.weight, child.bias
            synced.running_mean, synced.running_var = child.running_mean, child.running_var
            synced.num_batches_tracked = child.num_batches_tracked
            setattr(module, name, synced)
        else:
            synchronise_batch_norm(child)
    return module


def wrap(model, dist, compile=None, ddp=True):
    """The module the train step calls: the model itself, or DDP around it with synchronised batch norm
    and `compile` (the policy's forward compile, if any) applied to the model inside DDP.

    No per-step buffer broadcast (broadcast_buffers=False): the only buffers are batch norm's, equal on
    every rank by construction (GlobalBatchNorm); DDP still broadcasts rank 0's parameters and buffers
    once, when it is built. Without `ddp` (a whole step compiled as one graph, which averages its own
    gradients: step.averaging), the model with synchronised batch norm and rank 0's state, broadcast once.
    """
    if dist.world == 1:
        return model
    synchronise_batch_norm(model)
    if not ddp:
        for tensor in model.state_dict().values():
            torch_dist.broadcast(tensor, src=0)
        return model
    ids = [dist.device.index] if dist.device.type == "cuda" else None
    return DistributedDataParallel(compile(model) if compile else model, device_ids=ids, broadcast_buffers=False)


def shard(images, labels, dist):
    """This rank's contiguous part of an evaluation set."""
    size = -(-len(images) // dist.world)
    part = slice(dist.rank * size, (dist.rank + 1) * size)
    return images[part], labels[part]


def teardown():
    """Leave the process group, so that every rank exits cleanly."""
    if torch_dist.is_initialized():
        torch_dist.barrier()
        torch_dist.destroy_process_group()


def all_reduce_sum(tensor, dist):
    if dist.world > 1:
        tensor = tensor.clone()
        torch_dist.all_reduce(tensor)
    return tensor


def broadcast_from_main(value, dist):
    """Rank 0's number on every rank (the others pass any placeholder): one choice, such as the LR the
    range test suggests, taken by all. A single process keeps its own."""
    if dist.world == 1:
        return value
    tensor = torch.tensor([float(value)], dtype=torch.float64, device=dist.device)
    torch_dist.broadcast(tensor, src=0)
    return tensor.item()

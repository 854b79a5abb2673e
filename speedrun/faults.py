"""What stops a run with a clear message: a loss that is not finite, a batch that does not fit in memory."""
import os

import torch

from . import checkpoint, distributed


class TrainingDiverged(RuntimeError):
    pass


class OutOfMemory(RuntimeError):
    pass


def check_finite(losses, epoch, lrs, steps_per_epoch, folder, dist):
    """Raise on every rank if any rank's loss is not finite, naming the first such rank and step.

    Each rank puts (its first bad step + 1, that loss) in its own row and the rows are summed across
    ranks: one rank raising alone would leave the others waiting in the next all-reduce.
    """
    bad = (~torch.isfinite(losses)).nonzero()
    rows = torch.zeros(dist.world, 2, dtype=torch.float64, device=losses.device)
    if len(bad):
        rows[dist.rank] = torch.stack([bad[0, 0].double() + 1, losses[bad[0, 0]].double()])
    rows = distributed.all_reduce_sum(rows, dist).tolist()
    diverged = [(int(first) - 1, rank, value) for rank, (first, value) in enumerate(rows) if first]
    if diverged:
        step, rank, value = min(diverged)
        where = f" on rank {rank}" if dist.world > 1 else ""
        lr = lrs[epoch * steps_per_epoch + step]
        saved = os.path.exists(os.path.join(folder, checkpoint.LATEST))
        kept = f"the last good checkpoint is in {folder}" if saved else "no checkpoint was written"
        raise TrainingDiverged(f"loss became {value}{where} at epoch {epoch + 1}, step {step + 1} "
                               f"(lr {lr:.4g}); stopping, {kept}")


def largest_fitting_batch(model, batch_size, policy):
    """Halve the batch until one forward and backward pass fits in device memory; 0 if none does."""
    size = batch_size // 2
    while size >= 1:
        try:
            inputs = torch.randn(size, 3, 32, 32, device=policy.device)
            if policy.channels_last:
                inputs = inputs.to(memory_format=torch.channels_last)
            with policy.autocast():
                model(inputs).float().sum().backward()
            model.zero_grad(set_to_none=True)
            return size
        except torch.cuda.OutOfMemoryError:
            model.zero_grad(set_to_none=True)
            if policy.device.type == "cuda":
                torch.cuda.empty_cache()
            size //= 2
    return 0

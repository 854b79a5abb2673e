"""What stops a run with a clear message: a loss that is not finite or has exploded, a batch that does not
fit in memory."""

import math
import os

import torch

from speedrun.system import checkpoint, distributed

# A window's mean train loss above this many times ln(num_classes) (the loss of a uniform guess: 2.30 for
# CIFAR-10, about where an untrained net starts) has exploded: the LR has thrown the weights out of reach.
# A run that learns starts near it (the seed net's first losses are about 2x it) and falls below it; Adam
# at a peak LR of 1 (one epoch of 1,024 images) ended at a test loss of 1.9e8 and chance accuracy. One
# order of magnitude leaves room for the spikes a run comes back from.
EXPLODED_FACTOR = 10


class TrainingDiverged(RuntimeError):
    pass


def _kept(folder):
    saved = os.path.exists(os.path.join(folder, checkpoint.LATEST))
    return f"the last good checkpoint is in {folder}" if saved else "no checkpoint was written"


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
        raise TrainingDiverged(
            f"loss became {value}{where} at epoch {epoch + 1}, step {step + 1} (lr {lr:.4g}); stopping, {_kept(folder)}"
        )


def check_not_exploded(train_loss, epoch, steps, lrs, steps_per_epoch, folder, picked, num_classes=10):
    """Raise if `train_loss`, the mean over the 0-based `steps` of `epoch`, exceeds EXPLODED_FACTOR x
    ln(num_classes), naming the steps, their LRs and the peak LR to lower with --lr.lr_max (`picked`: it
    came from the LR range test). Pass the loss all-reduced across ranks: every rank then reads the same
    number and raises together."""
    limit = EXPLODED_FACTOR * math.log(num_classes)
    if not train_loss > limit:  # a NaN is check_finite's
        return
    first = epoch * steps_per_epoch
    low, high = min(lrs[first + steps.start : first + steps.stop]), max(lrs[first + steps.start : first + steps.stop])
    window = f"lr {high:.4g}" if low == high else f"lr {low:.4g} to {high:.4g}"
    peak = max(lrs)
    source = "the LR range test's pick" if picked else "--lr.lr_max"
    raise TrainingDiverged(
        f"the train loss exploded to {train_loss:.4g} (above {EXPLODED_FACTOR} x ln({num_classes}) = {limit:.3g}, "
        f"the loss of a uniform guess) at epoch {epoch + 1}, steps {steps.start + 1}-{steps.stop} ({window}); "
        f"stopping, {_kept(folder)}. The peak LR {peak:.4g} ({source}) is too high: give a lower one with "
        f"--lr.lr_max (e.g. {peak / 10:.3g})"
    )


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

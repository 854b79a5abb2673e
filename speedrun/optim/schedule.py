"""The one-cycle learning-rate schedule, stepped once per batch.

    lr_max         /\\
                  /   \\
                 /      \\
    lr_min      /         \\
    end_lr                  \\   (end_lr = lr_min, or 0 with anneal_to_zero)
            0   peak        total

Linear from lr_min up to lr_max over the first `peak_epoch` epochs (5 of 24: pct_start = 5/24), then
linear down to end_lr. `step` counts batches: step i is the LR used for the i-th batch (from 0), and
step `total_steps` is the end point, so the table has total_steps + 1 entries.

The training loop keeps the whole table on the device (`DeviceSchedule`) with a step counter beside
it: each train step reads its entry there and copies it into the optimizer's LR tensors, so the host
passes no value and a compiled or CUDA-graph step never sees a new Python float. A run's table has a
column per param group (optim.group_lr_table: this schedule times each group's scale); `as_tensor` is
the one-column form.
"""

import torch


class OneCycle:
    """Piecewise-linear one-cycle schedule: lr_min -> lr_max at peak_step -> end_lr at total_steps.

    peak_step = 0 skips the warm-up (step 0 is lr_max); peak_step = total_steps skips the decay (the
    last step is lr_max). end_lr defaults to lr_min.
    """

    def __init__(self, lr_max, lr_min, total_steps, peak_step, end_lr=None):
        end_lr = lr_min if end_lr is None else end_lr
        if not lr_max > 0:
            raise ValueError(f"lr_max must be > 0, got {lr_max}")
        if not 0 <= lr_min <= lr_max or not 0 <= end_lr <= lr_max:
            raise ValueError(
                f"need 0 <= lr_min, end_lr <= lr_max; got lr_min={lr_min}, end_lr={end_lr}, lr_max={lr_max}"
            )
        if int(total_steps) != total_steps or total_steps < 1:
            raise ValueError(f"total_steps must be a positive integer, got {total_steps}")
        if int(peak_step) != peak_step or not 0 <= peak_step <= total_steps:
            raise ValueError(f"peak_step must be an integer in [0, {total_steps}], got {peak_step}")
        self.lr_max, self.lr_min, self.end_lr = float(lr_max), float(lr_min), float(end_lr)
        self.total_steps, self.peak_step = int(total_steps), int(peak_step)

    @classmethod
    def from_epochs(cls, lr_max, lr_min, epochs, peak_epoch, steps_per_epoch, anneal_to_zero=False):
        """The schedule in epochs; peak_epoch may be fractional (rounded to the nearest batch)."""
        if not 0 <= peak_epoch <= epochs:
            raise ValueError(f"peak_epoch must be in [0, epochs={epochs}], got {peak_epoch}")
        if int(steps_per_epoch) != steps_per_epoch or steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be a positive integer, got {steps_per_epoch}")
        return cls(
            lr_max,
            lr_min,
            total_steps=epochs * steps_per_epoch,
            peak_step=round(peak_epoch * steps_per_epoch),
            end_lr=0.0 if anneal_to_zero else lr_min,
        )

    def __call__(self, step):
        if not 0 <= step <= self.total_steps:
            raise ValueError(f"step must be in [0, {self.total_steps}], got {step}")
        if step <= self.peak_step:
            if self.peak_step == 0:
                return self.lr_max
            return self.lr_min + (self.lr_max - self.lr_min) * step / self.peak_step
        progress = (step - self.peak_step) / (self.total_steps - self.peak_step)
        return self.lr_max + (self.end_lr - self.lr_max) * progress

    def lr_table(self):
        """Every step's LR, steps 0..total_steps (total_steps + 1 floats)."""
        return [self(step) for step in range(self.total_steps + 1)]

    def as_tensor(self, device=None):
        """`lr_table()` as a float32 tensor of shape [total_steps + 1] on `device`."""
        return torch.tensor(self.lr_table(), dtype=torch.float32, device=device)

    def __repr__(self):
        return (
            f"OneCycle(lr_max={self.lr_max:g}, lr_min={self.lr_min:g}, total_steps={self.total_steps}, "
            f"peak_step={self.peak_step}, end_lr={self.end_lr:g})"
        )


class DeviceSchedule:
    """An LR table on the device and a device step counter: `next()` is the current step's row of the
    table (each param group's LR, [groups], or a 0-d LR for all of a table [steps + 1]) and advances the
    counter, with no host sync; `seek(step)` sets the counter, from the host, at an epoch's start."""

    def __init__(self, table):
        self.table = table
        self.position = torch.zeros(1, dtype=torch.int64, device=table.device)

    def seek(self, step):
        self.position.fill_(step)

    def next(self):
        lr = self.table.index_select(0, self.position).squeeze(0)  # no indexing by a host int: no sync
        self.position.add_(1)
        return lr

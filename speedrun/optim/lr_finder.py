"""LR range test (Leslie Smith, fastai's lr_find): sweep the LR up exponentially for a few hundred
batches at most, watch the smoothed loss, and suggest a peak LR for the one-cycle schedule.

The sweep trains a throw-away copy of the model with a fresh optimizer, so the real run still starts
from the untouched initial weights.

Suggestion rules (`--lr_test.rule`; the result records every rule's pick):
- `min_loss` (default): the LR of the lowest loss, the largest LR at which the loss still falls
  (Smith's bound for the top of a one-cycle schedule), read from the raw losses smoothed without lag.
  On CIFAR-10 with the seed net and SGD-Nesterov it picks 3.4e-3: the loss falls from 4.4 to 1.9 there,
  then climbs from 9e-3 and explodes near 0.1 (benchmarks/results/lr-range-test-*).
- `steepest`: where the smoothed loss falls fastest against log10(LR), ignoring the first warm-up
  points (fastai's classic suggestion). On the same net it is unstable: 3.6e-5 in one sweep (the
  untrained net's first fall), 0.67 in another (the fall after the explosion).
Fallback when the curve is too short or never falls: the LR of the lowest smoothed loss / 10 (a run
says so when it takes it).

A sweep needs points to read: one of fewer than MIN_RULE_STEPS is refused, and "one epoch's worth" of a
small train set is stretched to MIN_SWEEP_STEPS (the batches cycle through the data again).
"""

import copy
import json
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm import tqdm

from speedrun.optim.optimizers import set_lr

RULES = ("min_loss", "steepest")
MIN_WARMUP = 3  # first points the steepest rule skips (the untrained net's transient), at least
MIN_CURVE = 5  # points after the warm-up needed for either rule
MIN_RULE_STEPS = MIN_WARMUP + MIN_CURVE  # the shortest sweep either rule reads; a shorter one is refused
# The fewest steps a sweep of one epoch's worth takes. 2 steps (1024 images at batch 512) jump from
# lr_start to lr_end and "suggest" a fallback LR read from nothing. 64 steps read the default six decades
# (1e-5 to 10) at about 10 LRs a decade, so the pick lies within a factor 10^(1/10.5) ~ 1.25 of the
# lowest loss, and leave the rules 58 points after their 6-point warm-up. A CIFAR-10 epoch at batch 512
# (98 steps) is already longer.
MIN_SWEEP_STEPS = 64
FALLBACK = "min smoothed loss lr / 10 (fallback)"
LAGLESS_SMOOTHING = 0.5  # the min_loss rule's smoothing of the raw losses (`without_lag`)


class LRTestDiverged(RuntimeError):
    """The loss blew up at the very first step(s): lr_start is already too high, or the model is broken."""

    def __init__(self, lr, loss):
        super().__init__(
            f"LR range test diverged at its first step (lr={lr:.3g}, loss={loss:.4g}); "
            f"lower lr_start or check the model and data"
        )
        self.lr, self.loss = lr, loss


@dataclass
class LRTestResult:
    lrs: list
    losses: list
    smoothed: list
    suggested_lr: float
    rule: str
    stopped_early: bool
    steps: int
    suggestions: dict  # every rule's pick, by rule name

    @property
    def fell_back(self):
        """Whether the pick is the fallback (the curve too short, or never falling), not the rule's."""
        return self.rule == FALLBACK

    def to_json(self, path, **extra):
        """The result, and `extra` keys beside it (what the run made of the suggestion)."""
        with open(path, "w") as f:
            json.dump({**asdict(self), **extra}, f, indent=1)

    def plot(self, path, lr_max=None):
        """Smoothed (and raw) loss against LR on a log axis, with the raw loss smoothed without lag (the
        curve the min_loss rule reads), the suggestion (and the peak LR taken from it, when another)
        marked; written with Agg. The loss axis spans `loss_limits` (the explosion at the end of the sweep
        runs off the top), so that the curve around the pick can be read. Returns the Figure."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=(6, 4))
        FigureCanvasAgg(figure)
        ax = figure.add_subplot()
        lagless = without_lag(self.losses, LAGLESS_SMOOTHING)
        ax.plot(self.lrs, self.losses, color="0.75", linewidth=0.8, label="loss")
        ax.plot(self.lrs, self.smoothed, color="C0", label="smoothed loss")
        ax.plot(self.lrs, lagless, color="C1", linewidth=0.8, label="smoothed without lag (min_loss)")
        ax.axvline(
            self.suggested_lr, color="C3", linestyle="--", label=f"suggested lr = {self.suggested_lr:.3g} ({self.rule})"
        )
        for name, lr in self.suggestions.items():
            if lr != self.suggested_lr:
                ax.axvline(lr, color="0.5", linestyle=":", label=f"{name} rule: {lr:.3g}")
        if lr_max is not None and lr_max != self.suggested_lr:
            ax.axvline(lr_max, color="C2", linestyle="-.", label=f"peak lr = {lr_max:.3g}")
        ax.set(
            xscale="log",
            xlabel="learning rate",
            ylabel="loss",
            title="LR range test",
            ylim=loss_limits(self.smoothed, lagless),
        )
        ax.legend(fontsize="small")
        figure.tight_layout()
        figure.savefig(path, dpi=120)
        return figure


def loss_limits(*curves, margin=0.2):
    """(bottom, top) of the loss axis: from `margin` x the fall below the lowest point of `curves` to
    `margin` x the fall above the first curve's start. The sweep's end, where the loss explodes (to tens
    of times its start), is left off the top, as it would flatten the curve around the pick; a curve that
    barely falls gets a span of 20% of its start loss."""
    start, low = curves[0][0], min(min(curve) for curve in curves)
    span = max(start - low, 0.2 * abs(start), 1e-12)
    return low - margin * span, start + margin * span


def check_num_steps(num_steps):
    """Refuse an explicit sweep (num_steps > 0) too short for the suggestion rules to read."""
    if 0 < num_steps < MIN_RULE_STEPS:
        raise ValueError(
            f"--lr_test.num_steps {num_steps} is too short a sweep for the suggestion rules, which "
            f"need at least {MIN_RULE_STEPS} steps: give --lr_test.num_steps {MIN_RULE_STEPS} or more "
            f"(0 = one epoch's worth, at least {MIN_SWEEP_STEPS}), or set the peak LR with --lr.lr_max"
        )


def num_test_steps(num_steps, steps_per_epoch):
    """The configured sweep length, where 0 means one epoch's worth of batches, but no fewer than
    MIN_SWEEP_STEPS; a ValueError for an explicit one shorter than the rules read (`check_num_steps`)."""
    check_num_steps(num_steps)
    return num_steps or max(steps_per_epoch, MIN_SWEEP_STEPS)


def _default_step(loss_fn):
    def step(model, optimizer, inputs, targets):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        return loss

    return step


def without_lag(values, smoothing):
    """The moving average run forwards, then backwards over its result: smooth, and centred on each
    step, where the forward average alone trails the curve (its minimum comes steps after the loss's)."""

    def average(series):
        out, mean = [], 0.0
        for i, value in enumerate(series):
            mean = smoothing * mean + (1 - smoothing) * value
            out.append(mean / (1 - smoothing ** (i + 1)))
        return out

    return average(average(values)[::-1])[::-1]


def suggest_lr(lrs, smoothed, rule="min_loss", losses=None, smoothing=LAGLESS_SMOOTHING):
    """(lr, how it was chosen) from the curve by `rule`; the min-loss / 10 fallback when it cannot apply.

    min_loss reads the raw `losses` smoothed without lag when they are given, else `smoothed`."""
    warmup = max(MIN_WARMUP, len(lrs) // 10)
    if len(lrs) - warmup >= MIN_CURVE:
        if rule == "min_loss":
            curve = smoothed if losses is None else without_lag(losses, smoothing)
            return float(lrs[int(np.argmin(curve))]), "lowest loss, smoothed without lag"
        slopes = np.gradient(np.asarray(smoothed[warmup:]), np.log10(lrs[warmup:]))
        steepest = int(np.argmin(slopes))
        if slopes[steepest] < 0:
            return float(lrs[warmup + steepest]), "steepest descent of smoothed loss vs log10(lr)"
    return float(lrs[int(np.argmin(smoothed))]) / 10, FALLBACK


def lr_range_test(
    model,
    make_optimizer,
    next_batch,
    loss_fn,
    lr_start=1e-5,
    lr_end=10.0,
    num_steps=None,
    smoothing=0.98,
    diverge_factor=4.0,
    step_fn=None,
    rule="min_loss",
    progress=False,
):
    """Sweep lr_i = lr_start * (lr_end / lr_start) ** (i / (num_steps - 1)) on a deepcopy of `model`.

    make_optimizer(model, lr) -> a fresh optimizer over `model`, the sweep's copy (its parameters, or
    their groups by role); next_batch(i) -> (inputs, targets) for step i;
    step_fn(model, optimizer, inputs, targets) -> loss replaces the default zero_grad/forward/backward/
    step (e.g. for autocast); loss_fn is then unused. `num_steps` has no default: the caller passes it,
    typically one epoch's worth of batches (see `num_test_steps`). Pass the plain module, not a
    torch.compile wrapper: it is deep-copied.

    The loss is smoothed by a bias-corrected exponential moving average (factor `smoothing`). The sweep
    stops early once the smoothed loss is non-finite or above diverge_factor x its best so far; that
    step is not recorded. Raises LRTestDiverged when this happens at the first or second step (the
    first update, at lr_start, already blew up): there is no curve to read. See the module docstring
    for the suggestion rule; the result's `rule` says which one was used.
    """
    if num_steps is None or num_steps < 2:
        raise ValueError(f"num_steps must be given and >= 2, got {num_steps}")
    if not 0 < lr_start < lr_end:
        raise ValueError(f"need 0 < lr_start < lr_end, got {lr_start}, {lr_end}")
    if not 0 <= smoothing < 1 or diverge_factor <= 1:
        raise ValueError(f"need 0 <= smoothing < 1 and diverge_factor > 1, got {smoothing}, {diverge_factor}")
    probe = copy.deepcopy(model).train()
    optimizer = make_optimizer(probe, lr_start)
    step_fn = step_fn or _default_step(loss_fn)
    lrs, losses, smoothed = [], [], []
    average, best, stopped_early = 0.0, math.inf, False
    bar = tqdm(range(num_steps), desc="LR range test", disable=not progress, leave=False)
    for i in bar:
        lr = lr_start * (lr_end / lr_start) ** (i / (num_steps - 1))
        set_lr(optimizer, lr)
        loss = step_fn(probe, optimizer, *next_batch(i))
        loss = loss.item() if torch.is_tensor(loss) else float(loss)
        average = smoothing * average + (1 - smoothing) * loss
        smooth = average / (1 - smoothing ** (i + 1))  # bias correction for the zero-started average
        if not math.isfinite(smooth) or smooth > diverge_factor * best:
            if i < 2:
                raise LRTestDiverged(lr, loss)
            stopped_early = True
            break
        best = min(best, smooth)
        bar.set_postfix_str(f"lr={lr:.3g} loss={smooth:.3f}")
        lrs.append(lr)
        losses.append(loss)
        smoothed.append(smooth)
    bar.close()
    del probe, optimizer
    picks = {name: suggest_lr(lrs, smoothed, name, losses) for name in RULES}
    suggested, how = picks[rule]
    return LRTestResult(
        lrs, losses, smoothed, suggested, how, stopped_early, len(lrs), {name: lr for name, (lr, _) in picks.items()}
    )

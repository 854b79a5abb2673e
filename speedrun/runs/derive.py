"""What a run derives from its config when it starts: the peak LR (given, or picked by the LR range
test) and the peak epoch of the one-cycle schedule. The run records them in its summary and checkpoints
under "derived"; the config itself stays as it was resolved."""

import math
import sys

from speedrun.optim.lr_finder import MIN_RULE_STEPS, check_num_steps, lr_range_test, num_test_steps
from speedrun.optim.optimizers import build_optimizer
from speedrun.optim.schedule import OneCycle


def peak_epoch(config):
    """The epoch at which a run's LR peaks: lr.peak_epoch, or in a run of no more epochs than that,
    5/24 of its length (the seed's shape)."""
    epochs, peak = config["training"]["epochs"], config["lr"]["peak_epoch"]
    return peak if peak < epochs else round(epochs * 5 / 24, 4)


def peak_lr(cfg, state, pick):
    """The run's peak LR: lr.lr_max when given, else the one a resumed run derived, else `pick()` (the
    LR range test)."""
    if cfg["lr"]["lr_max"]:
        return cfg["lr"]["lr_max"]
    if state is not None and "derived" in state:
        return state["derived"]["lr_max"]
    if not cfg["lr_test"]["enabled"]:
        raise ValueError("no peak LR: give --lr.lr_max or enable the LR range test")
    check_num_steps(cfg["lr_test"]["num_steps"])  # on every rank, before rank 0 alone sweeps
    return pick()


def one_cycle(cfg, derived, steps_per_epoch):
    """The run's LR schedule, from the config and the values derived from it."""
    lr, epochs = cfg["lr"], cfg["training"]["epochs"]
    return OneCycle.from_epochs(
        derived["lr_max"],
        derived["lr_max"] / lr["div_factor"],
        epochs,
        derived["peak_epoch"],
        steps_per_epoch,
        lr["anneal_to_zero"],
    )


# The peak LR is the range test's pick times a factor measured for each optimizer, 24-epoch runs of
# the seed recipe on the JPEG copy of CIFAR-10 (NVIDIA H200, seed 0). SGD-Nesterov at 1, 2, 4, 8 and
# 16 times its min_loss pick reached 83.22, 85.75, 87.71, 88.44 and 88.10%, so its factor is 8
# (benchmarks/results/nvidia-h200/runs/lr_grid). Adam at 0.25, 0.5, 1, 2, 4 and 8 times its pick
# reached 89.76, 89.68, 90.30, 90.08, 89.78 and 88.94%: its pick is its best, so its factor is 1
# (benchmarks/results/nvidia-h200-visit-2/runs/lr_grid). Muon's recipe gives its LR.
PICK_FACTORS = {"sgd": 8.0, "adam": 1.0, "muon": 1.0}


def pick_factor(cfg):
    """What the range test's pick is multiplied by: lr_test.factor, or the optimizer's measured one."""
    return cfg["lr_test"]["factor"] or PICK_FACTORS[cfg["training"]["optimizer"]]


def run_lr_test(model, batcher, cfg, log, make_step):
    """Sweep the LR on a throw-away copy of the net; returns the peak LR it suggests, its pick times
    `pick_factor` (written nowhere in the config: the run keeps it in `derived`)."""
    t, test = cfg["training"], cfg["lr_test"]
    # one epoch's worth, counting the partial batch as the seed did: ceil(N / batch) steps, but at least
    # MIN_SWEEP_STEPS (a small train set's batches repeat, each epoch of them drawn afresh)
    steps = num_test_steps(test["num_steps"], math.ceil(batcher.num_images / t["batch_size"]))
    per_epoch = batcher.steps_per_epoch

    def step_fn(net, optimizer, inputs, targets):
        return make_step(net, optimizer)(inputs, targets)[0]

    # The sweep reads how the loss answers the step size; weight decay acts over thousands of steps and
    # is left out, so that the pick does not depend on it (decoupled decay at the sweep's top LRs,
    # lr x weight_decay near 1, would wipe the weights out and fake a divergence). Each param group's LR is
    # the swept one times its scale, as in the run (a group trained for its first epochs only is trained
    # throughout the sweep).
    sweep_cfg = {**cfg, "training": {**t, "weight_decay": 0.0}}
    result = lr_range_test(
        model,
        lambda net, lr: build_optimizer(net, sweep_cfg, lr),
        lambda i: batcher(-1 - i // per_epoch, i % per_epoch),  # negative epochs: not the training ones
        None,
        lr_start=test["lr_start"],
        lr_end=test["lr_end"],
        num_steps=steps,
        smoothing=test["smoothing"],
        diverge_factor=test["diverge_factor"],
        step_fn=step_fn,
        rule=test["rule"],
        progress=cfg["logging"]["progress"],
    )
    factor = pick_factor(cfg)
    lr_max = result.suggested_lr * factor
    others = ", ".join(f"{name} {lr:.3g}" for name, lr in result.suggestions.items() if name != test["rule"])
    scaled = (
        f" x {factor:g}, the factor {'given' if test['factor'] else 'measured for ' + t['optimizer']}"
        if factor != 1
        else ""
    )
    print(
        f"speedrun: LR range test over {result.steps} steps suggests lr_max = {lr_max:.3g} ({test['rule']}: "
        f"{result.rule}, {result.suggested_lr:.3g}{scaled}; other rules: {others})",
        file=sys.stderr,
    )
    if result.fell_back:
        reason = (
            f"its curve, {result.steps} points before the loss diverged, is too short to read"
            if result.steps < MIN_RULE_STEPS
            else "its loss never fell"
        )
        print(
            f"speedrun: warning: the LR range test's {test['rule']} rule could not pick, as {reason}: its pick "
            f"is the fallback, the LR of the lowest smoothed loss / 10; check lr_test.png or set the peak LR with "
            f"--lr.lr_max",
            file=sys.stderr,
        )
    if log.folder:
        result.to_json(log.path("lr_test.json"), factor=factor, lr_max=lr_max)
        if cfg["logging"]["plots"]:
            result.plot(log.path("lr_test.png"), lr_max=lr_max)
    return lr_max

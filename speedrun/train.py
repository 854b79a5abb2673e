"""Training: one run and its loop, for every recipe and device.  `python -m speedrun.train --epochs 24`

The dataset sits in device memory; each step draws its indices and augmentation on the device, runs
one (compiled, bf16, channels-last on CUDA) train step and records loss and accuracy into device
buffers, so nothing waits for the host inside an epoch: the step reads its LR from a table on the
device, and the optimizer takes it as a device tensor. The host syncs once per epoch to time it,
check the losses are finite, evaluate and checkpoint. On CPU the same code runs without compile,
autocast or the Triton kernel. `--training.compile_mode` picks what is compiled (speedrun/device.py).

The config a run reads is built once (speedrun/config.py) and never changed; what the run derives from
it (the peak LR the range test picks, the peak epoch of a short run) is kept in `Run.derived`. The
command line and seed sweeps are in speedrun/cli.py.
"""
import copy
import functools
import sys
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import distributed, runlog
from .config import run_config
from .data import load_cifar_betons
from .derive import one_cycle, peak_epoch, peak_lr, run_lr_test
from .device import pick_device, policy_from_config, synchronize
from .evaluate import evaluate
from .faults import OutOfMemory, TrainingDiverged, check_finite, check_not_exploded, largest_fitting_batch  # noqa: F401
from .loader import Loader
from .model import build_model
from .optim import WeightAverage, build_optimizer, load_state_in_place, set_lr, step_tensors, traced_update
from .report import announce_estimate, data_info, eval_record, summarise, write_start_plots
from .run_state import restore, save_state
from .schedule import DeviceSchedule

ESTIMATE_AFTER_STEPS = 3  # a CPU run announces its length once this many steps are timed


# ----------------------------------------------------------------------------------------------
# the pieces of a run


def make_train_step(model, optimizer, label_smoothing, autocast, average=None, whole=False):
    """One training step: forward, loss, backward, update, then the weight average. Returns (loss,
    correct) as device tensors.

    `whole` updates through plain tensor ops (optim.traced_update) so that torch.compile captures the
    step as one graph; otherwise through the optimizer's own, fused, step.
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    update = (lambda: traced_update(optimizer)) if whole else optimizer.step

    def train_step(inputs, targets):
        with autocast():
            logits = model(inputs)
            loss = F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
        loss.backward()
        with torch.no_grad():
            update()
            for p in params:  # optimizer.zero_grad(set_to_none=True), which torch.compile will not trace
                p.grad = None
            if average is not None:
                average.update()
        return loss.detach(), (logits.argmax(1) == targets).sum()
    return train_step


def compiled_train_step(policy, net, optimizer, label_smoothing, schedule, average):
    """The train step as the policy compiles it (the net's forward alone, or the whole step as one
    graph), after writing its LR from the device `schedule` into the optimizer and the weight average's
    next weight: device to device, no value baked into a graph. (Traced inside a whole-step graph, the
    LR's write stopped the optimizer's momentum from updating with torch 2.13, so both stay outside.)"""
    if policy.whole_step:
        step = policy.compiled_step(make_train_step(net, optimizer, label_smoothing, policy.autocast, average, True))
    else:
        step = make_train_step(policy.compiled(net), optimizer, label_smoothing, policy.autocast, average)

    def scheduled_step(inputs, targets):
        set_lr(optimizer, schedule.next())
        average.advance(schedule.position)  # the steps so far, this one included
        return step(inputs, targets)
    return scheduled_step


def evaluation_steps(epoch, steps, t):
    """Steps (1-based) after which to evaluate in this epoch: the last, more near the end if asked."""
    late = t["late_evals_from"] and epoch + 1 >= t["late_evals_from"]
    count = t["late_evals_per_epoch"] if late else 1
    return sorted({max(1, round(steps * (k + 1) / count)) for k in range(count)})


# Inductor's CUDA graphs run a function's first call plainly, record on the second and replay from the
# third: after 3 steps no compiling, recording or first-replay cost is left for the timed epochs.
WARMUP_STEPS = 3


def warm_up(run):
    """Compile the train and eval steps on a few batches, then put every state back as it was."""
    average = run.average.average or torch.nn.Module()  # no average: an empty state to save and load
    # each put back in place (the optimizer's tensors too): a whole step keeps reading the same memory
    loaders = {run.model: run.model.load_state_dict, average: average.load_state_dict,
               run.batcher: run.batcher.load_state_dict,
               run.optimizer: functools.partial(load_state_in_place, run.optimizer)}
    saved = {holder: copy.deepcopy(holder.state_dict()) for holder in loaders}
    start = time.perf_counter()
    for step in range(WARMUP_STEPS):  # an epoch may be shorter than the warm-up
        run.train_step(*run.batcher(0, step % run.batcher.steps_per_epoch))
    run.run_eval()
    synchronize(run.device)
    seconds = time.perf_counter() - start
    for holder, load in loaders.items():
        load(saved[holder])
    return seconds


# ----------------------------------------------------------------------------------------------
# the run


@dataclass
class Run:
    """Everything one run holds while its epochs go by."""
    cfg: dict
    derived: dict
    dist: distributed.Dist
    policy: object
    log: runlog.RunLog
    batcher: Loader
    model: torch.nn.Module
    optimizer: object
    average: WeightAverage
    train_step: object
    run_eval: object
    lrs: list
    schedule: DeviceSchedule
    history: list = field(default_factory=list)
    data_info: dict = field(default_factory=dict)
    start_epoch: int = 0
    train_seconds: float = 0.0
    compile_seconds: float = 0.0

    @property
    def device(self):
        return self.policy.device


def start(cfg, state, independent):
    """Claim the run folder (a new run), join the other processes, pick the device policy."""
    t = cfg["training"]
    if state is None:  # every rank, before they meet in setup (so before any writes), and before loading data
        owner = independent or distributed.launched_world()[0] == 0
        runlog.claim_folder(cfg["logging"]["folder"], cfg["logging"]["overwrite"], owner)
    dist = distributed.setup(t["device"], t["batch_size"], independent)
    policy = policy_from_config(t, dist.device or pick_device(t["device"]), tell=dist.is_main)
    if dist.is_main:
        print(f"speedrun: training on {policy.describe()}", file=sys.stderr)
    torch.manual_seed(t["seed"])
    return dist, policy


def prepare(config, data, independent):
    """Resolve the config, load the data, build net, optimizer and steps, restore a checkpoint."""
    cfg, state = run_config(copy.deepcopy(config or {}))
    t = cfg["training"]
    dist, policy = start(cfg, state, independent)
    device = policy.device
    if data is None:
        data = load_cifar_betons(cfg["data"]["train_dataset"], cfg["data"]["val_dataset"], device)
    log = runlog.RunLog(cfg["logging"]["folder"] if dist.is_main else None)
    batcher = Loader(data, cfg, device, dist.rank, dist.world, dtype=policy.input_dtype)
    model = policy.prepare(build_model(cfg, data.train_images))

    def lr_test_step(net, optimizer):
        return make_train_step(net, optimizer, t["label_smoothing"], policy.autocast)

    def pick():  # rank 0 sweeps on whole global batches, as one process would; every rank takes its pick
        whole = Loader(data, cfg, device, dtype=policy.input_dtype) if dist.world > 1 else batcher
        suggested = run_lr_test(model, whole, cfg, log, lr_test_step) if dist.is_main else 0.0
        return distributed.broadcast_from_main(suggested, dist)
    derived = {"lr_max": peak_lr(cfg, state, pick), "peak_epoch": peak_epoch(cfg)}
    schedule = one_cycle(cfg, derived, batcher.steps_per_epoch)
    lrs = schedule.lr_table()
    log.write_config(cfg)

    optimizer = build_optimizer(model.parameters(), cfg, traceable=policy.whole_step)
    average = WeightAverage(model, t["ema"])
    device_schedule = DeviceSchedule(schedule.as_tensor(device))
    net = distributed.wrap(model, dist, policy.compiled, ddp=not policy.whole_step)
    step_optimizer = distributed.averaging(optimizer, dist) if policy.whole_step else optimizer
    train_step = compiled_train_step(policy, net, step_optimizer, t["label_smoothing"], device_schedule, average)
    eval_net = policy.compiled(average.net())
    eval_data = distributed.shard(data.test_images, data.test_labels, dist)

    def run_eval():
        with policy.autocast():
            sums = evaluate(eval_net, *eval_data, batcher.table, t["eval_batch_size"], t["tta"])
        return distributed.all_reduce_sum(sums, dist)

    run = Run(cfg, derived, dist, policy, log, batcher, model, optimizer, average, train_step, run_eval, lrs,
              device_schedule, data_info=data_info(cfg))
    if state is not None:
        restore(run, state)
    elif dist.is_main and cfg["logging"]["plots"]:
        write_start_plots(data, cfg, batcher, lrs, log, device)
    if policy.whole_step:  # from here on (restores included) these stay where they are: see mark_static
        policy.mark_static([batcher.out, *step_tensors(optimizer), *average.tensors()])
    if policy.compile:  # said before and after, so that minutes of compiling are not mistaken for a hang
        if dist.is_main:
            print(f"speedrun: compiling ({policy.compile_mode}) on warm-up batches", file=sys.stderr, flush=True)
        run.compile_seconds = warm_up(run)
        if dist.is_main:
            print(f"speedrun: compiled in {run.compile_seconds:.1f} s", file=sys.stderr, flush=True)
    return run


# ----------------------------------------------------------------------------------------------
# the loop


def train_epoch(run, epoch, losses, correct):
    """One epoch: runs of steps with no host sync (`run_steps`), each closed by an evaluation."""
    t, steps, dist = run.cfg["training"], run.batcher.steps_per_epoch, run.dist
    run.model.train()
    run.schedule.seek(epoch * steps)
    bar = tqdm(total=steps, disable=not (run.cfg["logging"]["progress"] and dist.is_main), leave=False,
               desc=f"Epoch {epoch + 1}/{t['epochs']}")
    first = 0
    for last in evaluation_steps(epoch, steps, t):
        synchronize(run.device)
        started = time.perf_counter()
        run_steps(run, epoch, range(first, last), losses, correct, bar)
        synchronize(run.device)
        run.train_seconds += time.perf_counter() - started
        record_evaluation(run, epoch, range(first, last), losses, correct, bar)
        first = last
        run.model.train()
    bar.close()


def run_steps(run, epoch, steps, losses, correct, bar):
    """The hot loop: batch, step, and losses kept on the device; nothing here waits for the device."""
    started = time.perf_counter()
    for step in steps:
        losses[step], correct[step] = run.train_step(*run.batcher(epoch, step))
        bar.update()
        if step + 1 == ESTIMATE_AFTER_STEPS and epoch == run.start_epoch and run.device.type == "cpu":
            announce_estimate(run, (time.perf_counter() - started) / (step + 1 - steps.start))


def record_evaluation(run, epoch, steps, losses, correct, bar):
    """After `steps`: check the losses, evaluate, and append the record (the host syncs here)."""
    t, per_epoch, dist = run.cfg["training"], run.batcher.steps_per_epoch, run.dist
    first, last = steps.start, steps.stop
    check_finite(losses[:last], epoch, run.lrs, per_epoch, run.cfg["logging"]["folder"], dist)
    sums = distributed.all_reduce_sum(torch.stack([losses[first:last].sum(), correct[first:last].sum().double()]),
                                      dist)
    record = {"epoch": round(epoch + last / per_epoch, 4), "lr": run.lrs[epoch * per_epoch + last - 1],
              "train_loss": sums[0].item() / (len(steps) * dist.world),
              "train_acc": sums[1].item() / (len(steps) * t["batch_size"]),
              "train_seconds": round(run.train_seconds, 4)}
    check_not_exploded(record["train_loss"], epoch, steps, run.lrs, per_epoch, run.cfg["logging"]["folder"],
                       picked=not run.cfg["lr"]["lr_max"])
    bar.set_description(f"Batch_id={last - 1} Loss={record['train_loss']:.4f} "
                        f"Accuracy={100 * record['train_acc']:.2f}")
    record.update(eval_record(run.run_eval(), dist.is_main))
    previous = run.history[-1]["train_seconds"] if run.history else 0.0
    record["epoch_seconds"] = round(run.train_seconds - previous, 4)
    run.history.append(record)
    run.log.append_metrics(record)


def train(config=None, data=None, independent=False):
    """Train one run; `config` is a nested dict of overrides. Returns the summary (also summary.json).

    Under torchrun the processes train one run together, unless `independent` (a seed sweep).
    """
    run = prepare(config, data, independent)
    t, steps = run.cfg["training"], run.batcher.steps_per_epoch
    losses = torch.zeros(steps, device=run.device)
    correct = torch.zeros(steps, device=run.device, dtype=torch.int64)
    out_of_memory = False
    try:
        for epoch in range(run.start_epoch, t["epochs"]):
            train_epoch(run, epoch, losses, correct)
            if run.dist.is_main:
                save_state(run, epoch)
    except torch.cuda.OutOfMemoryError:
        out_of_memory = True  # probe outside the handler, once the failed step's memory is released
    if out_of_memory:
        run.optimizer.zero_grad(set_to_none=True)
        fits = largest_fitting_batch(run.model, t["batch_size"] // run.dist.world, run.policy) * run.dist.world
        raise OutOfMemory(f"the device ran out of memory at batch size {t['batch_size']}; the largest batch "
                          f"that fits a forward and backward pass is {fits}: try --training.batch_size {fits} "
                          f"(and scale lr.lr_max with it)")
    return summarise(run)


def main(argv=None):
    """The command line (speedrun/cli.py)."""
    from .cli import main as cli_main
    return cli_main(argv)


if __name__ == "__main__":
    main()

"""Training: one run and its loop, for every recipe and device.  `python -m speedrun.train --epochs 24`

The dataset sits in device memory; each step draws its indices and augmentation on the device, runs
one (compiled, bf16, channels-last on CUDA) train step and records loss and accuracy into device
buffers, so nothing waits for the host inside an epoch: the step reads its LR from a table on the
device, and the optimizer takes it as a device tensor. The host syncs once per epoch to time it,
check the losses are finite, evaluate and checkpoint. On CPU the same code runs without compile,
autocast or the Triton kernel. `--training.compile_mode` picks what is compiled (speedrun/system/device.py).

The config a run reads is built once (speedrun/runs/config.py) and never changed; what the run derives from
it (the peak LR the range test picks, the peak epoch of a short run) is kept in `Run.derived`. The
command line and seed sweeps are in speedrun/cli.py.
"""

import copy
import os
import sys
import time
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from speedrun.data.augment import IMAGE_SIZE
from speedrun.data.betons import load_cifar_betons
from speedrun.data.loader import Loader
from speedrun.engine.compile_watch import frames_compiled
from speedrun.engine.evaluate import evaluate
from speedrun.engine.resolution import curriculum, side_for_epoch
from speedrun.engine.step import compile_step, make_train_step, step_for, step_key
from speedrun.nets.model import build_model
from speedrun.optim.optimizers import Lookahead, WeightAverage, group_lr_table, param_groups
from speedrun.optim.schedule import DeviceSchedule
from speedrun.runs.config import run_config
from speedrun.runs.derive import one_cycle, peak_epoch, peak_lr, run_lr_test
from speedrun.runs.faults import OutOfMemory, TrainingDiverged, check_finite, check_not_exploded, largest_fitting_batch  # noqa: F401
from speedrun.runs.report import announce_estimate, data_info, eval_record, summarise, write_start_plots
from speedrun.runs.run_state import CheckpointWriter, restore, save_state
from speedrun.system import distributed, runlog
from speedrun.system.clock import Clock
from speedrun.system.device import pick_device, policy_from_config, synchronize

ESTIMATE_AFTER_STEPS = 3  # a CPU run announces its length once this many steps are timed


# ----------------------------------------------------------------------------------------------
# the pieces of a run


def evaluation_steps(epoch, steps, t):
    """Steps (1-based) after which to evaluate in this epoch: the last, more near the end if asked."""
    late = t["late_evals_from"] and epoch + 1 >= t["late_evals_from"]
    count = t["late_evals_per_epoch"] if late else 1
    return sorted({max(1, round(steps * (k + 1) / count)) for k in range(count)})


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
    lookahead: Lookahead
    train_step: object
    run_eval: object
    lrs: list
    schedule: DeviceSchedule
    sides: tuple = (IMAGE_SIZE,)  # the image sides of its epochs (speedrun/engine/resolution.py)
    history: list = field(default_factory=list)
    data_info: dict = field(default_factory=dict)
    start_epoch: int = 0
    train_seconds: float = 0.0
    compile_seconds: float = 0.0
    clock: Clock = field(default_factory=Clock)
    compile_cache: str = "none"  # cold, warm (torch's artifacts loaded), reused (an earlier run's step), none
    compile_report: dict = field(default_factory=dict)  # what compiling the step did (compile_watch)
    frames_before_training: int = 0  # dynamo's compiled frames once warm: any more are recompiles
    checkpoints: CheckpointWriter = None  # in the background on CUDA: the next epoch need not wait for the disk

    @property
    def device(self):
        return self.policy.device

    def side(self, epoch):
        """The image side `epoch` trains at."""
        return side_for_epoch(self.sides, epoch, self.cfg["training"]["epochs"])


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


def prepare(config, data, independent, steps=None, clock=None):
    """Resolve the config, load the data, build net, optimizer and step (or reuse the one `steps`, a
    step.StepCache, holds for runs of this shape), restore a checkpoint, warm the step up; each part's
    seconds charged to `clock`."""
    clock = clock or Clock()
    clock.charge("build")  # a process's first run: the interpreter, imports and any data loaded for all runs
    cfg, state = run_config(copy.deepcopy(config or {}))
    t = cfg["training"]
    sides = curriculum(cfg)  # a bad one stops the run before its folder or data
    dist, policy = start(cfg, state, independent)
    device = policy.device
    if data is None:
        clock.charge("startup")
        data = load_cifar_betons(cfg["data"]["train_dataset"], cfg["data"]["val_dataset"], device)
        clock.charge("build")
    log = runlog.RunLog(cfg["logging"]["folder"] if dist.is_main else None)
    batcher = Loader(data, cfg, device, dist.rank, dist.world, dtype=policy.input_dtype)
    model = policy.prepare(build_model(cfg, data.train_images))

    # The range test sweeps at 32 pixels whatever --training.resolutions says: it picks one peak LR for
    # every side of the run, and 32 is the side the run ends at and is evaluated at.
    def lr_test_step(net, optimizer):
        return make_train_step(net, optimizer, t["label_smoothing"], policy.autocast)

    def pick():  # rank 0 sweeps on whole global batches, as one process would; every rank takes its pick
        whole = Loader(data, cfg, device, dtype=policy.input_dtype) if dist.world > 1 else batcher
        suggested = run_lr_test(model, whole, cfg, log, lr_test_step) if dist.is_main else 0.0
        return distributed.broadcast_from_main(suggested, dist)

    clock.charge("startup")
    derived = {"lr_max": peak_lr(cfg, state, pick), "peak_epoch": peak_epoch(cfg)}
    clock.charge("range_test")
    schedule = one_cycle(cfg, derived, batcher.steps_per_epoch)
    lrs = schedule.lr_table()
    lr_table = group_lr_table(lrs, param_groups(model, cfg), batcher.steps_per_epoch, device)
    log.write_config(cfg)

    key = step_key(cfg, policy, dist, batcher.num_images, lr_table)
    built = steps is None or steps.get(key) is None
    clock.charge("startup")
    step = step_for(steps, key, cfg, policy, dist, model, lr_table, batcher)
    if built:
        clock.charge("build")
    eval_data = distributed.shard(data.test_images, data.test_labels, dist)

    def run_eval(tta=t["tta"]):
        with policy.autocast():
            sums = evaluate(step.eval_net, *eval_data, batcher.table, t["eval_batch_size"], tta, t["tta_below"])
        return distributed.all_reduce_sum(sums, dist)

    run = Run(
        cfg,
        derived,
        dist,
        policy,
        log,
        batcher,
        step.model,
        step.optimizer,
        step.average,
        step.lookahead,
        step.train_step,
        run_eval,
        lrs,
        step.schedule,
        sides,
        data_info=data_info(cfg),
        clock=clock,
        checkpoints=CheckpointWriter(background=device.type == "cuda"),
    )
    if state is not None:
        restore(run, state)
    step.pin(policy)
    clock.charge("startup")
    if state is None and dist.is_main and cfg["logging"]["plots"]:
        write_start_plots(data, cfg, batcher, lrs, log, device)
        clock.charge("plots")
    run.compile_seconds, run.compile_cache = compile_step(run, step, key)
    run.compile_report, run.frames_before_training = step.compile_report, frames_compiled()
    clock.charge("compile")
    return run


# ----------------------------------------------------------------------------------------------
# the loop


def train_epoch(run, epoch, losses, correct):
    """One epoch: runs of steps with no host sync (`run_steps`), each closed by an evaluation."""
    t, steps, dist = run.cfg["training"], run.batcher.steps_per_epoch, run.dist
    run.model.train()
    run.schedule.seek(epoch * steps)
    bar = tqdm(
        total=steps,
        disable=not (run.cfg["logging"]["progress"] and dist.is_main),
        leave=False,
        desc=f"Epoch {epoch + 1}/{t['epochs']}",
    )
    first = 0
    for last in evaluation_steps(epoch, steps, t):
        synchronize(run.device)
        run.clock.charge("evaluation")  # the last one's tail, and the epoch's start
        started = time.perf_counter()
        run_steps(run, epoch, range(first, last), losses, correct, bar)
        synchronize(run.device)
        run.train_seconds += time.perf_counter() - started
        run.clock.charge("training")
        record_evaluation(run, epoch, range(first, last), losses, correct, bar)
        run.clock.charge("evaluation")
        first = last
        run.model.train()
    bar.close()


def run_steps(run, epoch, steps, losses, correct, bar):
    """The hot loop: batch, step, and losses kept on the device; nothing here waits for the device."""
    started, side = time.perf_counter(), run.side(epoch)
    for step in steps:
        losses[step], correct[step] = run.train_step(*run.batcher(epoch, step), side)
        bar.update()
        if step + 1 == ESTIMATE_AFTER_STEPS and epoch == run.start_epoch and run.device.type == "cpu":
            announce_estimate(run, (time.perf_counter() - started) / (step + 1 - steps.start))


def record_evaluation(run, epoch, steps, losses, correct, bar):
    """After `steps`: check the losses, evaluate, and append the record (the host syncs here)."""
    t, per_epoch, dist = run.cfg["training"], run.batcher.steps_per_epoch, run.dist
    first, last = steps.start, steps.stop
    check_finite(losses[:last], epoch, run.lrs, per_epoch, run.cfg["logging"]["folder"], dist)
    sums = distributed.all_reduce_sum(torch.stack([losses[first:last].sum(), correct[first:last].sum().double()]), dist)
    record = {
        "epoch": round(epoch + last / per_epoch, 4),
        "lr": run.lrs[epoch * per_epoch + last - 1],
        "train_loss": sums[0].item() / (len(steps) * dist.world),
        "train_acc": sums[1].item() / (len(steps) * t["batch_size"]),
        "train_seconds": round(run.train_seconds, 4),
    }
    check_not_exploded(
        record["train_loss"],
        epoch,
        steps,
        run.lrs,
        per_epoch,
        run.cfg["logging"]["folder"],
        picked=not run.cfg["lr"]["lr_max"],
    )
    bar.set_description(f"Batch_id={last - 1} Loss={record['train_loss']:.4f} Accuracy={100 * record['train_acc']:.2f}")
    final = epoch + 1 == t["epochs"] and last == per_epoch
    record["tta"] = t["tta"] if final or t["tta_when"] == "every" else 0  # test-time augmentation: costly
    record.update(eval_record(run.run_eval(record["tta"]), dist.is_main))
    previous = run.history[-1]["train_seconds"] if run.history else 0.0
    record["epoch_seconds"] = round(run.train_seconds - previous, 4)
    run.history.append(record)
    run.log.append_metrics(record)


def train(config=None, data=None, independent=False, steps=None, started=None):
    """Train one run; `config` is a nested dict of overrides. Returns the summary (also summary.json).

    Under torchrun the processes train one run together, unless `independent` (a seed sweep). `steps`, a
    step.StepCache, lends the run the step an earlier run of the same shape compiled, and keeps this one's.
    `started` (a perf_counter reading; default now) is where the run's seconds table starts: the
    command line gives its process's start.
    """
    run = prepare(config, data, independent, steps, Clock(started))
    t, per_epoch = run.cfg["training"], run.batcher.steps_per_epoch
    losses = torch.zeros(per_epoch, device=run.device)
    correct = torch.zeros(per_epoch, device=run.device, dtype=torch.int64)
    out_of_memory = False
    try:
        for epoch in range(run.start_epoch, t["epochs"]):
            train_epoch(run, epoch, losses, correct)
            if run.dist.is_main:
                save_state(run, epoch)
                run.clock.charge("checkpoints")
    except torch.cuda.OutOfMemoryError:
        out_of_memory = True  # probe outside the handler, once the failed step's memory is released
    finally:  # a checkpoint being written in the background is finished, whatever stopped the run
        run.checkpoints.wait()
        run.clock.charge("checkpoints")
    if out_of_memory:
        run.optimizer.zero_grad(set_to_none=True)
        fits = largest_fitting_batch(run.model, t["batch_size"] // run.dist.world, run.policy) * run.dist.world
        raise OutOfMemory(
            f"the device ran out of memory at batch size {t['batch_size']}; the largest batch "
            f"that fits a forward and backward pass is {fits}: try --training.batch_size {fits} "
            f"(and scale lr.lr_max with it)"
        )
    return summarise(run)


if __name__ == "__main__":  # python -m speedrun.train: the command line is speedrun/cli.py's, which imports this
    from speedrun.cli import main

    main()
    # Every file is written and closed: skip the interpreter's teardown of torch, ffcv and the dataset,
    # which took 1.4 s after a tiny run on a 2-core CPU, outside any run's seconds table and waited for all the same.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)

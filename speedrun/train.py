"""Training: one tight loop for every recipe and device.  `python -m speedrun.train --epochs 24`

The dataset sits in device memory; each step draws its indices and augmentation on the device, runs
one (compiled, bf16, channels-last on CUDA) train step and records loss and accuracy into device
buffers, so nothing waits for the host inside an epoch: the step reads its LR from a table on the
device, and the optimizer takes it as a device tensor. The host syncs once per epoch to time it,
check the losses are finite, evaluate and checkpoint. On CPU the same code runs without compile,
autocast or the Triton kernel. `--training.compile_mode` picks what is compiled (speedrun/device.py).
"""
import contextlib
import copy
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from fastargs import Param, Section
from tqdm import tqdm

from . import augment, checkpoint, distributed, plots, runlog
from .config import Boolean, Choice, Number, defaults, merge, parse_args, parse_seeds
from .data import load_cifar_betons
from .device import (COMPILE_CHOICES, COMPILE_MODES, PRECISIONS, device_name, pick_device, policy_from_config,
                     synchronize, whole_step_obstacle)
from .evaluate import evaluate
from .loader import make_batcher
from .lr_finder import LRTestDiverged, lr_range_test, num_test_steps
from .model import build_model
from .optim import WeightAverage, build_optimizer, set_lr, traced_update
from .recipes import recipe_config
from .schedule import DeviceSchedule, OneCycle
from .sources import CIFAR10_CLASSES

Section("training", "the training loop").params(
    recipe=Param(Choice("seed", "speedrun"), "named set of defaults (see speedrun/recipes.py)", default="seed"),
    epochs=Param(Number(int, 1, 10_000), "epochs to train", default=24),
    batch_size=Param(Number(int, 1, 1 << 16), "global batch size", default=512),
    optimizer=Param(Choice("sgd", "adam", "muon"), "sgd = SGD with Nesterov momentum", default="sgd"),
    momentum=Param(Number(float, 0, 1), "momentum (SGD, Muon) or beta1 (Adam)", default=0.9),
    weight_decay=Param(Number(float, 0, 1), "L2 weight decay", default=5e-4),
    label_smoothing=Param(Number(float, 0, 1), "cross-entropy label smoothing", default=0.1),
    ema=Param(Number(float, 0, 1), "decay of an exponential moving average of weights evaluated "
                                   "instead of the weights (0 = off)", default=0.0),
    seed=Param(Number(int, 0, 2**63 - 1), "seed of every random draw", default=0),
    device=Param(Choice("auto", "cuda", "cpu"), "auto = cuda when present", default="auto"),
    compile=Param(Choice(*COMPILE_CHOICES), "torch.compile the steps (auto = on CUDA)", default="auto"),
    compile_mode=Param(Choice(*COMPILE_MODES), "what compiling compiles: the forward (default, max-autotune) or "
                                               "the whole step (whole-step, cudagraph)", default="default"),
    precision=Param(Choice(*PRECISIONS), "auto = bf16 autocast on CUDA and on CPUs with native bf16, "
                                         "float32 elsewhere", default="auto"),
    channels_last=Param(Boolean(), "channels-last memory format (faster on CUDA and CPUs)", default=True),
    tta=Param(Number(int, 0, 2), "test-time augmentation: 0 none, 1 flip, 2 flip + translate", default=0),
    eval_batch_size=Param(Number(int, 1, 1 << 16), "evaluation batch size", default=1000),
    late_evals_from=Param(Number(int, 0, 10_000), "from this epoch on, evaluate several times "
                                                  "an epoch (0 = off)", default=0),
    late_evals_per_epoch=Param(Number(int, 1, 100), "evaluations per epoch from late_evals_from", default=1),
    train_subset=Param(Number(int, 0, 10**9), "train on a fixed random N of the images (0 = all)", default=0),
    resume=Param(str, "continue the run in this folder from its last checkpoint", default=""),
    seeds=Param(str, "independent runs for these seeds ('0,1,2' or '0-4'), spread over the torchrun "
                     "processes, each in <folder>/seed<N>", default=""),
)
Section("logging", "what a run writes and shows").params(
    folder=Param(str, "run folder (default runs/<timestamp>)", default=""),
    plots=Param(Boolean(), "write PNG plots", default=True),
    progress=Param(Boolean(), "show progress bars", default=True),
    checkpoint=Param(Choice("every", "last", "none"), "every = every checkpoint_every epochs, keeping the previous "
                     "one; last = one file, at the end (the default of seed sweeps); none", default="every"),
    checkpoint_every=Param(Number(int, 0, 10_000), "with checkpoint every: every N epochs (0 = only at the end)",
                           default=1),
    overwrite=Param(Boolean(), "replace the run a run folder already holds", default=False),
)

ALIASES = {"--epochs": "--training.epochs", "--recipe": "--training.recipe",
           "--resume": "--training.resume", "--seed": "--training.seed", "--seeds": "--training.seeds"}
POLICY_KEYS = ("device", "compile", "compile_mode", "precision", "channels_last")  # how, not what, a run computes
RESUME_MAY_CHANGE = ("logging", "training.resume", *(f"training.{key}" for key in POLICY_KEYS))


ESTIMATE_AFTER_STEPS = 3  # a CPU run announces its length once this many steps are timed


class TrainingDiverged(RuntimeError):
    pass


class OutOfMemory(RuntimeError):
    pass


# ----------------------------------------------------------------------------------------------
# configuration


def resolve_config(overrides=None):
    """Defaults, then the recipe's values, then the caller's: a complete nested dict."""
    overrides = overrides or {}
    recipe = overrides.get("training", {}).get("recipe", "seed")
    return merge(merge(defaults(), recipe_config(recipe)), overrides)


def config_differences(saved, given, prefix=""):
    """Dotted keys whose value in `given` differs from `saved` (keys absent from `given` do not count)."""
    differ = []
    for key, value in given.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            differ += config_differences(saved.get(key, {}), value, name + ".")
        elif not name.startswith(RESUME_MAY_CHANGE) and saved.get(key) != value:
            differ.append(f"{name}: run has {saved.get(key)!r}, given {value!r}")
    return differ


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
    graph), after writing its LR from the device `schedule` into the optimizer: device to device, no
    value baked into a graph. (Traced inside a whole-step graph, that write stopped the optimizer's
    momentum from updating with torch 2.13, so it stays just outside.)"""
    if policy.whole_step:
        step = policy.compiled_step(make_train_step(net, optimizer, label_smoothing, policy.autocast, average, True))
    else:
        step = make_train_step(policy.compiled(net), optimizer, label_smoothing, policy.autocast, average)

    def scheduled_step(inputs, targets):
        set_lr(optimizer, schedule.next())
        return step(inputs, targets)
    return scheduled_step


def evaluation_steps(epoch, steps, t):
    """Steps (1-based) after which to evaluate in this epoch: the last, more near the end if asked."""
    late = t["late_evals_from"] and epoch + 1 >= t["late_evals_from"]
    count = t["late_evals_per_epoch"] if late else 1
    return sorted({max(1, round(steps * (k + 1) / count)) for k in range(count)})


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


def warm_up(run):
    """Compile the train and eval steps on a few batches, then put every state back as it was."""
    average = run.average.average or torch.nn.Module()  # no average: an empty state to save and load
    states = (run.model, run.optimizer, average)
    saved = [copy.deepcopy(holder.state_dict()) for holder in states]
    generator = run.batcher.generator.get_state()
    start = time.perf_counter()
    for step in range(3):
        run.train_step(*run.batcher(0, step))
    run.run_eval()
    synchronize(run.device)
    seconds = time.perf_counter() - start
    for holder, state in zip(states, saved):
        holder.load_state_dict(state)
    run.batcher.generator.set_state(generator)
    run.batcher.cache["epoch"] = None
    return seconds


def run_lr_test(model, batcher, cfg, log, autocast):
    """Sweep the LR on a throw-away copy of the net; returns the suggested peak LR."""
    t, test = cfg["training"], cfg["lr_test"]
    # one epoch's worth, counting the partial batch as the seed did: ceil(N / batch) steps
    steps = num_test_steps(test["num_steps"], math.ceil(batcher.num_images / t["batch_size"]))
    per_epoch = batcher.steps_per_epoch

    def step_fn(net, optimizer, inputs, targets):
        return make_train_step(net, optimizer, t["label_smoothing"], autocast)(inputs, targets)[0]

    result = lr_range_test(
        model, lambda params, lr: build_optimizer(params, cfg, lr),
        lambda i: batcher(-1 - i // per_epoch, i % per_epoch),  # negative epochs: not the training ones
        None, lr_start=test["lr_start"], lr_end=test["lr_end"], num_steps=steps,
        smoothing=test["smoothing"], diverge_factor=test["diverge_factor"], step_fn=step_fn, rule=test["rule"],
        progress=cfg["logging"]["progress"])
    others = ", ".join(f"{name} {lr:.3g}" for name, lr in result.suggestions.items() if name != test["rule"])
    print(f"speedrun: LR range test over {result.steps} steps suggests lr_max = {result.suggested_lr:.3g} "
          f"({result.rule}; other rules: {others})", file=sys.stderr)
    if log.folder:
        result.to_json(log.path("lr_test.json"))
        if cfg["logging"]["plots"]:
            result.plot(log.path("lr_test.png"))
    return result.suggested_lr


def resume_config(folder, overrides):
    """The saved config of the run in `folder`, refusing overrides that would change the run."""
    state = checkpoint.load_checkpoint(checkpoint.find_checkpoint(folder))
    differ = config_differences(state["config"], overrides)
    if differ:
        raise ValueError(f"{folder} was run with another config; differing keys:\n  " + "\n  ".join(differ))
    cfg = merge(state["config"], {"logging": overrides.get("logging", {})})
    cfg["logging"]["folder"], cfg["training"]["resume"] = folder, folder
    fallback = defaults()["training"]  # for options newer than the checkpoint
    for key in POLICY_KEYS:
        cfg["training"][key] = overrides.get("training", {}).get(key, cfg["training"].get(key, fallback[key]))
    return cfg, state


def data_info(cfg):
    """What the betons were written from, read from the JSON write_beton.py puts beside each."""
    info = {}
    for split, key in (("train", "train_dataset"), ("test", "val_dataset")):
        path = cfg["data"][key]
        info[split] = path
        with contextlib.suppress(OSError, ValueError), open(path + ".json") as f:
            info[f"{split}_meta"] = json.load(f)
    return info


# ----------------------------------------------------------------------------------------------
# the run


@dataclass
class Run:
    """Everything one run holds while its epochs go by."""
    cfg: dict
    dist: distributed.Dist
    policy: object
    log: runlog.RunLog
    batcher: object
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


def prepare(config, data, independent):
    """Resolve the config, load the data, build net, optimizer and steps, restore a checkpoint."""
    overrides = copy.deepcopy(config or {})
    resume = overrides.get("training", {}).get("resume", "")
    cfg, state = resume_config(resume, overrides) if resume else (resolve_config(overrides), None)
    t = cfg["training"]
    cfg["logging"]["folder"] = cfg["logging"]["folder"] or runlog.default_folder()
    if not resume:  # every rank, before they meet in setup (so before any writes), and before loading data
        owner = independent or distributed.launched_world()[0] == 0
        runlog.claim_folder(cfg["logging"]["folder"], cfg["logging"]["overwrite"], owner)
    dist = distributed.setup(t["device"], t["batch_size"], independent)
    policy = policy_from_config(t, dist.device or pick_device(t["device"]))
    obstacle = whole_step_obstacle(t["optimizer"], dist.world) if policy.whole_step else None
    if obstacle:
        policy = policy.fall_back(obstacle, tell=dist.is_main)
    device = policy.device
    if dist.is_main:
        print(f"speedrun: training on {policy.describe()}", file=sys.stderr)
    torch.manual_seed(t["seed"])

    if data is None:
        data = load_cifar_betons(cfg["data"]["train_dataset"], cfg["data"]["val_dataset"], device)
    log = runlog.RunLog(cfg["logging"]["folder"] if dist.is_main else None)
    batcher = make_batcher(data, cfg, device, dist.rank, dist.world, dtype=policy.input_dtype)
    model = policy.prepare(build_model(cfg, data.train_images))
    if not cfg["lr"]["lr_max"]:
        if not cfg["lr_test"]["enabled"]:
            raise ValueError("no peak LR: give --lr.lr_max or enable the LR range test")
        # rank 0 sweeps on whole global batches, as one process would; every rank takes its pick
        whole = make_batcher(data, cfg, device, dtype=policy.input_dtype) if dist.world > 1 else batcher
        suggested = run_lr_test(model, whole, cfg, log, policy.autocast) if dist.is_main else 0.0
        cfg["lr"]["lr_max"] = distributed.broadcast_from_main(suggested, dist)
    schedule = one_cycle(cfg, batcher.steps_per_epoch)
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

    run = Run(cfg, dist, policy, log, batcher, model, optimizer, average, train_step, run_eval, lrs,
              device_schedule, data_info=data_info(cfg))
    if state is not None:
        restore(run, state)
    elif dist.is_main and cfg["logging"]["plots"]:
        write_start_plots(data, cfg, batcher, lrs, log, device)
    if policy.compile:  # said before and after, so that minutes of compiling are not mistaken for a hang
        if dist.is_main:
            print(f"speedrun: compiling ({policy.compile_mode}) on warm-up batches", file=sys.stderr, flush=True)
        run.compile_seconds = warm_up(run)
        if dist.is_main:
            print(f"speedrun: compiled in {run.compile_seconds:.1f} s", file=sys.stderr, flush=True)
    return run


def one_cycle(cfg, steps_per_epoch):
    """The run's LR schedule; a run shorter than the peak epoch peaks at 5/24 of it, like the seed's."""
    lr, epochs = cfg["lr"], cfg["training"]["epochs"]
    if lr["peak_epoch"] >= epochs:
        lr["peak_epoch"] = round(epochs * 5 / 24, 4)
    return OneCycle.from_epochs(lr["lr_max"], lr["lr_max"] / lr["div_factor"], epochs, lr["peak_epoch"],
                                steps_per_epoch, lr["anneal_to_zero"])


def restore(run, state):
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    if run.average.average is not None:
        run.average.average.load_state_dict(state["average"])
    run.start_epoch, run.history = state["epoch"], state["history"]
    note = restore_generator(run.batcher, state, run.device.type, run.cfg["training"]["seed"])
    if note and run.dist.is_main:
        print(note, file=sys.stderr)
    run.log.rewrite_metrics(run.history)
    run.train_seconds = run.history[-1]["train_seconds"] if run.history else 0.0


def generator_device(state):
    """The device type the saved generator state is for (older checkpoints: told by its size)."""
    if "generator_device" in state:
        return state["generator_device"]
    return "cpu" if len(state["generator"]) == len(torch.Generator().get_state()) else "cuda"


def restore_generator(batcher, state, device_type, seed):
    """Continue the saved random stream; across device types, whose generators hold different states
    (a CUDA state cannot be loaded into a CPU generator, nor the reverse), reseed from (seed, epoch).

    Returns the line to tell the user in that case, else None.
    """
    saved = generator_device(state)
    if saved == device_type:
        batcher.generator.set_state(state["generator"])
        return None
    batcher.generator.manual_seed((seed * 1_000_003 + state["epoch"]) % 2**64)
    return (f"speedrun: resuming a {saved} run on {device_type}: batches from epoch {state['epoch'] + 1} on are "
            f"drawn from a generator reseeded from (seed, epoch), so the run is valid but not bit-identical "
            f"to the uninterrupted one")


def checkpoint_due(options, epoch, epochs):
    """Whether the logging options' policy (every / last / none) writes a checkpoint after `epoch`."""
    every, last = options["checkpoint_every"], epoch + 1 == epochs
    if options["checkpoint"] == "every":
        return last or bool(every and (epoch + 1) % every == 0)
    return options["checkpoint"] == "last" and last


def save_state(run, epoch):
    options = run.cfg["logging"]
    if run.log.folder and checkpoint_due(options, epoch, run.cfg["training"]["epochs"]):
        checkpoint.save_checkpoint(run.log.folder, {
            "signature": checkpoint.model_signature(run.model), "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(), "generator": run.batcher.generator.get_state(),
            "generator_device": run.device.type,
            "average": run.average.average.state_dict() if run.average.average is not None else {},
            "epoch": epoch + 1, "history": run.history, "config": run.cfg,
            "classes": run.data_info.get("train_meta", {}).get("classes", CIFAR10_CLASSES)},
            keep_previous=options["checkpoint"] == "every")


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
    bar.set_description(f"Batch_id={last - 1} Loss={record['train_loss']:.4f} "
                        f"Accuracy={100 * record['train_acc']:.2f}")
    record.update(eval_record(run.run_eval(), dist.is_main))
    previous = run.history[-1]["train_seconds"] if run.history else 0.0
    record["epoch_seconds"] = round(run.train_seconds - previous, 4)
    run.history.append(record)
    run.log.append_metrics(record)


def announce_estimate(run, seconds_per_step):
    """Say how long the remaining training steps will take, from the first steps' pace."""
    t = run.cfg["training"]
    remaining = (t["epochs"] - run.start_epoch) * run.batcher.steps_per_epoch
    if run.dist.is_main:
        tqdm.write(f"speedrun: {seconds_per_step:.2f} s per step on this device: about "
                   f"{format_duration(seconds_per_step * remaining)} for the {remaining} steps of "
                   f"{t['epochs'] - run.start_epoch} epochs, evaluations not included", file=sys.stderr)


def format_duration(seconds):
    hours, rest = divmod(round(seconds), 3600)
    return f"{hours} h {rest // 60:02d} min" if hours else f"{rest // 60} min {rest % 60:02d} s"


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


def summarise(run):
    t, history = run.cfg["training"], run.history
    summary = {
        "final_test_acc": history[-1]["test_acc"], "best_test_acc": max(h["test_acc"] for h in history),
        "train_seconds": round(run.train_seconds, 4), "compile_seconds": round(run.compile_seconds, 4),
        "epochs": t["epochs"], "steps_per_epoch": run.batcher.steps_per_epoch, "lr_max": run.cfg["lr"]["lr_max"],
        "device": device_name(run.device), "world_size": run.dist.world,
        "versions": runlog.versions(), "seed": t["seed"], "recipe": t["recipe"], "config": run.cfg,
        "data": run.data_info, "history": history, "folder": run.log.folder,
    }
    run.log.write_summary(summary)
    if run.log.folder and run.cfg["logging"]["plots"]:
        plots.plot_curves(history, run.log.path("curves.png"))
    return summary


def eval_record(sums, is_main):
    loss_sum, right, count = (float(v) for v in sums)
    if is_main:
        tqdm.write(f"Test set: Average loss: {loss_sum / count:.4f}, Accuracy: {int(right)}/{int(count)} "
                   f"({100 * right / count:.2f}%)")
    return {"test_loss": loss_sum / count, "test_acc": right / count}


def write_start_plots(data, cfg, batcher, lrs, log, device):
    """The schedule and a grid of augmented images, drawn with their own generator (the run's is untouched)."""
    plots.plot_schedule(lrs, batcher.steps_per_epoch, log.path("lr_schedule.png"))
    a = cfg["augment"]
    generator = torch.Generator(device=device)
    generator.manual_seed(cfg["training"]["seed"] + 1)
    index = torch.randperm(len(data.train_images), generator=generator, device=device)[:32]  # across classes
    params = augment.draw_params(32, generator, device, pad=a["pad"], cutout=a["cutout"], flip=a["flip"])
    table = augment.normalize_table(augment.CIFAR10_MEAN, augment.CIFAR10_STD, torch.float32, device)
    grid = augment.augment_batch(data.train_images, index, params, table, pad_mode=a["pad_mode"], pad=a["pad"],
                                 cutout=a["cutout"], impl="torch")
    plots.plot_image_grid(grid, augment.CIFAR10_MEAN, augment.CIFAR10_STD, log.path("augmented.png"),
                          data.train_labels[index], CIFAR10_CLASSES)


def train_seeds(given, seeds, data=None):
    """Independent runs, one per seed, each in <folder>/seed<N>; under torchrun, this rank's share.

    Each seed keeps one checkpoint, written at its end, unless --logging.checkpoint says otherwise:
    a sweep of hundreds of seeds would otherwise fill the disk with checkpoints nobody resumes.
    """
    rank, world, _ = distributed.launched_world()
    base = given.get("logging", {}).get("folder") or runlog.default_folder()
    given = merge({"logging": {"checkpoint": "last"}}, given, strict=False)
    summaries = []
    for seed in seeds[rank::world]:
        config = merge(given, {"training": {"seed": seed}, "logging": {"folder": os.path.join(base, f"seed{seed}")}},
                       strict=False)
        config["training"].pop("seeds", None)  # each run is one seed
        summaries.append(train(config, data=data, independent=True))
    return summaries


def main(argv=None):
    given = parse_args(argv, description=__doc__.splitlines()[0], aliases=ALIASES, explicit_only=True)
    try:
        seeds = given.get("training", {}).get("seeds", "")
        summaries = train_seeds(given, parse_seeds(seeds)) if seeds else [train(given)]
    except KeyboardInterrupt:
        print("\ninterrupted: a run that checkpoints every epoch (the default of single runs) continues from "
              "its last finished one with python -m speedrun.train --resume <run folder>", file=sys.stderr)
        sys.exit(130)
    except (TrainingDiverged, LRTestDiverged, OutOfMemory, ValueError, OSError) as error:  # no traceback
        print(f"speedrun.train: error: {error}", file=sys.stderr)
        sys.exit(1)
    distributed.teardown()
    for summary in summaries:
        if summary["folder"]:
            print(f"seed {summary['seed']}: final test accuracy {100 * summary['final_test_acc']:.2f}% "
                  f"(best {100 * summary['best_test_acc']:.2f}%), {summary['train_seconds']:.1f} s training, "
                  f"{summary['compile_seconds']:.1f} s compiling; run folder {summary['folder']}")


if __name__ == "__main__":
    main()

"""The train step, in one place: built, compiled or captured, warmed up, and reused across seeds.

A step is the forward, loss, backward, optimizer update, lookahead and weight average over a run's net,
optimizer and LR table on the device (every param group's LR at every step, optim.group_lr_table),
compiled as the device policy says (speedrun/system/device.py):

    step = build_step(cfg, policy, dist, model, lr_table, batch_buffer)   # once
    warm_up(run)                      # compile or capture on a few batches, then put every state back
    loss, correct = step.train_step(inputs, targets, side)   # the epoch's image side (speedrun/engine/resolution.py)

Seeds in one process (`--seeds`, speedrun.leaderboard) share one step through a `StepCache`: a run of
the same shape loads its fresh state in place into the tensors the step was compiled or captured on
(`reuse`) instead of building and compiling another, so a sweep compiles once.
"""

import contextlib
import copy
import functools
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as torch_dist
import torch.distributed._functional_collectives as funcol
import torch.nn.functional as F

from speedrun.data.augment import IMAGE_SIZE
from speedrun.engine.compile_watch import NOTHING_COMPILED, CompileWatch, mode_that_ran
from speedrun.engine.resolution import downscale, parse_sides
from speedrun.optim.optimizers import (
    Lookahead,
    OptimizerGroup,
    WeightAverage,
    build_optimizer,
    load_state_in_place,
    set_lr,
    step_tensors,
    traced_update,
)
from speedrun.optim.schedule import DeviceSchedule
from speedrun.system import atomic, distributed, runlog
from speedrun.system import device as devices
from speedrun.system.device import device_name, say, synchronize

# Inductor's CUDA graphs run a function's first call plainly, record on the second and replay from the
# third: after 3 steps no compiling, recording or first-replay cost is left for the timed epochs.
WARMUP_STEPS = 3


def make_train_step(
    model, optimizer, label_smoothing, autocast, average=None, whole=False, lookahead=None, side=IMAGE_SIZE
):
    """One training step: forward, loss, backward, update, then lookahead and the weight average (of the
    weights lookahead leaves). Returns (loss, correct) as device tensors.

    `whole` updates through plain tensor ops (optim.traced_update) so that torch.compile captures the
    step as one graph; otherwise through the optimizer's own, fused, step. Below 32, `side` downscales
    the batch first (a resolution curriculum's early epochs).
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    update = (lambda: traced_update(optimizer)) if whole else optimizer.step

    def train_step(inputs, targets):
        if side != IMAGE_SIZE:
            inputs = downscale(inputs, side)
        with autocast():
            logits = model(inputs)
            loss = F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
        loss.backward()
        with torch.no_grad():
            update()
            for p in params:  # optimizer.zero_grad(set_to_none=True), which torch.compile will not trace
                p.grad = None
            if lookahead is not None:
                lookahead.update()
            if average is not None:
                average.update()
        return loss.detach(), (logits.argmax(1) == targets).sum()

    return train_step


def compiled_train_step(
    policy, net, optimizer, label_smoothing, schedule, average, lookahead=None, sides=(IMAGE_SIZE,)
):
    """The train step as the policy compiles it (the net's forward alone, or the whole step as one
    graph), after writing its LRs from the device `schedule` into the optimizer and the weights of the
    weight average and lookahead: device to device, no value baked into a graph. (Traced inside a
    whole-step graph, the LR's write stopped the optimizer's momentum from updating with torch 2.13, so
    these stay outside.)

    One step for each image side in `sides`, called as step(inputs, targets, side): a whole step is then
    a graph per side, and the host picks the epoch's one by a dict lookup, no device value read."""
    whole = policy.whole_step
    forward = net if whole else policy.compiled(net)
    compiled = policy.compiled_step if whole else (lambda step: step)
    steps = {
        side: compiled(
            make_train_step(forward, optimizer, label_smoothing, policy.autocast, average, whole, lookahead, side)
        )
        for side in sides
    }

    def scheduled_step(inputs, targets, side=IMAGE_SIZE):
        set_lr(optimizer, schedule.next())
        average.advance(schedule.position)  # the steps so far, this one included
        if lookahead is not None:
            lookahead.advance(schedule.position)
        return steps[side](inputs, targets)

    return scheduled_step


def average_gradients(params, world):
    """Replace each parameter's gradient by its mean over the ranks, in place: one functional all-reduce
    of all of them, flattened, which a compiled step traces into its graph."""
    grads = [p.grad for p in params if p.grad is not None]
    total = funcol.all_reduce(torch.cat([g.reshape(-1) for g in grads]), "sum", torch_dist.group.WORLD)
    for grad, part in zip(grads, total.split([g.numel() for g in grads])):
        grad.copy_(part.view_as(grad) / world)


class GradientAveraging(OptimizerGroup):
    """The optimizer of a whole step compiled as one graph under torchrun, where DDP's gradient hooks do
    not run: its update averages the gradients over the ranks first (see optim.traced_update)."""

    def __init__(self, optimizer, world):
        super().__init__([optimizer])
        self.world = world

    def update(self):
        average_gradients([p for group in self.param_groups for p in group["params"]], self.world)
        super().update()


def averaging(optimizer, dist):
    """The optimizer a whole step updates through: `optimizer` itself in a single process."""
    return GradientAveraging(optimizer, dist.world) if dist.world > 1 else optimizer


@dataclass
class Step:
    """What a run trains with: the net, its optimizer, weight average and lookahead, the LR table on the
    device, the batch buffer the loader writes into, and the (compiled) train and eval nets over them."""

    model: torch.nn.Module
    optimizer: object
    average: WeightAverage
    lookahead: Lookahead
    schedule: DeviceSchedule
    batch_buffer: torch.Tensor
    train_step: object
    eval_net: torch.nn.Module
    fresh_optimizer: dict  # the optimizer's state before its first update, for `reuse`
    warm: bool = False  # compiled (or captured) already: a reusing run skips the warm-up
    compile_report: dict = field(default_factory=lambda: dict(NOTHING_COMPILED))  # its warm-up's (compile_watch)

    def pin(self, policy):
        """Before the first call of a whole step (after any restore, which may put new state tensors in
        place): the tensors it reads or updates in place stay where they are (see Policy.mark_static)."""
        if policy.whole_step:
            policy.mark_static(
                [self.batch_buffer, *step_tensors(self.optimizer), *self.average.tensors(), *self.lookahead.tensors()]
            )


def build_step(cfg, policy, dist, model, lr_table, batch_buffer):
    """The Step of a run of `cfg` on `model` (prepared for the device), compiled as `policy` says."""
    t = cfg["training"]
    optimizer = build_optimizer(model, cfg, traceable=policy.whole_step)
    average = WeightAverage(model, t["ema"])
    lookahead = Lookahead(model, t["lookahead"], total_steps=len(lr_table) - 1)
    schedule = DeviceSchedule(lr_table)
    net = distributed.wrap(model, dist, policy.compiled, ddp=not policy.whole_step)
    step_optimizer = averaging(optimizer, dist) if policy.whole_step else optimizer
    train_step = compiled_train_step(
        policy, net, step_optimizer, t["label_smoothing"], schedule, average, lookahead, parse_sides(t["resolutions"])
    )
    return Step(
        model,
        optimizer,
        average,
        lookahead,
        schedule,
        batch_buffer,
        train_step,
        policy.compiled(average.net()),
        copy.deepcopy(optimizer.state_dict()),
    )


def reuse(step, model, lr_table):
    """Make a built Step start a new run: `model`'s fresh weights, a fresh optimizer state, the weight
    average and lookahead's slow copy back to the weights and the run's LR table, each copied into the
    tensors the step was compiled or captured on."""
    state = model.state_dict()
    step.model.load_state_dict(state)
    load_state_in_place(step.optimizer, step.fresh_optimizer)
    if step.average.average is not None:
        step.average.average.load_state_dict(state)
    step.lookahead.load_state_dict(state)
    step.schedule.table.copy_(lr_table)
    step.schedule.seek(0)
    return step


def step_for(steps, key, cfg, policy, dist, model, lr_table, batcher):
    """The run's Step: the one `steps` (a StepCache, or None) holds for `key`, restarted with `model`'s
    weights and `lr_table` (the loader then writes into its batch buffer), or a new one, which `steps`
    keeps for the next run."""
    step = steps.get(key) if steps is not None else None
    if step is not None:
        batcher.out = step.batch_buffer
        return reuse(step, model, lr_table)
    step = build_step(cfg, policy, dist, model, lr_table, batcher.out)
    if steps is not None:
        steps.keep(key, step)
    return step


def compile_step(run, step, key):
    """Compile (or capture) the run's step on warm-up batches, with torch's artifacts from the compile
    cache when it has them for `key`, saving them when it had none; nothing when an earlier run of the
    process compiled this step already. Returns (seconds, the cache's state: none, cold, warm, reused).
    It says so before and after, so that minutes of compiling are not mistaken for a hang."""
    policy, tell = run.policy, run.dist.is_main
    if not policy.compile:
        return 0.0, "none"
    if step.warm:
        say(tell, f"speedrun: reusing the step compiled ({policy.compile_mode}) for an earlier run")
        return 0.0, "reused"
    cache = compile_cache_file(run.cfg["training"]["compile_cache"], key, policy.device)
    state = load_compile_cache(cache, tell)
    say(tell, f"speedrun: compiling ({policy.compile_mode}) on warm-up batches")
    watch = CompileWatch()
    seconds = warm_up(run)
    step.compile_report = watch.stop()
    step.warm = True
    ran = mode_that_ran(policy, step.compile_report)
    if ran != policy.compile_mode:
        reasons = step.compile_report["cudagraph_skip_reasons"] or ["no reason logged"]
        say(tell, f"speedrun: inductor skipped CUDA graphs ({reasons[0]}): the step runs as {ran}, without them")
    if state == "cold" and tell:
        save_compile_cache(cache, tell)
    kept = f": {cache}" if cache else ", none kept (--training.compile_cache)"
    say(tell, f"speedrun: compiled in {seconds:.1f} s (compile cache {state}{kept})")
    return seconds, state


def step_key(cfg, policy, dist, num_images, lr_table):
    """What a Step depends on: runs with equal keys can share one (seed, folders and LR values aside)."""
    training = {k: v for k, v in cfg["training"].items() if k not in ("seed", "seeds", "resume", "compile_cache")}
    return json.dumps(
        [cfg["model"], training, repr(policy), dist.rank, dist.world, num_images, list(lr_table.shape)],
        sort_keys=True,
        default=str,
    )


class StepCache:
    """The last Step built in this process and its key, for the next run of the same shape to reuse."""

    def __init__(self):
        self.key, self.step = None, None

    def get(self, key):
        return self.step if self.step is not None and key == self.key else None

    def keep(self, key, step):
        self.key, self.step = key, step


def compile_cache_file(folder, key, device):
    """Where torch's compile artifacts for steps of `key` are kept in `folder` ('' = nowhere: None): one
    file per key, torch and triton version, device and backend, so that a cache from another version or
    device is never read."""
    if not folder:
        return None
    stamp = json.dumps([key, runlog.versions(), device_name(device), devices.COMPILE_BACKEND])
    return Path(folder).expanduser() / f"step-{hashlib.sha256(stamp.encode()).hexdigest()[:24]}.bin"


def load_compile_cache(path, tell=True):
    """'warm' once torch has taken the artifacts in `path`, else 'cold'. A file torch cannot read (cut
    short, corrupt, written by another version) is ignored, said in one line: the step compiles anew."""
    if path is None or not path.exists():
        return "cold"
    try:
        with quiet(CACHE_LOGGER):  # torch logs a traceback of its own for a file it cannot read
            loaded = torch.compiler.load_cache_artifacts(path.read_bytes())
        if loaded is None:
            raise ValueError("torch could not read any artifacts from it")
        return "warm"
    except Exception as error:  # whatever torch raises on a bad file, the run must not die of its cache
        say(tell, f"speedrun: compile cache {path} ignored ({type(error).__name__}: {error}); compiling anew")
        return "cold"


CACHE_LOGGER = "torch.compiler._cache"


@contextlib.contextmanager
def quiet(logger_name):
    """Nothing below ERROR from the logger `logger_name` inside the block."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def save_compile_cache(path, tell=True):
    """Write the artifacts this process compiled to `path` (whole or not at all), if torch made any. A
    failure to save them (torch's or the disk's) is said in one line: the run, compiled, goes on."""
    if path is None:
        return
    try:
        artifacts = torch.compiler.save_cache_artifacts()
        if artifacts:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic.replacing(path) as temporary:
                temporary.write_bytes(artifacts[0])
    except Exception as error:  # the cache only saves time: losing it must not lose the run
        say(tell, f"speedrun: compile cache not saved to {path} ({type(error).__name__}: {error})")


def warm_up(run):
    """Compile the train and eval steps on a few batches, at each of the run's image sides (a graph
    each: none is left to compile in the timed epochs), then put every state back as it was."""
    average = run.average.average or torch.nn.Module()  # no average: an empty state to save and load
    # each put back in place (the optimizer's tensors too): a whole step keeps reading the same memory
    loaders = {
        run.model: run.model.load_state_dict,
        average: average.load_state_dict,
        run.lookahead: run.lookahead.load_state_dict,
        run.batcher: run.batcher.load_state_dict,
        run.optimizer: functools.partial(load_state_in_place, run.optimizer),
    }
    saved = {holder: copy.deepcopy(holder.state_dict()) for holder in loaders}
    start = time.perf_counter()
    for side in run.sides:
        for step in range(WARMUP_STEPS):  # a run may be shorter than the warm-up: its epoch, and its LR table
            run.schedule.seek(0)  # every warm-up step on the table's first row, which every run has
            run.train_step(*run.batcher(0, step % run.batcher.steps_per_epoch), side)
    run.run_eval()
    synchronize(run.device)
    seconds = time.perf_counter() - start
    for holder, load in loaders.items():
        load(saved[holder])
    return seconds

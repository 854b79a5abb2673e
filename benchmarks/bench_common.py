"""What the benchmark's stages share: problem sizes, the timer, the run's settings and the workload
the model stages time (the trainer's own net, batcher and Step, built by speedrun.engine.step.build_step, on random
images)."""

import itertools
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # speedrun and write_beton.py: the repository root

from speedrun.data.betons import CifarData  # noqa: E402
from speedrun.data.loader import Loader  # noqa: E402
from speedrun.engine.step import build_step  # noqa: E402
from speedrun.nets.model import build_model  # noqa: E402
from speedrun.optim.optimizers import group_lr_table, param_groups, set_lr  # noqa: E402
from speedrun.runs.config import merge, resolve_config  # noqa: E402
from speedrun.summary import forward_flops  # noqa: E402
from speedrun.system.device import policy_from_config, timed  # noqa: E402
from speedrun.system.distributed import Dist  # noqa: E402

# Problem sizes and repeat counts. `calls` back-to-back calls make one timed repeat, so that launch
# overhead is spread over enough work; tiny kernels get more of them.
SIZES = {
    "full": dict(
        matmul=(4096, 8192, 16384),
        copy_bytes=1 << 30,
        train_images=50_000,
        test_images=10_000,
        augment_batch=512,
        augment_large_batch=32_768,
        repeats=10,
        calls=20,
        kernel_calls=100,
        write_repeats=3,
        step_repeats=10,
        overrides={},
    ),
    "small": dict(
        matmul=(256, 512),
        copy_bytes=16 << 20,
        train_images=256,
        test_images=128,
        augment_batch=64,
        augment_large_batch=256,
        repeats=3,
        calls=2,
        kernel_calls=2,
        write_repeats=2,
        step_repeats=2,
        overrides={
            "model": {"width": 8},
            "lr": {"lr_max": 0.05},
            "training": {"epochs": 1, "batch_size": 64, "eval_batch_size": 128},
        },
    ),
}
INTERPRETER_BATCH = 4  # the Triton interpreter runs a kernel in numpy: a smoke check, not a speed
BENCH_LR = 0.01  # any LR times the same; the model stages never train for real
# Rows of a workload's LR table: its step reads one a call (schedule.DeviceSchedule) and a call past the
# end fails (an IndexError on a CPU, a device assert on CUDA). The busiest workload, the shared one at
# full size, takes about 420 calls (train_step, memory and versus_plain): this leaves a wide margin.
BENCH_STEPS = 1 << 16
FIFTY_K = 50_000  # the CIFAR-10 training set
# A CPU's matrix products at full size: the best of these. 2048-cubed ran at 1.7x the rate of 1024-cubed in
# bf16 on a 2-core Xeon with AMX (benchmarks/results/cpu-intel-xeon-2-cores-amx-step-modes-bf16.json); a
# CPU emulating bf16 stops climbing at MATMUL_CALL_LIMIT_S a product.
CPU_MATMULS = (512, 1024, 2048)
MATMUL_CALL_LIMIT_S = 1.0
# Each timed repeat of a matrix product makes about this many seconds of back-to-back calls (up to the
# size's `kernel_calls`): a float32 16384-cubed product on a GPU takes a sixth of a second alone.
MATMUL_REPEAT_S = 0.25
CPU_CONV_BATCH = 64  # the net's convolutions on a CPU: enough images to reach its rate, seconds in all
CPU_STEP_REPEATS = 5  # a CPU takes seconds (tens without native bf16) per full-size step


class SkipStage(Exception):
    """A stage that cannot run here; the message says why."""


def measure(fn, device, repeats, calls=1, warmup=1, host_clock=False):
    """Seconds per call of `fn`: the median and min over `repeats` timings of `calls` calls each.

    CUDA events time the device's work without host round trips; `host_clock` times host-bound work
    (writing files, loading them) with perf_counter between two synchronisations.
    """

    def run(count):
        return lambda: [fn() for _ in range(count)]

    warmup_s = timed(run(warmup), device)[1]  # includes compiling, when there is any
    events = device.type == "cuda" and not host_clock
    times = [timed(run(calls), device, events)[1] / calls for _ in range(repeats)]
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "repeats": repeats,
        "calls_per_repeat": calls,
        "warmup_s": warmup_s,
    }


def throughput(timing, images, flops_per_image=None):
    """A timing with its images/s and, given the FLOPs each image costs, TFLOP/s."""
    record = {**timing, "images": images, "images_per_s": images / timing["median_s"]}
    if flops_per_image:
        record["tflops"] = flops_per_image * images / timing["median_s"] / 1e12
    return record


# ----------------------------------------------------------------------------------------------


class Bench:
    """The device, sizes and trainer config of this run, and what stages build once and share."""

    def __init__(self, given, size, device, tmp):
        self.given, self.device, self.tmp = given, device, tmp
        self.size = SIZES[size]
        self.overrides = merge(self.size["overrides"], given, strict=False)  # the user's options win
        self.cfg = resolve_config(self.overrides)
        self.policy = policy_from_config(self.cfg["training"], device)
        self.compiling = self.policy.compile
        self.written = None  # (train, test, what they were written from), set by the write_beton stage
        self.training = None  # the training run's summary
        self._workload = None

    def measure(self, fn, calls=None, repeats=None, warmup=1, host_clock=False):
        return measure(
            fn, self.device, repeats or self.size["repeats"], calls or self.size["calls"], warmup, host_clock
        )

    def betons(self):
        """(train, test, origin): the betons given on the command line, else those write_beton wrote."""
        data = self.given.get("data", {})
        if "train_dataset" in data or "val_dataset" in data:
            return self.cfg["data"]["train_dataset"], self.cfg["data"]["val_dataset"], "given"
        if self.written is None:
            raise SkipStage("no betons: give --train-beton and --val-beton, or run the write_beton stage")
        return self.written

    def workload(self):
        if self._workload is None:
            self._workload = Workload(self, self.policy)
        return self._workload


def random_data(n_train, n_test, device, seed=0):
    """A CifarData of random bytes and labels on `device`."""
    generator = torch.Generator(device=device).manual_seed(seed)

    def split(n):
        return (
            torch.randint(0, 256, (n, 32, 32, 3), generator=generator, device=device, dtype=torch.uint8),
            torch.randint(0, 10, (n,), generator=generator, device=device),
        )

    return CifarData(*split(n_train), *split(n_test))


class Workload:
    """The trainer's Step under `policy`, built and pinned as train.prepare builds it (speedrun.engine.step.build_step:
    the optimizer, weight average and lookahead the config asks for, compiled as the policy says), with its
    model and batcher, on random images and a constant LR of BENCH_LR: a figure of its step is the trainer's."""

    def __init__(self, bench, policy):
        cfg, device = bench.cfg, bench.device
        self.autocast = policy.autocast
        self.label_smoothing = cfg["training"]["label_smoothing"]
        self.data = random_data(bench.size["train_images"], bench.size["test_images"], device)
        self.batcher = Loader(self.data, cfg, device, dtype=policy.input_dtype)
        model = policy.prepare(build_model(cfg, self.data.train_images))
        self.flops_per_image = forward_flops(model)
        lr_table = group_lr_table(
            [BENCH_LR] * BENCH_STEPS, param_groups(model, cfg), self.batcher.steps_per_epoch, device
        )
        self.step = build_step(cfg, policy, Dist(device=device), model, lr_table, self.batcher.out)
        # Before the first call, as train.prepare does: a whole step's graph then keeps the batch buffer and
        # the state it updates where they are (under CUDA graphs it would otherwise be skipped).
        self.step.pin(policy)
        self.model, self.optimizer = self.step.model, self.step.optimizer
        set_lr(self.optimizer, lr_table[0])  # optimizer_step updates before any step has written an LR
        self.net = policy.compiled(self.model)  # the forward alone, for the stages that time parts of the step
        self.inputs, self.targets = self.batcher(0, 0)
        self.batch_size = len(self.targets)
        self._steps = itertools.count()

    def loss_backward(self):
        """Forward, loss and backward of the current batch; gradients accumulate."""
        with self.autocast():
            loss = F.cross_entropy(self.net(self.inputs), self.targets, label_smoothing=self.label_smoothing)
        loss.backward()

    def loop_step(self):
        """One training step as the loop runs it: draw and augment a batch, then the Step trains on it."""
        return self.step.train_step(*self.batcher(0, next(self._steps) % self.batcher.steps_per_epoch))

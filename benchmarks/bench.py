"""Per-stage benchmark of the training pipeline, from the hardware's ceilings to a whole training run.

    python benchmarks/bench.py                              # full sizes on a GPU, a small smoke run on CPU
    python benchmarks/bench.py --stages ceilings,augment,train_step
    python benchmarks/bench.py --source cifar-10-binary.tar.gz        # write_beton and training on real data
    python benchmarks/bench.py --train-beton data/cifar10_train.beton --val-beton data/cifar10_test.beton

Every stage is warmed up, then timed over several repeats (CUDA events on a GPU, perf_counter on the
CPU); the JSON keeps the median and the minimum. The model stages call the trainer's own functions
(build_model, build_optimizer, make_batcher, make_train_step) with its settings: channels-last, bf16
autocast and torch.compile on CUDA, eager float32 on the CPU. They run on random images held on the
device, since speed does not depend on pixel values; only beton_to_device and the training run read
betons. Trainer options (--model.width 32, --training.batch_size 1024, --recipe speedrun) apply to
the model stages and the training run alike.

Results go to <out>/<device>.json, e.g. nvidia-h100-80gb-hbm3.json, or cpu-amd-epyc-2-cores.json.
"""
import contextlib
import datetime
import io
import itertools
import json
import math
import os
import re
import shutil
import statistics
import sys
import tempfile
import traceback
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from fastargs import Param, Section
from fastargs.validation import Checker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # write_beton.py lives at the repository root

from speedrun import augment  # noqa: E402
from speedrun.config import Choice, merge, parse_args  # noqa: E402
from speedrun.data import CifarData, load_beton, load_cifar_betons  # noqa: E402
from speedrun.evaluate import evaluate  # noqa: E402
from speedrun.model import build_model  # noqa: E402
from speedrun.summary import forward_flops  # noqa: E402
from speedrun.device import (device_name, device_policy, pick_device, policy_from_config, synchronize, timed,  # noqa: E402
                             torch_threads)
from speedrun.runlog import versions, write_json  # noqa: E402
from speedrun.loader import make_batcher  # noqa: E402
from speedrun.optim import build_optimizer, set_lr  # noqa: E402
from speedrun.train import make_train_step, resolve_config, train  # noqa: E402
from write_beton import write_betons  # noqa: E402

STAGES = ("ceilings", "write_beton", "beton_to_device", "augment", "forward", "forward_backward",
          "optimizer_step", "train_step", "versus_plain", "host_overhead", "memory", "eval", "epoch", "train_24")


def stage_names(text):
    """'all' or 'a,b' -> the named stages in pipeline order; ValueError on an unknown name."""
    names = set(STAGES) if text.strip() == "all" else {name.strip() for name in text.split(",") if name.strip()}
    if not names or names - set(STAGES):
        raise ValueError(text)
    return [name for name in STAGES if name in names]


class StageList(Checker):
    def check(self, value):
        stage_names(value)
        return value

    def help(self):
        return "'all' or a comma-separated list of " + ",".join(STAGES)


Section("bench", "per-stage benchmark (benchmarks/bench.py)").params(
    size=Param(Choice("auto", "full", "small"), "full = the real sizes; small = a smoke run of seconds; "
                                                "auto = full on CUDA, small on CPU", default="auto"),
    stages=Param(StageList(), "stages to run", default="all"),
    out=Param(str, "folder for <device>.json", default="benchmarks/results"),
)

ALIASES = {"--size": "--bench.size", "--stages": "--bench.stages", "--out": "--bench.out",
           "--source": "--data.source", "--train-beton": "--data.train_dataset",
           "--val-beton": "--data.val_dataset", "--epochs": "--training.epochs",
           "--recipe": "--training.recipe", "--seed": "--training.seed"}

# Problem sizes and repeat counts. `calls` back-to-back calls make one timed repeat, so that launch
# overhead is spread over enough work; tiny kernels get more of them.
SIZES = {
    "full": dict(matmul=8192, copy_bytes=1 << 30, train_images=50_000, test_images=10_000,
                 augment_batch=512, augment_large_batch=32_768, repeats=10, calls=20, kernel_calls=100, write_repeats=3, step_repeats=10,
                 overrides={}),
    "small": dict(matmul=512, copy_bytes=16 << 20, train_images=256, test_images=128,
                  augment_batch=64, augment_large_batch=256, repeats=3, calls=2, kernel_calls=2, write_repeats=2, step_repeats=2,
                  overrides={"model": {"width": 8}, "lr": {"lr_max": 0.05},
                             "training": {"epochs": 1, "batch_size": 64, "eval_batch_size": 128}}),
}
INTERPRETER_BATCH = 4  # the Triton interpreter runs a kernel in numpy: a smoke check, not a speed
BENCH_LR = 0.01  # any LR times the same; the model stages never train for real
FIFTY_K = 50_000  # the CIFAR-10 training set
CPU_MATMUL = 1024  # large enough to reach a CPU's rate, small enough for one without native bf16
CPU_STEP_REPEATS = 3  # a CPU takes tens of seconds per full-size step


class SkipStage(Exception):
    """A stage that cannot run here; the message says why."""


# ----------------------------------------------------------------------------------------------
# timing


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
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": repeats,
            "calls_per_repeat": calls, "warmup_s": warmup_s}


def throughput(timing, images, flops_per_image=None):
    """A timing with its images/s and, given the FLOPs each image costs, TFLOP/s."""
    record = {**timing, "images": images, "images_per_s": images / timing["median_s"]}
    if flops_per_image:
        record["tflops"] = flops_per_image * images / timing["median_s"] / 1e12
    return record


# ----------------------------------------------------------------------------------------------
# what the stages share


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
        return measure(fn, self.device, repeats or self.size["repeats"], calls or self.size["calls"],
                       warmup, host_clock)

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
        return (torch.randint(0, 256, (n, 32, 32, 3), generator=generator, device=device, dtype=torch.uint8),
                torch.randint(0, 10, (n,), generator=generator, device=device))

    return CifarData(*split(n_train), *split(n_test))


class Workload:
    """The model, optimizer, batcher and train step, built the way train.py builds them, under `policy`."""

    def __init__(self, bench, policy):
        cfg, device = bench.cfg, bench.device
        self.policy, self.autocast = policy, policy.autocast
        self.label_smoothing = cfg["training"]["label_smoothing"]
        self.data = random_data(bench.size["train_images"], bench.size["test_images"], device)
        self.batcher = make_batcher(self.data, cfg, device, dtype=policy.input_dtype)
        self.model = policy.prepare(build_model(cfg, self.data.train_images))
        self.flops_per_image = forward_flops(self.model)
        self.net = policy.compiled(self.model)
        self.optimizer = build_optimizer(self.model.parameters(), cfg)
        set_lr(self.optimizer, BENCH_LR)
        self.train_step = make_train_step(self.net, self.optimizer, self.label_smoothing, self.autocast)
        self.inputs, self.targets = self.batcher(0, 0)
        self.batch_size = len(self.targets)
        self._steps = itertools.count()
        self._eval_net = None

    def loss_backward(self):
        """Forward, loss and backward of the current batch; gradients accumulate."""
        with self.autocast():
            loss = F.cross_entropy(self.net(self.inputs), self.targets, label_smoothing=self.label_smoothing)
        loss.backward()

    def step(self):
        """One training step as the loop runs it: draw and augment a batch, then train on it."""
        return self.train_step(*self.batcher(0, next(self._steps) % self.batcher.steps_per_epoch))

    def eval_net(self):
        if self._eval_net is None:  # compiled apart from the training net, as train.py does
            self._eval_net = self.policy.compiled(self.model)
        return self._eval_net


# ----------------------------------------------------------------------------------------------
# the stages


def matmul_tflops(bench, n, dtype, calls):
    a, b = (torch.randn(n, n, device=bench.device, dtype=dtype) for _ in range(2))
    timing = bench.measure(lambda: a @ b, calls=calls)
    return {**timing, "matmul_size": n, "dtype": str(dtype), "tflops": 2 * n ** 3 / timing["median_s"] / 1e12}


def stage_ceilings(bench):
    """The measured bf16 and float32 matrix-product rates and the bandwidth of a device-to-device copy
    (bytes read and written). `tflops`, the peak every FLOP rate is a fraction of, is the rate in the
    precision training computes in (the device policy's)."""
    on_cuda = bench.device.type == "cuda"
    size = bench.size if on_cuda else SIZES["small"]  # a CPU needs minutes for the GPU sizes
    n = size["matmul"] if on_cuda or bench.size is SIZES["small"] else CPU_MATMUL
    rates = {name: matmul_tflops(bench, n, dtype, size["kernel_calls"])
             for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32))}
    source = torch.ones(size["copy_bytes"], dtype=torch.uint8, device=bench.device)
    target = torch.empty_like(source)
    copy = bench.measure(lambda: target.copy_(source), calls=size["kernel_calls"])
    moved = 2 * source.numel()
    used = "bf16" if bench.policy.bf16 else "fp32"
    return {**rates[used], "bf16_tflops": rates["bf16"]["tflops"], "fp32_tflops": rates["fp32"]["tflops"],
            "matmuls": rates, "copy": {**copy, "bytes": moved}, "gbps": moved / copy["median_s"] / 1e9}


def write_synthetic_source(folder, n_train, n_test, seed=0):
    """An extracted binary-version CIFAR-10 folder of random images a net can still learn (each class
    its own colour plus noise): five train batches and a test batch of [label, R, G, B planes]."""
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 192, (10, 3, 1), dtype=np.uint8)
    folder.mkdir(parents=True)
    counts = [len(part) for part in np.array_split(np.arange(n_train), 5)] + [n_test]
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for name, count in zip(names, counts):
        labels = rng.integers(0, 10, count, dtype=np.uint8)
        planes = palette[labels] + rng.integers(0, 64, (count, 3, 1024), dtype=np.uint8)
        records = np.concatenate([labels[:, None], planes.reshape(count, -1)], axis=1)
        (folder / name).write_bytes(records.tobytes())
    return folder


def stage_write_beton(bench):
    """write_betons from --source, or from a synthetic source in a temporary folder."""
    data = bench.cfg["data"]
    source = bench.given.get("data", {}).get("source")
    origin = source or "synthetic"
    source = source or write_synthetic_source(bench.tmp / "source", bench.size["train_images"],
                                              bench.size["test_images"])
    folders = []

    def write():
        if folders:
            shutil.rmtree(folders[-1])  # keep one pair of betons on disk, not one per repeat
        folders.append(bench.tmp / f"betons{len(folders)}")
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            write_betons(str(source), folders[-1] / "train.beton", folders[-1] / "test.beton", data["cache_dir"],
                         data["trust_pickles"], data["num_workers"])

    timing = bench.measure(write, calls=1, repeats=bench.size["write_repeats"], host_clock=True)
    paths = [str(folders[-1] / name) for name in ("train.beton", "test.beton")]
    images = sum(json.loads(Path(path + ".json").read_text())["count"] for path in paths)
    bench.written = (*paths, origin)
    return {**throughput(timing, images), "source": origin, "num_workers": data["num_workers"]}


def stage_beton_to_device(bench):
    """load_beton of the train beton, from the file to images on the device."""
    train_path = bench.betons()[0]
    count = [0]

    def load():
        count[0] = len(load_beton(train_path, bench.device)[1])

    timing = bench.measure(load, calls=1, host_clock=True)
    record = throughput(timing, count[0])
    return {**record, "seconds_per_50k": FIFTY_K / record["images_per_s"], "beton": train_path}


def time_augment(bench, impl, batch):
    """One implementation on one batch: timing, bytes moved, GB/s, and agreement with the reference."""
    w, device, a = bench.workload(), bench.device, bench.cfg["augment"]
    images, table = w.data.train_images, w.batcher.table
    generator = torch.Generator(device=device).manual_seed(0)
    indices = torch.randint(0, len(images), (batch,), generator=generator, device=device)
    params = augment.draw_params(batch, generator, device, pad=a["pad"], cutout=a["cutout"], flip=a["flip"])
    out = torch.empty(batch, 3, 32, 32, dtype=table.dtype, device=device, memory_format=torch.channels_last)

    def run(impl=impl, out=out):
        return augment.augment_batch(images, indices, params, table, pad_mode=a["pad_mode"], pad=a["pad"],
                                     cutout=a["cutout"], impl=impl, out=out)

    timing = bench.measure(run, calls=bench.size["kernel_calls"])
    moved = augment.bytes_moved(batch, table.dtype)
    return {**timing, "batch_size": batch, "bytes": moved, "gbps": moved / timing["median_s"] / 1e9,
            "matches_reference": torch.equal(run(), run("torch", None))}


def stage_augment(bench):
    """The Triton kernel against the torch reference, at the training batch (`impls`) and at a batch
    large enough that launch overhead does not hide the kernel's speed (`large_batch`): 512 images move
    4.7 MB, about 2 us at 3 TB/s, less than a launch. The headline figures are the large batch's, of the
    implementation training uses (Triton on CUDA); the interpreter times only a few images."""
    on_cuda, size = bench.device.type == "cuda", bench.size
    batches = {"torch": size["augment_batch"]}
    if augment.triton is not None and (on_cuda or os.environ.get("TRITON_INTERPRET") == "1"):
        batches["triton"] = size["augment_batch"] if on_cuda else INTERPRETER_BATCH
    impls = {impl: time_augment(bench, impl, batch) for impl, batch in batches.items()}
    large = {impl: time_augment(bench, impl, size["augment_large_batch"])
             for impl in batches if on_cuda or impl == "torch"}
    used = "triton" if on_cuda and "triton" in impls else "torch"
    both = "triton" in large or ("triton" in impls and batches["triton"] == batches["torch"])
    compared = large if "triton" in large else impls
    speedup = compared["torch"]["median_s"] / compared["triton"]["median_s"] if both else None
    return {**large[used], "impl": used, "speedup_over_torch": speedup, "impls": impls, "large_batch": large}


def stage_forward(bench):
    w = bench.workload()

    def forward():
        with w.autocast():
            w.net(w.inputs)

    return throughput(bench.measure(forward, warmup=3), w.batch_size, w.flops_per_image)


def stage_forward_backward(bench):
    w = bench.workload()

    def forward_backward():
        w.loss_backward()
        w.optimizer.zero_grad(set_to_none=True)

    return throughput(bench.measure(forward_backward, warmup=3), w.batch_size, 3 * w.flops_per_image)


def stage_optimizer_step(bench):
    w = bench.workload()
    w.loss_backward()  # the step needs gradients; the same ones serve every repeat
    timing = bench.measure(w.optimizer.step, warmup=3)
    w.optimizer.zero_grad(set_to_none=True)
    parameters = sum(p.numel() for p in w.model.parameters())
    return {**timing, "parameters": parameters, "optimizer": bench.cfg["training"]["optimizer"]}


def stage_train_step(bench):
    """The whole step: indices, augmentation, forward, backward, optimizer; FLOPs = 3 x forward."""
    w = bench.workload()
    record = throughput(bench.measure(w.step, warmup=3), w.batch_size, 3 * w.flops_per_image)
    return {**record, "batch_size": w.batch_size, "forward_gflops_per_image": w.flops_per_image / 1e9}


def stage_versus_plain(bench):
    """The train step the plain way (eager, NCHW, float32, as the seed's notebook ran it) and the device
    policy's way, same net, batch and process; on a CPU also the plain way on one thread, which is what
    CPU runs got while importing ffcv set torch to one thread."""
    plain = device_policy(bench.device, "fp32", "off", channels_last=False)
    variants = {"plain": (plain, None), "ours": (bench.policy, None)}
    if bench.device.type == "cpu":
        variants["plain_1_thread"] = (plain, 1)
    results = {}
    for name, (policy, threads) in variants.items():
        w = bench.workload() if name == "ours" else Workload(bench, policy)
        with torch_threads(threads):
            timing = bench.measure(w.step, warmup=1, calls=1, repeats=bench.size["step_repeats"]
                                   if bench.device.type == "cuda" else CPU_STEP_REPEATS)
            results[name] = {**throughput(timing, w.batch_size, 3 * w.flops_per_image),
                             "policy": policy.describe(), "threads": torch.get_num_threads()}
    ours = results["ours"]
    return {**ours, "variants": results, "speedup_over_plain": ours["images_per_s"] / results["plain"]["images_per_s"]}


SEED_STEP_FLOPS = 2.28e9 * 512  # the seed net's forward and backward, per image, times its batch


def stage_host_overhead(bench):
    """Host time per train step with a net whose arithmetic is negligible (width 1, batch 8): the floor
    no step time goes under, eager, with the forward compiled, and as a whole-step graph (the compiled
    ones where the policy compiles: --training.compile on measures them on a CPU). Beside it, the
    operations an eager step dispatches and the seed net's step time at the measured peak."""
    import copy

    from speedrun.opcount import OpCounter
    from speedrun.optim import WeightAverage
    from speedrun.schedule import DeviceSchedule
    from speedrun.train import compiled_train_step
    tiny = copy.copy(bench)
    tiny.cfg = merge(bench.cfg, {"model": {"width": 1}, "training": {"batch_size": 8, "ema": 0.0}})
    modes = ["eager"] + (["default", "whole-step"] if bench.compiling else [])
    variants = {}
    for mode in modes:
        policy = device_policy(bench.device, "fp32", "off" if mode == "eager" else "on",
                               compile_mode="default" if mode == "eager" else mode)
        w = Workload(tiny, policy)
        optimizer = build_optimizer(w.model.parameters(), tiny.cfg, traceable=policy.whole_step)
        schedule = DeviceSchedule(torch.full((1 << 20,), BENCH_LR, device=bench.device))
        step = compiled_train_step(policy, w.model, optimizer, w.label_smoothing, schedule,
                                   WeightAverage(w.model, 0.0))
        timing = bench.measure(lambda: step(w.inputs, w.targets), warmup=3, calls=20, repeats=5)
        variants[mode] = {**timing, "policy": policy.describe()}
        if mode == "eager":
            with OpCounter() as counted:
                step(w.inputs, w.targets)
            variants[mode].update(ops_per_step=counted.total, syncs_per_step=sum(counted.syncs.values()))
    peak = stage_ceilings(bench)["tflops"]  # measured again: a stage stands alone
    return {**variants["eager"], "variants": variants, "ops_per_step": variants["eager"]["ops_per_step"],
            "seed_step_at_peak_s": SEED_STEP_FLOPS / (peak * 1e12)}


def stage_memory(bench):
    """Peak device memory while train steps run, and what was allocated before them (data, model)."""
    w, device = bench.workload(), bench.device
    on_cuda = device.type == "cuda"
    if on_cuda:
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    resident = torch.cuda.memory_allocated(device) if on_cuda else None
    timing = bench.measure(w.step)
    peak = torch.cuda.max_memory_allocated(device) if on_cuda else None
    return {**timing, "peak_memory_bytes": peak, "resident_bytes": resident,
            "peak_memory_gib": peak / 2 ** 30 if peak is not None else None}


def stage_eval(bench):
    w, t = bench.workload(), bench.cfg["training"]
    images, labels = w.data.test_images, w.data.test_labels
    net = w.eval_net()

    def run():
        with w.autocast():
            evaluate(net, images, labels, w.batcher.table, t["eval_batch_size"], t["tta"])

    timing = bench.measure(run, calls=1, warmup=2)
    return {**throughput(timing, len(labels)), "eval_batch_size": t["eval_batch_size"], "tta": t["tta"]}


def training_run(bench):
    """One run of train() on the betons, shared by the epoch and train_24 stages."""
    if bench.training is None:
        train_path, test_path, origin = bench.betons()
        config = merge(bench.overrides, {
            "data": {"train_dataset": train_path, "val_dataset": test_path},
            "logging": {"folder": str(bench.tmp / "run"), "plots": False, "progress": False,
                        "checkpoint_every": 0}}, strict=False)
        data = load_cifar_betons(train_path, test_path, bench.device)
        torch._dynamo.reset()  # compile afresh, as a new process would (on-disk caches still apply)
        bench.training = {**train(config, data), "betons_from": origin}
    return bench.training


def images_per_epoch(summary):
    return summary["steps_per_epoch"] * summary["config"]["training"]["batch_size"]


def stage_epoch(bench):
    """Seconds per training epoch of the run (evaluation excluded, as in train_seconds)."""
    summary = training_run(bench)
    epochs = defaultdict(float)
    for record in summary["history"]:  # several records per epoch when evaluating late epochs often
        epochs[math.ceil(record["epoch"])] += record["epoch_seconds"]
    seconds = list(epochs.values())
    timing = {"median_s": statistics.median(seconds), "min_s": min(seconds), "repeats": len(seconds)}
    return throughput(timing, images_per_epoch(summary))


def stage_train_24(bench):
    """The whole run's training time (summary['train_seconds']), compile time and test accuracy."""
    summary = training_run(bench)
    seconds = summary["train_seconds"]
    timing = {"median_s": seconds, "min_s": seconds, "repeats": 1}
    return {**throughput(timing, summary["epochs"] * images_per_epoch(summary)), "epochs": summary["epochs"],
            "compile_s": summary["compile_seconds"] if bench.compiling else None,
            "test_accuracy": summary["final_test_acc"], "lr_max": summary["lr_max"],
            "betons_from": summary["betons_from"]}


STAGE_FUNCTIONS = {name: globals()[f"stage_{name}"] for name in STAGES}


# ----------------------------------------------------------------------------------------------
# the report


def add_fractions(stages):
    """Each rate as a fraction of its measured ceiling: TFLOP/s of peak, GB/s of copy bandwidth."""
    ceilings = stages.get("ceilings", {})
    peak, copy = ceilings.get("tflops"), ceilings.get("gbps")
    for name, record in stages.items():
        if name == "ceilings":
            continue
        parts = [record, *[part for key in ("impls", "large_batch", "variants") for part in record.get(key, {}).values()]]
        for part in parts:
            if "tflops" in part:
                part["peak_fraction"] = part["tflops"] / peak if peak else None
            if "gbps" in part:
                part["bandwidth_fraction"] = part["gbps"] / copy if copy else None


def slugify(name):
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def make_report(bench, stages, size, command):
    ceilings = stages.get("ceilings", {})
    run = bench.training or {}
    workload = bench._workload
    return {
        "device": device_name(bench.device), "torch": torch.__version__, "triton": versions()["triton"],
        "versions": versions(), "command": command, "size": size,
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "measured_peak_tflops": ceilings.get("tflops"), "measured_copy_gbps": ceilings.get("gbps"),
        "forward_gflops_per_image": workload.flops_per_image / 1e9 if workload else None,
        "train_step_peak_fraction": stages.get("train_step", {}).get("peak_fraction"),
        "speedup_over_plain": stages.get("versus_plain", {}).get("speedup_over_plain"),
        "policy": bench.policy.describe(),
        "augment_bandwidth_fraction": stages.get("augment", {}).get("bandwidth_fraction"),
        "train_24_epochs_s": run["train_seconds"] if run.get("epochs") == 24 else None,
        "compile_s": run["compile_seconds"] if run and bench.compiling else None,
        "test_accuracy": run.get("final_test_acc"), "training_betons_from": run.get("betons_from"),
        "config": bench.cfg, "stages": stages,
    }


NOTES = [("tflops", "{:.3g} TFLOP/s"), ("peak_fraction", "{:.0%} of peak"), ("gbps", "{:.3g} GB/s"),
         ("bandwidth_fraction", "{:.0%} of copy"), ("impl", "{}"), ("speedup_over_torch", "{:.2f}x torch"),
         ("speedup_over_plain", "{:.2f}x plain"),
         ("images_per_s", "{:,.0f} img/s"), ("seconds_per_50k", "{:.3f} s per 50k"),
         ("peak_memory_gib", "{:.2f} GiB peak"), ("epochs", "epochs: {}"), ("compile_s", "compile {:.1f} s"),
         ("test_accuracy", "test acc {:.2%}"), ("skipped", "skipped: {}"), ("error", "error: {}")]


def format_table(stages):
    lines = [f"{'stage':<18}{'median ms':>12}{'min ms':>12}{'reps':>6}  rate", "-" * 90]
    for name, record in stages.items():
        notes = ", ".join(form.format(record[key]) for key, form in NOTES if record.get(key) is not None)
        times = [f"{record[key] * 1e3:.3f}" if record.get(key) is not None else "-" for key in ("median_s", "min_s")]
        lines.append(f"{name:<18}{times[0]:>12}{times[1]:>12}{record.get('repeats', '-'):>6}  {notes}")
    return "\n".join(lines)


def run_stages(bench, names):
    stages = {}
    for name in names:
        print(f"bench: {name}", file=sys.stderr, flush=True)
        try:
            stages[name] = STAGE_FUNCTIONS[name](bench)
        except SkipStage as reason:
            stages[name] = {"median_s": None, "skipped": str(reason)}
        except Exception as error:  # one broken stage should not cost the others' numbers
            traceback.print_exc()
            stages[name] = {"median_s": None, "error": f"{type(error).__name__}: {error}"}
    return stages


def main(argv=None):
    command = sys.argv if argv is None else [sys.argv[0], *argv]
    given = parse_args(argv, description=__doc__.splitlines()[0], aliases=ALIASES, explicit_only=True)
    options = resolve_config(given)["bench"]
    given.pop("bench", None)
    device = pick_device(resolve_config(given)["training"]["device"])
    size = options["size"] if options["size"] != "auto" else "full" if device.type == "cuda" else "small"
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        bench = Bench(given, size, device, Path(tmp))
        stages = run_stages(bench, stage_names(options["stages"]))
    add_fractions(stages)
    report = make_report(bench, stages, size, command)
    path = Path(options["out"]) / f"{slugify(report['device'])}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, report)
    print(format_table(stages))
    print(f"wrote {path}")
    return 1 if any("error" in record for record in stages.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

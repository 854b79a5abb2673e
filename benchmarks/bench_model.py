"""The benchmark's model stages: forward, backward, optimizer, the whole train step (and the plain way
beside it), the host's floor per step, memory and evaluation."""

import copy
import statistics

import torch
from bench_common import CPU_STEP_REPEATS, Workload, throughput
from bench_data import stage_ceilings

from speedrun.engine.evaluate import evaluate
from speedrun.engine.step import WARMUP_STEPS
from speedrun.runs.config import merge
from speedrun.system.device import device_policy, synchronize, timed, torch_threads
from speedrun.system.opcount import OpCounter

COMPILE_MODES_TIMED = ("default", "whole-step")  # and cudagraph on CUDA


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
    """The whole step as the loop runs it: indices and augmentation, then the trainer's Step (forward, backward,
    optimizer, weight average and lookahead as the config asks); FLOPs = 3 x forward."""
    w = bench.workload()
    record = throughput(bench.measure(w.loop_step, warmup=3), w.batch_size, 3 * w.flops_per_image)
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
            timing = bench.measure(
                w.loop_step,
                warmup=1,
                calls=1,
                repeats=bench.size["step_repeats"] if bench.device.type == "cuda" else CPU_STEP_REPEATS,
            )
            results[name] = {
                **throughput(timing, w.batch_size, 3 * w.flops_per_image),
                "policy": policy.describe(),
                "threads": torch.get_num_threads(),
            }
    ours = results["ours"]
    return {**ours, "variants": results, "speedup_over_plain": ours["images_per_s"] / results["plain"]["images_per_s"]}


def stage_step_modes(bench):
    """The train step in each way of running it, in the training precision, side by side in one process:
    eager, and where the policy compiles, the forward compiled (`default`) and the whole step as one
    graph (`whole-step`; `cudagraph` too on CUDA). Each is warmed up (compiled) first, then the modes
    take turns, one timed call each per round, so that a slow spell of the machine costs all of them
    alike. `speedup_over_eager` is what compiling buys here: the device policy's `auto` follows it."""
    modes = ["eager"] + (
        [*COMPILE_MODES_TIMED, *(["cudagraph"] if bench.device.type == "cuda" else [])] if bench.compiling else []
    )
    precision = "bf16" if bench.policy.bf16 else "fp32"
    workloads, records = {}, {}
    for mode in modes:
        policy = device_policy(
            bench.device,
            precision,
            "off" if mode == "eager" else "on",
            channels_last=bench.policy.channels_last,
            compile_mode="default" if mode == "eager" else mode,
        )
        workloads[mode] = w = Workload(bench, policy)
        records[mode] = {
            "warmup_s": timed(lambda w=w: [w.loop_step() for _ in range(WARMUP_STEPS)], bench.device)[1],
            "policy": policy.describe(),
            "times": [],
        }
    repeats = bench.size["step_repeats"] if bench.device.type == "cuda" else CPU_STEP_REPEATS
    for _ in range(repeats):
        for mode, w in workloads.items():
            records[mode]["times"].append(timed(w.loop_step, bench.device)[1])
    for mode, record in records.items():
        timing = {
            "median_s": statistics.median(record["times"]),
            "min_s": min(record["times"]),
            "repeats": repeats,
            "calls_per_repeat": 1,
        }
        records[mode] = {
            **record,
            **throughput(timing, workloads[mode].batch_size, 3 * workloads[mode].flops_per_image),
        }
    fastest = min(records, key=lambda mode: records[mode]["median_s"])
    return {
        **records[fastest],
        "fastest": fastest,
        "modes": records,
        "speedup_over_eager": {mode: records["eager"]["median_s"] / r["median_s"] for mode, r in records.items()},
    }


SEED_STEP_FLOPS = 2.28e9 * 512  # the seed net's forward and backward, per image, times its batch


def stage_host_overhead(bench):
    """Host time per train step (the trainer's Step) with a net whose arithmetic is negligible (width 1,
    batch 8, no weight average): the floor no step time goes under, eager, with the forward compiled, and
    as a whole-step graph (the compiled ones where the policy compiles: --training.compile on measures
    them on a CPU). Beside it, the operations an eager step dispatches and the seed net's step time at the
    measured peak."""
    tiny = copy.copy(bench)
    tiny.cfg = merge(bench.cfg, {"model": {"width": 1}, "training": {"batch_size": 8, "ema": 0.0}})
    modes = ["eager"] + (["default", "whole-step"] if bench.compiling else [])
    variants = {}
    for mode in modes:
        policy = device_policy(
            bench.device,
            "fp32",
            "off" if mode == "eager" else "on",
            compile_mode="default" if mode == "eager" else mode,
        )
        w = Workload(tiny, policy)
        step = w.step.train_step
        timing = bench.measure(lambda step=step, w=w: step(w.inputs, w.targets), warmup=3, calls=20, repeats=5)
        variants[mode] = {**timing, "policy": policy.describe()}
        if mode == "eager":
            with OpCounter() as counted:
                step(w.inputs, w.targets)
            variants[mode].update(ops_per_step=counted.total, syncs_per_step=sum(counted.syncs.values()))
    peak = stage_ceilings(bench)["tflops"]  # measured again: a stage stands alone
    return {
        **variants["eager"],
        "variants": variants,
        "ops_per_step": variants["eager"]["ops_per_step"],
        "seed_step_at_peak_s": SEED_STEP_FLOPS / (peak * 1e12),
    }


def stage_memory(bench):
    """Peak device memory while train steps run, and what was allocated before them (data, model)."""
    w, device = bench.workload(), bench.device
    on_cuda = device.type == "cuda"
    if on_cuda:
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    resident = torch.cuda.memory_allocated(device) if on_cuda else None
    timing = bench.measure(w.loop_step)
    peak = torch.cuda.max_memory_allocated(device) if on_cuda else None
    return {
        **timing,
        "peak_memory_bytes": peak,
        "resident_bytes": resident,
        "peak_memory_gib": peak / 2**30 if peak is not None else None,
    }


def stage_eval(bench):
    w, t = bench.workload(), bench.cfg["training"]
    images, labels = w.data.test_images, w.data.test_labels
    net = w.step.eval_net  # compiled apart from the training net, as the trainer evaluates

    def run():
        with w.autocast():
            evaluate(net, images, labels, w.batcher.table, t["eval_batch_size"], t["tta"])

    timing = bench.measure(run, calls=1, warmup=2)
    return {**throughput(timing, len(labels)), "eval_batch_size": t["eval_batch_size"], "tta": t["tta"]}

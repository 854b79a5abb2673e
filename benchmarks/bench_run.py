"""The benchmark's whole-run stages: one run of the trainer on the betons, its epochs and its total."""

import math
import statistics
from collections import defaultdict

import torch
from bench_common import throughput

from speedrun.data.betons import load_cifar_betons
from speedrun.runs.config import merge
from speedrun.train import train


def training_run(bench):
    """One run of train() on the betons, shared by the epoch and train_24 stages."""
    if bench.training is None:
        train_path, test_path, origin = bench.betons()
        config = merge(
            bench.overrides,
            {
                "data": {"train_dataset": train_path, "val_dataset": test_path},
                "logging": {"folder": str(bench.tmp / "run"), "plots": False, "progress": False, "checkpoint_every": 0},
            },
            strict=False,
        )
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
    return {
        **throughput(timing, summary["epochs"] * images_per_epoch(summary)),
        "epochs": summary["epochs"],
        "compile_s": summary["compile_seconds"] if bench.compiling else None,
        "test_accuracy": summary["final_test_acc"],
        "lr_max": summary["lr_max"],
        "betons_from": summary["betons_from"],
    }

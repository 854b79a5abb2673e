"""What a run tells and writes besides its metrics: the start plots, its length estimate, evaluation
lines, the data it read, and the summary."""

import contextlib
import json
import sys

import torch
from tqdm import tqdm

from speedrun.data import augment
from speedrun.data.cifar import CIFAR10_CLASSES
from speedrun.engine.compile_watch import frames_compiled, mode_that_ran
from speedrun.runs import plots
from speedrun.system import runlog
from speedrun.system.device import device_name


def data_info(cfg):
    """What the betons were written from, read from the JSON write_beton.py puts beside each."""
    info = {}
    for split, key in (("train", "train_dataset"), ("test", "val_dataset")):
        path = cfg["data"][key]
        info[split] = path
        with contextlib.suppress(OSError, ValueError), open(path + ".json") as f:
            info[f"{split}_meta"] = json.load(f)
    return info


def write_start_plots(data, cfg, batcher, lrs, log, device):
    """The schedule and a grid of augmented images, drawn with their own generator (the run's is untouched)."""
    plots.plot_schedule(lrs, batcher.steps_per_epoch, log.path("lr_schedule.png"))
    a = cfg["augment"]
    generator = torch.Generator(device=device)
    generator.manual_seed(cfg["training"]["seed"] + 1)
    index = torch.randperm(len(data.train_images), generator=generator, device=device)[:32]  # across classes
    params = augment.draw_params(32, generator, device, pad=a["pad"], cutout=a["cutout"], flip=a["flip"])
    table = augment.normalize_table(augment.CIFAR10_MEAN, augment.CIFAR10_STD, torch.float32, device)
    grid = augment.augment_batch(
        data.train_images, index, params, table, pad_mode=a["pad_mode"], pad=a["pad"], cutout=a["cutout"], impl="torch"
    )
    plots.plot_image_grid(
        grid,
        augment.CIFAR10_MEAN,
        augment.CIFAR10_STD,
        log.path("augmented.png"),
        data.train_labels[index],
        CIFAR10_CLASSES,
    )


def announce_estimate(run, seconds_per_step):
    """Say how long the remaining training steps will take, from the first steps' pace."""
    t = run.cfg["training"]
    remaining = (t["epochs"] - run.start_epoch) * run.batcher.steps_per_epoch
    if run.dist.is_main:
        tqdm.write(
            f"speedrun: {seconds_per_step:.2f} s per step on this device: about "
            f"{format_duration(seconds_per_step * remaining)} for the {remaining} steps of "
            f"{t['epochs'] - run.start_epoch} epochs, evaluations not included",
            file=sys.stderr,
        )


def format_duration(seconds):
    hours, rest = divmod(round(seconds), 3600)
    return f"{hours} h {rest // 60:02d} min" if hours else f"{rest // 60} min {rest % 60:02d} s"


def eval_record(sums, is_main):
    loss_sum, right, count = (float(v) for v in sums)
    if is_main:
        tqdm.write(
            f"Test set: Average loss: {loss_sum / count:.4f}, Accuracy: {int(right)}/{int(count)} "
            f"({100 * right / count:.2f}%)"
        )
    return {"test_loss": loss_sum / count, "test_acc": right / count}


def compile_counters(run):
    """What compiling the run's step did (its warm-up's counters: CUDA-graph skips and their reasons,
    graphs, graph breaks) and the frames dynamo compiled after it: recompiles, in the timed epochs."""
    return {**run.compile_report, "recompiles": frames_compiled() - run.frames_before_training}


def summarise(run):
    """The run's summary (summary.json): results, where its seconds went, the config and the values
    derived from it; the seconds are also printed, as one line."""
    t, history = run.cfg["training"], run.history
    if run.log.folder and run.cfg["logging"]["plots"]:
        plots.plot_curves(history, run.log.path("curves.png"))
        run.clock.charge("plots")
    summary = {
        "final_test_acc": history[-1]["test_acc"],
        "best_test_acc": max(h["test_acc"] for h in history),
        "train_seconds": round(run.train_seconds, 4),
        "compile_seconds": round(run.compile_seconds, 4),
        "compiled": mode_that_ran(run.policy, run.compile_report),  # after any fall-back, and any skip
        "compile_counters": compile_counters(run),
        "compile_cache": run.compile_cache,
        "epochs": t["epochs"],
        "steps_per_epoch": run.batcher.steps_per_epoch,
        "lr_max": run.derived["lr_max"],
        "device": device_name(run.device),
        "world_size": run.dist.world,
        "versions": runlog.versions(),
        "seed": t["seed"],
        "recipe": t["recipe"],
        "config": run.cfg,
        "derived": run.derived,
        "data": run.data_info,
        "history": history,
        "folder": run.log.folder,
        "seconds": run.clock.table(),
    }
    run.log.write_summary(summary)
    if run.dist.is_main:
        print(run.clock.line(), file=sys.stderr)
    return summary

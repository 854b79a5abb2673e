"""The command line of `python -m speedrun.train`, and seed sweeps.

python -m speedrun.train --epochs 24                      # one run, the seed recipe
python -m speedrun.train --seeds 0-4                      # independent runs, one per seed
python -m speedrun.train --resume runs/<name>             # continue a run from its checkpoint
python -m speedrun.train --print-config --recipe speedrun # the values a run would use, then exit
"""

import os
import sys

import yaml

from speedrun import train as training
from speedrun.engine.step import StepCache
from speedrun.optim.lr_finder import LRTestDiverged
from speedrun.runs.config import RUN_SECTIONS, merge, parse_args, parse_seeds, run_config
from speedrun.runs.derive import peak_epoch
from speedrun.runs.faults import OutOfMemory, TrainingDiverged
from speedrun.system import distributed, runlog
from speedrun.system.clock import process_start
from speedrun.system.stacks import dump_stacks_on_signal

ALIASES = {
    "--epochs": "--training.epochs",
    "--recipe": "--training.recipe",
    "--resume": "--training.resume",
    "--seed": "--training.seed",
    "--seeds": "--training.seeds",
}
SWITCHES = [("--print-config", "print the resolved config a run would use (YAML, as config.yaml), then exit")]


def train_seeds(given, seeds, data=None, started=None):
    """Independent runs, one per seed, each in <folder>/seed<N>; under torchrun, this rank's share.

    Each seed keeps one checkpoint, written at its end, unless --logging.checkpoint says otherwise:
    a sweep of hundreds of seeds would otherwise fill the disk with checkpoints nobody resumes. The
    seeds train with one step, compiled (or captured) once, each loading its fresh state into it.
    """
    rank, world, _ = distributed.launched_world()
    base = given.get("logging", {}).get("folder") or runlog.default_folder()
    given = merge({"logging": {"checkpoint": "last"}}, given, strict=False)
    summaries, steps = [], StepCache()  # the seeds share one compiled step
    for seed in seeds[rank::world]:
        config = merge(
            given, {"training": {"seed": seed}, "logging": {"folder": os.path.join(base, f"seed{seed}")}}, strict=False
        )
        config["training"].pop("seeds", None)  # each run is one seed
        summaries.append(training.train(config, data=data, independent=True, steps=steps, started=started))
        started = None  # the next seed's seconds start when it does
    return summaries


def format_config(config):
    """The resolved config as YAML, followed by what a run derives from it when it starts."""
    lr = config["lr"]
    picked = (
        f"{lr['lr_max']} (lr.lr_max)"
        if lr["lr_max"]
        else f"the LR range test's pick ({config['lr_test']['rule']})"
        if config["lr_test"]["enabled"]
        else "none: give --lr.lr_max or enable the LR range test"
    )
    return (
        yaml.safe_dump(config, sort_keys=True)
        + "# derived when the run starts (summary.json and checkpoints record them under 'derived'):\n"
        f"#   lr_max: {picked}\n#   peak_epoch: {peak_epoch(config)}\n"
    )


def main(argv=None):
    given = parse_args(
        argv,
        description=training.__doc__.splitlines()[0],
        aliases=ALIASES,
        explicit_only=True,
        sections=RUN_SECTIONS,
        extra=SWITCHES,
    )
    switches = given.pop("switches")
    dump_stacks_on_signal()
    try:
        if switches["print_config"]:
            print(format_config(run_config(given)[0]), end="")
            return
        seeds = given.get("training", {}).get("seeds", "")
        started = process_start()  # the first run's seconds table counts the interpreter and the imports
        summaries = (
            train_seeds(given, parse_seeds(seeds), started=started)
            if seeds
            else [training.train(given, started=started)]
        )
    except KeyboardInterrupt:
        print(
            "\ninterrupted: a run that checkpoints every epoch (the default of single runs) continues from "
            "its last finished one with python -m speedrun.train --resume <run folder>",
            file=sys.stderr,
        )
        sys.exit(130)
    except (TrainingDiverged, LRTestDiverged, OutOfMemory, ValueError, OSError) as error:
        print(f"speedrun.train: error: {error}", file=sys.stderr)  # no traceback
        sys.exit(1)
    distributed.teardown()
    for summary in summaries:
        if summary["folder"]:
            print(
                f"seed {summary['seed']}: final test accuracy {100 * summary['final_test_acc']:.2f}% "
                f"(best {100 * summary['best_test_acc']:.2f}%), {summary['train_seconds']:.1f} s training, "
                f"{summary['compile_seconds']:.1f} s compiling; run folder {summary['folder']}"
            )

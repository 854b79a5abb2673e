"""Arms (variants of a recipe) compared over the same seeds: each arm's accuracy against the first arm's
with Welch's 95% interval, its time to a target accuracy, its loop and total seconds and its seeds per hour.

    python -m speedrun.compare --out runs/compare-lookahead --seeds 0-4 \\
        --arm base= --arm "lookahead-5=--training.lookahead 5" --arm airbench=train94 \\
        --recipe speedrun --model.width 16 --training.train_subset 10240 --training.precision bf16 \\
        --data.train_dataset DATA/train.beton --data.val_dataset DATA/test.beton

Every option that is not the command's own (--out, --arm, --seeds, --target) is a trainer option common
to every arm (a recipe, the width, the data, a subset, the precision...). An arm is NAME=OPTIONS: the
training options it lays over the common ones (`base=` adds none), or NAME=train94 (train96): airbench's
trainer through speedrun.reference, at the common width and on the common subsets and seeds.

Each arm is one process sweeping the seeds into OUT/NAME/seed<N>. An arm whose seeds all have a
summary.json is read, not run again; only its seeds without one run, and a seed folder without a summary
(a run cut short) starts anew (--logging.overwrite), so a comparison cut short goes on where it stopped.

The table, OUT/compare.json and OUT/compare.md (also printed), gives per arm the test accuracies (airbench's
without test-time augmentation, which it reports beside its headline one: give our arms `--training.tta 0`
to compare like with like), their mean ± sd, the difference from the first arm in points with Welch's
95% interval (which needs 2 seeds or more an arm), the time to the target accuracy (the leaderboard's:
training seconds at the first evaluation reaching it, over the seeds that did), the loop seconds (the
timed training), the total seconds (the seed's whole run, from its seconds table: the first seed's build
included; for airbench, its setup, prepare, loop and, in the first seed, its warm-up) and the seeds per
hour (seeds / the arm's summed total seconds x 3600).
"""

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time

from speedrun.runs.config import defaults, parse_seeds
from speedrun.runs.leaderboard_entries import seed_stats, time_to_target, welch_interval

# airbench's trainers, run through speedrun.reference instead of our trainer
REFERENCES = ("train94", "train96")
# an arm's name is a folder name: letters, digits and . _ + - (no path, no hidden folder)
ARM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
# the target of the time to target: the leaderboard's default
DEFAULT_TARGET = defaults()["leaderboard"]["target"]
# short flags a reference arm does not know, spelled out so that common options reach both trainers
COMMON_ALIASES = {"--epochs": "--training.epochs", "--recipe": "--training.recipe"}
# options the comparison sets itself for every arm: given by hand, they would send runs elsewhere
RESERVED = ("--logging.folder", "--training.seeds", "--training.seed", "--training.resume", "--seed", "--resume")
SECONDS_PER_HOUR = 3600


# ---------------------------------------------------------------------------------------------------
# the command line


def parse_arm(text):
    """NAME=OPTIONS -> (name, options): training options (or nothing) or a reference trainer's name,
    refused here rather than after other arms have trained for an hour."""
    name, equals, options = text.partition("=")
    options = options.strip()
    if not equals or not ARM_NAME.fullmatch(name):
        raise argparse.ArgumentTypeError(f"an arm is NAME=OPTIONS (NAME a folder name), got {text!r}")
    if options and options not in REFERENCES:
        try:
            words = shlex.split(options)
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"arm {name}: {error} in {options!r}") from None
        if not words[0].startswith("-"):
            raise argparse.ArgumentTypeError(
                f"arm {name}: expected training options (--section.name value ...) or one of "
                f"{', '.join(REFERENCES)}, got {options!r}"
            )
        reserved_error(words, f"arm {name}", argparse.ArgumentTypeError)
    return name, options


def reserved_error(words, where, error):
    """Raise `error` when `words` set an option the comparison sets itself for every arm."""
    for word in words:
        if word.split("=", 1)[0] in RESERVED:
            raise error(f"{where}: {word.split('=', 1)[0]} is set by the comparison (OUT/NAME/seed<N>, --seeds)")


def add_arm_arguments(parser):
    """The options every comparison has: where, which arms, which seeds, and the target accuracy."""
    parser.add_argument("--out", required=True, help="results folder: OUT/NAME/seed<N> and the tables")
    parser.add_argument(
        "--arm",
        type=parse_arm,
        action="append",
        required=True,
        help="NAME=OPTIONS or NAME=train94|train96 (the first arm is the base the others are compared with)",
    )
    parser.add_argument("--seeds", default="0-4", help="'0,1,2', '0-4' or both; the same for every arm")
    parser.add_argument(
        "--target", type=float, default=DEFAULT_TARGET, help="test accuracy (fraction) whose time to reach is given"
    )


def checked_seeds(parser, arms, seeds_text):
    """The seeds, once the arms can be compared over them: distinct names, 2 seeds or more for an interval."""
    try:
        seeds = parse_seeds(seeds_text)
    except ValueError as error:
        parser.error(str(error))
    names = [name for name, _ in arms]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        parser.error(f"arm names repeat: {', '.join(repeated)} (each arm needs its own folder)")
    if len(arms) > 1 and len(set(seeds)) < 2:
        parser.error(f"Welch's 95% interval needs 2 seeds or more for each arm, got --seeds {seeds_text}")
    return seeds


def common_options(rest):
    """The trainer options common to every arm, with the short flags a reference arm lacks spelled out."""
    return [spelled_out(word) for word in rest]


def spelled_out(word):
    flag, equals, value = word.partition("=")
    return COMMON_ALIASES.get(flag, flag) + equals + value


# ---------------------------------------------------------------------------------------------------
# running the arms


def summary_path(out, arm, seed):
    return os.path.join(out, arm, f"seed{seed}", "summary.json")


def arm_command(out, arm, options, seeds, common):
    """The command sweeping `seeds` (text) of one arm into OUT/ARM: the arm's options after the common
    ones, so that they win."""
    folder = ["--logging.folder", os.path.join(out, arm)]
    if options in REFERENCES:
        return [sys.executable, "-m", "speedrun.reference", "--name", options, "--seeds", seeds, *common, *folder]
    # only seeds without a summary run: a folder without one holds an interrupted run, which starts anew
    return [
        sys.executable,
        "-m",
        "speedrun.train",
        *common,
        *folder,
        "--seeds",
        seeds,
        "--logging.overwrite",
        "true",
        *shlex.split(options),
    ]


def run_arm(out, arm, options, seeds, common):
    """Run the seeds of an arm that have no summary yet, its output in OUT/ARM/log.txt; none: nothing runs."""
    missing = [s for s in seeds if not os.path.exists(summary_path(out, arm, s))]
    if not missing:
        print(f"compare: {arm}: every seed done, read from {os.path.join(out, arm)}", file=sys.stderr)
        return
    command = arm_command(out, arm, options, ",".join(map(str, missing)), common)
    print(f"compare: {arm}: seeds {missing}: {shlex.join(command)}", file=sys.stderr)
    start = time.perf_counter()
    os.makedirs(os.path.join(out, arm), exist_ok=True)
    with open(os.path.join(out, arm, "log.txt"), "a") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
    print(f"compare: {arm}: done in {time.perf_counter() - start:.0f} s", file=sys.stderr)


# ---------------------------------------------------------------------------------------------------
# reading the runs


def seed_accuracy(summary):
    """Without test-time augmentation where the summary gives it apart (airbench reports both)."""
    return summary.get("test_acc_without_tta", summary["final_test_acc"])


def seed_total_seconds(summary):
    """The seed's whole run: our seconds table's total; airbench's setup, prepare + loop and warm-up
    (its build, which our first seed's total holds too); None for a summary with neither."""
    if "seconds" in summary:
        return summary["seconds"]["total"]
    if summary.get("total_seconds") is None:
        return None
    return sum(summary.get(key) or 0.0 for key in ("setup_seconds", "total_seconds", "compile_seconds"))


def read_arm(out, arm, seeds, target=DEFAULT_TARGET):
    """The accuracies, seconds and times to target of an arm's seeds, from their summaries."""
    summaries = []
    for seed in seeds:
        with open(summary_path(out, arm, seed)) as f:
            summaries.append(json.load(f))
    totals = [seed_total_seconds(s) for s in summaries]
    return {
        "accuracy": [seed_accuracy(s) for s in summaries],
        "device": summaries[0]["device"],
        "train_seconds": [round(s["train_seconds"], 2) for s in summaries],
        "total_seconds": [None if t is None else round(t, 2) for t in totals],
        "time_to_target": [time_to_target(s.get("history") or [], target) for s in summaries],
    }


# ---------------------------------------------------------------------------------------------------
# the table


def mean_or_none(values):
    known = [v for v in values if v is not None]
    return seed_stats(known)["mean"] if known else None


def timing(result):
    """An arm's time to target (mean over the seeds that reached it), loop and total seconds (means)
    and seeds per hour (None where a seed has no total)."""
    totals = result["total_seconds"]
    complete = all(t is not None for t in totals) and sum(totals) > 0
    return {
        "time_to_target_mean": mean_or_none(result["time_to_target"]),
        "reached": sum(t is not None for t in result["time_to_target"]),
        "loop_seconds_mean": mean_or_none(result["train_seconds"]),
        "total_seconds_mean": mean_or_none(totals),
        "seeds_per_hour": len(totals) / sum(totals) * SECONDS_PER_HOUR if complete else None,
    }


def report(arms, results):
    """{arm: accuracies, their statistics, timings, and the difference from the first arm (points, Welch
    95%) with the paired differences seed by seed}."""
    base = arms[0][0]
    table = {}
    for arm, options in arms:
        accuracy = results[arm]["accuracy"]
        row = {"options": options, **results[arm], "stats": seed_stats(accuracy), **timing(results[arm])}
        if arm != base:
            interval = welch_interval(accuracy, results[base]["accuracy"])
            row["minus_" + base] = {k: (v * 100 if k != "df" and v is not None else v) for k, v in interval.items()}
            row["paired_minus_" + base] = [round(100 * (a - b), 2) for a, b in zip(accuracy, results[base]["accuracy"])]
        table[arm] = row
    return table


def seconds_cell(seconds):
    return "—" if seconds is None else f"{seconds:.1f}"


def target_cell(row):
    reached = f"{row['reached']}/{len(row['accuracy'])}"
    return (
        f"not reached ({reached})"
        if row["time_to_target_mean"] is None
        else f"{row['time_to_target_mean']:.1f} ({reached})"
    )


def markdown(table, seeds, base, target=DEFAULT_TARGET):
    """The table as markdown, one row an arm, and a line saying what its times are."""
    lines = [
        f"| arm | options | test accuracy, seeds {seeds[0]}-{seeds[-1]} | mean ± sd | minus {base} (95% interval) | "
        f"s to {100 * target:g}% (reached) | loop s (mean) | total s (mean) | seeds per hour |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for arm, row in table.items():
        accuracies = ", ".join(f"{100 * a:.2f}" for a in row["accuracy"])
        stats = row["stats"]
        difference = row.get("minus_" + base)
        versus = (
            ""
            if difference is None
            else f"{difference['difference']:+.2f} ({difference['low']:+.2f} to {difference['high']:+.2f})"
        )
        per_hour = "—" if row["seeds_per_hour"] is None else f"{row['seeds_per_hour']:.1f}"
        lines.append(
            f"| {arm} | `{row['options'] or '(the recipe)'}` | {accuracies}% | "
            f"{100 * stats['mean']:.2f} ± {100 * stats['std']:.2f}% | {versus} | {target_cell(row)} | "
            f"{seconds_cell(row['loop_seconds_mean'])} | {seconds_cell(row['total_seconds_mean'])} | {per_hour} |"
        )
    lines += [
        "",
        f"Time to target: training seconds at the first evaluation reaching {100 * target:g}% (no interpolation), "
        "over the seeds that reached it; loop: the timed training; total: each seed's whole run (the first "
        "seed's build included); seeds per hour: seeds / the arm's summed total seconds x 3600.",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------
# the whole comparison


def run_comparison(out, arms, seeds, common, target=DEFAULT_TARGET):
    """Each arm run where it has seeds left, then read: (the table, its markdown)."""
    for arm, options in arms:
        run_arm(out, arm, options, seeds, common)
    table = report(arms, {arm: read_arm(out, arm, seeds, target) for arm, _ in arms})
    return table, markdown(table, seeds, arms[0][0], target)


def write_results(out, stem, document, text):
    """OUT/STEM.json and OUT/STEM.md, beside the runs."""
    with open(os.path.join(out, stem + ".json"), "w") as f:
        json.dump(document, f, indent=1)
    with open(os.path.join(out, stem + ".md"), "w") as f:
        f.write(text)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m speedrun.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # a trainer option must never pass for an abbreviation of ours
    )
    add_arm_arguments(parser)
    args, rest = parser.parse_known_args(argv)
    seeds = checked_seeds(parser, args.arm, args.seeds)
    common = common_options(rest)
    reserved_error(common, "the common options", parser.error)
    try:
        table, text = run_comparison(args.out, args.arm, seeds, common, args.target)
    except subprocess.CalledProcessError as error:
        arm = os.path.basename(error.cmd[error.cmd.index("--logging.folder") + 1])
        sys.exit(
            f"speedrun.compare: error: arm {arm} failed (exit {error.returncode}): see its log.txt in {args.out}/{arm}"
        )
    except (OSError, ValueError, KeyError) as error:
        sys.exit(f"speedrun.compare: error: {error}")
    document = {"seeds": seeds, "target": args.target, "common_options": common, "base": args.arm[0][0], "arms": table}
    write_results(args.out, "compare", document, text)
    print(text)


if __name__ == "__main__":
    main()

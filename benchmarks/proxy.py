"""A CPU proxy for choosing what a GPU visit should confirm: arms (a recipe's variants) over several seeds
at reduced width and data, each arm's accuracy against the first arm's with Welch's 95% interval.

    python benchmarks/proxy.py --data DATA --out benchmarks/results/<device>-proxy-record-ideas \\
        --arm base= --arm "lookahead-5=--training.lookahead 5" --arm reference=train94 --seeds 0-4

Every arm is `--recipe speedrun` at `--model.width 16` (the full net is 64) on a fixed random 10,240 of
the training images (each seed draws its own subset, so all arms of a seed train on the same images),
evaluated on the whole test set without test-time augmentation (PROXY below). An arm is NAME=OPTIONS,
the training options it adds; `NAME=train94` (or train96) is airbench's trainer instead, at the same
width ratio, on the same subsets and seeds, through speedrun.reference. Each arm is one process sweeping
the seeds (`--seeds`), into OUT/NAME/seed<N>; an arm whose seeds all have a summary already is read,
not run again, so a proxy cut short goes on where it stopped. OUT/proxy.json and OUT/proxy.md hold the
accuracies, train seconds and each arm's difference from the first arm.
"""

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from speedrun.runs.config import parse_seeds  # noqa: E402
from speedrun.runs.leaderboard_entries import seed_stats, welch_interval  # noqa: E402

SUBSET, WIDTH = 10_240, 16
PROXY = [
    "--recipe",
    "speedrun",
    "--training.train_subset",
    str(SUBSET),
    "--model.width",
    str(WIDTH),
    "--training.tta",
    "0",
    "--logging.plots",
    "false",
    "--logging.progress",
    "false",
]
REFERENCES = ("train94", "train96")


def parse_arm(text):
    name, _, options = text.partition("=")
    if not name or "/" in name:
        raise argparse.ArgumentTypeError(f"an arm is NAME=OPTIONS, got {text!r}")
    return name, options.strip()


def summary_path(out, arm, seed):
    return os.path.join(out, arm, f"seed{seed}", "summary.json")


def arm_command(args, arm, options, seeds):
    data = [
        "--data.train_dataset",
        os.path.join(args.data, "train.beton"),
        "--data.val_dataset",
        os.path.join(args.data, "test.beton"),
    ]
    common = [*PROXY, *data, "--training.precision", args.precision, "--logging.folder", os.path.join(args.out, arm)]
    if options in REFERENCES:
        return [sys.executable, "-m", "speedrun.reference", "--name", options, "--seeds", seeds, *common]
    # only seeds without a summary run: a folder without one holds an interrupted run, which starts anew
    return [
        sys.executable,
        "-m",
        "speedrun.train",
        *common,
        "--seeds",
        seeds,
        "--logging.overwrite",
        "true",
        "--logging.checkpoint",
        args.checkpoint,
        *shlex.split(options),
    ]


def run_arm(args, arm, options, seeds):
    missing = [s for s in seeds if not os.path.exists(summary_path(args.out, arm, s))]
    if not missing:
        print(f"proxy: {arm}: every seed done, read from {os.path.join(args.out, arm)}", file=sys.stderr)
        return
    command = arm_command(args, arm, options, ",".join(map(str, missing)))
    print(f"proxy: {arm}: seeds {missing}: {shlex.join(command)}", file=sys.stderr)
    start = time.perf_counter()
    os.makedirs(os.path.join(args.out, arm), exist_ok=True)
    with open(os.path.join(args.out, arm, "log.txt"), "a") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
    print(f"proxy: {arm}: done in {time.perf_counter() - start:.0f} s", file=sys.stderr)


def read_arm(out, arm, seeds):
    summaries = [json.load(open(summary_path(out, arm, s))) for s in seeds]
    # without test-time augmentation on both sides: ours are run so (PROXY), airbench reports both
    return {
        "accuracy": [s.get("test_acc_without_tta", s["final_test_acc"]) for s in summaries],
        "device": summaries[0]["device"],
        "train_seconds": [round(s["train_seconds"], 2) for s in summaries],
    }


def report(arms, results, seeds):
    """{arm: accuracies, their statistics, and the difference from the first arm (points, Welch 95%)}."""
    base = arms[0][0]
    table = {}
    for arm, options in arms:
        accuracy = results[arm]["accuracy"]
        row = {"options": options, **results[arm], "stats": seed_stats(accuracy)}
        if arm != base and len(seeds) > 1:
            interval = welch_interval(accuracy, results[base]["accuracy"])
            row["minus_" + base] = {k: (v * 100 if k != "df" and v is not None else v) for k, v in interval.items()}
            row["paired_minus_" + base] = [round(100 * (a - b), 2) for a, b in zip(accuracy, results[base]["accuracy"])]
        table[arm] = row
    return table


def markdown(table, seeds, base):
    lines = [
        f"| arm | options | test accuracy, seeds {seeds[0]}-{seeds[-1]} | mean ± sd | minus {base} (95% interval) | "
        "train s (median) |",
        "| --- | --- | --- | --- | --- | --- |",
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
        seconds = sorted(row["train_seconds"])[len(row["train_seconds"]) // 2]
        lines.append(
            f"| {arm} | `{row['options'] or '(the recipe)'}` | {accuracies}% | "
            f"{100 * stats['mean']:.2f} ± {100 * stats['std']:.2f}% | {versus} | {seconds:.1f} |"
        )
    return "\n".join(lines) + "\n"


def score_tta(args, arm, seeds, thresholds):
    """The first arm's nets scored at every test-time augmentation level, and selectively below each
    confidence threshold (speedrun.score), from their last checkpoints (`--checkpoint last` when the arm
    ran): OUT/tta.json, kept, so that it is scored once."""
    path = os.path.join(args.out, "tta.json")
    if not os.path.exists(path):
        runs = [os.path.join(args.out, arm, f"seed{seed}") for seed in seeds]
        subprocess.run(
            [
                sys.executable,
                "-m",
                "speedrun.score",
                *runs,
                "--tta",
                "0,1,2",
                "--tta-below",
                thresholds,
                "--precision",
                args.precision,
                "--json",
                path,
            ],
            check=True,
        )
    with open(path) as f:
        by_seed = {os.path.basename(os.path.normpath(run)): scores for run, scores in json.load(f).items()}
    return [by_seed[f"seed{seed}"] for seed in seeds]


def paired_tta(scores):
    """{level or level@threshold: accuracies (points), their mean, the mean fraction of images given the
    views, and the paired difference from tta 0 and from tta 2 with its 95% interval (the same nets)}."""
    from scipy import stats

    levels = {key: [100 * score[key] for score in scores] for key in ("0", "1", "2")}
    fractions = {}
    for key in scores[0].get("selective", {}):
        levels[key] = [100 * score["selective"][key]["accuracy"] for score in scores]
        fractions[key] = statistics.fmean(score["selective"][key]["tta_fraction"] for score in scores)
    table = {}
    for key, accuracy in levels.items():
        row = {
            "accuracy": accuracy,
            "mean": statistics.fmean(accuracy),
            "tta_fraction": fractions.get(key, 0.0 if key == "0" else 1.0),
        }
        for base in ("0", "2"):
            differences = [a - b for a, b in zip(accuracy, levels[base])]
            if key == base:
                continue
            if len(set(differences)) > 1:
                interval = stats.ttest_rel(accuracy, levels[base]).confidence_interval(0.95)
                low, high = float(interval.low), float(interval.high)
            else:  # no spread: the interval is the point
                low = high = differences[0]
            row[f"minus_tta{base}"] = {"difference": statistics.fmean(differences), "low": low, "high": high}
        table[key] = row
    return table


def tta_markdown(table):
    lines = [
        "| test-time augmentation | images given the views | test accuracy (mean) | minus tta 0 (95%) | "
        "minus tta 2 (95%) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key, row in table.items():
        cells = [
            f"{row[name]['difference']:+.3f} ({row[name]['low']:+.3f} to {row[name]['high']:+.3f})"
            if name in row
            else ""
            for name in ("minus_tta0", "minus_tta2")
        ]
        lines.append(f"| {key} | {100 * row['tta_fraction']:.1f}% | {row['mean']:.3f}% | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder holding train.beton and test.beton")
    parser.add_argument("--out", required=True, help="results folder")
    parser.add_argument(
        "--arm",
        type=parse_arm,
        action="append",
        required=True,
        help="NAME=OPTIONS (the first arm is the base the others are compared with)",
    )
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--precision", default="bf16", help="pinned, so that arms compare on any CPU")
    parser.add_argument("--checkpoint", default="none", help="--logging.checkpoint of our arms (last: scoreable)")
    parser.add_argument(
        "--score-tta",
        metavar="P[,P...]",
        help="also score the first arm's nets (run with "
        "--checkpoint last) at each TTA level and selectively below these confidences, paired",
    )
    args = parser.parse_args(argv)
    seeds = parse_seeds(args.seeds)
    names = [arm for arm, _ in args.arm]
    if len(set(names)) != len(names):
        parser.error(f"arm names repeat: {names}")
    for arm, options in args.arm:
        run_arm(args, arm, options, seeds)
    table = report(args.arm, {arm: read_arm(args.out, arm, seeds) for arm in names}, seeds)
    with open(os.path.join(args.out, "proxy.json"), "w") as f:
        json.dump(
            {
                "seeds": seeds,
                "subset": SUBSET,
                "width": WIDTH,
                "precision": args.precision,
                "common_options": PROXY,
                "arms": table,
            },
            f,
            indent=1,
        )
    text = markdown(table, seeds, names[0])
    tta = None
    if args.score_tta:
        tta = paired_tta(score_tta(args, names[0], seeds, args.score_tta))
        text += f"\nThe {names[0]} arm's nets at each test-time augmentation level (paired: the same nets):\n\n"
        text += tta_markdown(tta)
        with open(os.path.join(args.out, "tta-summary.json"), "w") as f:
            json.dump(tta, f, indent=1)
    with open(os.path.join(args.out, "proxy.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()

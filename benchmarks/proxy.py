"""A CPU proxy for choosing what a GPU visit should confirm: arms (a recipe's variants) over several seeds
at reduced width and data, each arm's accuracy against the first arm's with Welch's 95% interval.

    python benchmarks/proxy.py --data DATA --out benchmarks/results/<device>-proxy-record-ideas \\
        --arm base= --arm "lookahead-5=--training.lookahead 5" --arm reference=train94 --seeds 0-4

A preset of `python -m speedrun.compare` (which runs, reads and tabulates the arms): every arm is
`--recipe speedrun` at `--model.width 16` (the full net is 64) on a fixed random 10,240 of the training
images (each seed draws its own subset, so all arms of a seed train on the same images), evaluated on the
whole test set without test-time augmentation (PROXY below), at a pinned precision. An arm is
NAME=OPTIONS, the training options it adds; `NAME=train94` (or train96) is airbench's trainer instead, at
the same width ratio, on the same subsets and seeds, through speedrun.reference. Each arm is one process
sweeping the seeds (`--seeds`), into OUT/NAME/seed<N>; an arm whose seeds all have a summary already is
read, not run again, so a proxy cut short goes on where it stopped. OUT/proxy.json and OUT/proxy.md hold
compare's table: the accuracies, each arm's difference from the first arm, its time to `--target`, its
loop and total seconds and its seeds per hour; `--score-tta` adds the first arm's nets at each
test-time augmentation level.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from speedrun import compare  # noqa: E402
from speedrun.compare import parse_arm  # noqa: E402, F401  (the proxy's arms are compare's)

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


def common_options(args):
    """The proxy's options for every arm (PROXY), its data, its pinned precision and its checkpoints."""
    return [
        *PROXY,
        "--data.train_dataset",
        os.path.join(args.data, "train.beton"),
        "--data.val_dataset",
        os.path.join(args.data, "test.beton"),
        "--training.precision",
        args.precision,
        "--logging.checkpoint",
        args.checkpoint,
    ]


def arm_command(args, arm, options, seeds):
    """One arm's command, as speedrun.compare builds it over the proxy's common options."""
    return compare.arm_command(args.out, arm, options, seeds, common_options(args))


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
    compare.add_arm_arguments(parser)
    parser.add_argument("--data", required=True, help="folder holding train.beton and test.beton")
    parser.add_argument("--precision", default="bf16", help="pinned, so that arms compare on any CPU")
    parser.add_argument("--checkpoint", default="none", help="--logging.checkpoint of our arms (last: scoreable)")
    parser.add_argument(
        "--score-tta",
        metavar="P[,P...]",
        help="also score the first arm's nets (run with "
        "--checkpoint last) at each TTA level and selectively below these confidences, paired",
    )
    args = parser.parse_args(argv)
    seeds = compare.checked_seeds(parser, args.arm, args.seeds)
    common = common_options(args)
    table, text = compare.run_comparison(args.out, args.arm, seeds, common, args.target)
    base = args.arm[0][0]
    if args.score_tta:
        tta = paired_tta(score_tta(args, base, seeds, args.score_tta))
        text += f"\nThe {base} arm's nets at each test-time augmentation level (paired: the same nets):\n\n"
        text += tta_markdown(tta)
        with open(os.path.join(args.out, "tta-summary.json"), "w") as f:
            json.dump(tta, f, indent=1)
    document = {
        "seeds": seeds,
        "subset": SUBSET,
        "width": WIDTH,
        "precision": args.precision,
        "target": args.target,
        "common_options": PROXY,
        "arms": table,
    }
    compare.write_results(args.out, "proxy", document, text)
    print(text)


if __name__ == "__main__":
    main()

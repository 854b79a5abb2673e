"""Score trained runs: test accuracy at each level of test-time augmentation, from their checkpoints.

    python -m speedrun.score runs/a runs/b --tta 0,1,2 [--tta-below 0.6,0.9] [--json scores.json]
    runs/a: tta0 90.01%  tta1 90.42%  tta2 90.63%  tta1@0.6 90.38% (8.4% augmented)  ...

A run is trained once and evaluated with whatever `--training.tta` it was given; this evaluates its
final weights (the weight average when it kept one) at every level asked, on the test beton the run
was trained with, so the levels compare on the same net.

`--tta-below` adds selective test-time augmentation (`level@threshold` entries): for each level above 0
and each threshold, the accuracy when only the images whose plain top probability is below the threshold
get the level's views, and the fraction of images that got them, which is the fraction of the level's
extra forward passes still paid (the plain pass that picks them is shared).
"""

import argparse
import json
import sys

from speedrun.data.augment import CIFAR10_MEAN, CIFAR10_STD, normalize_table
from speedrun.data.betons import BetonError, load_beton
from speedrun.engine.evaluate import check_threshold, evaluate, evaluate_selective
from speedrun.predict import load_net
from speedrun.system.checkpoint import CheckpointError
from speedrun.system.device import PRECISIONS, device_policy, pick_device

TTA_LEVELS = (0, 1, 2)


def score(run, levels=TTA_LEVELS, policy=None, batch_size=1000):
    """{tta level: test accuracy} of a run folder's newest checkpoint, or of a checkpoint file."""
    return score_run(run, levels, (), policy, batch_size)[0]


def score_run(run, levels=TTA_LEVELS, thresholds=(), policy=None, batch_size=1000):
    """({tta level: test accuracy}, {"level@threshold": {"accuracy", "tta_fraction"}}) of a run folder's
    newest checkpoint, or of a checkpoint file: the second for each level above 0 with each threshold,
    test-time augmentation given only to images whose plain top probability is below the threshold."""
    policy = policy or device_policy("cpu", "fp32")
    net, cfg, _ = load_net(run, policy)
    images, labels = load_beton(cfg["data"]["val_dataset"], policy.device)
    table = normalize_table(CIFAR10_MEAN, CIFAR10_STD, policy.input_dtype, policy.device)
    scores, selective = {}, {}
    for level in levels:
        with policy.autocast():
            _, correct, count = evaluate(net, images, labels, table, batch_size, level).tolist()
        scores[level] = correct / count
    for level in (level for level in levels if level > 0):
        for below in thresholds:
            with policy.autocast():
                _, correct, count, augmented = evaluate_selective(
                    net, images, labels, table, batch_size, level, below
                ).tolist()
            selective[selective_key(level, below)] = {"accuracy": correct / count, "tta_fraction": augmented / count}
    return scores, selective


def selective_key(level, below):
    return f"{level}@{below:g}"


def parse_levels(text):
    levels = sorted({int(word) for word in text.split(",") if word.strip()})
    if not levels or not set(levels) <= set(TTA_LEVELS):
        raise ValueError(f"--tta takes levels from {TTA_LEVELS}, comma-separated; got {text!r}")
    return levels


def parse_thresholds(text):
    """Sorted distinct confidence thresholds from "0.6,0.9"; none from None or ""."""
    try:
        thresholds = sorted({float(word) for word in (text or "").split(",") if word.strip()})
        for below in thresholds:
            check_threshold(below)
    except ValueError:
        raise ValueError(
            f"--tta-below takes confidence thresholds between 0 and 1, comma-separated; got {text!r}"
        ) from None
    return thresholds


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m speedrun.score", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run folders (or checkpoint files)")
    parser.add_argument("--tta", default="0,1,2", help="levels: 0 none, 1 flip, 2 flip + translate (default 0,1,2)")
    parser.add_argument(
        "--tta-below",
        metavar="P[,P...]",
        help="also score each level above 0 with tta only for images whose plain top "
        "probability is below P (e.g. 0.6,0.9), and report the fraction that got it",
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto = cuda when present")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="auto = bf16 on CUDA and on CPUs with native bf16, as training uses",
    )
    parser.add_argument(
        "--json",
        metavar="PATH",
        help="also write {run: {level: accuracy}} here; --tta-below adds to each run "
        '"selective": {"level@P": {"accuracy": ..., "tta_fraction": ...}}',
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        levels = parse_levels(args.tta)
        thresholds = parse_thresholds(args.tta_below)
        if thresholds and not any(levels):
            raise ValueError(f"--tta-below needs a level above 0 in --tta to apply selectively; got {args.tta!r}")
        policy = device_policy(pick_device(args.device), args.precision, compile="off")
        results = {}
        for run in args.runs:
            scores, selective = results[run] = score_run(run, levels, thresholds, policy)
            print(
                f"{run}: "
                + "  ".join(
                    [f"tta{level} {100 * acc:.2f}%" for level, acc in scores.items()]
                    + [
                        f"tta{key} {100 * entry['accuracy']:.2f}% ({100 * entry['tta_fraction']:.1f}% augmented)"
                        for key, entry in selective.items()
                    ]
                ),
                flush=True,
            )
    except (ValueError, CheckpointError, BetonError) as error:
        print(f"speedrun.score: error: {error}", file=sys.stderr)
        sys.exit(1)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {
                    run: {
                        **{str(level): acc for level, acc in scores.items()},
                        **({"selective": selective} if selective else {}),
                    }
                    for run, (scores, selective) in results.items()
                },
                handle,
                indent=1,
            )


if __name__ == "__main__":
    main()

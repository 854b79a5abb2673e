"""Score trained runs: test accuracy at each level of test-time augmentation, from their checkpoints.

    python -m speedrun.score runs/a runs/b --tta 0,1,2 [--json scores.json]
    runs/a: tta0 90.01%  tta1 90.42%  tta2 90.63%

A run is trained once and evaluated with whatever `--training.tta` it was given; this evaluates its
final weights (the weight average when it kept one) at every level asked, on the test beton the run
was trained with, so the levels compare on the same net.
"""
import argparse
import json
import sys

from speedrun.augment import CIFAR10_MEAN, CIFAR10_STD, normalize_table
from speedrun.checkpoint import CheckpointError
from speedrun.data import BetonError, load_beton
from speedrun.device import PRECISIONS, device_policy, pick_device
from speedrun.evaluate import evaluate
from speedrun.predict import load_net

TTA_LEVELS = (0, 1, 2)


def score(run, levels=TTA_LEVELS, policy=None, batch_size=1000):
    """{tta level: test accuracy} of a run folder's newest checkpoint, or of a checkpoint file."""
    policy = policy or device_policy("cpu", "fp32")
    net, cfg, _ = load_net(run, policy)
    images, labels = load_beton(cfg["data"]["val_dataset"], policy.device)
    table = normalize_table(CIFAR10_MEAN, CIFAR10_STD, policy.input_dtype, policy.device)
    scores = {}
    for level in levels:
        with policy.autocast():
            _, correct, count = evaluate(net, images, labels, table, batch_size, level).tolist()
        scores[level] = correct / count
    return scores


def parse_levels(text):
    levels = sorted({int(word) for word in text.split(",") if word.strip()})
    if not levels or not set(levels) <= set(TTA_LEVELS):
        raise ValueError(f"--tta takes levels from {TTA_LEVELS}, comma-separated; got {text!r}")
    return levels


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m speedrun.score", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run folders (or checkpoint files)")
    parser.add_argument("--tta", default="0,1,2", help="levels: 0 none, 1 flip, 2 flip + translate (default 0,1,2)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto = cuda when present")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="auto = bf16 on CUDA and on CPUs with native bf16, as training uses")
    parser.add_argument("--json", metavar="PATH", help="also write {run: {level: accuracy}} here")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        levels = parse_levels(args.tta)
        policy = device_policy(pick_device(args.device), args.precision, compile="off")
        results = {}
        for run in args.runs:
            results[run] = score(run, levels, policy)
            print(f"{run}: " + "  ".join(f"tta{level} {100 * acc:.2f}%" for level, acc in results[run].items()),
                  flush=True)
    except (ValueError, CheckpointError, BetonError) as error:
        print(f"speedrun.score: error: {error}", file=sys.stderr)
        sys.exit(1)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({run: {str(level): acc for level, acc in scores.items()} for run, scores in results.items()},
                      handle, indent=1)


if __name__ == "__main__":
    main()

"""The front page's headline table, generated from the results files it quotes.

    python docs/headline.py           # rewrite the table between the markers in README.md
    python docs/headline.py --check   # exit 1, saying so, when README.md's table is not what the files give

Every figure comes from the GPU visits' committed files (`benchmarks/results/nvidia-h200*/`): the runs'
`summary.json` and the campaigns' `campaign.json`. Mean ± sample standard deviation over the seeds, as
`speedrun.runs.leaderboard_entries.seed_stats` computes them. Torch-free: JSON only.
"""

import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
VISIT_1, VISIT_2 = RESULTS / "nvidia-h200", RESULTS / "nvidia-h200-visit-2"
README = ROOT / "README.md"
MARKERS = ("<!-- headline: start -->", "<!-- headline: end -->")
REFERENCE = "airbench train94"


def load(path):
    return json.loads(Path(path).read_text())


def step_result(folder, name):
    """The result of the campaign's last record of step `name`."""
    return [s for s in load(folder / "campaign.json")["steps"] if s["name"] == name][-1]["result"]


def summary(folder, run):
    return load(folder / "runs" / run / "summary.json")


def source_checksum(data):
    """The checksum of the CIFAR-10 copy the betons were written from."""
    return (data.get("train_meta") or data)["source"]["checksum"]


def mean_std(fractions):
    values = [100 * v for v in fractions]
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def accuracy(fractions):
    mean, std = mean_std(fractions)
    return f"{mean:.2f} ± {std:.2f}%" if len(fractions) > 1 else f"{mean:.2f}% (one seed)"


def seeds(numbers):
    numbers = list(numbers)
    if len(numbers) > 3 and numbers == list(range(numbers[0], numbers[-1] + 1)):
        return f"{numbers[0]}-{numbers[-1]}"
    return ", ".join(str(n) for n in numbers)


def points(ours, reference):
    return f"{mean_std(ours)[0] - mean_std(reference)[0]:+.2f} points"


def rows():
    """The table's rows (lists of cells), the options the candidate ran with, and airbench's seeds."""
    record = {e["name"]: e for e in step_result(VISIT_1, "record_vs_airbench")["entries"]}
    ours, reference = record["speedrun"], record[REFERENCE]
    ratio = step_result(VISIT_1, "record_vs_airbench")["time_ratios"][REFERENCE]
    candidate = step_result(VISIT_2, "candidate")
    runs = [summary(VISIT_2, f"candidate/seed{seed}") for seed in range(len(candidate["accuracies"]))]
    assert [r["final_test_acc"] for r in runs] == candidate["accuracies"], "candidate: summaries ≠ campaign"
    before = summary(VISIT_2, "seed_recipe/seed0")
    # "on the same data": every row's betons were written from the same copy of CIFAR-10
    checksums = {source_checksum(e["data"]) for e in (ours, reference)}
    checksums |= {source_checksum(r["data"]) for r in (*runs, before)}
    assert len(checksums) == 1, f"the rows ran on different copies of CIFAR-10: {checksums}"
    same_process = f"{points(ours['accuracies'], reference['accuracies'])}, {ratio:.2f}x the time (same process)"
    table = [
        [
            f"{runs[0]['device']}, 2nd visit",
            "`python -m speedrun.train --epochs 24`, today's defaults ¹",
            seeds(r["seed"] for r in runs),
            f"**{accuracy([r['final_test_acc'] for r in runs])}**",
            f"{statistics.fmean(r['train_seconds'] for r in runs):.2f} s (three runs sharing the GPU)",
            f"{points([r['final_test_acc'] for r in runs], reference['accuracies'])} ²",
        ],
        [
            f"{before['device']}, 2nd visit",
            "the same with the defaults before ³",
            seeds([before["seed"]]),
            accuracy([before["final_test_acc"]]),
            f"{before['train_seconds']:.2f} s (alone on the GPU)",
            f"{points([before['final_test_acc']], reference['accuracies'])} ²",
        ],
        [
            f"{ours['device']}, 1st visit",
            "`python -m speedrun.leaderboard --recipe speedrun --seeds 0-9 --reference train94` ⁴",
            seeds(ours["seeds"]),
            accuracy(ours["accuracies"]),
            f"{statistics.fmean(ours['train_seconds']):.2f} s",
            same_process,
        ],
        [
            f"{reference['device']}, 1st visit",
            "airbench `train94`, the reference in the row above",
            seeds(reference["seeds"]),
            accuracy(reference["accuracies"]),
            f"{statistics.fmean(reference['train_seconds']):.2f} s",
            "",
        ],
    ]
    return table, candidate["options"], reference["seeds"]


def table():
    """The markdown between the markers: the table and its notes."""
    body, options, reference_seeds = rows()
    header = [
        "device",
        "command",
        "seeds",
        "test accuracy (mean ± std)",
        "training time (mean)",
        "against airbench `train94`, same data",
    ]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    notes = [
        (
            f"¹ It ran `{' '.join(options)}` at the range test's pick: the options that then became the defaults (two "
            "parts of today's defaults it did not exercise: [evidence](docs/evidence.md#the-seed-recipes-defaults))."
        ),
        (
            f"² Against airbench's {len(reference_seeds)} seeds of the 1st visit, on the same copy of CIFAR-10 (the "
            "same source checksum)."
        ),
        "³ Weight decay 5e-4, no weight average, div factor 10, no test-time augmentation.",
        "⁴ The record recipe as it was then, before its per-group LRs.",
        (
            "Files: `benchmarks/results/nvidia-h200-visit-2/runs/{candidate,seed_recipe}/seed*/summary.json` and the "
            "1st visit's `campaign.json` (`record_vs_airbench`). Our time is `train_seconds`, without compiling, the "
            "range test and evaluation; airbench's is its whole `train94` call "
            "([benchmarks/README.md](benchmarks/README.md#the-gpu-campaign), *Fair timing*)."
        ),
    ]
    lines += ["", *(f"- {note}" for note in notes)]
    return "\n".join(lines) + "\n"


def between_markers(text):
    start, end = MARKERS
    if start not in text or end not in text:
        raise SystemExit(f"{README.name}: the markers {start} and {end} are missing")
    return text.index(start) + len(start) + 1, text.index(end)


def main(argv):
    text = README.read_text()
    begin, end = between_markers(text)
    wanted = table()
    if "--check" in argv:
        if text[begin:end] != wanted:
            print(f"{README.name}: the headline table differs from the results files; run python docs/headline.py")
            return 1
        return 0
    README.write_text(text[:begin] + wanted + text[end:])
    print(f"{README.name}: headline table written")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""One GPU campaign: every open GPU check and measurement, as named steps of one command.

    python benchmarks/campaign.py --source CIFAR10 --out OUT/part1 --steps part1    # on a GPU, one part
    python benchmarks/campaign.py --smoke --out OUT                                  # every step, tiny, on a CPU
    python benchmarks/campaign.py report OUT/part1 OUT/part2 ...                     # the parts as one answer

Each step runs its work in processes of their own under the step's time budget. A step that fails,
crashes or runs past its budget is recorded (failed, with its output's last lines; skipped, with why)
and the next step runs. After every step OUT/campaign.json (with the command's wall time so far),
OUT/campaign.md and OUT/runs.tar.gz (run folders and logs, without checkpoints or betons) are
rewritten, so a campaign cut short still reports. `report` merges the parts into
benchmarks/results/<device>/, every part's record of every step marked with the part it came from, and
regenerates the results section of benchmarks/README.md and the leaderboard table from them.

This file is the command line. The plan (steps, budgets, parts, sizes) is in campaign_plan.py; running
the commands and recording each step in campaign_runner.py; the steps in campaign_steps.py (the device
and the loop) and campaign_accuracy.py (seeds, LR grid, record recipe against airbench); the answer
and `report` in campaign_report.py.
"""

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

import campaign_accuracy
import campaign_steps

# the names a reader of the campaign looks for, in one namespace with the command line's
from campaign_plan import (  # noqa: F401
    ARCHIVE,
    BUDGETS_S,
    CORE_PARTS,
    MIN_STEP_S,
    PART_TOTAL_S,
    PARTS,
    README_MARKERS,
    ROOT,
    SIZES,
    STEPS,
    TAIL_LINES,
    TIMED,
    VARIANTS,
    select_steps,
)
from campaign_report import merge_campaigns, now, render, report, write_answer  # noqa: F401
from campaign_runner import Context, Skip, probe_header, run, run_parts, run_steps  # noqa: F401
from campaign_steps import variant  # noqa: F401

STEP_FUNCTIONS = {
    name: getattr(campaign_steps, f"step_{name}", None) or getattr(campaign_accuracy, f"step_{name}") for name in STEPS
}


def run_campaign(options):
    """Every selected step in order; the answer rewritten after each. Returns the campaign."""
    size = "smoke" if options.smoke else "gpu"
    work = Path(options.work or ROOT / "runs" / f"campaign-{size}").resolve()
    out = Path(options.out).resolve()
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", **SIZES[size]["env"]}
    overrides = {
        **({"seeds": options.seeds} if options.seeds else {}),
        **({"variants": tuple(options.variants.split(","))} if options.variants else {}),
    }
    ctx = Context(size, work, options.source or "", env, options.python, overrides=overrides)
    total_s = options.total_s or min(
        (PART_TOTAL_S.get(word.strip(), float("inf")) for word in options.steps.split(",")), default=float("inf")
    )
    ctx.campaign_deadline = time.monotonic() + total_s
    work.mkdir(parents=True, exist_ok=True)
    # this command's wall time, from its start to its end, kept up to date after every step
    command = {
        "command": shlex.join(["python", "benchmarks/campaign.py", *options.argv]),
        "started": now(),
        "finished": None,
        "wall_s": None,
    }
    clock = time.monotonic()

    def stop_clock():
        command.update(finished=now(), wall_s=round(time.monotonic() - clock, 1))

    campaign = {
        "size": size,
        "commands": [command],
        "started": command["started"],
        "steps": [],
        "timed_regions": TIMED,
        "archive": ARCHIVE,
        **probe_header(ctx),
    }
    scale = SIZES[size]["budget_scale"]
    plan = [(name, STEP_FUNCTIONS[name], BUDGETS_S[name] * scale) for name in select_steps(options.steps)]

    def after_each():
        stop_clock()
        write_answer(campaign, out, work)

    run_steps(ctx, plan, campaign, after_each)
    stop_clock()  # the last archive written too
    campaign["finished"] = command["finished"]
    write_answer(campaign, out)
    return campaign


def parse(argv):
    if argv[:1] == ["report"]:
        parser = argparse.ArgumentParser(prog="campaign.py report", description="merge a visit's parts into one answer")
        parser.add_argument("parts", nargs="+", help="the --out folders of the parts")
        parser.add_argument("--out", help="default benchmarks/results/<device>")
        parser.add_argument(
            "--readme",
            help="README whose campaign section to regenerate ('' for none; default "
            "benchmarks/README.md, none for a smoke campaign)",
        )
        return parser.parse_args(argv[1:]), report
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for campaign.json, campaign.md and the archive")
    parser.add_argument(
        "--steps", default="all", help=f"steps or parts, comma-separated: {', '.join(STEPS)}; {', '.join(PARTS)}; all"
    )
    parser.add_argument(
        "--source",
        default=os.environ.get("CIFAR10_SOURCE", ""),
        help="CIFAR-10: an archive, its folder or an image folder (default $CIFAR10_SOURCE)",
    )
    parser.add_argument("--work", help="folder for betons, runs and logs (default runs/campaign-<gpu|smoke>)")
    parser.add_argument("--smoke", action="store_true", help="every step at the smallest size, on the CPU")
    parser.add_argument(
        "--total-s",
        type=float,
        help="seconds for the whole campaign: each step gets what is "
        "left of it at most, a step left too little is skipped (default: the part's own "
        f"total, {PART_TOTAL_S['visit']:g} s for visit)",
    )
    parser.add_argument("--seeds", type=int, help="seeds of the seed recipe (default: the size's)")
    parser.add_argument(
        "--variants",
        help=f"the loop variants to run, in that order, comma-separated: {', '.join(VARIANTS)} (default: the size's)",
    )
    parser.add_argument("--python", default=sys.executable, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    unknown = set((options.variants or "").split(",")) - set(VARIANTS) - {""}
    if unknown:
        parser.error(f"unknown variants {', '.join(sorted(unknown))}; known: {', '.join(VARIANTS)}")
    try:
        select_steps(options.steps)
    except ValueError as error:
        parser.error(str(error))
    options.argv = argv
    return options, run_campaign


def main(argv=None):
    options, command = parse(list(sys.argv[1:] if argv is None else argv))
    campaign = command(options)
    failed = [step["name"] for step in campaign["steps"] if step["status"] == "failed"]
    if failed:
        print(f"campaign: failed steps: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""A leaderboard session: a recipe over several seeds and, beside it, airbench's reference on the same
data and device; the entries appended to the leaderboard file and its table rewritten (the entries,
their statistics and the table: speedrun/runs/leaderboard_entries.py).

    python -m speedrun.leaderboard --recipe speedrun --seeds 0-9 --reference train94   # a record attempt
    python -m speedrun.leaderboard --seeds 0-4 --reference train94 --epochs 24 --training.late_evals_from 20

Every training option (--training.*, --model.*, ...) passes through to each seed's run. Where the
reference cannot run here (airbench not installed), our seeds run alone and the table
says why (--leaderboard.require_reference true stops before training instead).

The clock is the same on both sides, over three regions:
  build, untimed, once per process: loading the betons; for us, building the step and compiling (or
      capturing) it on warm-up batches, all in the sweep's first run; for airbench, its loader and one
      whole untimed training call (speedrun/reference.py);
  prepare, charged to each run: for us, its seconds table's 'startup' and 'range_test' (the config and
      run folder, a fresh net's weights and whitening, its optimizer state loaded into the step, the LR
      range test when the recipe runs one), the first run's build ('build': imports, the step) and
      compiling ('compile') left out. For airbench, its net build, optimizer and whitening
      initialisation;
  loop, timed: for us, the steps ('train_seconds', without the evaluations between them); for airbench,
      its epochs.
The table gives the loop and the total (prepare + loop) of both sides; the statistics and the verdict are
leaderboard_entries.compare's.
"""

import os
import sys

from speedrun.runs.config import defaults, merge, parse_args, parse_seeds, resolve_config
from speedrun.runs.leaderboard_entries import (
    append_entry,
    compare,
    make_entry,
    new_session,
    read_entries,
    render_markdown,
)

ALIASES = {
    "--seeds": "--leaderboard.seeds",
    "--target": "--leaderboard.target",
    "--recipe": "--leaderboard.recipe",
    "--reference": "--leaderboard.reference",
    "--epochs": "--training.epochs",
}


# What each region of our runs' clock covers (the module's docstring says more).
OUR_CLOCK = (
    "ours: build untimed (the step, compiled on warm-up batches, in the first run); prepare = each "
    "run's start-up (a fresh net, its state loaded into the step) and any LR range test; loop = the steps"
)


def training_overrides(given, recipe):
    """What the command line set for training, plus the recipe (given once, as --leaderboard.recipe)."""
    overrides = {section: values for section, values in given.items() if section != "leaderboard"}
    training = overrides.setdefault("training", {})
    if training.get("recipe", recipe) != recipe:
        raise ValueError(f"--training.recipe {training['recipe']} contradicts --leaderboard.recipe {recipe}")
    training["recipe"] = recipe
    return overrides


def load_data(overrides):
    """The train/test betons, read once into device memory for every seed (and the reference)."""
    from speedrun.data.betons import load_cifar_betons
    from speedrun.system.device import pick_device

    config = resolve_config(overrides)
    return load_cifar_betons(
        config["data"]["train_dataset"], config["data"]["val_dataset"], pick_device(config["training"]["device"])
    )


def reference_names(choice):
    return {"none": [], "both": ["train94", "train96"]}.get(choice, [choice])


def reference_device(data):
    return data.train_images.device


def run_references(names, data, seeds, overrides):
    """Per reference name, the airbench summaries of every seed, on our data and device, at our width
    and on each seed's training subset; each reference is warmed up once, before its first seed."""
    from speedrun import reference

    config = resolve_config(overrides)
    return {
        name: reference.run_seeds(
            name, data, seeds, reference_device(data), config["model"]["width"], config["training"]["train_subset"]
        )
        for name in names
    }


def run_ours(overrides, data, seeds, session):
    """Train every seed, each into its own folder: <logging.folder or runs/leaderboard-SESSION>/seed<N>."""
    from speedrun.cli import train_seeds

    parent = overrides.get("logging", {}).get("folder") or os.path.join("runs", f"leaderboard-{session}")
    summaries = train_seeds(merge(overrides, {"logging": {"folder": parent}}, strict=False), seeds, data=data)
    for summary in summaries:
        summary["prepare_seconds"] = our_prepare(summary)
        summary["total_seconds"] = (
            None
            if summary["prepare_seconds"] is None
            else round(summary["prepare_seconds"] + summary["train_seconds"], 4)
        )
        total = "" if summary["total_seconds"] is None else f" (total {summary['total_seconds']:.2f} s)"
        print(
            f"seed {summary['seed']}: test acc {summary['final_test_acc']:.4f} "
            f"in {summary['train_seconds']:.2f} s{total}",
            file=sys.stderr,
        )
    return summaries


def our_prepare(summary):
    """A run's prepare: its start-up and LR range test seconds (the build and compiling, done once for a
    sweep by its first run, are charged apart); None for a summary without a seconds table."""
    seconds = summary.get("seconds")
    return None if seconds is None else round(seconds["startup"] + seconds["range_test"], 4)


def run_session(options, overrides):
    """Our seeds and the reference on data loaded once; the entries appended; the table written."""
    seeds, target = parse_seeds(options["seeds"]), options["target"]
    names = reference_names(options["reference"])
    session = new_session()
    data = load_data(overrides)
    skipped = reference_skipped(names, data, options["require_reference"])
    if skipped:
        names = []
    references = run_references(names, data, seeds, overrides) if options["reference_order"] == "before" else {}
    summaries = run_ours(overrides, data, seeds, session)
    if options["reference_order"] == "after":
        references = run_references(names, data, seeds, overrides)

    from speedrun.reference import CLOCK

    ours = make_entry(
        summaries,
        name=options["recipe"],
        kind="ours",
        target=target,
        session=session,
        recipe=options["recipe"],
        clock=OUR_CLOCK,
    )
    entries = [ours]
    for name, runs in references.items():
        entry = make_entry(
            runs, name=f"airbench {name}", recipe=name, kind="reference", target=target, session=session, clock=CLOCK
        )
        entry["data"] = ours["data"]  # the reference trained on the very same in-memory tensors
        entries.append(entry)
    if references:
        ours["comparisons"] = {ref["name"]: compare(ours, ref) for ref in entries[1:]}
    if skipped:
        ours["reference_skipped"] = skipped
    for entry in entries:
        append_entry(options["file"], entry)

    table = render_markdown(read_entries(options["file"]))
    os.makedirs(os.path.dirname(options["markdown"]) or ".", exist_ok=True)
    with open(options["markdown"], "w") as f:
        f.write(table)
    return table


def reference_skipped(names, data, required):
    """{airbench name: why} for references that cannot run here (airbench missing, or a device it cannot train on), said
    before training; with `required`, the reason is raised instead, so nothing trains."""
    if not names:
        return {}
    from speedrun.reference import check_available

    try:
        check_available(reference_device(data))
    except (ImportError, RuntimeError) as error:
        if required:
            raise
        print(f"speedrun.leaderboard: our seeds run alone, without the reference: {error}", file=sys.stderr)
        return {f"airbench {name}": str(error) for name in names}
    return {}


def main(argv=None):
    given = parse_args(argv, description=__doc__.splitlines()[0], aliases=ALIASES, explicit_only=True)
    options = merge(defaults()["leaderboard"], given.get("leaderboard", {}))
    try:
        print(run_session(options, training_overrides(given, options["recipe"])))
    except (ValueError, RuntimeError, OSError, ImportError) as error:
        print(f"speedrun.leaderboard: error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

"""A leaderboard session: a recipe over several seeds and, beside it, airbench's reference on the same
data and device; the entries appended to the leaderboard file and its table rewritten (the entries,
their statistics and the table: speedrun/leaderboard_entries.py).

    python -m speedrun.leaderboard --seeds 0-4 --reference train94 --epochs 24 --training.late_evals_from 20

Every training option (--training.*, --model.*, ...) passes through to each seed's run.
"""
import os
import sys
import tempfile

from speedrun.config import defaults, merge, parse_args, parse_seeds
from speedrun.leaderboard_entries import append_entry, make_entry, new_session, read_entries, render_markdown

ALIASES = {"--seeds": "--leaderboard.seeds", "--target": "--leaderboard.target",
           "--recipe": "--leaderboard.recipe", "--reference": "--leaderboard.reference",
           "--epochs": "--training.epochs"}


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
    from speedrun.config import resolve_config
    from speedrun.data import load_cifar_betons
    from speedrun.device import pick_device
    config = resolve_config(overrides)
    return load_cifar_betons(config["data"]["train_dataset"], config["data"]["val_dataset"],
                             pick_device(config["training"]["device"]))


def reference_names(choice):
    return {"none": [], "both": ["train94", "train96"]}.get(choice, [choice])


def reference_device(data):
    return data.train_images.device if data.train_images.device.type == "cuda" else "cuda"


def run_references(names, data, seeds):
    """Per reference name, the airbench summaries of every seed, on our data and device; each reference
    is warmed up once, before its first seed."""
    from speedrun import reference
    with tempfile.TemporaryDirectory(prefix="airbench-") as folder:
        return {name: [reference.run_reference(name, data, folder, seed, reference_device(data), warmup=first)
                       for first, seed in zip([True] + [False] * len(seeds), seeds)] for name in names}


def run_ours(overrides, data, seeds, session):
    """Train every seed, each into its own folder: <logging.folder or runs/leaderboard-SESSION>/seed<N>."""
    from speedrun.cli import train_seeds
    parent = overrides.get("logging", {}).get("folder") or os.path.join("runs", f"leaderboard-{session}")
    summaries = train_seeds(merge(overrides, {"logging": {"folder": parent}}, strict=False), seeds, data=data)
    for summary in summaries:
        print(f"seed {summary['seed']}: test acc {summary['final_test_acc']:.4f} "
              f"in {summary['train_seconds']:.2f} s", file=sys.stderr)
    return summaries


def run_session(options, overrides):
    """Our seeds and the reference on data loaded once; the entries appended; the table written."""
    seeds, target = parse_seeds(options["seeds"]), options["target"]
    names = reference_names(options["reference"])
    session = new_session()
    data = load_data(overrides)
    if names:  # fail before hours of training, not after
        from speedrun.reference import check_available
        check_available(reference_device(data))
    references = run_references(names, data, seeds) if options["reference_order"] == "before" else {}
    summaries = run_ours(overrides, data, seeds, session)
    if options["reference_order"] == "after":
        references = run_references(names, data, seeds)

    ours = make_entry(summaries, name=options["recipe"], kind="ours", target=target, session=session,
                      recipe=options["recipe"])
    entries = [ours]
    for name, runs in references.items():
        entry = make_entry(runs, name=f"airbench {name}", recipe=name, kind="reference", target=target,
                           session=session)
        entry["data"] = ours["data"]  # the reference trained on the very same in-memory tensors
        entries.append(entry)
    for entry in entries:
        append_entry(options["file"], entry)

    table = render_markdown(read_entries(options["file"]))
    os.makedirs(os.path.dirname(options["markdown"]) or ".", exist_ok=True)
    with open(options["markdown"], "w") as f:
        f.write(table)
    return table


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

"""The campaign's accuracy evidence: the seed recipe over several seeds, the grid of peak LRs around the
range test's pick, and the record recipe beside airbench's train94."""

import json
import statistics
from pathlib import Path

from campaign_plan import CANDIDATE_MARGIN, STUDY_CHANGES, TARGET
from campaign_report import figure, pct
from campaign_runner import Skip, StepError, fail_if_any, finish, run, start, tail
from campaign_steps import data_options, forward_flops, read_summary, train_command

from speedrun.runs import leaderboard_entries


def mean_std(values, form="{:.2f}"):
    stats = leaderboard_entries.seed_stats(values)
    return f"{form.format(stats['mean'])} ± {form.format(stats['std'])} (n={stats['n']})", stats["mean"]


def step_seed_recipe(ctx):
    """The seed recipe over several seeds: its LR range test once (seed 0), then the other seeds at the
    LR it found; time, accuracy and curves."""
    seeds, epochs = ctx.size["seeds"], ctx.size["seed_epochs"]
    first = run(ctx, "seed0", train_command(ctx, ctx.folder, "--seeds", "0", epochs=epochs, checkpoint="last"))
    ctx.cache["pick"] = pick_of(read_summary(ctx.folder / "seed0"))
    ctx.cache["pick_folder"] = ctx.folder / "seed0"
    lr = ctx.cache["pick"][1]
    commands = [first.command]  # one process for seed 0 and its range test, one for the rest, if any
    if seeds > 1:
        commands.append(
            run(
                ctx,
                "seeds",
                train_command(ctx, ctx.folder, "--seeds", f"1-{seeds - 1}", epochs=epochs, lr=lr, checkpoint="last"),
            ).command
        )
    folders = [ctx.folder / f"seed{seed}" for seed in range(seeds)]
    summaries = [read_summary(folder) for folder in folders]
    scores = tta_scores(ctx, folders)
    entry = leaderboard_entries.make_entry(
        summaries, name="seed", kind="ours", target=TARGET, session=leaderboard_entries.new_session(), recipe="seed"
    )
    stats = leaderboard_entries.summarise_runs(summaries, TARGET)
    command = "; then ".join(commands)
    return {
        "lr_max": lr,
        "epochs": epochs,
        "stats": stats,
        "entries": [entry],
        "curves": mean_curves(summaries),
        "tta": scores,
        "figures": seed_figures(ctx, summaries, stats, command)
        + tta_figures(scores, command)
        + [figure("seed recipe: LR from the range test", f"{lr:.4g}", value=lr, command=first.command)],
    }


def tta_scores(ctx, folders):
    """{run folder name: {tta level: test accuracy}} of finished runs, from their last checkpoints, in one
    process (speedrun.score); {} with a note in the log when it cannot run."""
    out = ctx.folder / "tta.json"
    try:
        run(ctx, "tta", [ctx.python, "-m", "speedrun.score", *folders, "--device", ctx.size["device"], "--json", out])
    except (StepError, Skip):  # the accuracies stand without it
        return {}
    return {
        Path(folder).name: {int(level): acc for level, acc in scores.items()}
        for folder, scores in json.loads(out.read_text()).items()
    }


def tta_figures(scores, command):
    """Mean test accuracy over the scored runs at each test-time augmentation level."""
    levels = sorted({level for by_level in scores.values() for level in by_level})
    return [
        figure(
            f"seed recipe, scored at tta {level}",
            mean_std([100 * by_level[level] for by_level in scores.values()])[0] + " %",
            value=statistics.fmean(by_level[level] for by_level in scores.values()),
            command=command,
        )
        for level in levels
    ]


def pick_of(summary):
    """(optimizer, peak LR, accuracy) of a run whose peak LR came from its range test."""
    return summary["config"]["training"]["optimizer"], summary["lr_max"], summary["final_test_acc"]


def step_lr_grid(ctx):
    """The default recipe's full schedule (seed 0) at multiples of its range-test pick, and with one
    change at a time (the other optimizer at its own pick, label smoothing, padding, schedule), all side
    by side on the device: accuracies only (their times share the device and are not reported)."""
    epochs = ctx.size["seed_epochs"]
    if "pick" not in ctx.cache:  # the seed recipe's first run is the pick's run; else run it here
        run(ctx, "x1", train_command(ctx, ctx.folder / "x1", epochs=epochs, checkpoint="last"))
        ctx.cache["pick"], ctx.cache["pick_folder"] = pick_of(read_summary(ctx.folder / "x1")), ctx.folder / "x1"
    optimizer, pick, accuracy = ctx.cache["pick"]
    results = {"x1": {"status": "passed", "options": [], "lr_max": pick, "factor": 1, "final_test_acc": accuracy}}
    plan = {f"x{factor:g}": ([], pick * factor, factor) for factor in ctx.size["lr_grid"]}
    plan.update(
        {name: (STUDY_CHANGES[name][0], pick if STUDY_CHANGES[name][1] else None, None) for name in ctx.size["study"]}
    )
    processes = {
        name: start(ctx, name, train_command(ctx, ctx.folder / name, *options, epochs=epochs, lr=lr, checkpoint="last"))
        for name, (options, lr, _) in plan.items()
    }
    for name, process in processes.items():
        options, _, factor = plan[name]
        try:
            done = finish(ctx, process)
            summary = read_summary(ctx.folder / name)
            results[name] = {
                "status": "passed",
                "options": options,
                "lr_max": summary["lr_max"],
                "factor": factor,
                "final_test_acc": summary["final_test_acc"],
                "command": done.command,
            }
        except StepError as error:
            results[name] = {"status": "failed", "error": str(error), "tail": error.tail}
    folders = {
        name: ctx.cache["pick_folder"] if name == "x1" else ctx.folder / name
        for name, r in results.items()
        if r["status"] == "passed"
    }
    scores = tta_scores(ctx, list(folders.values()))
    for name, folder in folders.items():
        results[name]["tta"] = scores.get(folder.name, {})
    grid = {r["factor"]: r["final_test_acc"] for r in results.values() if r.get("factor") and r["status"] == "passed"}
    best = max(grid, key=grid.get)
    verdict = {
        "optimizer": optimizer,
        "pick": pick,
        "accuracy_by_factor": grid,
        "best_factor": best,
        "pick_within_factor_2": 0.5 <= best <= 2,
    }
    figures = [
        figure(
            f"{epochs}-epoch run {name}",
            f"{pct(r['final_test_acc'])} at peak LR {r['lr_max']:.3g}"
            + "".join(f"; tta{level} {pct(acc)}" for level, acc in r["tta"].items() if level),
            value=r["final_test_acc"],
            accuracy=r["final_test_acc"],
            command=r.get("command"),
        )
        for name, r in results.items()
        if r["status"] == "passed"
    ]
    figures.append(
        figure(
            f"lr grid {optimizer}: best peak",
            f"{best:g} x pick {pick:.3g} ({pct(grid[best])}); pick {pct(grid[1])}",
            value=best * pick,
            accuracy=grid[best],
        )
    )
    failed = [name for name, r in results.items() if r["status"] == "failed"]
    ctx.cache["grid"] = results
    return fail_if_any(failed, {"runs": results, "grid": verdict, "epochs": epochs, "figures": figures}, "runs")


def candidate_of(runs):
    """(options, LR factor, why): the default recipe with every change that beat the pick's own run by
    more than CANDIDATE_MARGIN, one per option (the best where two set the same one), at the best grid
    factor when that beat it too, and scored at the best test-time augmentation level of the pick's run."""
    base = runs["x1"]["final_test_acc"]
    passed = {name: r for name, r in runs.items() if r["status"] == "passed"}
    grid = {r["factor"]: r["final_test_acc"] for r in passed.values() if r.get("factor")}
    factor = max(grid, key=grid.get)
    factor = factor if grid[factor] > base + CANDIDATE_MARGIN else 1
    chosen = {}
    for name, r in passed.items():
        changes_default = name in STUDY_CHANGES and STUDY_CHANGES[name][1]  # at the pick: same optimizer
        if changes_default and r["final_test_acc"] > base + CANDIDATE_MARGIN:
            option = r["options"][0]
            if option not in chosen or r["final_test_acc"] > passed[chosen[option]]["final_test_acc"]:
                chosen[option] = name
    options = [word for name in chosen.values() for word in passed[name]["options"]]
    scores = runs["x1"].get("tta") or {}
    tta = max(scores, key=scores.get, default=0)
    if tta and scores[tta] > scores[0] + CANDIDATE_MARGIN:
        options += ["--training.tta", str(tta)]
    why = [f"x{factor:g} ({pct(grid[factor])})"] + [
        f"{name} ({pct(passed[name]['final_test_acc'])})" for name in chosen.values()
    ]
    if "--training.tta" in options:
        why.append(f"tta {tta} ({pct(scores[tta])})")
    return options, factor, f"against the pick's {pct(base)}: " + ", ".join(why)


def step_candidate(ctx):
    """The default recipe with the changes the lr_grid step found better, all together, over several
    seeds side by side: what new defaults would reach, measured before they are made."""
    if "grid" not in ctx.cache:
        raise Skip("needs the lr_grid step's runs in the same command")
    options, factor, why = candidate_of(ctx.cache["grid"])
    lr, epochs, seeds = ctx.cache["pick"][1] * factor, ctx.size["seed_epochs"], ctx.size["candidate_seeds"]
    processes = [
        start(
            ctx,
            f"seed{seed}",
            train_command(
                ctx,
                ctx.folder / f"seed{seed}",
                "--training.seed",
                seed,
                *options,
                epochs=epochs,
                lr=lr,
                checkpoint="last",
            ),
        )
        for seed in range(seeds)
    ]
    summaries, failed = [], {}
    for seed, process in enumerate(processes):  # each waited for, so that none outlives the step
        try:
            finish(ctx, process)
            summaries.append(read_summary(ctx.folder / f"seed{seed}"))
        except StepError as error:
            failed[f"seed{seed}"] = {"error": str(error), "tail": error.tail}
    result = {
        "options": options,
        "lr_max": lr,
        "factor": factor,
        "why": why,
        "failed": failed,
        "accuracies": [summary["final_test_acc"] for summary in summaries],
        "figures": [],
    }
    if summaries:
        text, mean = mean_std([100 * summary["final_test_acc"] for summary in summaries])
        result["figures"].append(
            figure(
                f"candidate defaults, {epochs} epochs: test accuracy",
                f"{text} % with {' '.join(options) or 'no change'} at peak LR {lr:.3g} ({factor:g} x pick); {why}",
                value=mean / 100,
                accuracy=mean / 100,
                command=processes[0].command,
            )
        )
    return fail_if_any(list(failed), result, "seeds")


def seed_figures(ctx, summaries, stats, command):
    """Training time (with its share of the peak), accuracy and time to the target over the seeds."""
    first, seeds = summaries[0], len(summaries)
    images = first["epochs"] * first["steps_per_epoch"] * first["config"]["training"]["batch_size"]
    tflops = 3 * forward_flops(ctx)["seed"] * images / stats["train_seconds"]["mean"] / 1e12
    time_text, _ = mean_std([s["train_seconds"] for s in summaries])
    accuracy_text, _ = mean_std([s["final_test_acc"] * 100 for s in summaries])
    reached, accuracy = stats["time_to_target"], stats["accuracy"]["mean"]
    title = f"seed recipe, {first['epochs']} epochs"
    return [
        figure(
            f"{title}: training time",
            f"{time_text} s",
            value=stats["train_seconds"]["mean"],
            timed="train",
            command=command,
            accuracy=accuracy,
            tflops=tflops,
        ),
        figure(f"{title}: test accuracy", f"{accuracy_text} %", value=accuracy, command=command, accuracy=accuracy),
        figure(
            f"{title}: time to {pct(TARGET)}",
            f"{reached['mean']:.2f} s ({stats['reached']}/{seeds} seeds)"
            if reached
            else f"not reached (0/{seeds} seeds)",
            value=reached and reached["mean"],
            timed="train",
            command=command,
        ),
    ]


def mean_curves(summaries):
    """Per evaluation epoch: the mean over seeds of train loss and test accuracy."""
    by_epoch = {}
    for summary in summaries:
        for record in summary["history"]:
            by_epoch.setdefault(record["epoch"], []).append(record)
    return [
        {
            "epoch": epoch,
            "train_loss": statistics.fmean(r["train_loss"] for r in records),
            "test_acc": statistics.fmean(r["test_acc"] for r in records),
            "seeds": len(records),
        }
        for epoch, records in sorted(by_epoch.items())
    ]


def step_record_vs_airbench(ctx):
    """The record recipe and airbench's train94 on the same betons, device and process, several seeds
    each; airbench warmed up once, by a whole untimed run. Where airbench cannot run,
    ours runs alone and the reason is kept."""
    probe = run(
        ctx,
        "airbench-probe",
        [ctx.python, "-c", "from speedrun.reference import check_available; check_available('cuda')"],
        check=False,
    )
    reason = tail(probe.output, 1) if probe.returncode else None
    file = ctx.folder / "leaderboard.jsonl"
    done = run(
        ctx,
        "leaderboard",
        [
            ctx.python,
            "-m",
            "speedrun.leaderboard",
            "--recipe",
            "speedrun",
            "--seeds",
            f"0-{ctx.size['record_seeds'] - 1}",
            "--reference",
            "none" if reason else "train94",
            "--target",
            TARGET,
            *ctx.size["trainer"],
            "--training.compile",
            ctx.size["compile"],
            *ctx.size["record_options"],
            *data_options(ctx),
            "--leaderboard.file",
            file,
            "--leaderboard.markdown",
            ctx.folder / "leaderboard.md",
            "--logging.folder",
            ctx.folder / "runs",
            "--logging.checkpoint",
            "none",
            "--logging.plots",
            "false",
            "--logging.progress",
            "false",
        ],
    )
    entries = leaderboard_entries.read_entries(file)
    figures = [entry_figure(entry, done.command) for entry in entries]
    if reason:
        figures.append(figure("airbench train94", f"skipped: {reason}"))
    ours = next(entry for entry in entries if entry["kind"] == "ours")
    comparisons = ours.get("comparisons", {})
    figures += [comparison_figure(name, comparison, done.command) for name, comparison in comparisons.items()]
    return {
        "entries": entries,
        "reference_skipped": reason,
        "comparisons": comparisons,
        "figures": figures,
        **({"note": f"airbench skipped: {reason}"} if reason else {}),
    }


def comparison_figure(name, comparison, command):
    """The leaderboard's own comparison of the record recipe with a reference: the time ratio on its
    basis (total where both sides have one), the accuracy difference, each with its 95% interval where
    the seeds allow one, and the verdict."""
    basis, accuracy = comparison["time_basis"], comparison["accuracy"]
    time = comparison[basis]
    text = (
        f"{basis} time {time['ratio']:.2f}x{interval(time, '{:.2f}x')}; accuracy "
        f"{accuracy['difference']:+.2f} points{interval(accuracy, '{:+.2f}')}; "
        f"verdict: {comparison['verdict'] or 'none'} ({comparison['why']})"
    )
    return figure(f"record recipe against {name}", text, value=time["ratio"], command=command)


def interval(estimate, form):
    if "low" not in estimate:
        return ""
    return f" (95% interval {form.format(estimate['low'])} to {form.format(estimate['high'])})"


def entry_figure(entry, command):
    time_text, _ = mean_std(entry["train_seconds"])
    accuracy_text, accuracy = mean_std([100 * value for value in entry["accuracies"]])
    return figure(
        f"{entry['name']} ({entry['kind']}), {len(entry['seeds'])} seeds",
        f"{time_text} s; test accuracy {accuracy_text} %",
        value=statistics.fmean(entry["train_seconds"]),
        timed="airbench" if entry["kind"] == "reference" else "train",
        command=command,
        accuracy=accuracy / 100,
    )

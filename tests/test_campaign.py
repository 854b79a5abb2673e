"""The GPU campaign: its bookkeeping (a failing, hanging, skipped or broken step is recorded and the
next one runs), its plan, and the smoke campaign run end to end on the CPU, so that the command that
meets a GPU has already run every step.
"""
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import campaign  # noqa: E402
from campaign_report import figure  # noqa: E402


def context(tmp_path, python=sys.executable):
    return campaign.Context("smoke", tmp_path / "work", "", dict(os.environ), str(python))


def command_step(code):
    """A step that runs `python -c code` and keeps its output."""
    def step(ctx):
        """Runs a command."""
        return {"output": campaign.run(ctx, "command", [sys.executable, "-c", code]).output.strip(), "figures": []}
    return step


def skipping_step(ctx):
    """Cannot run here."""
    raise campaign.Skip("no such device here")


def broken_step(ctx):
    """Has a bug."""
    return 1 / 0


def header(steps):
    return {"device": "test device", "size": "smoke", "started": "today", "commands": ["campaign"], "versions": {},
            "steps": steps}


def test_each_step_is_recorded_whatever_became_of_the_one_before(tmp_path):
    noisy_failure = "import sys; print('\\n'.join(f'line {i}' for i in range(40))); sys.exit(3)"
    plan = [("fails", command_step(noisy_failure), 60), ("hangs", command_step("import time; time.sleep(60)"), 1),
            ("skips", skipping_step, 60), ("broken", broken_step, 60), ("passes", command_step("print('fine')"), 60)]
    result, written = header([]), []
    started = time.monotonic()
    campaign.run_steps(context(tmp_path), plan, result, lambda: written.append(len(result["steps"])))
    steps = {step["name"]: step for step in result["steps"]}
    assert list(steps) == [name for name, _, _ in plan] and written == [1, 2, 3, 4, 5]

    assert steps["fails"]["status"] == "failed" and "exited with status 3" in steps["fails"]["error"]
    tail = steps["fails"]["tail"].splitlines()
    assert len(tail) == campaign.TAIL_LINES and tail[-1] == "line 39"  # the last lines, not the first
    assert steps["hangs"]["status"] == "failed" and steps["hangs"]["error"].startswith("timeout")
    assert steps["hangs"]["seconds"] < 20 and time.monotonic() - started < 60  # killed at its budget
    assert steps["skips"]["status"] == "skipped" and steps["skips"]["reason"] == "no such device here"
    assert steps["broken"]["status"] == "failed" and "ZeroDivisionError" in steps["broken"]["error"]
    assert "Traceback" in steps["broken"]["tail"]
    assert steps["passes"]["status"] == "passed" and steps["passes"]["result"]["output"] == "fine"
    assert steps["passes"]["what"] == "Runs a command." and steps["passes"]["budget_s"] == 60

    markdown = campaign.render(result)
    for name, step in steps.items():
        assert f"| {name} | **{step['status']}** |" in markdown
    assert "line 39" in markdown and "no such device here" in markdown


def test_a_variant_the_trainer_does_not_know_is_skipped_and_other_failures_are_not(tmp_path):
    """A trainer without --training.compile_mode exits 2 naming it: 'option not available'."""
    fake = tmp_path / "fake-python"
    ctx = context(tmp_path, fake)
    ctx.step, ctx.deadline = "variants", time.monotonic() + 60
    refusal = "echo 'train.py: error: unrecognized arguments: --training.compile_mode cudagraphs' >&2; exit 2"
    outcomes = {}
    for script, label in ((refusal, "refused"), ("echo 'out of memory' >&2; exit 1", "crashed")):
        fake.write_text(f"#!/bin/sh\n{script}\n")
        fake.chmod(0o755)
        outcomes[label] = campaign.run_parts({"cuda_graphs": lambda: campaign.variant(
            ctx, "cuda_graphs", campaign.VARIANTS["cuda_graphs"], 1.0)})
    (refused, none_failed), (crashed, failed) = outcomes["refused"], outcomes["crashed"]
    assert refused["cuda_graphs"]["status"] == "skipped" and not none_failed
    assert refused["cuda_graphs"]["reason"].startswith("option not available: --training.compile_mode")
    assert crashed["cuda_graphs"]["status"] == "failed" and failed == ["cuda_graphs"]
    assert "out of memory" in crashed["cuda_graphs"]["tail"]


def test_a_command_past_its_own_limit_is_killed_before_the_steps_deadline(tmp_path):
    from campaign_runner import StepTimeout
    ctx = context(tmp_path)
    ctx.step, ctx.deadline = "variants", time.monotonic() + 60
    started = time.monotonic()
    with pytest.raises(StepTimeout, match=r"its own limit \(1 s\)") as raised:
        campaign.run(ctx, "slow", [sys.executable, "-c", "import time; time.sleep(60)"], limit_s=1)
    assert time.monotonic() - started < 20
    assert "stacks" not in str(raised.value)  # it had no handler: the signal killed it, nothing printed


def test_a_command_killed_at_its_limit_leaves_its_stacks_in_its_log(tmp_path):
    """The trainer and the benchmark print their threads' stacks on the signal the runner sends before it
    kills them, so a hang on a GPU says where it was: here, a child waiting in a function of its own."""
    from campaign_runner import StepTimeout
    ctx = context(tmp_path)
    ctx.step, ctx.deadline = "variants", time.monotonic() + 60
    code = ("import sys, time; from speedrun.stacks import dump_stacks_on_signal; dump_stacks_on_signal()\n"
            "def waiting_for_the_compiler():\n    print('started', flush=True); time.sleep(60)\n"
            "waiting_for_the_compiler()")
    with pytest.raises(StepTimeout, match="stacks at that moment end stuck.log") as raised:
        campaign.run(ctx, "stuck", [sys.executable, "-c", code], limit_s=3)
    log = (ctx.folder / "stuck.log").read_text()
    assert "most recent call first" in log and "waiting_for_the_compiler" in log
    assert "waiting_for_the_compiler" in raised.value.tail


def test_a_killed_command_that_outlived_the_signal_silently_is_not_said_to_have_left_stacks(tmp_path):
    """Seen on a GPU machine: two runs outlived the signal and printed nothing. The record must not point
    at stacks that are not there."""
    from campaign_runner import StepTimeout
    ctx = context(tmp_path)
    ctx.step, ctx.deadline = "variants", time.monotonic() + 60
    code = ("import signal, time; signal.signal(signal.SIGUSR1, signal.SIG_IGN)\n"
            "print('started', flush=True); time.sleep(60)")
    with pytest.raises(StepTimeout, match=r"its own limit \(3 s\)") as raised:
        campaign.run(ctx, "silent", [sys.executable, "-c", code], limit_s=3)
    assert "stacks" not in str(raised.value)


def test_the_plan_steps_parts_and_budgets():
    assert campaign.select_steps("all") == list(campaign.STEPS)
    assert campaign.select_steps("part2,environment") == ["environment", "data", "variants"]
    assert set(campaign.STEPS) == {name for steps in campaign.PARTS.values() for name in steps}
    assert set(campaign.BUDGETS_S) == set(campaign.STEPS)
    budgets = {part: min(sum(campaign.BUDGETS_S[name] for name in steps), campaign.PART_TOTAL_S.get(part, 1e9))
               for part, steps in campaign.PARTS.items()}
    assert max(budgets.values()) < 9 * 60  # one 10-minute command each
    assert sum(budgets[part] for part in campaign.CORE_PARTS) < 25 * 60  # the core plan: 25 minutes in all
    with pytest.raises(ValueError, match="warp_drive"):
        campaign.select_steps("data,warp_drive")


def test_the_candidate_takes_each_change_that_beat_the_pick_once_per_option():
    def result(accuracy, *options, factor=None, status="passed"):
        return {"status": status, "final_test_acc": accuracy, "options": list(options), "factor": factor}

    runs = {"x1": {**result(0.900, factor=1), "tta": {0: 0.900, 1: 0.905, 2: 0.9045}},
            "x0.5": result(0.880, factor=0.5), "x2": result(0.903, factor=2),
            "smoothing-0.2": result(0.904, "--training.label_smoothing", "0.2"),
            "no-smoothing": result(0.903, "--training.label_smoothing", "0"),  # the same option, less: left out
            "weight-decay-0.05": result(0.901, "--training.weight_decay", "0.05"),  # within the margin
            "sgd": result(0.950, "--training.optimizer", "sgd"),  # another optimizer at its own pick: never
            "pad-constant": result(None, "--augment.pad_mode", "constant", status="failed")}
    options, factor, why = campaign.campaign_accuracy.candidate_of(runs)
    assert options == ["--training.label_smoothing", "0.2", "--training.tta", "1"] and factor == 2
    assert why.startswith("against the pick's 90.00%") and "smoothing-0.2 (90.40%)" in why
    runs["x2"]["final_test_acc"] = 0.901
    assert campaign.campaign_accuracy.candidate_of(runs)[1] == 1  # no factor beat the pick by the margin


def test_parts_merge_keeping_every_record_of_every_step_each_marked_with_its_part(tmp_path):
    """A step that ran in two commands (the betons written by the first, kept by the second) keeps both
    records in campaign.json and campaign.md, steps and figures, each with the part it came from."""
    def step(name, note, *figures):
        return {"name": name, "status": "passed", "what": f"the {name} step", "budget_s": 10, "seconds": 1.0,
                "result": {"note": note, "figures": [figure(text, text, command=f"run {text}") for text in figures]}}

    first = {**header([step("environment", "e", "ceiling"), step("data", "written", "950 images/s"),
                       step("variants", "v1", "base 6.55 ms")]), "started": "2", "finished": "3"}
    second = {**header([step("data", "kept", "kept betons"), step("variants", "v2", "whole step 3.51 ms")]),
              "started": "4", "finished": "5", "commands": [{"command": "part2", "started": "4", "finished": "5",
                                                             "wall_s": 61.0}]}
    for folder, part in (("visit", first), ("variants", second)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "campaign.json").write_text(json.dumps(part))
    assert campaign.main(["report", str(tmp_path / "visit"), str(tmp_path / "variants"), "--out",
                          str(tmp_path / "merged"), "--readme", ""]) == 0
    merged = json.loads((tmp_path / "merged" / "campaign.json").read_text())
    assert [(s["name"], s["part"], s["result"]["note"]) for s in merged["steps"]] == [
        ("environment", "visit", "e"), ("data", "visit", "written"), ("data", "variants", "kept"),
        ("variants", "visit", "v1"), ("variants", "variants", "v2")]
    assert merged["started"] == "2" and merged["finished"] == "5"
    # the first part's campaign.json has its command as text alone (written before commands were timed)
    assert merged["commands"] == [{"command": "campaign", "part": "visit"},
                                  {"command": "part2", "started": "4", "finished": "5", "wall_s": 61.0,
                                   "part": "variants"}]

    markdown = (tmp_path / "merged" / "campaign.md").read_text()
    assert "| 2 | data | **passed** | visit | 1 (10) | the data step | written |" in markdown
    assert "| 3 | data | **passed** | variants | 1 (10) | the data step | kept |" in markdown
    for part, figure_name in (("visit", "950 images/s"), ("variants", "kept betons"), ("visit", "base 6.55 ms"),
                              ("variants", "whole step 3.51 ms")):
        assert f"| {part} | {figure_name} | {figure_name} |" in markdown
    assert "- visit: `campaign`: wall time not recorded" in markdown
    assert "- variants: `part2`: 4 to 5, 61 s" in markdown

    # without names the parts are numbered; a record reconstructed afterwards says so wherever it shows
    rebuilt = {**second, "steps": [{**second["steps"][1], "reconstructed": "from the run files", "seconds": None}]}
    again = campaign.merge_campaigns([first, rebuilt])
    assert [s["part"] for s in again["steps"]] == ["part1", "part1", "part1", "part2"]
    markdown = campaign.render(again)
    assert ("| 4 | variants | **passed** | part2 | not recorded (10) | the variants step | reconstructed from the "
            "archive's run files (below); v2 |") in markdown
    assert "| variants | part2 (reconstructed) | whole step 3.51 ms |" in markdown
    assert "## Reconstructed records\n\n- variants (part2): from the run files" in markdown


def test_each_command_records_its_wall_time_from_its_start_to_its_end(tmp_path, monkeypatch):
    def slow_step(ctx):
        """Takes a while."""
        time.sleep(1.5)
        return {"figures": []}

    monkeypatch.setitem(campaign.STEP_FUNCTIONS, "data", slow_step)
    monkeypatch.setattr(campaign, "probe_header", lambda ctx: {"device": "test device", "versions": {}})
    out = tmp_path / "out"
    started = time.monotonic()
    assert campaign.main(["--steps", "data", "--smoke", "--out", str(out), "--work", str(tmp_path / "work")]) == 0
    elapsed = time.monotonic() - started
    result = json.loads((out / "campaign.json").read_text())
    [command] = result["commands"]
    assert command["command"].startswith("python benchmarks/campaign.py --steps data --smoke --out")
    assert 1.5 <= command["wall_s"] <= elapsed + 0.1
    assert command["started"] == result["started"] and command["finished"] == result["finished"]
    assert command["started"] <= command["finished"]
    markdown = (out / "campaign.md").read_text()
    assert f"- `{command['command']}`: {command['started']} to {command['finished']}, {command['wall_s']:.0f} s" \
        in markdown


def fake_trainer(tmp_path):
    """A python that answers the seed recipe's commands: a trainer that writes each seed's summary (the
    second H200 visit's seed 0, with the seed changed), a FLOP count; scoring fails."""
    template = ROOT / "benchmarks" / "results" / "nvidia-h200-visit-2" / "runs" / "seed_recipe" / "seed0"
    template = template / "summary.json"
    fake = tmp_path / "fake-python"
    fake.write_text(f"""#!{sys.executable}
import json, sys
from pathlib import Path
args = sys.argv[1:]
if args[:2] == ["-m", "speedrun.train"]:
    folder = Path(args[args.index("--logging.folder") + 1])
    first, _, last = args[args.index("--seeds") + 1].partition("-")
    for seed in range(int(first), int(last or first) + 1):
        summary = {{**json.loads(Path({str(template)!r}).read_text()), "seed": seed}}
        (folder / f"seed{{seed}}").mkdir(parents=True, exist_ok=True)
        (folder / f"seed{{seed}}" / "summary.json").write_text(json.dumps(summary))
elif args[:1] == ["-c"]:
    print(758523904)
else:
    sys.exit(1)
""")
    fake.chmod(0o755)
    return fake


@pytest.mark.parametrize("seeds", [1, 3])
def test_the_seed_recipe_names_each_process_it_ran_once(tmp_path, seeds):
    """With one seed one process ran: its figures name that command alone, not twice ('...; then ...')."""
    ctx = context(tmp_path, fake_trainer(tmp_path))
    ctx.overrides = {"seeds": seeds}
    ctx.step, ctx.deadline = "seed_recipe", time.monotonic() + 60
    (ctx.work / "seed_recipe").mkdir(parents=True)
    result = campaign.campaign_accuracy.step_seed_recipe(ctx)
    assert result["stats"]["runs"] == seeds
    commands = {fig["command"] for fig in result["figures"]}
    first = next(fig["command"] for fig in result["figures"] if fig["name"] == "seed recipe: LR from the range test")
    assert first.endswith("--epochs 1 --seeds 0") and "; then" not in first
    if seeds == 1:
        assert commands == {first}
    else:
        rest = first.replace("--seeds 0", f"--lr.lr_max {result['lr_max']} --seeds 1-2")
        assert commands == {first, f"{first}; then {rest}"}
    markdown = campaign.render({**header([{"name": "seed_recipe", "status": "passed", "what": "", "budget_s": 1,
                                           "result": result}])})
    assert markdown.count("--seeds 0") == (1 if seeds == 1 else 2)


def test_a_command_killed_at_the_campaigns_total_says_so_not_the_steps_budget(tmp_path):
    from campaign_runner import StepTimeout
    ctx = context(tmp_path)
    ctx.step = "variants"
    ctx.deadline = ctx.campaign_deadline = time.monotonic() + 1
    with pytest.raises(StepTimeout, match="at the end of the campaign's --total-s and was killed"):
        campaign.run(ctx, "late", [sys.executable, "-c", "import time; time.sleep(60)"])
    with pytest.raises(campaign.Skip, match="next: the campaign's --total-s was spent before it could start"):
        campaign.run(ctx, "next", [sys.executable, "-c", "pass"])


def test_smoke_campaign_runs_every_step_on_the_cpu_and_reports_them(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "benchmarks/campaign.py", "--smoke", "--out", str(out), "--work", str(work)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    result = json.loads((out / "campaign.json").read_text())
    steps = {step["name"]: step for step in result["steps"]}
    assert list(steps) == list(campaign.STEPS)
    failed = {name: (step.get("error"), step.get("tail")) for name, step in steps.items() if step["status"] != "passed"}
    assert not failed and done.returncode == 0, (failed, done.stderr[-3000:])
    markdown = (out / "campaign.md").read_text()
    for name in campaign.STEPS:
        assert f"| {name} | **passed** |" in markdown
    for step in steps.values():  # every step measured something, and says how
        assert step["result"]["figures"] or step["name"] == "data", step["name"]
    # the accuracy runs are scored at every test-time augmentation level from their last checkpoints
    scored = [*steps["lr_grid"]["result"]["runs"].values(), *steps["seed_recipe"]["result"]["tta"].values()]
    assert len(scored) >= 4 and all(set(r.get("tta", r)) == {"0", "1", "2"} for r in scored)
    assert all(variant.get("compiled") for variant in steps["variants"]["result"]["variants"].values()
               if variant["status"] == "passed")
    record = steps["record_vs_airbench"]["result"]
    if record["reference_skipped"]:
        assert "airbench" in record["reference_skipped"] and "airbench train94 | skipped" in markdown
    assert steps["correctness"]["result"]["checks"]["resume_after_kill"]["matches_uninterrupted"]
    with tarfile.open(out / campaign.ARCHIVE) as archive:
        names = archive.getnames()
    assert "seed_recipe/seed0/summary.json" in names and "correctness/killed.log" in names
    assert not [name for name in names if name.endswith((".pt", ".beton"))]

    readme = tmp_path / "README.md"
    shutil.copy(ROOT / "benchmarks" / "README.md", readme)
    merged = subprocess.run([sys.executable, "benchmarks/campaign.py", "report", str(out), "--out",
                             str(tmp_path / "merged"), "--readme", str(readme)], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert merged.returncode == 0, merged.stderr[-3000:]
    assert "| seed | ours |" in (tmp_path / "merged" / "leaderboard.md").read_text()
    section = readme.read_text().split(campaign.README_MARKERS[0])[1].split(campaign.README_MARKERS[1])[0]
    assert all(f"| {name} | **passed** |" in section for name in campaign.STEPS)
    assert (tmp_path / "merged" / campaign.ARCHIVE).exists()


def test_record_step_reports_the_leaderboards_comparison_with_its_intervals_and_verdict():
    from campaign_accuracy import comparison_figure
    from speedrun.leaderboard_entries import compare
    ours = {"name": "speedrun", "accuracies": [0.910, 0.911, 0.912, 0.910, 0.911], "train_seconds": [2.0] * 4 + [2.1],
            "total_seconds": [2.2] * 5}
    airbench = {"name": "airbench train94", "accuracies": [0.905, 0.904, 0.906, 0.903, 0.905],
                "train_seconds": [2.1, 2.2, 2.1, 2.2, 2.1], "total_seconds": [2.5, 2.6, 2.5, 2.6, 2.5]}
    made = comparison_figure("airbench train94", compare(ours, airbench), "the command")
    assert made["name"] == "record recipe against airbench train94" and made["command"] == "the command"
    assert made["text"].startswith("total time 0.8") and "(95% interval" in made["text"]
    assert "verdict: ahead" in made["text"] and made["value"] == pytest.approx(2.2 / (2.5 ** 3 * 2.6 ** 2) ** 0.2)
    few = comparison_figure("airbench train94", compare({**ours, "accuracies": ours["accuracies"][:2]}, airbench), "c")
    assert "verdict: none (too few seeds" in few["text"]

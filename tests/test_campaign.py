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
from types import SimpleNamespace

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
    return {
        "device": "test device",
        "size": "smoke",
        "started": "today",
        "commands": ["campaign"],
        "versions": {},
        "steps": steps,
    }


def test_each_step_is_recorded_whatever_became_of_the_one_before(tmp_path):
    noisy_failure = "import sys; print('\\n'.join(f'line {i}' for i in range(40))); sys.exit(3)"
    plan = [
        ("fails", command_step(noisy_failure), 60),
        ("hangs", command_step("import time; time.sleep(60)"), 1),
        ("skips", skipping_step, 60),
        ("broken", broken_step, 60),
        ("passes", command_step("print('fine')"), 60),
    ]
    result, written = header([]), []
    started = time.monotonic()
    campaign.run_steps(context(tmp_path), plan, result, lambda: written.append(len(result["steps"])))
    steps = {step["name"]: step for step in result["steps"]}
    assert list(steps) == [name for name, _, _ in plan] and written == [1, 2, 3, 4, 5]

    assert steps["fails"]["status"] == "failed" and "exited with status 3" in steps["fails"]["error"]
    tail = steps["fails"]["tail"].splitlines()
    assert len(tail) == campaign.TAIL_LINES and tail[-1] == "line 39"  # the last lines, not the first
    assert steps["hangs"]["status"] == "failed" and steps["hangs"]["error"].startswith("timeout")
    assert "at the end of the step's budget (1 s)" in steps["hangs"]["error"]
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
        outcomes[label] = campaign.run_parts(
            {"cuda_graphs": lambda: campaign.variant(ctx, "cuda_graphs", campaign.VARIANTS["cuda_graphs"], 1.0)}
        )
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
    code = (
        "import sys, time; from speedrun.system.stacks import dump_stacks_on_signal; dump_stacks_on_signal()\n"
        "def waiting_for_the_compiler():\n    print('started', flush=True); time.sleep(60)\n"
        "waiting_for_the_compiler()"
    )
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
    code = (
        "import signal, time; signal.signal(signal.SIGUSR1, signal.SIG_IGN)\n"
        "print('started', flush=True); time.sleep(60)"
    )
    with pytest.raises(StepTimeout, match=r"its own limit \(3 s\)") as raised:
        campaign.run(ctx, "silent", [sys.executable, "-c", code], limit_s=3)
    assert "stacks" not in str(raised.value)


def test_the_plan_steps_parts_and_budgets():
    assert campaign.select_steps("all") == list(campaign.STEPS)
    assert campaign.select_steps("part2,environment") == ["data", "variants", "environment"]  # campaign order
    assert set(campaign.STEPS) == {name for steps in campaign.PARTS.values() for name in steps}
    assert set(campaign.BUDGETS_S) == set(campaign.STEPS)
    budgets = {
        part: min(sum(campaign.BUDGETS_S[name] for name in steps), campaign.PART_TOTAL_S.get(part, 1e9))
        for part, steps in campaign.PARTS.items()
    }
    assert max(budgets.values()) < 9 * 60  # one 10-minute command each
    assert sum(budgets[part] for part in campaign.CORE_PARTS) < 25 * 60  # the core plan: 25 minutes in all
    with pytest.raises(ValueError, match="warp_drive"):
        campaign.select_steps("data,warp_drive")


VISIT_FIRST = ("data", "command", "record_vs_airbench", "variants", "correctness")  # what no visit's file answers
COMMAND_LIMIT_S = 600  # one command on a lent GPU machine


def test_the_visit_gives_what_no_file_answers_yet_its_whole_budget_first(tmp_path, monkeypatch):
    """The visit's steps through the runner itself on a clock that each step spends to its deadline (its
    budget, or the visit's total when that comes first; a step left under MIN_STEP_S skipped): after the
    betons, the default command, the record recipe against airbench, the variants of both recipes and
    the correctness checks each get their whole budget; the rest gets what is left."""
    import campaign_runner

    clock = [0.0]
    monkeypatch.setattr(campaign_runner, "time", SimpleNamespace(monotonic=lambda: clock[0]))

    def spends_it_all(ctx):
        """Takes all the time it is given."""
        clock[0] = ctx.deadline
        return {"figures": []}

    ctx = context(tmp_path)
    ctx.campaign_deadline = campaign.PART_TOTAL_S["visit"]
    visit = campaign.select_steps("visit")
    assert visit == list(campaign.PARTS["visit"]) and visit[: len(VISIT_FIRST)] == list(VISIT_FIRST)
    result = campaign.run_steps(
        ctx, [(name, spends_it_all, campaign.BUDGETS_S[name]) for name in visit], header([]), lambda: None
    )
    steps = {step["name"]: step for step in result["steps"]}
    for name in VISIT_FIRST:
        assert (steps[name]["status"], steps[name]["seconds"]) == ("passed", campaign.BUDGETS_S[name]), name
    assert clock[0] <= campaign.PART_TOTAL_S["visit"]
    assert [step["status"] for step in result["steps"]][-1] == "skipped"  # the rest: what time is left
    # the process's start, the probe and the archive within the command's limit, with a minute to spare
    assert campaign.PART_TOTAL_S["visit"] + 60 <= COMMAND_LIMIT_S
    # the defaults study, answered by the second H200 visit, is a part of its own
    assert not {"lr_grid", "candidate"} & set(visit) and {"lr_grid", "candidate"} <= set(campaign.PARTS["part5"])


def test_a_gpu_visit_measures_both_recipes_over_enough_seeds_and_fails_a_skipped_cuda_graph(tmp_path, monkeypatch):
    """On a GPU every command runs with CUDA-graph skips made errors, at the plan's budgets; the CPU smoke
    without, at budgets doubled for its slow shared machine."""
    gpu = campaign.SIZES["gpu"]
    assert gpu["record_seeds"] >= 5  # the fewest the comparison gives intervals for (the record step's test)
    assert {f"{recipe}{mode}" for recipe in ("", "record_") for mode in ("eager", "whole_step", "cuda_graphs")} <= set(
        gpu["variants"]
    )
    assert [name for name in gpu["variants"] if name.startswith("record_")] == list(gpu["variants"][:3])
    seen = {}
    monkeypatch.delenv("TORCHINDUCTOR_CUDAGRAPH_OR_ERROR", raising=False)
    monkeypatch.setattr(campaign, "probe_header", lambda ctx: {"device": "test device", "versions": {}})

    def run_steps(ctx, plan, result, after_each):
        seen.update({ctx.size_name: ctx.env, f"{ctx.size_name} plan": plan})

    monkeypatch.setattr(campaign, "run_steps", run_steps)
    for size in ([], ["--smoke"]):
        assert campaign.main(["--steps", "data", *size, "--out", str(tmp_path / "out"), "--work", str(tmp_path)]) == 0
    assert seen["gpu"]["TORCHINDUCTOR_CUDAGRAPH_OR_ERROR"] == "1"
    assert "TORCHINDUCTOR_CUDAGRAPH_OR_ERROR" not in seen["smoke"] and seen["smoke"]["TRITON_INTERPRET"] == "1"
    assert [budget for _, _, budget in seen["gpu plan"]] == [campaign.BUDGETS_S["data"]]
    assert [budget for _, _, budget in seen["smoke plan"]] == [2 * campaign.BUDGETS_S["data"]]


def test_the_command_step_says_whether_cuda_graphs_ran_with_no_graph_skipped():
    verdict = campaign.campaign_steps.cuda_graphs_verdict
    counters = {"cudagraph_skips": 0, "recompiles": 0, "graph_breaks": 0, "cudagraph_skip_reasons": [], "graphs": 1}
    assert verdict({"compiled": "cudagraph", "compile_counters": counters}) == (
        True,
        "CUDA graphs ran (compiled cudagraph): 0 CUDA-graph skips, 0 recompiles, 0 graph breaks",
    )
    # the trainer names the mode that ran: the whole step, where inductor skipped CUDA graphs
    skipped = {**counters, "cudagraph_skips": 1, "recompiles": 2, "cudagraph_skip_reasons": ["mutated inputs"]}
    assert verdict({"compiled": "whole-step", "compile_counters": skipped}) == (
        False,
        "no CUDA graphs (compiled whole-step): 1 CUDA-graph skips, 2 recompiles, 0 graph breaks; mutated inputs",
    )
    assert verdict({"compiled": "cudagraph", "compile_counters": skipped})[0] is False
    assert verdict({"compiled": "no", "compile_counters": {"recompiles": 0}}) == (
        False,
        "no CUDA graphs (compiled no): 0 recompiles",
    )
    # a summary from before the trainer counted its skips cannot tell: unknown, not an error
    assert verdict({"compiled": "cudagraph"}) == (
        None,
        "CUDA graphs unknown (compiled cudagraph, its CUDA-graph skips not counted)",
    )
    assert verdict({})[0] is None


def test_the_record_recipes_variants_run_at_its_own_peak_lr_on_its_own_net(tmp_path):
    """The seed net's variants take the fixed peak LR; the record recipe's would be overridden by it, so
    they run at the recipe's own, and their rate is counted with the record net's FLOPs."""
    ctx = context(tmp_path, fake_trainer(tmp_path))
    ctx.step, ctx.deadline = "variants", time.monotonic() + 60
    result = campaign.campaign_steps.step_variants(ctx)
    assert result["train_flops_per_image_by_recipe"] == {"seed": 3 * 758523904, "speedrun": 3 * 236294720}
    argv = {name: json.loads((ctx.folder / name / "argv.json").read_text()) for name in ctx.size["variants"]}
    for name, words in argv.items():
        record = name.startswith("record_")
        assert ("--training.recipe" in words) == record and ("--lr.lr_max" in words) == (not record), name
    assert result["variants"]["record_cuda_graphs"]["tflops"] == pytest.approx(
        3 * 236294720 * result["variants"]["cuda_graphs"]["tflops"] / (3 * 758523904)
    )


def test_the_candidate_takes_each_change_that_beat_the_pick_once_per_option():
    def result(accuracy, *options, factor=None, status="passed"):
        return {"status": status, "final_test_acc": accuracy, "options": list(options), "factor": factor}

    runs = {
        "x1": {**result(0.900, factor=1), "tta": {0: 0.900, 1: 0.905, 2: 0.9045}},
        "x0.5": result(0.880, factor=0.5),
        "x2": result(0.903, factor=2),
        "smoothing-0.2": result(0.904, "--training.label_smoothing", "0.2"),
        "no-smoothing": result(0.903, "--training.label_smoothing", "0"),  # the same option, less: left out
        "weight-decay-0.05": result(0.901, "--training.weight_decay", "0.05"),  # within the margin
        "sgd": result(0.950, "--training.optimizer", "sgd"),  # another optimizer at its own pick: never
        "pad-constant": result(None, "--augment.pad_mode", "constant", status="failed"),
    }
    options, factor, why = campaign.campaign_accuracy.candidate_of(runs)
    assert options == ["--training.label_smoothing", "0.2", "--training.tta", "1"] and factor == 2
    assert why.startswith("against the pick's 90.00%") and "smoothing-0.2 (90.40%)" in why
    runs["x2"]["final_test_acc"] = 0.901
    assert campaign.campaign_accuracy.candidate_of(runs)[1] == 1  # no factor beat the pick by the margin


def test_parts_merge_keeping_every_record_of_every_step_each_marked_with_its_part(tmp_path):
    """A step that ran in two commands (the betons written by the first, kept by the second) keeps both
    records in campaign.json and campaign.md, steps and figures, each with the part it came from."""

    def step(name, note, *figures):
        return {
            "name": name,
            "status": "passed",
            "what": f"the {name} step",
            "budget_s": 10,
            "seconds": 1.0,
            "result": {"note": note, "figures": [figure(text, text, command=f"run {text}") for text in figures]},
        }

    first = {
        **header(
            [
                step("environment", "e", "ceiling"),
                step("data", "written", "950 images/s"),
                step("variants", "v1", "base 6.55 ms"),
            ]
        ),
        "started": "2",
        "finished": "3",
    }
    second = {
        **header([step("data", "kept", "kept betons"), step("variants", "v2", "whole step 3.51 ms")]),
        "started": "4",
        "finished": "5",
        "commands": [{"command": "part2", "started": "4", "finished": "5", "wall_s": 61.0}],
    }
    for folder, part in (("visit", first), ("variants", second)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "campaign.json").write_text(json.dumps(part))
    assert (
        campaign.main(
            [
                "report",
                str(tmp_path / "visit"),
                str(tmp_path / "variants"),
                "--out",
                str(tmp_path / "merged"),
                "--readme",
                "",
            ]
        )
        == 0
    )
    merged = json.loads((tmp_path / "merged" / "campaign.json").read_text())
    assert [(s["name"], s["part"], s["result"]["note"]) for s in merged["steps"]] == [
        ("data", "visit", "written"),
        ("data", "variants", "kept"),
        ("variants", "visit", "v1"),
        ("variants", "variants", "v2"),
        ("environment", "visit", "e"),
    ]
    assert merged["started"] == "2" and merged["finished"] == "5"
    # the first part's campaign.json has its command as text alone (written before commands were timed)
    assert merged["commands"] == [
        {"command": "campaign", "part": "visit"},
        {"command": "part2", "started": "4", "finished": "5", "wall_s": 61.0, "part": "variants"},
    ]

    markdown = (tmp_path / "merged" / "campaign.md").read_text()
    assert "| 1 | data | **passed** | visit | 1 (10) | the data step | written |" in markdown
    assert "| 2 | data | **passed** | variants | 1 (10) | the data step | kept |" in markdown
    for part, figure_name in (
        ("visit", "950 images/s"),
        ("variants", "kept betons"),
        ("visit", "base 6.55 ms"),
        ("variants", "whole step 3.51 ms"),
    ):
        assert f"| {part} | {figure_name} | {figure_name} |" in markdown
    assert "- visit: `campaign`: wall time not recorded" in markdown
    assert "- variants: `part2`: 4 to 5, 61 s" in markdown

    # without names the parts are numbered; a record reconstructed afterwards says so wherever it shows
    rebuilt = {**second, "steps": [{**second["steps"][1], "reconstructed": "from the run files", "seconds": None}]}
    again = campaign.merge_campaigns([first, rebuilt])
    assert [s["part"] for s in again["steps"]] == ["part1", "part1", "part2", "part1"]
    markdown = campaign.render(again)
    assert (
        "| 3 | variants | **passed** | part2 | not recorded (10) | the variants step | reconstructed from the "
        "archive's run files (below); v2 |"
    ) in markdown
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
    assert (
        f"- `{command['command']}`: {command['started']} to {command['finished']}, {command['wall_s']:.0f} s"
        in markdown
    )


def fake_trainer(tmp_path):
    """A python that answers the seed recipe's and the variants' commands: a trainer that writes each
    seed's summary (the second H200 visit's seed 0, with the seed changed) and its command line, a FLOP
    count per recipe (the seed and record nets' at width 64); scoring fails."""
    template = ROOT / "benchmarks" / "results" / "nvidia-h200-visit-2" / "runs" / "seed_recipe" / "seed0"
    template = template / "summary.json"
    fake = tmp_path / "fake-python"
    fake.write_text(f"""#!{sys.executable}
import json, sys
from pathlib import Path
args = sys.argv[1:]
if args[:2] == ["-m", "speedrun.train"]:
    folder = Path(args[args.index("--logging.folder") + 1])
    folders = {{folder: 0}}  # a run; or a seed's run in each seed's folder
    if "--seeds" in args:
        first, _, last = args[args.index("--seeds") + 1].partition("-")
        folders = {{folder / f"seed{{seed}}": seed for seed in range(int(first), int(last or first) + 1)}}
    for path, seed in folders.items():
        path.mkdir(parents=True, exist_ok=True)
        summary = {{**json.loads(Path({str(template)!r}).read_text()), "seed": seed}}
        (path / "summary.json").write_text(json.dumps(summary))
    (folder / "argv.json").write_text(json.dumps(args))
elif args[:1] == ["-c"]:
    print(json.dumps({{recipe: {{"seed": 758523904, "speedrun": 236294720}}[recipe] for recipe in args[3:]}}))
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
    markdown = campaign.render(
        {**header([{"name": "seed_recipe", "status": "passed", "what": "", "budget_s": 1, "result": result}])}
    )
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
    done = subprocess.run(
        [sys.executable, "benchmarks/campaign.py", "--smoke", "--out", str(out), "--work", str(work)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
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
    variants = steps["variants"]["result"]
    assert all(variant.get("compiled") for variant in variants["variants"].values() if variant["status"] == "passed")
    assert variants["variants"]["record_cuda_graphs"]["batch_size"] == 64  # the record recipe at the smoke's size
    assert set(variants["train_flops_per_image_by_recipe"]) == {"seed", "speedrun"}
    for label in ("cold", "warm"):  # a CPU never runs CUDA graphs; a summary without counters cannot tell
        command = steps["command"]["result"][label]
        assert command["cuda_graphs"] is not True and command["step_ms"] > 0
        assert f"{command['step_ms']:.2f} ms at batch 64; {command['verdict']}" in markdown
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
    merged = subprocess.run(
        [
            sys.executable,
            "benchmarks/campaign.py",
            "report",
            str(out),
            "--out",
            str(tmp_path / "merged"),
            "--readme",
            str(readme),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert merged.returncode == 0, merged.stderr[-3000:]
    assert "| seed | ours |" in (tmp_path / "merged" / "leaderboard.md").read_text()
    section = readme.read_text().split(campaign.README_MARKERS[0])[1].split(campaign.README_MARKERS[1])[0]
    assert all(f"| {name} | **passed** |" in section for name in campaign.STEPS)
    assert (tmp_path / "merged" / campaign.ARCHIVE).exists()


def test_record_step_reports_the_leaderboards_comparison_with_its_intervals_and_verdict():
    from campaign_accuracy import comparison_figure

    from speedrun.runs.leaderboard_entries import compare

    ours = {
        "name": "speedrun",
        "accuracies": [0.910, 0.911, 0.912, 0.910, 0.911],
        "train_seconds": [2.0] * 4 + [2.1],
        "total_seconds": [2.2] * 5,
    }
    airbench = {
        "name": "airbench train94",
        "accuracies": [0.905, 0.904, 0.906, 0.903, 0.905],
        "train_seconds": [2.1, 2.2, 2.1, 2.2, 2.1],
        "total_seconds": [2.5, 2.6, 2.5, 2.6, 2.5],
    }
    made = comparison_figure("airbench train94", compare(ours, airbench), "the command")
    assert made["name"] == "record recipe against airbench train94" and made["command"] == "the command"
    assert made["text"].startswith("total time 0.8") and "(95% interval" in made["text"]
    assert "verdict: ahead" in made["text"] and made["value"] == pytest.approx(2.2 / (2.5**3 * 2.6**2) ** 0.2)
    few = comparison_figure("airbench train94", compare({**ours, "accuracies": ours["accuracies"][:2]}, airbench), "c")
    assert "verdict: none (too few seeds" in few["text"]

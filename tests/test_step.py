"""The train step's structure on the CPU, which shows what the host would do around a GPU step: no
operation that waits for the device between evaluations, no graph break and no recompilation once
warmed up, and the whole step compiled as one graph computing what the eager step computes.

The compiled runs use torch.compile's aot_eager backend: graph breaks, guards and recompilations are
decided by dynamo, before any backend, and aot_eager skips inductor's minutes of C++ compilation.
"""

import dataclasses
import logging
import math
import re

import pytest
import torch
from torch._dynamo.utils import counters

from speedrun import cli
from speedrun import train as train_module
from speedrun.engine import step as step_module
from speedrun.optim.optimizers import step_tensors
from speedrun.system import device as device_module
from speedrun.system.opcount import OpCounter
from speedrun.train import train


def step_config(betons, folder, recipe, **training):
    """A tiny run of `recipe`: width 8, batch 64 (4 steps an epoch), evaluating mid-epoch in epoch 2."""
    config = {
        "data": {"train_dataset": betons[0], "val_dataset": betons[1]},
        "model": {"width": 8},
        "training": {
            "recipe": recipe,
            "epochs": 2,
            "batch_size": 64,
            "device": "cpu",
            "precision": "fp32",
            "late_evals_from": 2,
            "late_evals_per_epoch": 2,
            **training,
        },
        "logging": {"folder": str(folder), "progress": False, "plots": False, "checkpoint": "none"},
    }
    if recipe == "seed":
        config["lr"] = {"lr_max": 0.02}
    return config


def losses(summary):
    return [record["train_loss"] for record in summary["history"]]


@pytest.mark.parametrize("recipe", ["seed", "speedrun"])
def test_no_operation_waits_for_the_device_between_evaluations(tiny_betons, tmp_path, monkeypatch, recipe):
    real, counted = train_module.run_steps, []

    def counting(run, epoch, steps, *args):
        with OpCounter() as counter:
            real(run, epoch, steps, *args)
        counted.append((len(steps), counter))

    monkeypatch.setattr(train_module, "run_steps", counting)
    summary = train(step_config(tiny_betons, tmp_path, recipe))
    assert [length for length, _ in counted] == [4, 2, 2]  # epoch 1 whole, epoch 2 in halves
    assert [dict(counter.syncs) for _, counter in counted] == [{}, {}, {}]
    halves = [counter.ops for _, counter in counted[1:]]
    assert halves[0] - halves[1] == {"aten::randperm": 1} and not halves[1] - halves[0]  # + the epoch's order
    assert counted[0][1].total / 4 > 50
    assert summary["history"][-1]["train_loss"] > 0


def compiled_run(betons, folder, monkeypatch, recipe, mode, **training):
    """A compiled run, counting dynamo's graph breaks and compilations after the warm-up, and noting
    which of the tensors a whole step updates in place were marked static before it."""
    monkeypatch.setattr(device_module, "COMPILE_BACKEND", "aot_eager")
    torch._dynamo.reset()
    counters.clear()
    real, warm = step_module.warm_up, {}

    def warm_up(run):
        held = [run.batcher.out, *step_tensors(run.optimizer), *run.average.tensors()]
        warm["static"] = [hasattr(tensor, "_dynamo_static_input_type") for tensor in held]
        seconds = real(run)
        warm["frames"] = counters["frames"]["total"]
        return seconds

    monkeypatch.setattr(step_module, "warm_up", warm_up)
    summary = train(
        step_config(betons, folder, recipe, **{"compile": "on", "compile_mode": mode, "epochs": 3, **training})
    )
    summary["marked_static"] = warm["static"]
    return summary, sum(counters["graph_break"].values()), counters["frames"]["total"] - warm["frames"]


# (recipe, its optimizer): the seed recipe's default Adam, SGD, and the record recipe's Muon with SGD
WHOLE_STEP_CASES = [("seed", "adam"), ("seed", "sgd"), ("speedrun", "muon")]


@pytest.mark.parametrize("recipe,optimizer", WHOLE_STEP_CASES)
def test_whole_step_is_one_graph_never_recompiled_and_computes_the_eager_losses(
    tiny_betons, tmp_path, monkeypatch, recipe, optimizer
):
    eager = train(step_config(tiny_betons, tmp_path / "eager", recipe, epochs=3, optimizer=optimizer, ema=0.9))
    whole, breaks, compiled_after_warm_up = compiled_run(
        tiny_betons, tmp_path / "whole", monkeypatch, recipe, "whole-step", optimizer=optimizer, ema=0.9
    )
    assert (eager["compiled"], whole["compiled"]) == ("no", "whole-step")
    # the optimizer's state, its LR tensors, the weight average and the batch buffer keep their address
    # (marked before the warm-up, which puts them back in place: a moved one would recompile)
    assert len(whole["marked_static"]) > 10 and all(whole["marked_static"])
    assert breaks == 0 and compiled_after_warm_up == 0
    # The first epoch agrees within bf16 tolerance; the graph's decompositions round differently in the
    # last bits, which a tiny batch-norm net amplifies over the next epochs (a few % by epoch 3).
    assert losses(whole)[0] == pytest.approx(losses(eager)[0], rel=4e-3)
    assert losses(whole) == pytest.approx(losses(eager), rel=0.1)
    assert whole["final_test_acc"] == pytest.approx(eager["final_test_acc"], abs=0.15)  # 128 test images


def test_forward_compile_does_not_recompile_after_warm_up(tiny_betons, tmp_path, monkeypatch):
    _, breaks, compiled_after_warm_up = compiled_run(tiny_betons, tmp_path, monkeypatch, "speedrun", "default")
    assert breaks == 0 and compiled_after_warm_up == 0


def test_an_epoch_shorter_than_the_warm_up_compiles(tiny_betons, tmp_path, monkeypatch):
    summary, breaks, _ = compiled_run(tiny_betons, tmp_path, monkeypatch, "seed", "default", train_subset=128)
    assert summary["steps_per_epoch"] == 2 and summary["compiled"] == "default" and breaks == 0


@pytest.mark.parametrize("compile_mode", ["whole-step", None])
def test_a_seed_sweep_builds_and_compiles_its_step_once_and_each_seed_trains_as_alone(
    tiny_betons, tmp_path, monkeypatch, compile_mode
):
    """Three seeds in one process: one step built and warmed up (compiled), nothing compiled after it,
    and each seed's run identical to the same seed run alone with a step of its own (compiled or eager)."""
    monkeypatch.setattr(device_module, "COMPILE_BACKEND", "aot_eager")
    torch._dynamo.reset()
    counters.clear()
    compiling = {"compile": "on", "compile_mode": compile_mode} if compile_mode else {}
    built, warmed = [], []
    real_build, real_warm_up = step_module.build_step, step_module.warm_up
    monkeypatch.setattr(step_module, "build_step", lambda *args: built.append(1) or real_build(*args))

    def warm_up(run):
        seconds = real_warm_up(run)
        warmed.append(counters["frames"]["total"])
        return seconds

    monkeypatch.setattr(step_module, "warm_up", warm_up)
    sweep = cli.train_seeds(step_config(tiny_betons, tmp_path / "sweep", "seed", **compiling), [0, 1, 2])
    assert len(built) == 1 and len(warmed) == (1 if compile_mode else 0)
    if compile_mode:
        assert counters["frames"]["total"] == warmed[0]  # no compilation after the first seed's warm-up
        assert [summary["compile_seconds"] > 0 for summary in sweep] == [True, False, False]
    alone = train(step_config(tiny_betons, tmp_path / "alone", "seed", seed=2, **compiling))
    assert len(built) == 2
    assert [summary["seed"] for summary in sweep] == [0, 1, 2] and losses(sweep[0]) != losses(sweep[2])
    assert losses(sweep[2]) == losses(alone)
    assert sweep[2]["final_test_acc"] == alone["final_test_acc"]


def test_compile_cache_files_are_kept_apart_by_step_device_and_versions(monkeypatch, tmp_path):
    from speedrun.system import runlog

    cpu = torch.device("cpu")
    path = step_module.compile_cache_file(str(tmp_path), "key", cpu)
    assert path.parent == tmp_path and path == step_module.compile_cache_file(str(tmp_path), "key", cpu)
    assert step_module.compile_cache_file(str(tmp_path), "other key", cpu) != path
    assert step_module.compile_cache_file("", "key", cpu) is None
    real = runlog.versions
    monkeypatch.setattr(runlog, "versions", lambda: {**real(), "torch": "0.0.1"})
    assert step_module.compile_cache_file(str(tmp_path), "key", cpu) != path  # another torch never reads it


def test_a_corrupt_compile_cache_is_ignored_with_one_line(tiny_betons, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(device_module, "COMPILE_BACKEND", "aot_eager")
    torch._dynamo.reset()
    bad = tmp_path / "cache" / "step.bin"
    bad.parent.mkdir()
    bad.write_bytes(b"not torch's artifacts")
    monkeypatch.setattr(step_module, "compile_cache_file", lambda folder, key, device: bad)
    summary = train(
        step_config(
            tiny_betons,
            tmp_path / "run",
            "seed",
            compile="on",
            compile_mode="whole-step",
            compile_cache=str(bad.parent),
        )
    )
    err = capsys.readouterr().err
    assert err.count(f"speedrun: compile cache {bad} ignored (") == 1 and "compiling anew" in err
    assert summary["compile_cache"] == "cold" and summary["compiled"] == "whole-step"
    assert summary["final_test_acc"] > 0
    assert step_module.load_compile_cache(tmp_path / "missing.bin") == "cold"


def test_a_resumed_run_looks_for_the_compile_cache_file_of_the_run_it_continues(
    tiny_betons, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(device_module, "COMPILE_BACKEND", "aot_eager")
    torch._dynamo.reset()
    config = step_config(
        tiny_betons,
        tmp_path / "run",
        "seed",
        compile="on",
        compile_mode="whole-step",
        compile_cache=str(tmp_path / "cache"),
    )
    config["logging"]["checkpoint"] = "every"
    train(config)
    first = re.findall(r"compile cache \w+: (\S+)\)", capsys.readouterr().err)
    torch._dynamo.reset()
    train({"training": {"resume": str(tmp_path / "run")}, "logging": {"progress": False}})
    again = re.findall(r"compile cache \w+: (\S+)\)", capsys.readouterr().err)
    assert len(first) == len(again) == 1 and again == first and first[0].startswith(str(tmp_path / "cache"))


@pytest.mark.parametrize("steps", [1, 2])
def test_a_compiled_run_shorter_than_the_warm_up_trains(tiny_betons, tmp_path, monkeypatch, steps):
    """One epoch of 1 or 2 steps compiled whole: the warm-up's 3 steps read the LR table's first row, which
    every run has (a 1-step run's table holds 2 rows)."""
    summary, breaks, compiled_after_warm_up = compiled_run(
        tiny_betons, tmp_path, monkeypatch, "seed", "whole-step", epochs=1, batch_size=256 // steps, late_evals_from=0
    )
    assert summary["steps_per_epoch"] == steps and summary["compiled"] == "whole-step"
    assert breaks == 0 and compiled_after_warm_up == 0
    assert summary["history"][-1]["train_loss"] > 0


def test_the_summary_says_what_compiling_did(tiny_betons, tmp_path, monkeypatch):
    summary, _, _ = compiled_run(tiny_betons, tmp_path, monkeypatch, "seed", "whole-step", tta=2)
    counted = summary["compile_counters"]
    # the step's graph and the eval net's, one for every test-time augmentation view and the plain pass
    assert counted == {
        "cudagraph_skips": 0,
        "cudagraph_skip_reasons": [],
        "graph_breaks": 0,
        "graphs": 2,
        "recompiles": 0,
    }
    assert summary["compiled"] == "whole-step"
    eager = train(step_config(tiny_betons, tmp_path / "eager", "seed"))
    assert eager["compiled"] == "no" and eager["compile_counters"]["graphs"] == 0


def test_a_cuda_graph_skip_is_reported_as_the_mode_that_ran(tiny_betons, tmp_path, monkeypatch, capsys):
    """CUDA graphs asked for, and inductor skipping them the way it does on a GPU (its counter bumped,
    its reason logged): the run says it ran whole-step, once, with torch's reason, and counts the skip."""
    from torch._inductor.cudagraph_utils import log_cudagraph_skip_and_bump_counter

    reason = "skipping cudagraphs due to mutated inputs (3 instances)"
    real_policy, real_warm_up = train_module.policy_from_config, step_module.warm_up
    monkeypatch.setattr(
        train_module,
        "policy_from_config",
        lambda *args, **kwargs: dataclasses.replace(real_policy(*args, **kwargs), compile_mode="cudagraph"),
    )

    def warm_up(run):
        seconds = real_warm_up(run)
        log_cudagraph_skip_and_bump_counter(reason)
        return seconds

    monkeypatch.setattr(step_module, "warm_up", warm_up)
    summary, _, _ = compiled_run(tiny_betons, tmp_path, monkeypatch, "seed", "whole-step")
    assert summary["compiled"] == "whole-step"
    assert summary["compile_counters"]["cudagraph_skips"] == 1
    assert summary["compile_counters"]["cudagraph_skip_reasons"] == [reason]
    assert capsys.readouterr().err.count(f"inductor skipped CUDA graphs ({reason})") == 1


def test_a_compile_cache_that_cannot_be_saved_costs_the_run_nothing(monkeypatch, tmp_path, capsys):
    def failing():
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch.compiler, "save_cache_artifacts", failing)
    step_module.save_compile_cache(tmp_path / "step.bin")
    assert capsys.readouterr().err.count("compile cache not saved") == 1
    assert not (tmp_path / "step.bin").exists()


def test_a_corrupt_compile_cache_logs_no_traceback_of_torch(tmp_path, capsys):
    """torch's own logger reports an unreadable file with a traceback; the run's one line replaces it."""
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger(step_module.CACHE_LOGGER)
    logger.addHandler(handler)
    try:
        bad = tmp_path / "step.bin"
        bad.write_bytes(b"not torch's artifacts")
        assert step_module.load_compile_cache(bad) == "cold"
        assert records == [] and capsys.readouterr().err.count("ignored") == 1
        torch.compiler.load_cache_artifacts(bad.read_bytes())  # what the run keeps quiet
        assert records and records[0].exc_info
    finally:
        logger.removeHandler(handler)


# Each recipe and each option that changes the step's state, compiled whole through inductor in bf16 as on
# a GPU (C++ kernels here, Triton there), Muon's bf16 Newton-Schulz included: (recipe, options, image sides).
INDUCTOR_CASES = {
    "seed": ("seed", {"tta": 2}, 1),
    "speedrun": ("speedrun", {"tta": 2}, 1),
    "lookahead": ("seed", {"lookahead": 2, "tta": 1}, 1),
    "curriculum": ("speedrun", {"resolutions": "24,32", "epochs": 2, "tta": 0}, 2),
}


@pytest.mark.parametrize("case", INDUCTOR_CASES)
def test_every_recipe_compiles_whole_through_inductor_in_bf16(tiny_betons, tmp_path, case):
    """A graph for each image side's step and one for evaluation, at any test-time augmentation level
    (every view in the net's memory format), all in the warm-up: nothing compiles after it."""
    recipe, options, sides = INDUCTOR_CASES[case]
    torch._dynamo.reset()
    config = step_config(
        tiny_betons,
        tmp_path,
        recipe,
        **{
            "compile": "on",
            "compile_mode": "whole-step",
            "precision": "bf16",
            "epochs": 1,
            "batch_size": 128,
            "eval_batch_size": 128,
            "compile_cache": "",
            "late_evals_from": 0,
            **options,
        },
    )
    summary = train(config)
    assert summary["compiled"] == "whole-step"
    assert summary["compile_counters"] == {
        "cudagraph_skips": 0,
        "cudagraph_skip_reasons": [],
        "graph_breaks": 0,
        "graphs": sides + 1,
        "recompiles": 0,
    }
    assert all(math.isfinite(record["train_loss"]) for record in summary["history"])
